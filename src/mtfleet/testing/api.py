"""The API for tests: served in a thread of this process, or as `mtfleet serve` in a process."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping

import httpx
import uvicorn

from mtfleet.api.server import ServerSettings, create_app
from mtfleet.testing.cluster import wait_for


@contextlib.contextmanager
def serving(settings: ServerSettings) -> Iterator[str]:
    """The API on a free loopback port, in a thread of this process; yields its URL. It starts
    (or joins) Ray as `settings` say and stops what it started when it ends."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s=120)
        assert server.started, "the API did not start"
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        listener.close()


@contextlib.contextmanager
def authorized(url: str, token: str) -> Iterator[httpx.Client]:
    """An HTTP client of the API at `url` that sends `token` with every call."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client


@dataclasses.dataclass(frozen=True)
class ConsoleRun:
    """What one `mtfleet` command printed, and its exit status."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# the console's commands alone, as `mtfleet` registers them
CONSOLE = "import typer; from mtfleet.cli import console; app = typer.Typer(); console.register(app); app()"


def run_console(api: str, token: str, *args: str, columns: int = 200) -> ConsoleRun:
    """`mtfleet ARGS` against the API at `api`, in a process of its own as a user runs it.

    Not in this process: a test's API serves from this process, and Ray's driver here prints its
    raylet's errors (a translator that died) to whatever sys.stdout is at that moment, which an
    in-process CLI runner would have taken for the command's output.
    """
    env = {**os.environ, "MTFLEET_API": api, "MTFLEET_API_TOKEN": token, "COLUMNS": str(columns)}
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    return ConsoleRun(done.returncode, done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_process(
    port: int, *options: str, env: Mapping[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """`mtfleet serve --port PORT OPTIONS` in a process of its own, once its /healthz answers;
    the test ends it (a signal) and reads its output with `communicate`."""
    command = [
        sys.executable,
        "-c",
        CONSOLE,
        "serve",
        "--port",
        str(port),
        *options,
    ]
    server = subprocess.Popen(
        command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_for(lambda: server.poll() is not None or answers(url), timeout_s=120)
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=60)


def answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False
