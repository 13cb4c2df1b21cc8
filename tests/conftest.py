"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# store: the PostgreSQL server on this machine; each test gets a schema of its own
POSTGRES_URL = os.environ.get(
    "MTFLEET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_store_url() -> Iterator[str]:
    """A job store URL whose tables live in a fresh PostgreSQL schema, dropped after the test."""
    import psycopg

    schema = f"mtfleet_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = str(exc).splitlines()[0]
        pytest.skip(f"the PostgreSQL server at {POSTGRES_URL} is unreachable: {reason}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            separator = "&" if "?" in POSTGRES_URL else "?"
            yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


# cluster: Ray workers inherit the environment of the process that starts the test cluster
@pytest.fixture
def slow_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reverse engine takes 50 ms a shard, so a job lasts long enough to be disturbed."""
    monkeypatch.setenv("MTFLEET_REVERSE_DELAY_S", "0.05")
