"""Translation engines behind one protocol; `load_engine` builds one by name."""

from __future__ import annotations

from typing import Any

from mtfleet.engines.base import Engine
from mtfleet.errors import ModelError

# "reverse" is the deterministic engine tests use as an oracle
ENGINES = ("hf", "ct2", "reverse")


def load_engine(name: str, model: str, **settings: Any) -> Engine:
    """The engine `name` loaded with `model`; settings are its keyword arguments.

    Engines are imported here, not at the top, so that choosing one never imports another's
    libraries (torch and transformers take seconds to import).
    """
    if name == "hf":
        from mtfleet.engines.hf import HFEngine

        return HFEngine(model, **settings)
    if name == "ct2":
        from mtfleet.engines.ct2 import CT2Engine

        return CT2Engine(model, **settings)
    if name == "reverse":
        from mtfleet.testing.engines import ReverseEngine

        # it translates without a model: the name is ignored
        return ReverseEngine(record_calls=False, **settings)
    raise _unknown_engine(name)


def check_model(
    name: str, model: str, *, src_lang: str | None = None, tgt_lang: str | None = None
) -> None:
    """Fail in seconds, before a job starts, when engine `name` could not use `model`.

    Checks the engine name, the model directory (or hub id), its config, tokenizer and languages;
    it loads no weights. Raises ModelError with one sentence naming what is wrong.
    """
    if name not in ENGINES:
        raise _unknown_engine(name)
    if name == "reverse":
        return
    from mtfleet.engines.tokens import ModelTokenizer

    ModelTokenizer(model, src_lang=src_lang, tgt_lang=tgt_lang)


def _unknown_engine(name: str) -> ModelError:
    return ModelError(f"Engine {name!r} does not exist; mtfleet has {', '.join(ENGINES)}.")


__all__ = ["ENGINES", "Engine", "check_model", "load_engine"]
