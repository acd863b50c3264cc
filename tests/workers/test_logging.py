"""Log set-up: uvicorn's loggers go through our JSON handler, and what uvicorn switched off stays off."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import uvicorn

from workers.logging import configure_logging

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
