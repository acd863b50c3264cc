"""API keys: shown once, stored as a hash, scoped, revocable, audited."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.tables import ApiKey, AuditEntry
from workers import api_keys


def _create(
    session: Session,
    name: str = "ops-dashboard",
    *,
    scopes: str | list[str] = "dlq:read",
    rate_per_minute: int = 60,
) -> tuple[ApiKey, str]:
    return api_keys.create_key(
        session, name=name, scopes=scopes, rate_per_minute=rate_per_minute, actor="cli:tester"
    )


def test_a_created_key_authenticates_and_records_its_use(db_session: Session) -> None:
    row, plaintext = _create(db_session, scopes="dlq:write,dlq:read")

    found = api_keys.authenticate(db_session, plaintext)

    assert found is not None
    assert found.id == row.id
    assert found.scopes == ["dlq:read", "dlq:write"]
    assert found.last_used_at is not None
    assert plaintext.startswith(f"{row.prefix}_")
    assert row.prefix.startswith("hf_")


def test_only_the_hash_is_stored(db_session: Session) -> None:
    row, plaintext = _create(db_session)
    secret_part = plaintext.removeprefix(f"{row.prefix}_")

    stored = db_session.execute(select(ApiKey.__table__).where(ApiKey.id == row.id)).one()

    assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    for value in stored:
        assert plaintext not in str(value)
        assert secret_part not in str(value)


@pytest.mark.parametrize(
    "presented",
    ["", "hf_00000000_not-a-key", "wrong"],
    ids=["empty", "unknown", "garbage"],
)
def test_a_wrong_key_does_not_authenticate(db_session: Session, presented: str) -> None:
    _create(db_session)

    assert api_keys.authenticate(db_session, presented) is None


def test_a_key_with_a_changed_character_does_not_authenticate(db_session: Session) -> None:
    _, plaintext = _create(db_session)
    tampered = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")

    assert api_keys.authenticate(db_session, tampered) is None


def test_a_revoked_key_does_not_authenticate_and_the_revocation_is_audited(
    db_session: Session,
) -> None:
    row, plaintext = _create(db_session)

    api_keys.revoke(db_session, row.name, actor="cli:tester")

    assert api_keys.authenticate(db_session, plaintext) is None
    assert row.revoked_at is not None
    actions = db_session.scalars(
        select(AuditEntry.action).where(
            AuditEntry.entity_type == "api_key", AuditEntry.entity_id == str(row.id)
        )
    ).all()
    assert sorted(actions) == ["api_key.created", "api_key.revoked"]
    with pytest.raises(api_keys.ApiKeyStateError):
        api_keys.revoke(db_session, row.name, actor="cli:tester")


def test_revoking_an_unknown_key_is_an_error(db_session: Session) -> None:
    with pytest.raises(api_keys.ApiKeyNotFoundError):
        api_keys.revoke(db_session, "nobody", actor="cli:tester")


def test_creation_is_audited_with_the_actor_and_without_the_key(db_session: Session) -> None:
    row, plaintext = _create(db_session)

    entry = db_session.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "api_key.created", AuditEntry.entity_id == str(row.id)
        )
    ).one()

    assert entry.actor == "cli:tester"
    assert entry.detail["scopes"] == ["dlq:read"]
    assert plaintext not in str(entry.detail)


@pytest.mark.parametrize(
    ("name", "scopes", "rate", "message"),
    [
        ("k", ["dlq:read", "root"], 60, "unknown scope"),
        ("k", "dlq:read,everything", 60, "unknown scope"),
        ("k", [], 60, "at least one scope"),
        ("k", "dlq:read", 0, "rate_per_minute"),
        ("  ", "dlq:read", 60, "name"),
    ],
    ids=["unknown-scope", "unknown-scope-csv", "no-scope", "zero-rate", "blank-name"],
)
def test_invalid_keys_are_refused(
    db_session: Session, name: str, scopes: str | list[str], rate: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _create(db_session, name, scopes=scopes, rate_per_minute=rate)
    assert db_session.scalar(select(ApiKey).where(ApiKey.name == name.strip())) is None


def test_names_are_unique(db_session: Session) -> None:
    _create(db_session, name="twice")

    with pytest.raises(ValueError, match="already exists"):
        _create(db_session, name="twice")


def test_list_keys_includes_revoked_ones(db_session: Session) -> None:
    _create(db_session, name="zz-live")
    _create(db_session, name="zz-gone")
    api_keys.revoke(db_session, "zz-gone", actor="cli:tester")

    listed = {row.name: row.revoked_at is not None for row in api_keys.list_keys(db_session)}

    assert listed["zz-live"] is False
    assert listed["zz-gone"] is True
