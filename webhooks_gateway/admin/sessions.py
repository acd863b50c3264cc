"""The operators' sign-in session and its CSRF token.

The session is Starlette's signed cookie (itsdangerous): HttpOnly, SameSite=Lax, limited to /admin,
expiring after ADMIN_SESSION_MAX_AGE_SECONDS, and Secure whenever the request came over https. It
holds only the API key's id and the CSRF token; every request loads the key again, so a revoked key
or a withdrawn scope takes effect on the next click, not at the cookie's expiry.

CSRF is the synchronizer-token pattern: one random token per session, put in every form and compared
with `hmac.compare_digest` on every POST. The sign-in form carries one too (a session is started
when the form is shown), so another site cannot sign a browser in under its own key.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.settings import Settings
from workers.logging import get_logger

log = get_logger(__name__)

COOKIE = "hookfleet_admin"
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
KEY_ID = "key_id"
_CSRF = "csrf"
_FLASH = "flash"


def session_secret(settings: Settings) -> str:
    """ADMIN_SESSION_SECRET, or a random secret for this process (said once, at start-up)."""
    if settings.admin_session_secret is not None:
        return settings.admin_session_secret.get_secret_value()
    log.warning(
        "admin.session_secret_generated",
        detail="ADMIN_SESSION_SECRET is unset: operators' sessions end when this process restarts "
        "and are not shared between gateway processes",
    )
    return secrets.token_urlsafe(32)


class AdminSessionMiddleware:
    """SessionMiddleware whose cookie is Secure on https requests (as the scheme uvicorn reports,
    which behind a proxy means running it with --proxy-headers) and plain on http ones."""

    def __init__(self, app: ASGIApp, *, secret: str, max_age: int) -> None:
        options: dict[str, Any] = {
            "secret_key": secret,
            "session_cookie": COOKIE,
            "max_age": max_age,
            "path": COOKIE_PATH,
            "same_site": "lax",
        }
        self._plain = SessionMiddleware(app, https_only=False, **options)
        self._secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secure = scope.get("scheme") in ("https", "wss")
        await (self._secure if secure else self._plain)(scope, receive, send)


def csrf_token(request: Request) -> str:
    """The session's token, made on first use."""
    token = request.session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[_CSRF] = token
    return token


def csrf_ok(request: Request, presented: object) -> bool:
    expected = request.session.get(_CSRF)
    if not isinstance(expected, str) or not expected or not isinstance(presented, str):
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def start(request: Request, key_id: int) -> None:
    """A fresh session for a signed-in key: whatever the browser held before is dropped, and the
    CSRF token is new (the one of the sign-in form was handed out before anyone signed in)."""
    request.session.clear()
    request.session[KEY_ID] = key_id
    request.session[_CSRF] = secrets.token_urlsafe(32)


def key_id(request: Request) -> int | None:
    value = request.session.get(KEY_ID)
    return value if isinstance(value, int) else None


def end(request: Request) -> None:
    request.session.clear()


def flash(request: Request, kind: str, text: str) -> None:
    """A message shown once, on the next page (after a redirect)."""
    messages = list(request.session.get(_FLASH, []))
    messages.append([kind, text])
    request.session[_FLASH] = messages


def take_flashes(request: Request) -> list[tuple[str, str]]:
    if _FLASH not in request.session:
        return []
    return [(str(kind), str(text)) for kind, text in request.session.pop(_FLASH)]
