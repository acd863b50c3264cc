"""Scratch databases on the shared PostgreSQL: created, migrated, and dropped however the user ends."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from schemas.migrate import upgrade
from schemas.settings import Settings

SHARED_POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """The URL of a new database named `<prefix>_<random>`, at the latest migration."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SHARED_POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{SHARED_POSTGRES}/{name}"
    try:
        upgrade(Settings(_env_file=None, database_url=url))
        yield url
    finally:
        with psycopg.connect(f"{SHARED_POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
