"""Sign a webhook the way Twilio does, with twilio-python's own signer.

https://www.twilio.com/docs/usage/webhooks/webhooks-security — `X-Twilio-Signature` is the base64
HMAC-SHA1 (keyed with the Auth Token) of the URL followed by each POST parameter's name and value,
names sorted. `RequestValidator.compute_signature` is the SDK's signing half; our verifier wraps its
`validate`, never this.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

FORM = "application/x-www-form-urlencoded"


def sign_twilio(
    url: str, body: bytes, *, token: str, algorithm: str | None = None
) -> dict[str, str]:
    """The headers Twilio sends when it POSTs the form-encoded `body` to `url`.

    `algorithm="HMAC_SHA256"` signs as a SharedKey webhook does and names it in
    `X-Twilio-Webhooks-Signature-Settings`.
    """
    params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    signature = RequestValidator(token).compute_signature(url, params, algorithm)
    headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
    if algorithm:
        headers["X-Twilio-Webhooks-Signature-Settings"] = (
            f"key=webhooks_sharedkey_test,algorithm={algorithm}"
        )
    return headers


def json_url(url: str, body: bytes) -> str:
    """The URL Twilio signs for a JSON body: `bodySHA256=<hex sha256 of the body>` appended."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}bodySHA256={hashlib.sha256(body).hexdigest()}"


def sign_twilio_json(url_with_hash: str, *, token: str) -> dict[str, str]:
    """A JSON body's headers: the signature covers the URL (with its bodySHA256) only."""
    signature = RequestValidator(token).compute_signature(url_with_hash, {})
    return {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
