"""What every `hookfleet` subcommand needs: settings, a database for the command, who is acting."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from schemas.db import make_engine
from schemas.settings import Settings


def cli_actor() -> str:
    """The audit actor of a terminal command: `cli:<login>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container with no passwd entry and no USER/LOGNAME
        return "cli:unknown"


@contextmanager
def cli_sessions() -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    settings = Settings()
    engine = make_engine(settings)
    try:
        yield settings, sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()
