"""A soak of the service: whether `mtfleet serve` can be left running for months (issue 24).

`mtfleet serve` runs as a real process (its own local Ray cluster) with a short `--retain`. Small
jobs are submitted over time through the Python client (`mtfleet.Client`), and a seeded random
share of them is paused and resumed, cancelled (half of those submitted again later, which goes
on from their done shards), or deleted once finished (`DELETE /v1/jobs/{id}`); the rest are left
to the server's retention. Every few seconds the soak records the server's RSS (and its whole
process tree's: Ray's GCS, raylet and workers), the state dir's size and the Ray actors alive
(worker processes titled `ray::Class`, by class), and it counts every answer of 500 or more.
Every job that succeeds has its output compared, byte for byte, with a clean run of the same spec
(`run_job` in this process, before the server starts, on a cluster of its own).

What it reports: each measure's mean and peak while the first WINDOW jobs were submitted against
while the last WINDOW were, and their ratio (flat is 1.0), in a table, bench/results/soak.json and
soak.png. Jobs run the reverse engine (no model; each call slowed by MTFLEET_REVERSE_DELAY_S, so
that pause and cancel find jobs running): the soak is of the service, not of a model.

    .venv/bin/python bench/soak.py                                  # 200 jobs over 20 minutes
    .venv/bin/python bench/soak.py --jobs 60 --minutes 6 --window 20
"""

from __future__ import annotations

import argparse
import heapq
import importlib.metadata
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import psutil

from mtfleet import Client, Job
from mtfleet.errors import ApiError
from mtfleet.testing.api import answers, free_port
from mtfleet.testing.cluster import wait_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
CHART = ROOT / "bench" / "results" / "soak.png"
TOKEN = "soak-token-7e3b91c04d5a-26f8e1b9c37d"
ENDED = ("succeeded", "failed", "cancelled")
# input files the jobs draw from: (rows, a word that sets them apart)
VARIANTS = [(8, "harbour"), (12, "lantern"), (16, "meadow"), (20, "orchard"), (24, "quarry")]
SHARD_TOKENS = 48
# the share of jobs paused (then resumed), cancelled (half of them submitted again), deleted
PAUSED, CANCELLED, DELETED = 0.2, 0.15, 0.15
POLL_S = 1.0
# Ray's own processes under a `ray::` title, which are no actor of mtfleet's
RAY_OWN = {"DashboardAgent", "RuntimeEnvAgent"}
# what Ray puts before a worker's lines in the driver's output: colours, `(Translator pid=12) `
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_PREFIX = re.compile(r"^\([^)]*\) ?")
# a job refused for --max-jobs (429) is submitted again this much later
REFUSED_AGAIN_S = 5.0
MEASURES = {
    "server_rss_mb": "server RSS MB",
    "tree_rss_mb": "server + Ray RSS MB",
    "state_dir_mb": "state dir MB",
    "actors": "Ray actors",
}


def rows_of(count: int, word: str) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": f"Line {i} of the {word} set: the fleet translates every word of it."}
        for i in range(count)
    ]


def job_spec(variant: int, output: str, job_id: str, memory: bool) -> dict[str, Any]:
    return {
        "input": f"in/v{variant}.jsonl",
        "output": output,
        "fields": ["text"],
        "model": "reverse",
        "engine": "reverse",
        "shard_tokens": SHARD_TOKENS,
        "job_id": job_id,
        "memory": memory,
    }


def prepare(root: Path) -> None:
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "clean").mkdir()
    for variant, (count, word) in enumerate(VARIANTS):
        lines = "".join(json.dumps(row) + "\n" for row in rows_of(count, word))
        (root / "in" / f"v{variant}.jsonl").write_text(lines)


def clean_runs(root: Path, state_dir: Path) -> dict[int, bytes]:
    """Each input's output from a job run alone, without the memory, on a cluster of its own."""
    import ray

    from mtfleet.cluster.job import run_job
    from mtfleet.cluster.runtime import connect
    from mtfleet.spec import JobSpec

    connect()
    try:
        outputs = {}
        for variant in range(len(VARIANTS)):
            output = root / "clean" / f"v{variant}.jsonl"
            spec = job_spec(variant, str(output), f"clean-{variant}", memory=False)
            spec["input"] = str(root / spec["input"])
            job_id = spec.pop("job_id")
            result = run_job(JobSpec(**spec), state_dir=state_dir, job_id=job_id)
            assert result.state == "succeeded", result.error
            outputs[variant] = output.read_bytes()
        return outputs
    finally:
        ray.shutdown()


@dataclass
class SoakJob:
    index: int
    variant: int
    memory: bool
    delete: bool
    id: str = field(init=False)
    state: str | None = None
    submitted: bool = False
    ended_as: list[str] = field(default_factory=list)
    output_equal: bool | None = None
    deleted: bool = False
    gone: bool = False

    def __post_init__(self) -> None:
        self.id = f"soak-{self.index:04d}"

    @property
    def output(self) -> str:
        return f"out/{self.id}.jsonl"


class Soak:
    """The soak's clock, its schedule of actions and what it saw."""

    def __init__(self, client: Client, root: Path, args: argparse.Namespace) -> None:
        self.client, self.root, self.args = client, root, args
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.schedule: list[tuple[float, int, str, int]] = []
        self.sequence = 0
        # per job, the actions still to come: a job is done once it ended with none left
        self.pending: Counter[int] = Counter()
        self.jobs = [self._draw(index) for index in range(args.jobs)]
        self.statuses: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.submitted = 0
        # the server's jobs by state, as last listed
        self.listed: Counter[str] = Counter()

    def _draw(self, index: int) -> SoakJob:
        job = SoakJob(
            index,
            variant=self.rng.randrange(len(VARIANTS)),
            memory=self.rng.random() < 0.5,
            delete=self.rng.random() < DELETED,
        )
        spacing = 60 * self.args.minutes / self.args.jobs
        at = index * spacing + self.rng.uniform(0, spacing)
        self.at(at, "submit", index)
        fate = self.rng.random()
        if fate < PAUSED:
            pause = at + self.rng.uniform(0.5, 3)
            self.at(pause, "pause", index)
            self.at(pause + self.rng.uniform(1, 6), "resume", index)
        elif fate < PAUSED + CANCELLED:
            cancel = at + self.rng.uniform(0.5, 4)
            self.at(cancel, "cancel", index)
            if self.rng.random() < 0.5:
                self.at(cancel + self.rng.uniform(2, 15), "submit", index)
        return job

    def at(self, seconds: float, action: str, index: int) -> None:
        self.sequence += 1
        heapq.heappush(self.schedule, (seconds, self.sequence, action, index))
        self.pending[index] += 1

    def now(self) -> float:
        return time.monotonic() - self.started

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        """`action`'s answer, or the ApiError it was refused with; answers are counted by status,
        and those of 500 or more (or none at all) kept."""
        try:
            answer = action()
        except ApiError as error:
            status = error.status or 0
            self.statuses[str(status)] += 1
            if status >= 500 or status == 0:
                self.server_errors.append(f"{what}: {status} {error}")
            return error
        self.statuses["2xx"] += 1
        return answer

    def due(self) -> None:
        while self.schedule and self.schedule[0][0] <= self.now():
            _, _, action, index = heapq.heappop(self.schedule)
            self.pending[index] -= 1
            self.act(action, self.jobs[index])

    def act(self, action: str, job: SoakJob) -> None:
        if action == "submit":
            spec = job_spec(job.variant, job.output, job.id, job.memory)
            answer = self.call(f"submit {job.id}", lambda: self.client.submit(**spec))
            if isinstance(answer, ApiError) and answer.status == 429:
                self.at(self.now() + REFUSED_AGAIN_S, "submit", job.index)
                return
            self.submitted += not job.submitted
            job.submitted = True
            if isinstance(answer, ApiError):
                job.ended_as.append(f"refused ({answer.status})")
                job.gone = True
            else:
                job.state, job.gone = answer.state, False
            return
        self.call(f"{action} {job.id}", getattr(self.steer(job), action))

    def steer(self, job: SoakJob) -> Job:
        """The job by its id, without asking for its view first (a pruned job has none)."""
        return Job(self.client, {"id": job.id, "state": job.state})

    def poll(self, clean: dict[int, bytes]) -> None:
        listed = self.call("list", self.client.jobs)
        if isinstance(listed, ApiError):
            return
        seen = {found.id: found.state for found in listed}
        self.listed = Counter(seen.values())
        for job in self.jobs:
            if not job.submitted or job.gone:
                continue
            state = seen.get(job.id)
            if state is None:
                # pruned by --retain, or deleted by us: either way after it ended
                job.gone = True
                continue
            if state in ENDED and job.state not in ENDED:
                job.ended_as.append(state)
                if state == "succeeded":
                    output = self.root / job.output
                    job.output_equal = output.read_bytes() == clean[job.variant]
            job.state = state
            if state in ENDED and not self.pending[job.index] and job.delete and not job.deleted:
                answer = self.call(f"delete {job.id}", self.steer(job).delete)
                job.deleted = not isinstance(answer, ApiError)

    def settled(self) -> bool:
        return not self.schedule and all(
            job.submitted and (job.gone or job.state in ENDED) for job in self.jobs
        )


def tree_of(server: psutil.Process) -> list[psutil.Process]:
    try:
        return [server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample(server: psutil.Process, state_dir: Path) -> dict[str, Any]:
    """The server's RSS and its tree's, the state dir's size, and the actors alive by class."""
    rss: dict[int, int] = {}
    workers: Counter[str] = Counter()
    for process in tree_of(server):
        try:
            rss[process.pid] = process.memory_info().rss
            title = process.cmdline()[0] if process.cmdline() else ""
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        # Ray titles an actor's worker `ray::Class` (`ray::Class.method` while it runs one), a
        # task's `ray::function`, its own agents `ray::DashboardAgent`, an idle one `ray::IDLE`
        if title.startswith("ray::"):
            workers[title.removeprefix("ray::").split()[0].split(".")[0]] += 1
    actors = {
        name: count
        for name, count in workers.items()
        if name[0].isupper() and name not in RAY_OWN and name != "IDLE"
    }
    return {
        "server_rss_mb": round(rss.get(server.pid, 0) / 2**20, 1),
        "tree_rss_mb": round(sum(rss.values()) / 2**20, 1),
        "state_dir_mb": round(folder_bytes(state_dir) / 2**20, 3),
        "actors": sum(actors.values()),
        "ray_workers": dict(sorted(workers.items())),
    }


def state_dir_parts(state_dir: Path) -> dict[str, float]:
    """The state dir's size by what lies at its top (the job store, the memory, the jobs' work
    files), in MB."""
    return {
        entry.name: round(
            (folder_bytes(entry) if entry.is_dir() else entry.lstat().st_size) / 2**20, 3
        )
        for entry in sorted(state_dir.iterdir())
    }


def folder_bytes(folder: Path) -> int:
    total = 0
    for path, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(path) / name).lstat().st_size
            except FileNotFoundError:  # removed by the server while counted
                continue
    return total


def start_server(
    root: Path, state_dir: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    """`mtfleet serve` in a process of its own, once its /healthz answers; its output goes to
    server.log beside the state dir."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("mtfleet")), "serve", "--port", str(port)]
    command += ["--data-root", str(root), "--state-dir", str(state_dir), "--retain", args.retain]
    env = {**os.environ, "MTFLEET_API_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    env["MTFLEET_REVERSE_DELAY_S"] = str(args.delay)
    log = state_dir.parent / "server.log"
    with log.open("wb") as written:
        server = subprocess.Popen(command, env=env, stdout=written, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.poll() is not None or answers(f"{url}/healthz"), timeout_s=180)
    if server.poll() is not None:
        raise SystemExit(f"mtfleet serve ended at once:\n{log.read_text()}")
    return server, url


def windows(samples: list[dict[str, Any]], jobs: int, window: int) -> dict[str, Any]:
    """Each measure's mean and peak over the samples taken while the first `window` jobs were
    submitted, and while the last `window` were (up to the last submission)."""
    submitting = [s for s in samples if s["phase"] == "submitting"]
    first = [s for s in submitting if 0 < s["submitted"] <= window]
    last = [s for s in submitting if s["submitted"] > jobs - window]
    after_first = [s for s in submitting if s["submitted"] > window]
    summary = {}
    for measure in MEASURES:
        a = [s[measure] for s in first] or [0.0]
        b = [s[measure] for s in last] or [0.0]
        summary[measure] = {
            "first_mean": round(mean(a), 2),
            "first_max": max(a),
            "last_mean": round(mean(b), 2),
            "last_max": max(b),
            "last_vs_first": round(mean(b) / mean(a), 3) if mean(a) else None,
            "per_100_jobs_after_first": slope_per_100_jobs(after_first, measure),
        }
    return {"first_samples": len(first), "last_samples": len(last), "measures": summary}


def chart(samples: list[dict[str, Any]], jobs: int, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(MEASURES), 1, figsize=(8, 8), sharex=True)
    minutes = [s["t"] / 60 for s in samples]
    submitting = [s for s in samples if s["phase"] == "submitting"]
    first = [s["t"] / 60 for s in submitting if 0 < s["submitted"] <= window]
    last = [s["t"] / 60 for s in submitting if s["submitted"] > jobs - window]
    for axis, measure in zip(axes, MEASURES, strict=True):
        axis.plot(minutes, [s[measure] for s in samples], linewidth=1.2)
        axis.set_ylabel(MEASURES[measure], fontsize=8)
        axis.set_ylim(bottom=0)
        for span, color in ((first, "tab:green"), (last, "tab:orange")):
            if span:
                axis.axvspan(span[0], span[-1], color=color, alpha=0.15)
    axes[-1].set_xlabel(
        f"minutes (green: while the first {window} jobs were submitted; orange: the last {window})"
    )
    axes[0].set_title(f"Soak: {jobs} jobs through mtfleet serve with a short --retain")
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root, state_dir = work / "root", work / "state"
    prepare(root)
    clean = clean_runs(root, work / "clean-state")
    server, url = start_server(root, state_dir, args)
    process = psutil.Process(server.pid)
    samples: list[dict[str, Any]] = []

    def measure(run: Soak, phase: str) -> None:
        active = [j for j in run.jobs if j.submitted and not j.gone and j.state not in ENDED]
        samples.append(
            {
                "t": round(run.now(), 1),
                "phase": phase,
                "submitted": run.submitted,
                "active": len(active),
                "states": dict(sorted(run.listed.items())),
                **sample(process, state_dir),
            }
        )

    try:
        with Client(url, TOKEN, name="soak") as client:
            run = Soak(client, root, args)
            deadline = 60 * args.minutes + args.drain_s
            next_sample = 0.0
            while not run.settled() and run.now() < deadline:
                run.due()
                run.poll(clean)
                if run.now() >= next_sample:
                    measure(run, "submitting" if run.submitted < args.jobs else "draining")
                    next_sample = run.now() + args.sample_s
                time.sleep(POLL_S)
            # every job over: what is left once --retain has pruned them all
            while run.now() < deadline + args.drain_s and run.call("list", client.jobs):
                run.poll(clean)
                time.sleep(args.sample_s)
            measure(run, "after")
            samples[-1]["state_dir_parts_mb"] = state_dir_parts(state_dir)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    result = summarize(args, run, samples)
    # what the server logged as errors (its log goes with the temporary folder); Ray's notes on
    # the workers it killed (a coordinator once its job ended, a cancelled job's translators) are
    # not the server's errors
    logged = (work / "server.log").read_text(errors="replace").splitlines()
    if args.server_log is not None:
        args.server_log.write_text("\n".join(logged) + "\n")
    result["server_log_errors"] = logged_errors(logged)
    return result


def logged_errors(lines: list[str]) -> list[str]:
    """Each error the log holds: an ERROR line, or a traceback up to its exception's line."""
    errors: list[str] = []
    block: list[str] | None = None
    for line in lines:
        if block is not None:
            block.append(line)
            # the exception's own line is the first one no longer indented past Ray's prefix
            if not RAY_PREFIX.sub("", ANSI.sub("", line)).startswith((" ", "\t")):
                errors.append(ANSI.sub("", "\n".join(block)))
                block = None
        elif "Traceback (most recent call last)" in line:
            block = [line]
        elif line.startswith("ERROR"):
            errors.append(line)
    if block is not None:
        errors.append(ANSI.sub("", "\n".join(block)))
    return errors


def slope_per_100_jobs(samples: list[dict[str, Any]], measure: str) -> float | None:
    """How much `measure` grew per 100 jobs submitted (least squares), over the samples taken
    while jobs were submitted, once the first window's were."""
    points = [(s["submitted"], s[measure]) for s in samples]
    if len({x for x, _ in points}) < 2:
        return None
    x_mean = mean(x for x, _ in points)
    y_mean = mean(y for _, y in points)
    covariance = sum((x - x_mean) * (y - y_mean) for x, y in points)
    variance = sum((x - x_mean) ** 2 for x, _ in points)
    return round(100 * covariance / variance, 3)


def summarize(args: argparse.Namespace, run: Soak, samples: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes: Counter[str] = Counter(_outcome(job) for job in run.jobs)
    succeeded = [job for job in run.jobs if job.output_equal is not None]
    return {
        "settings": {
            "jobs": args.jobs,
            "minutes": args.minutes,
            "retain": args.retain,
            "window": args.window,
            "seed": args.seed,
            "reverse_delay_s": args.delay,
            "shard_tokens": SHARD_TOKENS,
            "variants_rows": [rows for rows, _ in VARIANTS],
            "shares": {"paused": PAUSED, "cancelled": CANCELLED, "deleted": DELETED},
        },
        "seconds": samples[-1]["t"] if samples else 0,
        "outcomes": dict(outcomes),
        "resubmitted_after_cancel": sum(len(job.ended_as) > 1 for job in run.jobs),
        "deleted": sum(job.deleted for job in run.jobs),
        "pruned_by_retain": sum(job.gone and not job.deleted for job in run.jobs),
        "outputs_checked": len(succeeded),
        "outputs_equal_to_clean_run": sum(bool(job.output_equal) for job in succeeded),
        "answers": dict(run.statuses),
        "server_errors": run.server_errors,
        "windows": windows(samples, args.jobs, args.window),
        "final": {measure: samples[-1][measure] for measure in MEASURES},
        "final_state_dir_parts_mb": samples[-1].get("state_dir_parts_mb", {}),
        "final_ray_workers": samples[-1]["ray_workers"],
        "samples": samples,
    }


def _outcome(job: SoakJob) -> str:
    if job.ended_as:
        return job.ended_as[-1]
    # ended and pruned between two of the soak's looks (a server slow to answer stretches them)
    return "gone before seen ended" if job.gone else "never ended"


def print_table(result: dict[str, Any]) -> None:
    settings, found = result["settings"], result["windows"]
    window = settings["window"]
    print(
        f"\nsoak: {settings['jobs']} jobs over {settings['minutes']} min, --retain "
        f"{settings['retain']}, seed {settings['seed']} ({result['seconds'] / 60:.1f} min in all)"
    )
    print(
        f"  {'measure':22s} {f'first {window} jobs':>20s} {f'last {window} jobs':>20s} "
        f"{'last/first':>11s} {'growth':>11s}"
    )
    print(f"  {'':22s} {'mean / max':>20s} {'mean / max':>20s} {'(means)':>11s} {'/100 jobs':>11s}")
    for measure, label in MEASURES.items():
        row = found["measures"][measure]
        ratio = "-" if row["last_vs_first"] is None else f"{row['last_vs_first']:.2f}"
        slope = row["per_100_jobs_after_first"]
        growth = "-" if slope is None else f"{slope:+.2f}"
        print(
            f"  {label:22s} {row['first_mean']:>11.1f} / {row['first_max']:<6.1f} "
            f"{row['last_mean']:>11.1f} / {row['last_max']:<6.1f} {ratio:>11s} {growth:>11s}"
        )
    final = result["final"]
    print(
        f"  after the last job, retained jobs pruned: state dir {final.get('state_dir_mb', 0):.2f} MB, "
        f"{final.get('actors', 0)} actors, server RSS {final.get('server_rss_mb', 0):.0f} MB"
    )
    parts = ", ".join(f"{name} {mb:.2f}" for name, mb in result["final_state_dir_parts_mb"].items())
    print(f"  state dir by part (MB): {parts}; Ray workers: {result['final_ray_workers']}")
    print(
        f"  jobs: {result['outcomes']}; {result['resubmitted_after_cancel']} submitted again after "
        f"a cancel, {result['deleted']} deleted, {result['pruned_by_retain']} pruned by --retain"
    )
    print(
        f"  outputs equal to a clean run: {result['outputs_equal_to_clean_run']} of "
        f"{result['outputs_checked']}; answers {result['answers']}; 5xx: {len(result['server_errors'])}"
    )
    print(f"  errors in the server's log: {len(result['server_log_errors'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs submitted (default 200)")
    parser.add_argument("--minutes", type=float, default=20, help="over this long (default 20)")
    parser.add_argument("--retain", default="60s", help="mtfleet serve --retain (default 60s)")
    parser.add_argument("--window", type=int, default=50, help="jobs compared first and last")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.3, help="MTFLEET_REVERSE_DELAY_S")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--drain-s", type=float, default=300.0, help="time left for the last jobs")
    parser.add_argument("--server-log", type=Path, help="keep mtfleet serve's output there")
    args = parser.parse_args()
    if not 0 < args.window <= args.jobs:
        parser.error("--window must be between 1 and --jobs")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mtfleet-soak-") as work:
        result = soak(args, Path(work))
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["cpus"] = os.cpu_count()
    result["mtfleet"] = importlib.metadata.version("mtfleet")
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    chart(result["samples"], args.jobs, args.window)
    print_table(result)
    print(
        f"  load average before {load_before[0]:.1f}, after {result['load_average']['after'][0]:.1f}"
    )


if __name__ == "__main__":
    main()
