"""A job's heavy steps as Ray tasks with memory of their own: planning reads the whole input once,
assembly reads it again and writes the output. They run beside the coordinator, whose actor stays
a small control plane that asks Ray for no memory: a node with room for the coordinator but not
for a big input's assembly no longer takes the coordinator of a job it cannot finish, and the
memory is held only while a step runs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayTaskError

from mtfleet.errors import MtfleetError
from mtfleet.spec import JobSpec
from mtfleet.store import JobStore

if TYPE_CHECKING:
    from mtfleet.cluster.plan import PlanStep

log = logging.getLogger(__name__)

# What planning or assembly asks of a node: streaming keeps both flat (`bench/scale.py`: under
# 200 MB at 10M rows), with room for one shard's translations and the output writer's buffers.
WORK_MEMORY_BYTES = 512 * 1024 * 1024


@ray.remote(num_cpus=0, max_retries=0, num_returns="streaming")
def _plan_task(
    spec: dict[str, Any],
    work_dir: str,
    store_url: str,
    translators: int,
    fill: bool,
    coordinator: Any,
    resume: tuple[int, int],
) -> Iterator[PlanStep]:
    from mtfleet.cluster.plan import UnitFiller, plan_steps, units_memory_keys

    job_spec = JobSpec(**spec)
    keys = units_memory_keys(job_spec) if fill else None
    if keys is None:
        yield from plan_steps(job_spec, Path(work_dir), translators=translators, resume=resume)
        return
    several = isinstance(job_spec.tgt_lang, list)
    # the coordinator, which waits to place translators until planning finds work, hears of the
    # first unit the memory does not hold at once
    on_work = None if coordinator is None else coordinator.work_found.remote
    with JobStore(store_url) as store:
        filler = UnitFiller(store, keys, several, on_work)
        yield from plan_steps(job_spec, Path(work_dir), filler, translators, resume=resume)


def fills_from_memory(spec: JobSpec) -> bool:
    """Whether planning may fill units from the memory: not for a test's reverse engine that
    slows, fails or hangs, nor its slow translators (they want every unit to reach the engine, as
    the translators' own `_memorable` says for segments)."""
    from mtfleet.cluster.translator import SLOW_VARIABLE
    from mtfleet.engines.reverse import injects_faults

    if os.environ.get(SLOW_VARIABLE):
        return False
    return spec.engine != "reverse" or not injects_faults()


@ray.remote(num_cpus=0, max_retries=0)
def _assemble_task(store_url: str, job_id: str, work_dir: str) -> dict[str, Any]:
    from mtfleet.cluster.assemble import assemble

    return assemble(JobStore(store_url), job_id, Path(work_dir))


def plan(
    spec: JobSpec,
    work_dir: Path,
    store_url: str,
    translators: int,
    fill: bool,
    coordinator: Any = None,
    resume: tuple[int, int] = (0, 0),
) -> Iterator[PlanStep]:
    """The job's unit file written and its shards cut for `translators` translators, in a task,
    its steps as they come (`plan.plan_steps`, which says what `resume` is). With `fill` (the
    translation memory of the store at `store_url` holds entries under the job's keys; without
    it no unit is looked up: at 1M rows the lookups were a third of planning), the units the
    memory holds are filled from it, and its `coordinator` actor (if any) is told `work_found` at
    the first unit the memory does not hold."""
    steps = _plan_task.options(memory=WORK_MEMORY_BYTES).remote(
        spec.model_dump(), str(work_dir), store_url, translators, fill, coordinator, resume
    )
    for step in steps:
        yield _result(step, "planning")


def assemble(store_url: str, job_id: str, work_dir: Path) -> dict[str, Any]:
    """The job's output written from its parts, and its manifest (`assemble.assemble`), in a
    task."""
    return _run(_assemble_task, "assembly", store_url, job_id, str(work_dir))


def _run(task: Any, step: str, *args: Any) -> Any:
    return _result(task.options(memory=WORK_MEMORY_BYTES).remote(*args), step)


def _result(ref: Any, step: str) -> Any:
    """The task's result; an error it raised is raised here as it was (a user's mistake stays
    one sentence), its remote traceback logged when it is not an MtfleetError."""
    try:
        return ray.get(ref)
    except RayTaskError as error:
        cause = error.cause
        if not isinstance(cause, Exception):
            raise
        if not isinstance(cause, MtfleetError):
            log.error("the %s task failed: %s", step, error)
        raise cause from None
