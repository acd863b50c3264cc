"""The registry holds together: every provider module has fixtures for exactly the event types it
handles, and each handled type either has tasks in DISPATCH or is listed as deliberately ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from tasks.dispatch import DISPATCH, IGNORED
from webhooks_gateway.providers import PROVIDERS
from webhooks_gateway.providers.base import Delivery

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _fixture_files(name: str) -> list[Path]:
    return sorted(
        path
        for path in (FIXTURES / name).glob("*")
        if path.suffix in {".json", ".form"} and not path.name.endswith(".headers.json")
    )


def _delivery(path: Path) -> Delivery:
    sidecar = path.with_name(path.name.removesuffix(path.suffix) + ".headers.json")
    headers = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    return Delivery(raw=path.read_bytes(), headers=Headers(headers))


def _event_types(name: str) -> set[str]:
    provider = PROVIDERS[name]
    found: set[str] = set()
    for path in _fixture_files(name):
        delivery = _delivery(path)
        payload = provider.parse(delivery)
        if provider.handshake(delivery, payload) is None:
            found |= {event.event_type for event in provider.events(delivery, payload)}
    return found


def test_every_provider_of_design_md_has_a_module() -> None:
    assert set(PROVIDERS) == {
        "airtable", "calcom", "clerk", "daily", "instantly", "luma", "mailchimp",
        "quickbooks", "sendgrid", "slack", "stripe", "twilio", "zapier",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_fixture_event_types_are_exactly_the_handled_types(name: str) -> None:
    assert _fixture_files(name), f"tests/fixtures/{name}/ has no recorded payloads"
    assert _event_types(name) == PROVIDERS[name].HANDLED_EVENT_TYPES


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_each_handled_type_has_tasks_or_is_listed_as_ignored(name: str) -> None:
    for event_type in PROVIDERS[name].HANDLED_EVENT_TYPES:
        key = (name, event_type)
        assert (key in DISPATCH) != (key in IGNORED), f"{key}: in DISPATCH xor IGNORED"


def test_dispatch_and_ignored_name_only_types_a_provider_handles() -> None:
    for name, event_type in [*DISPATCH, *IGNORED]:
        assert event_type in PROVIDERS[name].HANDLED_EVENT_TYPES, (name, event_type)
