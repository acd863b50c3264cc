"""Sign an Event Webhook POST the way SendGrid does, with `cryptography` and the test key pair.

https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
— ECDSA (P-256) with SHA-256 over the timestamp string immediately followed by the raw body; the DER
signature goes base64-encoded in `X-Twilio-Email-Event-Webhook-Signature`. The sendgrid library only
verifies, so this signer is written from that page, independent of our verifier.
"""

from __future__ import annotations

import base64
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def sign_sendgrid(
    body: bytes, *, private_key: ec.EllipticCurvePrivateKey, at: datetime
) -> dict[str, str]:
    """The headers SendGrid sends with the batch `body` signed at `at`."""
    timestamp = str(int(at.timestamp()))
    der = private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
