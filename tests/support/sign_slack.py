"""Sign a body the way Slack does, with slack_sdk's own signer.

https://api.slack.com/authentication/verifying-requests-from-slack — `v0=<hex HMAC-SHA256>` over
`"v0:{timestamp}:{body}"`, keyed with the app's signing secret.
"""

from __future__ import annotations

from datetime import datetime

from slack_sdk.signature import SignatureVerifier


def sign_slack(
    body: bytes,
    *,
    secret: str,
    at: datetime,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> dict[str, str]:
    """The headers Slack sends with `body` signed at `at`; `retry_num` marks one of its retries."""
    timestamp = str(int(at.timestamp()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    headers = {
        "X-Slack-Signature": signature,
        "X-Slack-Request-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers
