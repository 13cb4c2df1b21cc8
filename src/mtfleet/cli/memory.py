"""`mtfleet memory`: the store's translation memory, looked at, shared and cleared."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mtfleet.cli import options
from mtfleet.cli.output import fail, out
from mtfleet.errors import MtfleetError
from mtfleet.spec import DEFAULT_STATE_DIR
from mtfleet.store.memory import TranslationMemory

memory_app = typer.Typer(
    help="The translation memory every job of a store shares: stats, export, import, clear.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
ParquetFile = Annotated[Path, typer.Argument(help="A Parquet file of the memory's entries.")]


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")


@contextmanager
def _memory(state_dir: Path, store: str | None) -> Iterator[TranslationMemory]:
    from mtfleet.cluster.job import store_url_for
    from mtfleet.store import JobStore

    try:
        with JobStore(store_url_for(state_dir.expanduser().resolve(), store)) as jobs_store:
            yield TranslationMemory(jobs_store)
    except MtfleetError as error:
        raise fail(error) from None


@memory_app.command()
def stats(state_dir: options.StateDir = DEFAULT_STATE_DIR, store: options.Store = None) -> None:
    """How many entries the memory holds (segments, and the whole texts planning fills), under
    how many keys (models and settings), and its size."""
    from mtfleet.cluster.retention import format_bytes

    with _memory(state_dir, store) as memory:
        found = memory.stats()
    out.print(
        f"{found.entries:,} entries (segments and whole texts), {found.signatures:,} keys, "
        f"{format_bytes(found.bytes)}",
        highlight=False,
    )


@memory_app.command("export")
def export_(
    path: ParquetFile,
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
) -> None:
    """Write every entry to a Parquet file, for another store (`mtfleet memory import`)."""
    with _memory(state_dir, store) as memory:
        try:
            written = memory.export(path)
        except OSError as error:
            raise fail(MtfleetError(f"Cannot write {path}: {error.strerror}.")) from None
    out.print(f"{written:,} entries written to {path}", highlight=False)


@memory_app.command("import")
def import_(
    path: ParquetFile,
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
) -> None:
    """Add the entries of a Parquet file written by `mtfleet memory export`."""
    import pyarrow as pa

    with _memory(state_dir, store) as memory:
        try:
            read = memory.import_(path)
        except (OSError, pa.ArrowException, ValueError) as error:
            raise fail(MtfleetError(f"Cannot import {path}: {error}")) from None
    out.print(f"{read:,} entries imported from {path}", highlight=False)


@memory_app.command()
def clear(
    yes: Annotated[bool, typer.Option("--yes", help="Clear it: without, nothing is done.")] = False,
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
) -> None:
    """Forget every entry of the memory (jobs then translate everything again)."""
    if not yes:
        raise fail(MtfleetError("Clearing the translation memory needs --yes."))
    with _memory(state_dir, store) as memory:
        cleared = memory.clear()
    out.print(f"{cleared:,} entries forgotten", highlight=False)
