"""The Clerk (Svix) verifier and event identity, as pure functions.

The svix SDK that the verifier wraps also checks the wall clock, so `now` is the real time taken
once per test and deliveries are signed around it; the signer is svix's own, cross-checked against
Svix's published example and an hmac/hashlib computation so a shared bug cannot pass unseen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.provider_checks import reason_of
from tests.support.sign_clerk import sign_clerk
from webhooks_gateway.providers import clerk
from webhooks_gateway.providers.base import Delivery, FailureReason, PayloadError

TOLERANCE = 300
SECRET = "whsec_" + base64.b64encode(b"unit-current-clerk-secret-32byte").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"unit-previous-clerk-secret-32byt").decode()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "clerk"
FIXTURE_FILES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".headers.json"))
BODY = (FIXTURES / "user.created.json").read_bytes()
MSG_ID = "msg_2pUnitTestMessage0000000001"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def verify(
    body: bytes,
    headers: dict[str, str],
    *,
    now: datetime,
    secrets: tuple[str, ...] = (SECRET,),
    tolerance: int = TOLERANCE,
) -> None:
    clerk.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=now,
        tolerance_seconds=tolerance,
    )


def rejection(body: bytes, headers: dict[str, str], **kwargs: Any) -> FailureReason:
    return reason_of(lambda: verify(body, headers, **kwargs))


def signed(at: datetime, *, secret: str = SECRET, **kwargs: Any) -> dict[str, str]:
    return sign_clerk(BODY, secret=secret, at=at, msg_id=MSG_ID, **kwargs)


def test_svix_signer_reproduces_svix_published_example() -> None:
    # https://docs.svix.com/receiving/verifying-payloads/how-manual (worked example).
    at = datetime.fromtimestamp(1614265330, UTC)
    headers = sign_clerk(
        b'{"test": 2432232314}',
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        at=at,
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
    )
    assert headers["svix-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_svix_signer_matches_an_independent_hmac(now: datetime) -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    content = f"{MSG_ID}.{int(now.timestamp())}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert signed(now)["svix-signature"] == f"v1,{expected}"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_clerk_accepts_fixture_signed_with_configured_secret(path: Path, now: datetime) -> None:
    body = path.read_bytes()
    verify(body, sign_clerk(body, secret=SECRET, at=now, msg_id=MSG_ID), now=now)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_clerk_event_id_is_the_svix_message_id_and_type_the_body_type(path: Path) -> None:
    headers = json.loads(path.with_name(path.stem + ".headers.json").read_text())
    delivery = Delivery(raw=path.read_bytes(), headers=Headers(headers))
    (event,) = clerk.events(delivery, clerk.parse(delivery))
    assert (event.event_id, event.event_type, event.body) == (
        headers["svix-id"],
        path.stem,
        path.read_bytes(),
    )


def test_clerk_fixture_message_ids_are_unique() -> None:
    ids = [json.loads(p.read_text())["svix-id"] for p in FIXTURES.glob("*.headers.json")]
    assert len(ids) == len(set(ids)) == len(FIXTURE_FILES)


def test_clerk_accepts_white_label_webhook_headers(now: datetime) -> None:
    verify(BODY, signed(now, prefix="webhook"), now=now)


def test_clerk_event_id_is_read_from_white_label_header() -> None:
    delivery = Delivery(raw=BODY, headers=Headers({"webhook-id": MSG_ID}))
    (event,) = clerk.events(delivery, clerk.parse(delivery))
    assert event.event_id == MSG_ID


@pytest.mark.parametrize("skew", [60, -60, 30, -30])
def test_clerk_accepts_signature_within_tolerance_either_side(skew: int, now: datetime) -> None:
    # The exact edge is tested under a 60 s setting: at 300 s the SDK's wall clock also has a say.
    verify(BODY, signed(now - timedelta(seconds=skew)), now=now, tolerance=60)


@pytest.mark.parametrize("skew", [TOLERANCE - 10, -(TOLERANCE - 10)])
def test_clerk_accepts_signature_near_the_svix_window_either_side(skew: int, now: datetime) -> None:
    verify(BODY, signed(now - timedelta(seconds=skew)), now=now)


def test_clerk_rejects_stale_signature(now: datetime) -> None:
    at = now - timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, signed(at), now=now) == "stale"


def test_clerk_rejects_signature_from_the_future(now: datetime) -> None:
    at = now + timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, signed(at), now=now) == "stale"


def test_clerk_judges_staleness_by_the_injected_clock(now: datetime) -> None:
    later = now + timedelta(minutes=10)
    assert rejection(BODY, signed(now), now=later) == "stale"


def test_clerk_narrower_tolerance_setting_is_honoured(now: datetime) -> None:
    at = now - timedelta(seconds=61)
    assert rejection(BODY, signed(at), now=now, tolerance=60) == "stale"


def test_clerk_tolerance_setting_cannot_widen_svix_window(now: datetime) -> None:
    at = now - timedelta(seconds=TOLERANCE + 30)
    assert rejection(BODY, signed(at), now=now, tolerance=3600) == "stale"


def test_clerk_rejects_tampered_body(now: datetime) -> None:
    tampered = BODY.replace(b"Lovelace", b"Byron")
    assert tampered != BODY
    assert rejection(tampered, signed(now), now=now) == "mismatch"


def test_clerk_rejects_signature_from_wrong_secret(now: datetime) -> None:
    wrong = "whsec_" + base64.b64encode(random.token_bytes(24)).decode()
    assert rejection(BODY, signed(now, secret=wrong), now=now) == "mismatch"


def test_clerk_rejects_signature_moved_to_another_message_id(now: datetime) -> None:
    headers = {**signed(now), "svix-id": "msg_someOtherMessage"}
    assert rejection(BODY, headers, now=now) == "mismatch"


def test_clerk_rejects_signature_moved_to_another_timestamp(now: datetime) -> None:
    headers = {**signed(now), "svix-timestamp": str(int(now.timestamp()) - 5)}
    assert rejection(BODY, headers, now=now) == "mismatch"


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
def test_clerk_rejects_missing_header(header: str, now: datetime) -> None:
    headers = signed(now)
    del headers[header]
    assert rejection(BODY, headers, now=now) == "missing_header"


def test_clerk_rejects_empty_signature_header(now: datetime) -> None:
    assert rejection(BODY, {**signed(now), "svix-signature": ""}, now=now) == "missing_header"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("svix-timestamp", "soon", id="non-numeric-timestamp"),
        pytest.param("svix-timestamp", "1763800000.5", id="fractional-timestamp"),
        pytest.param("svix-signature", "v1AAAA", id="entry-without-comma"),
        pytest.param("svix-signature", "v1,AAAA,BBBB", id="entry-with-two-commas"),
        pytest.param("svix-signature", "v2,AAAA", id="no-v1-entry"),
        pytest.param("svix-signature", "v1,AAA", id="bad-base64-padding"),
        pytest.param("svix-signature", "v1,AAAA  v1,BBBB", id="double-space"),
    ],
)
def test_clerk_rejects_malformed_headers(header: str, value: str, now: datetime) -> None:
    assert rejection(BODY, {**signed(now), header: value}, now=now) == "malformed"


def test_clerk_rejects_body_that_is_not_utf8(now: datetime) -> None:
    body = b'{"type": "user.created", "note": "\xff\xfe"}'
    headers = {**signed(now), "svix-signature": "v1,AAAA"}
    assert rejection(body, headers, now=now) == "malformed"


def test_clerk_accepts_signature_from_second_configured_secret(now: datetime) -> None:
    verify(BODY, signed(now, secret=OLD_SECRET), now=now, secrets=(SECRET, OLD_SECRET))


def test_clerk_accepts_header_carrying_old_and_new_signatures(now: datetime) -> None:
    headers = signed(now, secret=OLD_SECRET, extra_secrets=(SECRET,))
    assert headers["svix-signature"].count("v1,") == 2
    verify(BODY, headers, now=now, secrets=(SECRET,))


def test_clerk_skips_a_configured_secret_that_is_not_whsec_base64(now: datetime) -> None:
    verify(BODY, signed(now), now=now, secrets=("whsec_!!not-base64!!", SECRET))


def test_clerk_rejects_everything_when_no_secret_configured(now: datetime) -> None:
    assert rejection(BODY, signed(now), now=now, secrets=()) == "mismatch"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="missing"),
        pytest.param({"type": ""}, id="empty"),
        pytest.param({"type": ["user.created"]}, id="not-a-string"),
    ],
)
def test_clerk_event_without_type_is_a_payload_error(payload: dict[str, Any]) -> None:
    delivery = Delivery(raw=json.dumps(payload).encode(), headers=Headers({"svix-id": MSG_ID}))
    with pytest.raises(PayloadError):
        clerk.events(delivery, payload)


def test_clerk_has_no_handshake() -> None:
    delivery = Delivery(raw=BODY, headers=Headers({"svix-id": MSG_ID}))
    assert clerk.handshake(delivery, clerk.parse(delivery)) is None
