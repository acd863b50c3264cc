"""Per-process state of a worker: its settings and database sessions, made lazily after the fork."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import make_engine
from schemas.settings import Settings


@cache
def settings() -> Settings:
    return Settings()


@cache
def engine() -> Engine:
    return make_engine(settings())


@cache
def sessions() -> sessionmaker[Session]:
    return sessionmaker(engine(), expire_on_commit=False)


def reset_after_fork() -> None:
    """A forked child must not share the parent's pooled connections."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    engine.cache_clear()
    sessions.cache_clear()
