"""The inbound secrets the provider tests configure: two per provider, so rotation is always tested.

The first of each pair is "current", the second the one being rotated out. SendGrid verifies with a
public key, so an ECDSA key pair is made here for the run and its private half signs test deliveries.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import STRIPE_OLD_SECRET, STRIPE_SECRET


def _svix_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _ecdsa_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public_der).decode()


SENDGRID_PRIVATE_KEY, _SENDGRID_PUBLIC_KEY = _ecdsa_pair()
SENDGRID_OLD_PRIVATE_KEY, _SENDGRID_OLD_PUBLIC_KEY = _ecdsa_pair()

# Environment variable -> (current, rotated-out) secret, as the gateway process reads them.
PROVIDER_SECRETS: dict[str, tuple[str, str]] = {
    "STRIPE_WEBHOOK_SECRET": (STRIPE_SECRET, STRIPE_OLD_SECRET),
    "CLERK_WEBHOOK_SIGNING_SECRET": (_svix_secret(), _svix_secret()),
    "SLACK_SIGNING_SECRET": (secrets.token_hex(16), secrets.token_hex(16)),
    "TWILIO_AUTH_TOKEN": (secrets.token_hex(16), secrets.token_hex(16)),
    "SENDGRID_WEBHOOK_PUBLIC_KEY": (_SENDGRID_PUBLIC_KEY, _SENDGRID_OLD_PUBLIC_KEY),
    "CALCOM_WEBHOOK_SECRET": (secrets.token_urlsafe(24), secrets.token_urlsafe(24)),
    "DAILY_WEBHOOK_SECRET": (
        base64.b64encode(secrets.token_bytes(32)).decode(),
        base64.b64encode(secrets.token_bytes(32)).decode(),
    ),
    "AIRTABLE_WEBHOOK_MAC_SECRET": (
        base64.b64encode(secrets.token_bytes(32)).decode(),
        base64.b64encode(secrets.token_bytes(32)).decode(),
    ),
    "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN": (secrets.token_hex(16), secrets.token_hex(16)),
    "MAILCHIMP_WEBHOOK_SECRET": (secrets.token_urlsafe(24), secrets.token_urlsafe(24)),
    "INSTANTLY_WEBHOOK_SECRET": (secrets.token_urlsafe(24), secrets.token_urlsafe(24)),
    "ZAPIER_WEBHOOK_SECRET": (secrets.token_urlsafe(24), secrets.token_urlsafe(24)),
    "LUMA_WEBHOOK_SECRET": (secrets.token_urlsafe(24), secrets.token_urlsafe(24)),
}


def current(variable: str) -> str:
    return PROVIDER_SECRETS[variable][0]


def rotated_out(variable: str) -> str:
    return PROVIDER_SECRETS[variable][1]


def gateway_env() -> dict[str, str]:
    return {variable: ",".join(pair) for variable, pair in PROVIDER_SECRETS.items()}
