"""The planner: one pass over a dataset, row by row, listing its units and cutting shards.

Memory does not grow with the dataset: units go to `units.jsonl` as rows stream by, and each row's
first byte offset to `units.idx`. Shards are cut as the rows stream by too (`ShardCutter`), and
handed over a few at a time (`plan_steps`) with the units of their rows already on disk, so
translators lease the first shards while the rest of the input is still read. The input's bytes
are hashed in the same pass (plan.json, written last: a unit file without it is a plan cut short),
so assembly can tell that the input changed while the job ran.

With the translation memory, a unit whose text an earlier job of the same settings translated is
filled from it as the rows stream by (looked up a batch of rows at a time): its unit line carries
its translation, it costs nothing to translate, and a shard of only such units is done at
planning, its part written here, and never leased.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mtfleet.bulk import collector_paused
from mtfleet.cluster.protocol import ShardStats
from mtfleet.data import (
    DatasetReader,
    FieldPath,
    Unit,
    UnitKind,
    check_paths_exist,
    dataset_files,
    extract_units,
    format_location,
    parse_field_paths,
    style_to_json,
)
from mtfleet.data.atomic import AtomicFile, write_bytes_atomically
from mtfleet.spec import FLEET_MOST_TOKENS, JobSpec, memory_settings
from mtfleet.store import JobStore, ShardPlan
from mtfleet.store.memory import TranslationMemory, segment_sha256

# A rough source-token estimate for shard sizing; the engine counts real tokens later.
CHARS_PER_TOKEN = 4
# With --shard-tokens, a shard takes at most a quarter of the tokens left to cut, and no less
# than 1/16 of shard_tokens.
TAIL_SHARE = 4
SMALLEST_SHARE = 16
# Sized to a fleet of N translators (bench/padding.py chose these, issue 26): each translator's
# share of the job comes in at least FLEET_BODY_SHARE shards of FLEET_LEAST_TOKENS or more (a slow
# translator's shard never holds up the fleet for long, and a shard holds a few GPU batches to
# sort); then each takes at most 1/N of the tokens left (guided self-scheduling), down to
# 1/FLEET_SMALLEST_SHARE of a translator's share, nor under FLEET_SMALLEST_TOKENS.
FLEET_BODY_SHARE = 3
FLEET_LEAST_TOKENS = 32000
FLEET_SMALLEST_SHARE = 16
FLEET_SMALLEST_TOKENS = 2000
# Rows `check_fields` reads before any work: a path matching none of them is most likely a typo.
HEAD_ROWS = 1000
# Entries buffered before the row index is appended to its file.
_FLUSH_ENTRIES = 1 << 16
# How often planning hands over the shards it has cut (`plan_steps`), and how many rows it reads
# between two looks at the clock.
STEP_EVERY_S = 0.5
_STEP_CHECK_ROWS = 256
# Tests only: while the file this names exists, planning hands over a step every
# _STEP_CHECK_ROWS rows and waits after each that holds shards until the file is gone (a plan
# caught half done).
HELD_VARIABLE = "MTFLEET_TEST_PLAN_HELD_WHILE"
# Rows whose units are looked up in the translation memory together (a query per target).
FILL_ROWS = 2048
# A shard holds at most this many times its most tokens of units filled from the memory: assembly
# holds one shard's translations at a time.
FILLED_SHARE = 4
# The spec settings that name the engine that translates a unit (translator.ENGINE_SETTINGS
# less the batch budget and GPUs a translator, which change how fast, not what).
_UNIT_ENGINE_SETTINGS = (
    "engine",
    "model",
    "beam",
    "max_length_factor",
    "max_length_offset",
    "compute_type",
    "trust_remote_code",
)
# A part written at planning, of units filled from the memory, is named as if by this lease.
FILLED_LEASE = "memory"
# Engines that load no model: their model name is all there is to key on.
_MODELLESS_ENGINES = ("reverse",)
# The Hub revision transformers loads when none is named.
HUB_REVISION = "main"

# A unit's translation and health flags.
Translation = tuple[str, tuple[str, ...]]
# The encoder of unit and part lines: json.dumps(line, ensure_ascii=False) makes one a call, half
# its time on a line.
LINE_ENCODER = json.JSONEncoder(ensure_ascii=False)


def encode_line(
    unit: int, row: int, location: str, text: str, more: Mapping[str, Any] | None = None
) -> bytes:
    """The line LINE_ENCODER writes for {"unit", "row", "loc", "text", **more}, with its line end;
    its first four keys written without a dict: the encoder's call cost a third of a line again."""
    line = (
        f'{{"unit": {unit}, "row": {row}, "loc": {encode_basestring(location)}, '
        f'"text": {encode_basestring(text)}'
    )
    for key, value in (more or {}).items():
        line += f", {encode_basestring(key)}: {LINE_ENCODER.encode(value)}"
    return (line + "}\n").encode()


@dataclass(slots=True)
class UnitLine:
    """One text unit as the unit file and the part files hold it: where it is, and its text.

    Not frozen: a shard's lines are made three times (unit reads, its part, assembly) and a frozen
    dataclass took 4x the time to make one (its fields set through object.__setattr__)."""

    unit: int
    row: int
    location: str
    text: str
    flags: tuple[str, ...] = ()
    """What the health checks found in its translation (part files only)."""
    targets: dict[str, tuple[str, tuple[str, ...]]] | None = None
    """A job with several target languages (part files only): each one's text and flags."""
    filled: Translation | dict[str, Translation] | None = None
    """Its translation and flags, filled from the translation memory at planning (unit file); in
    a job with several target languages, each one's (a unit is filled only in all of them)."""

    def for_target(self, tgt_lang: str | None) -> UnitLine | None:
        """The line as a job with only `tgt_lang` would have it; None when it has no such text."""
        if self.targets is None:
            return self
        if tgt_lang not in self.targets:
            return None
        text, flags = self.targets[tgt_lang]
        return UnitLine(self.unit, self.row, self.location, text, flags)

    def with_filled(self) -> UnitLine:
        """The part line of a unit filled from the translation memory: its translation, flags."""
        assert self.filled is not None
        if isinstance(self.filled, dict):
            return UnitLine(self.unit, self.row, self.location, "", targets=dict(self.filled))
        text, flags = self.filled
        return UnitLine(self.unit, self.row, self.location, text, flags)


def check_fields(spec: JobSpec) -> None:
    """The field paths parse and each matches a value in the first rows of the first file."""
    paths = parse_field_paths(spec.fields)
    _, files = dataset_files(spec.input)
    head = DatasetReader(files[0]).head(HEAD_ROWS)
    check_paths_exist(head, paths, source=str(files[0]))


def units_memory_keys(spec: JobSpec) -> dict[str | None, str] | None:
    """The translation memory's signature of whole units for each target language of this job,
    the one a job into that language alone has; None for a job that keeps none (no memory, or a
    Hub model the local cache does not hold). Known before any engine is loaded: the settings
    that change a unit's translation and each file of the model by name, size and modification
    time (new weights in its folder, or another snapshot of a Hub model, are another key)."""
    if not spec.memory:
        return None
    model = model_files(spec)
    if model is None:
        return None
    return {target: _units_key(spec.for_target(target), model) for target in spec.targets()}


def _units_key(spec: JobSpec, model: dict[str, Any]) -> str:
    key = {
        "units": {name: getattr(spec, name) for name in _UNIT_ENGINE_SETTINGS},
        **model,
        "on_gpu": spec.gpus > 0,
        "job": memory_settings(spec),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def model_files(spec: JobSpec) -> dict[str, Any] | None:
    """What identifies the files of the job's model: a local folder's files; a Hub model id's
    snapshot in the local cache (its commit) and that snapshot's files; None for a Hub model the
    cache holds no snapshot of (its name alone says nothing of its weights)."""
    model = Path(spec.model)
    if model.is_dir():
        return {"model_files": _folder_files(model)}
    if spec.engine in _MODELLESS_ENGINES:
        return {"model_files": []}
    snapshot = hub_snapshot(spec.model)
    if snapshot is None:
        return None
    return {"model_files": _folder_files(snapshot), "snapshot": snapshot.name}


def _folder_files(folder: Path) -> list[tuple[str, int, int]]:
    # a snapshot's files are links to its blobs: stat follows them
    return sorted(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.iterdir()
        if path.is_file()
    )


def hub_snapshot(model_id: str) -> Path | None:
    """The snapshot folder of Hub model `model_id` in the local Hugging Face cache at
    HUB_REVISION (the commit its `refs/` file names), as transformers resolves it offline; None
    when the cache holds none."""
    repo = hub_cache() / ("models--" + model_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / HUB_REVISION).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, by the variables huggingface_hub reads (read here, at
    each call: its own constants are fixed when it is imported)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or str(Path(cache_home) / "huggingface")
    return Path(home).expanduser() / "hub"


class UnitFiller:
    """Looks up units in the translation memory of `store` under each target language's key
    (`units_memory_keys`): the translation and flags of each unit it holds in every target (by
    target when the job has several), a batch of texts at a time."""

    def __init__(
        self,
        store: JobStore,
        keys: Mapping[str | None, str],
        several_targets: bool,
        on_work: Callable[[], None] | None = None,
    ) -> None:
        """`on_work` is called once, at the first unit the memory does not hold: the job has
        work for translators."""
        self.memory = TranslationMemory(store)
        self.keys = dict(keys)
        self.several_targets = several_targets
        self.on_work = on_work

    def fill(self, texts: Sequence[str]) -> dict[str, Translation | dict[str, Translation]]:
        by_hash = {segment_sha256(text): text for text in texts}
        wanted = list(by_hash)
        found: dict[str | None, dict[str, Any]] = {}
        for target, key in self.keys.items():
            # a unit missing in one target is translated: the next target asks only for the rest
            found[target] = self.memory.recall(key, wanted) if wanted else {}
            wanted = [sha for sha in wanted if sha in found[target]]
        filled: dict[str, Translation | dict[str, Translation]] = {}
        for sha in wanted:
            each = {target: (kept[sha][0], tuple(kept[sha][1])) for target, kept in found.items()}
            filled[by_hash[sha]] = (
                {str(target): translation for target, translation in each.items()}
                if self.several_targets
                else next(iter(each.values()))
            )
        if self.on_work is not None and len(filled) < len(by_hash):
            on_work, self.on_work = self.on_work, None
            on_work()
        return filled


@dataclass(frozen=True)
class PlanStep:
    """What planning has done so far: `shards` cut since its last step, the first of them the
    job's shard `first_index`; the units of rows [0, `rows`) on disk; `done` once the plan is
    whole (every row's units, plan.json)."""

    first_index: int
    shards: list[ShardPlan]
    rows: int
    done: bool


def plan_job(
    spec: JobSpec, work_dir: Path, filler: UnitFiller | None = None, translators: int = 1
) -> list[ShardPlan]:
    """Every shard of `plan_steps`, once the plan is whole."""
    return [
        shard for step in plan_steps(spec, work_dir, filler, translators) for shard in step.shards
    ]


def plan_steps(
    spec: JobSpec,
    work_dir: Path,
    filler: UnitFiller | None = None,
    translators: int = 1,
    *,
    resume: tuple[int, int] = (0, 0),
) -> Iterator[PlanStep]:
    """Writes the job's units and what assembly needs of its input under `work_dir`, reading the
    input once, a row at a time; hands over its shards, sized for `translators` translators
    unless the spec gives --shard-tokens, every STEP_EVERY_S as they are cut. With `filler`,
    units the translation memory holds are filled from it, and shards of only such units are done
    (their parts written). `resume`: the (rows, shards) of a plan an earlier coordinator stored
    before it stopped; cutting starts at its end, numbering at its count."""
    paths = parse_field_paths(spec.fields)
    root, files = dataset_files(spec.input)
    work_dir.mkdir(parents=True, exist_ok=True)
    # a plan.json left by an earlier plan would call this one's unit file whole before it is
    with contextlib.suppress(FileNotFoundError):
        (work_dir / "plan.json").unlink()
    cutter = ShardCutter(SpecRule.of(spec, translators), resume[0])
    handed = resume[1]
    described = []
    with UnitFileWriter(work_dir, filler, cutter) as unit_file:
        for file in files:
            first_row = unit_file.rows
            reader = DatasetReader(file)
            for row in reader.rows():
                unit_file.add_row(_row_units(row, paths, unit_file.rows))
                if unit_file.step_due():
                    shards, rows = unit_file.step()
                    yield PlanStep(handed, _done_if_filled(shards, work_dir, filler), rows, False)
                    handed += len(shards)
                    if shards:
                        _wait_while_held()
            described.append(
                {
                    "path": str(file),
                    "first_row": first_row,
                    "rows": unit_file.rows - first_row,
                    "sha256": reader.sha256,
                    "format": reader.format,
                    "style": style_to_json(reader.style),
                    "columns": list(reader.columns),
                }
            )
    facts = {
        "root": str(root),
        # a folder or a glob: the output is a folder that mirrors the input's files
        "sharded": not Path(spec.input).is_file(),
        "rows": unit_file.rows,
        "files": described,
    }
    write_plan_facts(work_dir, facts)
    shards = _done_if_filled(unit_file.last_shards, work_dir, filler)
    yield PlanStep(handed, shards, unit_file.rows, True)


def _held() -> Path | None:
    held = os.environ.get(HELD_VARIABLE)
    return Path(held) if held and Path(held).exists() else None


def _wait_while_held() -> None:
    while _held() is not None:
        time.sleep(0.05)


def _done_if_filled(
    shards: list[ShardPlan], work_dir: Path, filler: UnitFiller | None
) -> list[ShardPlan]:
    """Each shard that has nothing to translate done, its part written from the memory."""
    if filler is None:
        return shards
    from mtfleet.cluster.parts import part_path, write_part

    done = []
    for shard in shards:
        if shard.est_tokens:
            done.append(shard)
            continue
        units = UnitReader(work_dir).read(shard.row_start, shard.row_end)
        path = part_path(work_dir, shard.row_start, shard.row_end, FILLED_LEASE)
        write_part(path, (unit.with_filled() for unit in units))
        rows = shard.row_end - shard.row_start
        stats = ShardStats(rows=rows, units=len(units), units_from_memory=len(units))
        done.append(replace(shard, part_path=str(path), stats=stats.to_json()))
    return done


def _row_units(row: dict[str, Any], paths: Sequence[FieldPath], row_index: int) -> list[Unit]:
    return extract_units([row], paths, row_offset=row_index)


@dataclass(frozen=True)
class ShardSizing:
    """How the planner sizes shards: each ends once it holds `wanted(left)` estimated tokens to
    translate, `left` being the tokens still to cut (guided self-scheduling), or `filled_most`
    tokens filled from the translation memory; `whole_below`: a shard takes all that is left once
    it is no more."""

    most: int
    tail_share: int
    smallest: int
    filled_most: int
    whole_below: int = 0

    @classmethod
    def fixed(cls, shard_tokens: int) -> ShardSizing:
        """The user's --shard-tokens: at most that, each at most 1/TAIL_SHARE of the tokens left,
        no less than 1/SMALLEST_SHARE of it."""
        smallest = max(1, shard_tokens // SMALLEST_SHARE)
        return cls(shard_tokens, TAIL_SHARE, smallest, FILLED_SHARE * shard_tokens)

    @classmethod
    def for_fleet(cls, total_tokens: int, translators: int) -> ShardSizing:
        """Shards as large as `translators` translators can share evenly, at most
        FLEET_MOST_TOKENS: one translator has nothing to balance, so it gets shards of the most
        and no tail, the last two halves of what is left (equal, as the whole job's are when it
        holds no more than two); N of them get a body and a tail (see FLEET_BODY_SHARE)."""
        filled_most = FILLED_SHARE * FLEET_MOST_TOKENS
        if translators <= 1:
            return cls(FLEET_MOST_TOKENS, 2, 1, filled_most, whole_below=FLEET_MOST_TOKENS)
        share = total_tokens / translators
        most = min(FLEET_MOST_TOKENS, max(FLEET_LEAST_TOKENS, math.ceil(share / FLEET_BODY_SHARE)))
        smallest = max(FLEET_SMALLEST_TOKENS, math.ceil(share / FLEET_SMALLEST_SHARE))
        return cls(most, translators, min(most, smallest), filled_most)

    def wanted(self, left: int) -> int:
        """The estimated tokens the next shard ends at, with `left` tokens still to cut."""
        if left <= self.whole_below:
            return max(1, left)
        return min(self.most, max(self.smallest, math.ceil(left / self.tail_share)))


class ShardRule(Protocol):
    """The sizing of a job's shards before its total is known: `sizing(total)` once it is, and
    `settled(seen)`, the sizing that every total of at least `seen` tokens shares while a shard
    has `most` x `tail_share` tokens after its start (then it takes `most`), or None while it
    depends on tokens not seen yet."""

    def sizing(self, total_tokens: int) -> ShardSizing: ...

    def settled(self, seen_tokens: int) -> ShardSizing | None: ...


@dataclass(frozen=True)
class SpecRule:
    """A job's rule: its --shard-tokens when given, else shards sized to `translators`."""

    shard_tokens: int | None
    translators: int

    @classmethod
    def of(cls, spec: JobSpec, translators: int) -> SpecRule:
        return cls(spec.shard_tokens, translators)

    def sizing(self, total_tokens: int) -> ShardSizing:
        if self.shard_tokens is not None:
            return ShardSizing.fixed(self.shard_tokens)
        return ShardSizing.for_fleet(total_tokens, self.translators)

    def settled(self, seen_tokens: int) -> ShardSizing | None:
        # a fleet's most is FLEET_MOST_TOKENS for any total of this many tokens or more
        fleet_settles_at = FLEET_MOST_TOKENS * FLEET_BODY_SHARE * self.translators
        fleet = self.shard_tokens is None and self.translators > 1
        if fleet and seen_tokens < fleet_settles_at:
            return None
        return self.sizing(seen_tokens)


@dataclass(frozen=True)
class GivenRule:
    """A sizing given whole: nothing is cut before the end, which knows the total."""

    given: ShardSizing

    def sizing(self, total_tokens: int) -> ShardSizing:
        return self.given

    def settled(self, seen_tokens: int) -> ShardSizing | None:
        return None


class ShardCutter:
    """Cuts contiguous row ranges as rows come (`add`: a row's estimated tokens to translate,
    text units and estimated tokens filled from the memory), smaller toward the end (`finish`).

    The last shards, which the fleet finishes side by side, are small, so no translator waits long
    on another's last shard (guided self-scheduling). A shard is cut as soon as the tokens after
    its start say what the whole input would (`ShardRule.settled`): the shards are those of a cut
    made once the total is known. `start_row`: the rows before it were cut before (a plan
    resumed); their tokens count in the total. Every row belongs to one shard."""

    def __init__(self, rule: ShardRule, start_row: int = 0) -> None:
        self.rule = rule
        self.start_row = start_row
        self.rows = 0
        self.seen = 0
        self.cut = 0
        # the rows after the last cut: (tokens, units, filled tokens)
        self.waiting: deque[tuple[int, int, int]] = deque()
        self.waiting_tokens = 0
        # the rule's settled sizing once the tokens seen fix it: more tokens change only its
        # smallest, which only the cut at the end uses (from the total)
        self._settled: ShardSizing | None = None

    def add(self, tokens: int, units: int, filled: int) -> list[ShardPlan]:
        """The shards this row lets cut now."""
        self.rows += 1
        self.seen += tokens
        if self.rows <= self.start_row:
            self.cut += tokens
            return []
        self.waiting.append((tokens, units, filled))
        self.waiting_tokens += tokens
        sizing = self._settled = self._settled or self.rule.settled(self.seen)
        if sizing is None:
            return []
        shards = []
        while self.waiting_tokens >= sizing.most * sizing.tail_share:
            shards.append(self._next_shard(sizing.most, sizing.filled_most))
        return shards

    def finish(self) -> list[ShardPlan]:
        """The rest of the shards, the total known."""
        sizing = self.rule.sizing(self.seen)
        shards = []
        while self.waiting:
            shards.append(self._next_shard(sizing.wanted(self.seen - self.cut), sizing.filled_most))
        return shards

    def _next_shard(self, wanted: int, filled_most: int) -> ShardPlan:
        """The waiting rows up to the first at which the shard holds `wanted` tokens or
        `filled_most` filled ones, or all of them."""
        start = self.rows - len(self.waiting)
        rows = tokens = units = filled = 0
        while self.waiting and tokens < wanted and filled < filled_most:
            row_tokens, row_units, row_filled = self.waiting.popleft()
            rows += 1
            tokens += row_tokens
            units += row_units
            filled += row_filled
        self.cut += tokens
        self.waiting_tokens -= tokens
        return ShardPlan(start, start + rows, units, tokens)


def cut_shards(rows: int, text_units: Sequence[Unit], sizing: ShardSizing) -> list[ShardPlan]:
    """The shards of `rows` rows holding `text_units`; see cut_shards_from_costs."""
    tokens_per_row = [0] * rows
    units_per_row = [0] * rows
    for unit in text_units:
        tokens_per_row[unit.row] += unit_tokens(unit.text or "")
        units_per_row[unit.row] += 1
    return cut_shards_from_costs(
        zip(tokens_per_row, units_per_row, [0] * rows, strict=True), sizing
    )


def cut_shards_from_costs(
    row_costs: Iterable[tuple[int, int, int]], sizing: ShardSizing
) -> list[ShardPlan]:
    """The shards `ShardCutter` cuts of rows of `row_costs` (each row's estimated tokens to
    translate, text units and estimated tokens filled from the memory, in order) by `sizing`,
    all at once."""
    cutter = ShardCutter(GivenRule(sizing))
    for costs in row_costs:
        cutter.add(*costs)
    return cutter.finish()


def unit_tokens(text: str) -> int:
    return 1 + len(text) // CHARS_PER_TOKEN


# --- the unit file: one JSON line per text unit, with each row's offset beside it


class UnitFileWriter:
    """Writes units.jsonl and units.idx (each row's first byte, then the end) as rows stream by,
    and feeds each row's estimated cost to `cutter`. Put in place at the first `step` (the shards
    cut so far, their units flushed) and made durable at the end; plan.json, written after it,
    says it is whole. With `filler`, rows wait in batches of FILL_ROWS for their look-up."""

    def __init__(self, work_dir: Path, filler: UnitFiller | None, cutter: ShardCutter) -> None:
        self.work_dir = work_dir
        self.filler = filler
        self.cutter = cutter
        self._waiting: list[list[Unit]] = []
        self.rows = 0
        self.units = 0
        self._position = 0
        # shards cut, not handed over yet; all that are left once the writer is closed
        self._cut: list[ShardPlan] = []
        self.last_shards: list[ShardPlan] = []
        self._last_step = time.monotonic()
        self._files: list[AtomicFile] = []
        self._lines = self._open("units.jsonl")
        self._index = self._open("units.idx")
        self._offsets = array("q")

    def _open(self, name: str) -> BinaryIO:
        # unique temporary names, created exclusively: two planners of one job never share a file
        output = AtomicFile(self.work_dir / name, confine_to=self.work_dir)
        self._files.append(output)
        return output.handle

    def add_row(self, units: Iterable[Unit]) -> None:
        texts = [unit for unit in units if unit.kind is UnitKind.TEXT]
        # counted as added: a row waiting for its look-up has its index already
        self.rows += 1
        if self.filler is None:
            self._write_row(texts, {})
            return
        self._waiting.append(texts)
        if len(self._waiting) >= FILL_ROWS:
            self._fill_waiting()

    def step_due(self) -> bool:
        """Whether STEP_EVERY_S have passed since the last step (looked at every few rows)."""
        return self.rows % _STEP_CHECK_ROWS == 0 and (
            time.monotonic() - self._last_step >= STEP_EVERY_S or _held() is not None
        )

    def step(self) -> tuple[list[ShardPlan], int]:
        """The shards cut whose units are on disk now, and the rows whose units are: the files
        flushed, and put in place. A row's units end where the next row's begin, so the last row
        written waits for the next."""
        self._last_step = time.monotonic()
        self._flush()
        for output in self._files:
            output.publish()
        # the cutter has had each row written
        readable = max(0, self.cutter.rows - 1)
        ready = [shard for shard in self._cut if shard.row_end <= readable]
        self._cut = self._cut[len(ready) :]
        return ready, readable

    def _fill_waiting(self) -> None:
        assert self.filler is not None
        found = self.filler.fill([unit.text or "" for row in self._waiting for unit in row])
        for row in self._waiting:
            self._write_row(row, found)
        self._waiting = []

    def _write_row(
        self, units: Sequence[Unit], found: Mapping[str, Translation | dict[str, Translation]]
    ) -> None:
        self._offsets.append(self._position)
        tokens = filled_tokens = 0
        for unit in units:
            text = unit.text or ""
            filled = found.get(text)
            if filled is None:
                tokens += unit_tokens(text)
                more = None
            else:
                more = {"filled": _filled_record(filled)}
                filled_tokens += unit_tokens(text)
            encoded = encode_line(self.units, unit.row, format_location(unit.location), text, more)
            self._lines.write(encoded)
            self._position += len(encoded)
            self.units += 1
        self._cut.extend(self.cutter.add(tokens, len(units), filled_tokens))
        if len(self._offsets) >= _FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        self._offsets.tofile(self._index)
        self._offsets = array("q")

    def __enter__(self) -> UnitFileWriter:
        return self

    def __exit__(self, error_type: object, *_: object) -> None:
        if error_type is None and self._waiting:
            self._fill_waiting()
        if error_type is None:
            self._offsets.append(self._position)
            self._flush()
            self.last_shards = self._cut + self.cutter.finish()
        # each made durable (file and folder) before the plan's last shards are stored
        for output in self._files:
            if error_type is None:
                output.commit()
            else:
                output.abort()


def write_plan_facts(work_dir: Path, facts: dict[str, Any]) -> None:
    """plan.json: what the planning pass learnt of the input: its files, rows, sha256 and style."""
    write_bytes_atomically(work_dir / "plan.json", json.dumps(facts).encode(), confine_to=work_dir)


def read_plan_facts(work_dir: Path) -> dict[str, Any]:
    with open(work_dir / "plan.json", encoding="utf-8") as stream:
        return json.load(stream)


class UnitReader:
    """Reads the text units of any row range of a planned job (shards may be split after planning)."""

    @staticmethod
    def exists(work_dir: Path) -> bool:
        return all(
            (work_dir / name).is_file() for name in ("units.jsonl", "units.idx", "plan.json")
        )

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "units.jsonl"
        self.index = work_dir / "units.idx"

    def read(self, row_start: int, row_end: int) -> list[UnitLine]:
        """Every text unit of rows [row_start, row_end), in order."""
        begin, end = self._offset(row_start), self._offset(row_end)
        with open(self.path, "rb") as stream:
            stream.seek(begin)
            chunk = stream.read(end - begin)
        with collector_paused():
            return [_unit_line(record) for record in json_lines(chunk)]

    def _offset(self, row: int) -> int:
        # the index stays on disk: two 8-byte reads per shard, whatever the dataset's size
        with open(self.index, "rb") as stream:
            stream.seek(8 * row)
            offset = array("q")
            offset.frombytes(stream.read(8))
        return offset[0]


def json_lines(chunk: bytes) -> list[Any]:
    """The records of JSON lines (as LINE_ENCODER writes them: no raw line end inside one),
    decoded as one array: a json.loads a line cost twice the time."""
    return json.loads(b"[" + b",".join(chunk.splitlines()) + b"]")


def _unit_line(record: dict[str, Any]) -> UnitLine:
    filled = record.get("filled")
    if isinstance(filled, dict):
        filled = {target: (text, tuple(flags)) for target, (text, flags) in filled.items()}
    elif filled is not None:
        filled = (filled[0], tuple(filled[1]))
    return UnitLine(record["unit"], record["row"], record["loc"], record["text"], filled=filled)


def _filled_record(filled: Translation | dict[str, Translation]) -> Any:
    """A filled unit's translation as its unit line holds it: [text, flags], or by target."""
    if isinstance(filled, dict):
        return {target: [text, list(flags)] for target, (text, flags) in filled.items()}
    return [filled[0], list(filled[1])]
