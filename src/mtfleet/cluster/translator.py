"""The Translator actor: one engine on one device, and a loop that leases shards and completes them."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from mtfleet.cluster.parts import part_path, write_part
from mtfleet.cluster.plan import UnitReader
from mtfleet.engines import load_engine
from mtfleet.pipeline import translate_texts
from mtfleet.spec import JobSpec

# How long a translator waits before asking again when every shard is leased or the job is paused.
IDLE_POLL_S = 0.25


@ray.remote(max_restarts=0, max_concurrency=2)
class Translator:
    def __init__(
        self,
        coordinator: Any,
        worker_id: str,
        spec: dict[str, Any],
        work_dir: str,
        on_gpu: bool,
        threads: int,
    ) -> None:
        # Spinning OpenMP threads starve each other when translators share cores: a 14x slowdown
        # measured with two translators of two threads on two cores. Set before torch loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.coordinator = coordinator
        self.worker_id = worker_id
        self.spec = JobSpec(**spec)
        self.work_dir = Path(work_dir)
        self.gpu_ids = [int(gpu) for gpu in ray.get_gpu_ids()] if on_gpu else []
        self.threads = threads
        self.node_id = ray.get_runtime_context().get_node_id()

    def info(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "node_id": self.node_id,
            "gpu_ids": self.gpu_ids,
            "device": self._device(),
            "pid": os.getpid(),
        }

    def _device(self) -> str:
        if not self.gpu_ids:
            return "cpu"
        import torch

        # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU, so it is always cuda:0 here.
        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def run(self) -> dict[str, Any]:
        """Leases, translates and completes shards until the coordinator says stop."""
        engine = load_engine(
            self.spec.engine,
            self.spec.model,
            src_lang=self.spec.src_lang,
            tgt_lang=self.spec.tgt_lang,
            beam=self.spec.beam,
            max_batch_tokens=self.spec.max_batch_tokens,
            max_length_factor=self.spec.max_length_factor,
            max_length_offset=self.spec.max_length_offset,
            compute_type=self.spec.compute_type,
            device=self._device(),
            threads=self.threads,
        )
        signature = engine.describe()
        units: UnitReader | None = None
        shards_done = 0
        while True:
            reply = ray.get(self.coordinator.lease.remote(self.worker_id))
            if reply["action"] == "stop":
                return {"worker_id": self.worker_id, "shards": shards_done}
            if reply["action"] == "wait":
                time.sleep(IDLE_POLL_S)
                continue
            lease = reply["lease"]
            # opened at the first lease: the coordinator may still have been planning at start
            units = units or UnitReader(self.work_dir)
            self._translate_shard(engine, signature, units, lease)
            shards_done += 1

    def _translate_shard(
        self, engine: Any, signature: dict[str, Any], units: UnitReader, lease: dict[str, Any]
    ) -> None:
        started = time.monotonic()
        stop_heartbeat = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(lease, stop_heartbeat), daemon=True
        )
        heartbeat.start()
        try:
            shard_units = units.read(lease["row_start"], lease["row_end"])
            outcome = translate_texts([unit.text for unit in shard_units], engine)
            path = part_path(self.work_dir, lease["row_start"], lease["row_end"], lease["lease_id"])
            write_part(
                path,
                (
                    replace(unit, text=translation)
                    for unit, translation in zip(shard_units, outcome.translations, strict=True)
                ),
            )
        except Exception as error:
            stop_heartbeat.set()
            ray.get(
                self.coordinator.fail.remote(
                    self.worker_id,
                    lease["index"],
                    lease["lease_id"],
                    f"{type(error).__name__}: {error}",
                )
            )
            return
        finally:
            stop_heartbeat.set()
        stats = {
            "rows": lease["row_end"] - lease["row_start"],
            "units": len(shard_units),
            "segments": outcome.segments,
            "segments_unique": outcome.segments_unique,
            "source_tokens": outcome.source_tokens,
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "elapsed_s": round(time.monotonic() - started, 3),
            "engine": signature,
        }
        ray.get(
            self.coordinator.complete.remote(
                self.worker_id, lease["index"], lease["lease_id"], str(path), stats
            )
        )

    def _heartbeat(self, lease: dict[str, Any], stop: threading.Event) -> None:
        interval = max(0.05, self.spec.lease_ttl_s / 3)
        while not stop.wait(interval):
            self.coordinator.heartbeat.remote(self.worker_id, lease["index"], lease["lease_id"])
