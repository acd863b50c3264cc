"""Log set-up: uvicorn's loggers go through our JSON handler, and what uvicorn switched off stays off."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
import structlog
import uvicorn

from workers.logging import configure_logging, get_logger

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in UVICORN_LOGGERS
    }
    yield
    structlog.reset_defaults()
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_no_access_log_stays_off_after_the_app_configures_logging() -> None:
    # uvicorn applies --no-access-log before it loads the app factory, which configures logging.
    uvicorn.Config("tests:app", access_log=False).configure_logging()
    configure_logging("INFO", json=True)
    # uvicorn's HTTP protocol logs an access line per request exactly when this is true.
    assert not logging.getLogger("uvicorn.access").hasHandlers()


def test_uvicorn_lines_go_through_our_handler_when_enabled() -> None:
    uvicorn.Config("tests:app", access_log=True).configure_logging()
    configure_logging("INFO", json=True)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        assert logger.handlers == []
        assert logger.propagate
    assert logging.getLogger("uvicorn.access").hasHandlers()


def test_our_lines_and_library_lines_are_json_on_the_stream_given_at_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = get_logger("webhooks_gateway.ingest")  # created at import, before the set-up
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json=True)
    # Celery swaps sys.stderr for a proxy that logs what is written: lines must not go there.
    monkeypatch.setattr(sys, "stderr", io.StringIO())

    log.info("webhook.received", inbox_id=7, signature="t=1,v1=abc")
    log.debug("provider.not_configured", service="mailchimp")
    logging.getLogger("celery.worker").warning("lost %s", "connection")

    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("webhook.received", "info", "webhooks_gateway.ingest"),
        ("lost connection", "warning", "celery.worker"),
    ]
    assert lines[0]["inbox_id"] == 7
    assert lines[0]["signature"] == "[redacted]"
    assert all("timestamp" in line for line in lines)
