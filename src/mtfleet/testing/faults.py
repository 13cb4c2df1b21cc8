"""Faults a job meets, made on purpose: a full disk, a PostgreSQL server that restarts, a SQLite
store another process locks, a translator slower than the others. The fault and tail tests,
`bench/chaos.py` and `bench/run.py` inject them with these."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from glob import glob
from pathlib import Path

from mtfleet.cluster.translator import FULL_DISK_VARIABLE, SLOW_VARIABLE

FILLER_CHUNK = 1024 * 1024


class FullDisk:
    """A folder whose disk can be filled and freed: a small tmpfs mounted on it when this process
    may mount one, else a switch that makes part writes fail with ENOSPC (`FULL_DISK_VARIABLE`,
    which must be in the environment of the processes that write parts)."""

    def __init__(self, folder: Path, switch: Path, mounted: bool) -> None:
        self.folder, self.switch, self.mounted = folder, switch, mounted
        self.filler = folder / "filler"

    @property
    def environment(self) -> dict[str, str]:
        """What a process writing parts to `folder` needs in its environment."""
        return {FULL_DISK_VARIABLE: str(self.switch)}

    def fill(self) -> None:
        if not self.mounted:
            self.switch.touch()
            return
        with open(self.filler, "wb", buffering=0) as stream:
            for chunk in (FILLER_CHUNK, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        stream.write(b"\0" * chunk)

    def free(self) -> None:
        self.switch.unlink(missing_ok=True)
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def full_disk(folder: Path, switch: Path, size_mb: int = 16) -> Iterator[FullDisk]:
    """`folder` (created empty) on a disk of `size_mb` that the test fills when it chooses."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    disk = FullDisk(folder, switch, mounted)
    try:
        yield disk
    finally:
        disk.free()
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


class SlowTranslators:
    """A switch that makes some translators slow on purpose (a test aid, never for production):
    while it is on, each batch of a translator on device `name` (cpu1, gpu0) or with worker id
    `name` takes `factor` times its own time (`SLOW_VARIABLE`, which must be in the environment
    of the processes that run translators, such as a Ray cluster started after it is set)."""

    def __init__(self, switch: Path) -> None:
        self.switch = switch

    @property
    def environment(self) -> dict[str, str]:
        return {SLOW_VARIABLE: str(self.switch)}

    @contextlib.contextmanager
    def slow(self, name: str, factor: float) -> Iterator[None]:
        """`name`'s translators are `factor` times slower until this exits."""
        self.switch.write_text(f"{name} {factor}\n")
        try:
            yield
        finally:
            self.switch.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayPostgres:
    """A PostgreSQL server of its own in a folder, on a free port, that a test may stop and start."""

    def __init__(self) -> None:
        binaries = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not binaries and not shutil.which("pg_ctl"):
            raise FileNotFoundError("no PostgreSQL binaries (pg_ctl, initdb) on this machine")
        self.bin = Path(binaries[-1]).parent if binaries else Path(shutil.which("pg_ctl")).parent
        # in the temp dir, not a test's private one: the postgres user must reach it
        self.folder = Path(tempfile.mkdtemp(prefix="mtfleet-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the folder becomes the postgres user's
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A server started for the caller, stopped and deleted after."""
    server = ThrowawayPostgres()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


# holds the SQLite file's write lock for `hold_s` seconds, saying "locked" once it has it
_LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


@contextlib.contextmanager
def sqlite_locked(database: Path, hold_s: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds `database`'s write lock (BEGIN EXCLUSIVE) for `hold_s` seconds from
    when this is entered; exiting waits for it to let go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(database), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout is None or holder.stdout.readline().strip() != "locked":
            raise OSError(errno.EIO, f"the lock holder could not lock {database}")
        yield holder
    finally:
        holder.wait()
