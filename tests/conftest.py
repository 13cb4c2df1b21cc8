"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# rich fixes a console's width when it is made if COLUMNS is set, as it is in xdist's workers:
# without it, the CLI's consoles follow the COLUMNS each test's CliRunner gives
os.environ.pop("COLUMNS", None)

# store: the PostgreSQL server on this machine; each test gets a schema of its own
POSTGRES_URL = os.environ.get(
    "MTFLEET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A job store URL, each test run twice: a SQLite file of its own, then a fresh PostgreSQL
    schema (`postgres_store_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_store_url")


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
    """The reverse engine takes 0.2 s a shard, so a job lasts long enough to be disturbed."""
    monkeypatch.setenv("MTFLEET_REVERSE_DELAY_S", "0.2")


# engines: tiny random-weight models in the real Hugging Face layout, built once per session
@pytest.fixture(scope="session")
def tiny_marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Marian model directory (random weights, SentencePiece vocabulary)."""
    from mtfleet.random_models import build_tiny_marian

    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))


@pytest.fixture(scope="session")
def tiny_m2m100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny M2M100 model directory whose tokenizer knows M2M100's language codes."""
    from mtfleet.random_models import build_tiny_m2m100

    return build_tiny_m2m100(tmp_path_factory.mktemp("tiny-m2m100"))
