"""One model, several target languages: an engine per target, sharing the model's weights.

Where the family chooses the target in the decoder alone (M2M100, NLLB, mBART-50) and each target is
sent the same segments, `prefetch` encodes each batch once and decodes it for every target in one
call; each target's engine then answers those segments from what was decoded. Other families (a
tag before each source, IndicTrans2's preprocessor) and wrapped engines translate once per target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mtfleet.engines.base import Engine, EngineWrapper


class TargetEngines:
    """The engine of each target language of a job, in the job's order of targets."""

    def __init__(self, engines: dict[str, Engine], shared: Any | None = None) -> None:
        """`shared`: the engine whose `generate_for_targets` decodes for every target at once,
        when the engines are its plain `for_target` views; None translates once per target."""
        self.engines = engines
        self.shared = shared
        first = next(iter(engines.values()))
        self.name = first.name
        self.max_input_tokens = first.max_input_tokens

    @property
    def targets(self) -> list[str]:
        return list(self.engines)

    @property
    def health_checked(self) -> bool:
        """Whether any target's output is checked (`health.job_checks`, per target)."""
        return any(getattr(engine, "health_checked", True) for engine in self.engines.values())

    @property
    def max_batch_tokens(self) -> int:
        return next(iter(self.engines.values())).max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, tokens: int) -> None:
        for engine in self.engines.values():
            engine.max_batch_tokens = tokens

    def describe(self) -> dict[str, Any]:
        """The first target's signature, naming every target."""
        signature = next(iter(self.engines.values())).describe()
        settings = {**signature.get("settings", {}), "tgt_lang": self.targets}
        return {**signature, "settings": settings, "encoder_shared": self.shared is not None}

    def prefetched(self, segments_by_target: dict[str, Sequence[str]]) -> dict[str, Engine]:
        """The engine of each target, those sent the same segments answering them from one
        encoding per batch (`generate_for_targets`); the others as they are."""
        if self.shared is None:
            return dict(self.engines)
        groups: dict[tuple[str, ...], list[str]] = {}
        for target, segments in segments_by_target.items():
            groups.setdefault(tuple(segments), []).append(target)
        engines = dict(self.engines)
        for segments, targets in groups.items():
            if len(targets) < 2 or not segments:
                continue
            views = [self.engines[target] for target in targets]
            decoded = self.shared.generate_for_targets(list(segments), views)
            for target, view, ids in zip(targets, views, decoded, strict=True):
                engines[target] = PrefetchedEngine(view, dict(zip(segments, ids, strict=True)))
        return engines


class PrefetchedEngine(EngineWrapper):
    """An engine that answers some segments from token ids decoded before, each once (a health
    check's retry of a segment is decoded again, with its own settings)."""

    def __init__(self, engine: Engine, token_ids: dict[str, list[int]]) -> None:
        super().__init__(engine)
        self.token_ids = token_ids

    @property
    def tokens(self) -> Any:
        return self.engine.tokens  # type: ignore[attr-defined]

    @property
    def beam(self) -> int:
        return self.engine.beam  # type: ignore[attr-defined]

    @beam.setter
    def beam(self, beam: int) -> None:
        self.engine.beam = beam  # type: ignore[attr-defined]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(texts)

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()

    def translate(self, segments: Sequence[str]) -> list[str]:
        return self.tokens.decode(self.generate_token_ids(segments)) if segments else []

    def generate_token_ids(self, segments: Sequence[str]) -> list[list[int]]:
        distinct = list(dict.fromkeys(segments))
        ready = {s: self.token_ids.pop(s) for s in distinct if s in self.token_ids}
        missing = [segment for segment in distinct if segment not in ready]
        if missing:
            generate = self.engine.generate_token_ids  # type: ignore[attr-defined]
            ready.update(zip(missing, generate(missing), strict=True))
        return [ready[segment] for segment in segments]


def load_target_engines(
    targets: Sequence[str], load: Callable[[str], Engine], wrap: Callable[[Engine, str], Engine]
) -> TargetEngines:
    """`load` the first target's engine, view it for the others (`for_target`, weights shared)
    and `wrap` each (source detection, a preprocessor: an engine returned as it is is plain)."""
    first = load(targets[0])
    # an engine without a model (reverse) is simply loaded again
    view = getattr(first, "for_target", load)
    views = {target: first if n == 0 else view(target) for n, target in enumerate(targets)}
    engines = {target: wrap(view, target) for target, view in views.items()}
    plain = all(engines[target] is views[target] for target in targets)
    shares = plain and hasattr(first, "generate_for_targets") and first.decodes_target  # type: ignore[attr-defined]
    return TargetEngines(engines, first if shares else None)
