"""Prometheus metrics of the fleet, read from the job store and Ray at each scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import ray
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mtfleet.api.jobs import ACTIVE, JobService
from mtfleet.store import JobRecord, JobState


class FleetCollector(Collector):
    """Jobs by state, rows and segments translated, and the nodes, GPUs and translators at work."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        jobs = self.service.store.list_jobs()
        yield from self._jobs(jobs)
        yield from self._fleet()

    def _jobs(self, jobs: list[JobRecord]) -> Iterator[Metric]:
        by_state = Counter(job.state for job in jobs)
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
        segments_total = rows_total = 0
        for job in jobs:
            progress = self.service.store.progress(job.id)
            segments_total += progress["segments_done"]
            rows_total += progress["rows_done"]
            # Finished jobs drop out of the per-job series, so their number stays bounded.
            if job.state in ACTIVE:
                job_rows_done.add_metric([job.id], progress["rows_done"])
                job_rows_total.add_metric([job.id], progress["rows_total"])
                job_segments.add_metric([job.id], progress["segments_done"])
        segments.add_metric([], segments_total)
        rows.add_metric([], rows_total)
        yield from (segments, rows, job_rows_done, job_rows_total, job_segments)

    def _fleet(self) -> Iterator[Metric]:
        nodes = ray.nodes()
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
