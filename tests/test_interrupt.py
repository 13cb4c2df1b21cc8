"""Ctrl-C on `mtfleet translate`: the job is paused, the user is told where it stands, and the same
command resumes it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from mtfleet.store import JobState, JobStore
from mtfleet.testing.cluster import wait_for


def command(source: Path, output: Path, state: Path) -> list[str]:
    return [
        sys.executable, "-m", "mtfleet.cli.main", "translate", str(source), "--model", "none",
        "--engine", "reverse", "--fields", "text", "--output", str(output), "--shard-tokens", "16",
        "--state-dir", str(state),
    ]  # fmt: skip


def as_at_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a process started by one that ignores SIGINT (as some
    test runners' workers do) inherits the ignoring, and Python then raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def shards_done(store_url: str) -> int:
    with JobStore(store_url) as store:
        jobs = store.jobs.all()
        return store.counters.progress(jobs[0].id)["shards"]["done"] if jobs else 0


def test_ctrl_c_pauses_the_job_says_where_it_stands_and_a_rerun_resumes_it(
    tmp_path: Path,
) -> None:
    rows = [{"text": f"Sentence number {i:02d} is a plain line of words here"} for i in range(30)]
    source, output, state = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "state"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store_url = f"sqlite:///{state / 'jobs.db'}"
    env = {**os.environ, "MTFLEET_REVERSE_DELAY_S": "0.3"}

    running = subprocess.Popen(
        command(source, output, state),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_at_a_terminal,
    )
    wait_for(lambda: (state / "jobs.db").exists() and shards_done(store_url) >= 2, timeout_s=300)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=120)

    assert running.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: job ") and last.endswith(
        "rows; rerun the same command to resume"
    ), stderr
    with JobStore(store_url) as store:
        (job,) = store.jobs.all()
        assert job.state is JobState.PAUSED
        done = store.counters.progress(job.id)["rows_done"]
    # shards already being translated when the job paused may still complete
    reported = int(re.search(r"paused after (\d+) of 30 rows", last).group(1))
    assert 0 < reported <= done < 30
    assert not output.exists()

    rerun = subprocess.run(
        command(source, output, state), env={**env, "MTFLEET_REVERSE_DELAY_S": "0"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert rerun.returncode == 0, rerun.stderr
    assert len(output.read_text().splitlines()) == 30
