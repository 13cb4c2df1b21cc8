"""Prometheus metrics of the fleet, read from the job store's aggregates and Ray at each scrape.

Labels are bounded: a request's method is one of HTTP's or "other", its route one of the API's
or "unmatched", and job ids appear only in a scrape that carries the API token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mtfleet.api.jobs import ACTIVE, JobService
from mtfleet.errors import ApiError
from mtfleet.store import JobState

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class FleetCollector(Collector):
    """Jobs by state, rows and segments translated, and the nodes, GPUs and translators at work;
    with `per_job`, rows and segments of each active job, labelled with its id."""

    def __init__(self, service: JobService, *, per_job: bool) -> None:
        self.service = service
        self.per_job = per_job

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs(self.service.store.counters.progress_by_job())
        yield from self._fleet()

    def _jobs(self, jobs: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        by_state = Counter(job["state"] for job in jobs.values())
        states = GaugeMetricFamily(
            "mtfleet_jobs", "Jobs in the job store, by state.", labels=["state"]
        )
        for state in JobState:
            states.add_metric([state.value], by_state[state])
        yield states
        segments = CounterMetricFamily(
            "mtfleet_segments_translated", "Segments translated in accepted shards, over all jobs."
        )
        rows = CounterMetricFamily(
            "mtfleet_rows_translated", "Rows of accepted shards, over all jobs."
        )
        labels = ["job_id"]
        job_rows_done = GaugeMetricFamily(
            "mtfleet_job_rows_done", "Rows done, per active job.", labels=labels
        )
        job_rows_total = GaugeMetricFamily(
            "mtfleet_job_rows_total", "Rows, per active job.", labels=labels
        )
        job_segments = GaugeMetricFamily(
            "mtfleet_job_segments_done", "Segments translated, per active job.", labels=labels
        )
        segments.add_metric([], sum(job["segments_done"] for job in jobs.values()))
        rows.add_metric([], sum(job["rows_done"] for job in jobs.values()))
        yield from (segments, rows)
        if not self.per_job:
            return
        for job_id, job in jobs.items():
            # Finished jobs drop out of the per-job series, so their number stays bounded.
            if job["state"] in ACTIVE:
                job_rows_done.add_metric([job_id], job["rows_done"])
                job_rows_total.add_metric([job_id], job["rows_total"])
                job_segments.add_metric([job_id], job["segments_done"])
        yield from (job_rows_done, job_rows_total, job_segments)

    def _fleet(self) -> Iterator[Metric]:
        try:
            nodes = self.service.cluster_nodes()
        except ApiError:
            # Ray does not answer: the scrape still has the store's numbers; /healthz says 503.
            return
        alive = [node for node in nodes if node.get("Alive")]
        by_state = GaugeMetricFamily("mtfleet_nodes", "Ray nodes, by state.", labels=["state"])
        by_state.add_metric(["alive"], len(alive))
        by_state.add_metric(["dead"], len(nodes) - len(alive))
        yield by_state
        yield GaugeMetricFamily(
            "mtfleet_gpus",
            "GPUs on the live nodes.",
            value=sum(node.get("Resources", {}).get("GPU", 0) for node in alive),
        )
        with self.service.lock:
            translators = sum(
                len(f.report.get("translators", [])) for f in self.service.followed.values()
            )
        yield GaugeMetricFamily(
            "mtfleet_translators", "Translators of the active jobs.", value=translators
        )
