"""The Stripe verifier against bodies signed independently (tests/signing.py), on a fixed clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

import tasks.dispatch
from tests.signing import sign_stripe
from tests.support.provider_checks import reason_of
from webhooks_gateway.providers import stripe
from webhooks_gateway.providers.base import (
    Delivery,
    FailureReason,
    InboundEvent,
    PayloadError,
)

NOW = datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)
TOLERANCE = 300
SECRET = "whsec_unit_current_Zq3vN8xLp2Rt6Yb1Kd9Hf4Wm"
OLD_SECRET = "whsec_unit_previous_Gc5Js0Ue7Ta2Xn4Qv8Ri3Lo"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
BODY = (FIXTURES / "invoice.paid.json").read_bytes()


def verify(
    body: bytes,
    headers: dict[str, str],
    *,
    secrets: tuple[str, ...] = (SECRET,),
    now: datetime = NOW,
) -> None:
    """Call the verifier the way the gateway does: a case-insensitive header mapping."""
    stripe.verify(
        Delivery(raw=body, headers=Headers(headers)),
        secrets=[SecretStr(secret) for secret in secrets],
        now=now,
        tolerance_seconds=TOLERANCE,
    )


def _events(payload: dict[str, Any]) -> list[InboundEvent]:
    raw = json.dumps(payload).encode()
    return stripe.events(Delivery(raw=raw, headers=Headers({})), payload)


def rejection(body: bytes, headers: dict[str, str], **kwargs: Any) -> FailureReason:
    return reason_of(lambda: verify(body, headers, **kwargs))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_stripe_accepts_fixture_signed_with_configured_secret(path: Path) -> None:
    body = path.read_bytes()
    verify(body, sign_stripe(body, secret=SECRET, at=NOW))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_stripe_reads_fixture_event_id_and_type(path: Path) -> None:
    body = path.read_bytes()
    payload = json.loads(body)
    (event,) = _events(payload)
    assert event.event_id.startswith("evt_Fixture")
    assert event.event_type == path.stem
    assert event.body == json.dumps(payload).encode()


def test_stripe_fixtures_cover_exactly_the_handled_event_types() -> None:
    assert {path.stem for path in FIXTURE_FILES} == stripe.HANDLED_EVENT_TYPES


def test_stripe_handled_event_types_each_dispatch_to_a_task() -> None:
    for event_type in sorted(stripe.HANDLED_EVENT_TYPES):
        assert tasks.dispatch.DISPATCH.get((stripe.NAME, event_type)), event_type


def test_stripe_fixture_event_ids_are_unique() -> None:
    ids = [json.loads(path.read_bytes())["id"] for path in FIXTURE_FILES]
    assert len(set(ids)) == len(ids)


def test_stripe_accepts_signature_within_tolerance_either_side() -> None:
    for skew in (TOLERANCE, -TOLERANCE, 60, -60):
        at = NOW - timedelta(seconds=skew)
        verify(BODY, sign_stripe(BODY, secret=SECRET, at=at))


def test_stripe_rejects_tampered_body() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW)
    tampered = BODY.replace(b'"amount_paid": 1000', b'"amount_paid": 1')
    assert tampered != BODY
    assert rejection(tampered, headers) == "mismatch"


def test_stripe_rejects_body_with_trailing_whitespace_added() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW)
    assert rejection(BODY + b"\n", headers) == "mismatch"


def test_stripe_rejects_signature_from_wrong_secret() -> None:
    headers = sign_stripe(BODY, secret="whsec_someone_elses_secret", at=NOW)
    assert rejection(BODY, headers) == "mismatch"


def test_stripe_rejects_signature_replayed_under_another_timestamp() -> None:
    earlier = NOW - timedelta(seconds=10)
    signed = sign_stripe(BODY, secret=SECRET, at=earlier)
    old_t, new_t = f"t={int(earlier.timestamp())}", f"t={int(NOW.timestamp())}"
    moved = signed["Stripe-Signature"].replace(old_t, new_t)
    assert moved != signed["Stripe-Signature"]
    assert rejection(BODY, {**signed, "Stripe-Signature": moved}) == "mismatch"


def test_stripe_rejects_stale_signature() -> None:
    at = NOW - timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, sign_stripe(BODY, secret=SECRET, at=at)) == "stale"


def test_stripe_rejects_signature_from_the_future() -> None:
    at = NOW + timedelta(seconds=TOLERANCE + 1)
    assert rejection(BODY, sign_stripe(BODY, secret=SECRET, at=at)) == "stale"


def test_stripe_rejects_missing_signature_header() -> None:
    assert rejection(BODY, {"Content-Type": "application/json"}) == "missing_header"


def test_stripe_rejects_empty_signature_header() -> None:
    assert rejection(BODY, {"Stripe-Signature": ""}) == "missing_header"


def test_stripe_reads_signature_header_case_insensitively() -> None:
    signed = sign_stripe(BODY, secret=SECRET, at=NOW)
    verify(BODY, {"STRIPE-SIGNATURE": signed["Stripe-Signature"]})


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda header: header.split(",", 1)[1], id="no-timestamp"),
        pytest.param(lambda header: header.split(",", 1)[0], id="no-v1"),
        pytest.param(
            lambda header: header.replace("v1=", "v0=", 1),
            id="only-other-scheme",
        ),
        pytest.param(
            lambda header: "t=soon," + header.split(",", 1)[1],
            id="non-numeric-timestamp",
        ),
        pytest.param(
            lambda header: header.split(",", 1)[0] + "," + header,
            id="two-timestamps",
        ),
    ],
)
def test_stripe_rejects_malformed_signature_header(mangle: Callable[[str], str]) -> None:
    header = sign_stripe(BODY, secret=SECRET, at=NOW)["Stripe-Signature"]
    assert rejection(BODY, {"Stripe-Signature": mangle(header)}) == "malformed"


def test_stripe_rejects_body_that_is_not_utf8() -> None:
    body = b'{"id": "evt_x", "note": "\xff\xfe"}'
    assert rejection(body, sign_stripe(body, secret=SECRET, at=NOW)) == "malformed"


def test_stripe_accepts_signature_from_second_configured_secret() -> None:
    headers = sign_stripe(BODY, secret=OLD_SECRET, at=NOW)
    verify(BODY, headers, secrets=(SECRET, OLD_SECRET))


def test_stripe_accepts_signature_from_first_configured_secret_during_rotation() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW)
    verify(BODY, headers, secrets=(SECRET, OLD_SECRET))


def test_stripe_accepts_header_with_two_signatures_when_only_new_secret_configured() -> None:
    headers = sign_stripe(BODY, secret=OLD_SECRET, at=NOW, extra_secrets=(SECRET,))
    assert headers["Stripe-Signature"].count("v1=") == 2
    verify(BODY, headers, secrets=(SECRET,))


def test_stripe_accepts_header_with_two_signatures_when_only_old_secret_configured() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW, extra_secrets=(OLD_SECRET,))
    verify(BODY, headers, secrets=(OLD_SECRET,))


def test_stripe_rejects_header_with_two_signatures_when_neither_secret_configured() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW, extra_secrets=(OLD_SECRET,))
    assert rejection(BODY, headers, secrets=("whsec_unrelated",)) == "mismatch"


def test_stripe_rejects_everything_when_no_secret_configured() -> None:
    headers = sign_stripe(BODY, secret=SECRET, at=NOW)
    assert rejection(BODY, headers, secrets=()) == "mismatch"


def test_stripe_event_id_returns_evt_id() -> None:
    (event,) = _events({"id": "evt_1SW3oxHvJ8qLmN2b", "type": "invoice.paid"})
    assert event.event_id == "evt_1SW3oxHvJ8qLmN2b"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="missing"),
        pytest.param({"id": None}, id="null"),
        pytest.param({"id": ""}, id="empty"),
        pytest.param({"id": 42}, id="not-a-string"),
        pytest.param({"id": "in_1SW3oxHvJ8qLmN2b"}, id="not-an-event-id"),
        pytest.param({"id": "EVT_1SW3oxHvJ8qLmN2b"}, id="wrong-case-prefix"),
    ],
)
def test_stripe_event_id_rejects_missing_or_non_evt_id(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        _events({**payload, "type": "invoice.paid"})


def test_stripe_event_type_returns_type() -> None:
    (event,) = _events({"id": "evt_1", "type": "invoice.paid"})
    assert event.event_type == "invoice.paid"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="missing"),
        pytest.param({"type": None}, id="null"),
        pytest.param({"type": ""}, id="empty"),
        pytest.param({"type": ["invoice.paid"]}, id="not-a-string"),
    ],
)
def test_stripe_event_type_rejects_missing_type(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        _events({"id": "evt_1", **payload})
