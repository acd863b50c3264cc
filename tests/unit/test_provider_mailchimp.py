"""The Mailchimp token check, GET handshake and composite ids as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from webhooks_gateway.providers import mailchimp
from webhooks_gateway.providers.base import Delivery, PayloadError, SignatureError

TOKEN = "unit-mailchimp-token-7Hq2Lx9"


def _delivery(pairs: list[tuple[str, str]], method: str = "POST") -> Delivery:
    return Delivery(raw=urlencode(pairs).encode(), headers=Headers({}), method=method)


def _event_id(pairs: list[tuple[str, str]]) -> str:
    delivery = _delivery(pairs)
    (event,) = mailchimp.events(delivery, mailchimp.parse(delivery))
    return event.event_id


def test_token_in_the_query_is_required() -> None:
    def verify(query: dict[str, str]) -> None:
        mailchimp.verify(
            Delivery(raw=b"", headers=Headers({}), query=query),
            secrets=[SecretStr(TOKEN)],
            now=datetime.now(UTC),
            tolerance_seconds=300,
        )

    verify({"token": TOKEN})
    with pytest.raises(SignatureError, match="mismatch"):
        verify({"token": TOKEN + "x"})
    with pytest.raises(SignatureError, match="missing_header"):
        verify({})


def test_get_is_the_url_validation_handshake() -> None:
    delivery = _delivery([], method="GET")
    reply = mailchimp.handshake(delivery, mailchimp.parse(delivery))
    assert reply is not None
    assert reply.status == 200
    assert reply.body is None
    assert mailchimp.handshake(_delivery([("type", "subscribe")]), {}) is None


def test_cleaned_address_is_identified_by_its_lowercased_email() -> None:
    pairs = [("type", "cleaned"), ("fired_at", "2009-03-26 22:01:00"), ("data[list_id]", "L1")]
    assert _event_id([*pairs, ("data[email]", " Api@MailChimp.com ")]) == (
        "cleaned:2009-03-26 22:01:00:L1:api@mailchimp.com"
    )


def test_email_change_is_identified_by_the_new_member_id() -> None:
    pairs = [("type", "upemail"), ("fired_at", "2009-03-26 22:15:09"), ("data[list_id]", "L1")]
    assert _event_id([*pairs, ("data[new_id]", "51da8c3259")]) == (
        "upemail:2009-03-26 22:15:09:L1:51da8c3259"
    )


@pytest.mark.parametrize(
    "pairs",
    [
        [("type", "subscribe"), ("data[id]", "8a25ff1d98")],
        [("type", "subscribe"), ("fired_at", "2009-03-26 21:35:57")],
        [("type", "subscribe"), ("fired_at", "x"), ("data[id]", "y" * 300)],
    ],
    ids=["no-fired-at", "no-member", "too-long"],
)
def test_body_without_the_composite_parts_falls_back_to_its_hash(
    pairs: list[tuple[str, str]],
) -> None:
    assert _event_id(pairs).startswith("sha256:")


def test_body_without_type_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        _event_id([("fired_at", "2009-03-26 21:35:57"), ("data[id]", "8a25ff1d98")])
