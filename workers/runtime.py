"""Per-process state of a worker: its settings and database sessions, made lazily after the fork."""

from __future__ import annotations

from functools import cache

import redis as redis_client
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


@cache
def redis() -> redis_client.Redis:
    """Attempt counters and alert debouncing; the REDIS_URL even when the broker is another."""
    return redis_client.Redis.from_url(
        settings().redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )


def reset_after_fork() -> None:
    """A forked child must not share the parent's pooled connections."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    engine.cache_clear()
    sessions.cache_clear()
    redis.cache_clear()
