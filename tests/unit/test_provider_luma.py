"""The Luma verifier and event ids as pure functions, on a fixed clock, against the independent signer."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.support.provider_checks import reason_of
from tests.support.sign_luma import sign_luma
from webhooks_gateway.providers import luma
from webhooks_gateway.providers.base import Delivery, FailureReason, PayloadError

NOW = datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)
TOLERANCE = 300
SECRET = "whsec_unit_luma_current_9Kd2Lm4Np6Qr8St0"
OLD_SECRET = "whsec_unit_luma_previous_1Ab3Cd5Ef7Gh9Ij2"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "luma"
BODY = (FIXTURES / "guest.registered.json").read_bytes()


def verify(
    body: bytes,
    headers: dict[str, str],
    *,
    query: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (SECRET,),
) -> None:
    luma.verify(
        Delivery(raw=body, headers=Headers(headers), query=query or {}),
        secrets=[SecretStr(secret) for secret in secrets],
        now=NOW,
        tolerance_seconds=TOLERANCE,
    )


def rejection(body: bytes, headers: dict[str, str], **kwargs: Any) -> FailureReason:
    return reason_of(lambda: verify(body, headers, **kwargs))


def event_id(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload).encode()
    (event,) = luma.events(Delivery(raw=raw, headers=Headers({})), payload)
    return event.event_id


def test_signature_by_any_configured_secret_is_accepted() -> None:
    verify(BODY, sign_luma(BODY, secret=SECRET, at=NOW))
    verify(BODY, sign_luma(BODY, secret=OLD_SECRET, at=NOW), secrets=(SECRET, OLD_SECRET))


@pytest.mark.parametrize("skew", [timedelta(seconds=-TOLERANCE), timedelta(seconds=TOLERANCE)])
def test_signature_at_the_edge_of_the_tolerance_is_accepted(skew: timedelta) -> None:
    verify(BODY, sign_luma(BODY, secret=SECRET, at=NOW + skew))


@pytest.mark.parametrize(
    "skew", [timedelta(seconds=-TOLERANCE - 1), timedelta(seconds=TOLERANCE + 1)]
)
def test_signature_outside_the_tolerance_either_way_is_stale(skew: timedelta) -> None:
    assert rejection(BODY, sign_luma(BODY, secret=SECRET, at=NOW + skew)) == "stale"


def test_a_stale_signature_by_an_unknown_secret_is_a_mismatch_first() -> None:
    headers = sign_luma(BODY, secret="whsec_other", at=NOW - timedelta(hours=1))
    assert rejection(BODY, headers) == "mismatch"


def test_one_matching_v1_among_several_is_enough() -> None:
    headers = sign_luma(BODY, secret=SECRET, at=NOW)
    headers["Webhook-Signature"] = headers["Webhook-Signature"].replace("v1=", "v1=00ff,v1=")
    verify(BODY, headers)


@pytest.mark.parametrize(
    "header",
    ["v1=abc", "t=1,t=2,v1=abc", "t=soon,v1=abc", f"t={int(NOW.timestamp())}", "garbage"],
)
def test_malformed_signature_header_is_refused(header: str) -> None:
    assert rejection(BODY, {"Webhook-Signature": header}) == "malformed"


def test_no_signature_and_no_token_is_a_missing_header() -> None:
    assert rejection(BODY, {"Webhook-Id": "msg_1"}) == "missing_header"


def test_token_decides_when_presented() -> None:
    verify(BODY, {}, query={"token": SECRET})
    verify(BODY, {"Authorization": f"Bearer {OLD_SECRET}"}, secrets=(SECRET, OLD_SECRET))
    signed = sign_luma(BODY, secret=SECRET, at=NOW)
    assert rejection(BODY, signed, query={"token": "nope"}) == "mismatch"


def test_ids_of_the_same_guest_differ_by_state_and_ticket() -> None:
    payload = json.loads(BODY)
    pending = event_id(payload)
    payload["data"]["approval_status"] = "approved"
    assert event_id(payload) != pending
    ticket = json.loads((FIXTURES / "ticket.registered.json").read_bytes())
    first = event_id(ticket)
    ticket["data"]["event_ticket"]["id"] = "evtticket-other"
    assert event_id(ticket) != first


def test_updated_events_end_with_a_digest_of_the_body() -> None:
    raw = (FIXTURES / "event.updated.json").read_bytes()
    payload = json.loads(raw)
    (event,) = luma.events(Delivery(raw=raw, headers=Headers({})), payload)
    assert (
        event.event_id
        == f"event.updated:{payload['data']['id']}:" + hashlib.sha256(raw).hexdigest()[:16]
    )


def test_data_without_an_id_falls_back_to_the_body_hash() -> None:
    assert event_id({"type": "event.created", "data": {"name": "x"}}).startswith("sha256:")


@pytest.mark.parametrize("payload", [{"data": {"id": "x"}}, {"type": "guest.updated", "data": []}])
def test_body_without_type_or_data_object_is_a_payload_error(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        event_id(payload)
