"""API keys for the admin API: created with scopes, stored as a SHA-256 only, shown once.

A key reads `hf_<prefix>_<secret>`. The prefix is kept in clear so an operator can tell keys apart in
`hookfleet keys list` and in logs; the secret part never leaves the `create_key` call. Keys are long
random strings, so a plain SHA-256 (no salt, no slow hash) is enough, and it makes the lookup one
indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.tables import ApiKey, utcnow
from workers.audit import audit

SCOPES = ("dlq:read", "dlq:write", "events:read", "events:replay", "jobs:run")

KEY_MARK = "hf"
PREFIX_BYTES = 4  # 8 hex characters shown in listings
SECRET_BYTES = 32


class ApiKeyNotFoundError(LookupError):
    pass


class ApiKeyStateError(ValueError):
    """The key exists but cannot take this action (revoking a key already revoked)."""


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8")).hexdigest()


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Scopes from `a,b` or an iterable, deduplicated in the order of SCOPES; ValueError on unknown ones."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {item.strip() for item in items if item.strip()}
    unknown = sorted(wanted.difference(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError(f"a key needs at least one scope; known: {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in wanted]


def create_key(
    session: Session,
    *,
    name: str,
    scopes: str | Iterable[str],
    rate_per_minute: int,
    actor: str = "system",
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext, which is not kept anywhere."""
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name")
    if rate_per_minute < 1:
        raise ValueError("rate_per_minute must be at least 1")
    granted = parse_scopes(scopes)
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} already exists")
    prefix = f"{KEY_MARK}_{secrets.token_hex(PREFIX_BYTES)}"
    plaintext = f"{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=hash_key(plaintext),
        scopes=granted,
        rate_per_minute=rate_per_minute,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    audit(
        session,
        actor=actor,
        action="api_key.created",
        entity_type="api_key",
        entity_id=row.id,
        name=name,
        prefix=prefix,
        scopes=granted,
        rate_per_minute=rate_per_minute,
    )
    return row, plaintext


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The live key whose hash matches `presented`, its `last_used_at` updated; None otherwise."""
    if not presented:
        return None
    digest = hash_key(presented)
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    )
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    row.last_used_at = utcnow()
    return row


def revoke(session: Session, name: str, *, actor: str = "system") -> ApiKey:
    """Mark the key revoked (kept for the audit trail); it stops authenticating at once."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name).with_for_update())
    if row is None:
        raise ApiKeyNotFoundError(f"no API key named {name!r}")
    if row.revoked_at is not None:
        raise ApiKeyStateError(
            f"API key {name!r} was already revoked at {row.revoked_at.isoformat()}"
        )
    row.revoked_at = utcnow()
    audit(
        session,
        actor=actor,
        action="api_key.revoked",
        entity_type="api_key",
        entity_id=row.id,
        name=row.name,
        prefix=row.prefix,
    )
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))
