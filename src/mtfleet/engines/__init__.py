"""Translation engines behind one protocol; `load_engine` builds one by name."""

from __future__ import annotations

from typing import Any, get_args

from mtfleet.engines.base import Engine
from mtfleet.errors import ModelError
from mtfleet.spec import EngineName

# "reverse" is the deterministic engine tests use as an oracle
ENGINES: tuple[str, ...] = get_args(EngineName)
# Text processing around an engine: IndicTrans2's IndicProcessor
PREPROCESSORS = ("indictrans",)


def load_engine(
    name: str, model: str, *, preprocessor: str | None = None, **settings: Any
) -> Engine:
    """The engine `name` loaded with `model`; settings are its keyword arguments. With a
    `preprocessor` (one of PREPROCESSORS) every segment goes through it before and after.
    A list of target languages (`tgt_lang`) gives a `TargetEngines`: one engine per target on
    one copy of the model's weights.

    Engines are imported here, not at the top, so that choosing one never imports another's
    libraries (torch and transformers take seconds to import).
    """
    _check_preprocessor_name(preprocessor)
    src_lang, targets = settings.get("src_lang"), settings.get("tgt_lang")
    detect_source = _detects_source(src_lang, preprocessor)

    def wrap(engine: Engine, tgt_lang: str | None) -> Engine:
        tokens = getattr(engine, "tokens", None)
        if tokens is not None:
            _check_preprocessor_fits(tokens, preprocessor)
        if detect_source:
            from mtfleet.engines.detect import AutoSourceEngine

            return AutoSourceEngine(engine, tgt_lang=tgt_lang)
        if preprocessor is None:
            return engine
        from mtfleet.engines.indictrans import IndicTransEngine

        return IndicTransEngine(engine, src_lang=src_lang, tgt_lang=tgt_lang)

    if isinstance(targets, list):
        from mtfleet.engines.targets import load_target_engines

        return load_target_engines(  # type: ignore[return-value]
            targets, lambda tgt_lang: _load(name, model, **{**settings, "tgt_lang": tgt_lang}), wrap
        )
    return wrap(_load(name, model, **settings), targets)


def _load(name: str, model: str, **settings: Any) -> Engine:
    if name == "hf":
        from mtfleet.engines.hf import HFEngine

        return HFEngine(model, **settings)
    if name == "ct2":
        from mtfleet.engines.ct2 import CT2Engine

        return CT2Engine(model, **settings)
    if name == "reverse":
        from mtfleet.engines.reverse import ReverseEngine

        # it translates without a model: the name is ignored; a job's segments are not kept
        return ReverseEngine(record_calls=False, **settings)
    raise _unknown_engine(name)


def check_model(
    name: str,
    model: str,
    *,
    src_lang: str | None = None,
    tgt_lang: str | list[str] | None = None,
    trust_remote_code: bool = False,
    preprocessor: str | None = None,
) -> tuple[str | None, str | list[str] | None]:
    """Fail in seconds, before a job starts, when engine `name` could not use `model`; else the
    source and target languages as the model's codes (`en`, `mr` for NLLB: eng_Latn, mar_Deva).

    Checks the engine name, the model directory (or hub id), its config, tokenizer and languages;
    it loads no weights. A model with code of its own is refused without `trust_remote_code`,
    IndicTrans2 without its preprocessor; each of several targets is checked. Raises ModelError
    with one sentence naming what is wrong.
    """
    if name not in ENGINES:
        raise _unknown_engine(name)
    _check_preprocessor_name(preprocessor)
    detect_source = _detects_source(src_lang, preprocessor)
    targets = tgt_lang if isinstance(tgt_lang, list) else [tgt_lang]
    if preprocessor is not None:
        from mtfleet.engines.indictrans import check_languages, indic_processor

        pairs = [check_languages(src_lang, target) for target in targets]
        src_lang, targets = pairs[0][0], [target for _, target in pairs]
        indic_processor()
    codes: list[str] = []
    if name != "reverse":
        from mtfleet.engines.tokens import ModelTokenizer

        tokens = ModelTokenizer(
            model, src_lang=src_lang, tgt_lang=targets[0], trust_remote_code=trust_remote_code
        )
        _check_preprocessor_fits(tokens, preprocessor)
        src_lang = tokens.src_lang
        targets = [tokens.tgt_lang] + [
            tokens.for_target(src_lang, target).tgt_lang for target in targets[1:]
        ]
        codes = list(tokens.languages.codes)
    # `en` and `eng_Latn` are one language only once both are the model's code
    repeated = sorted({target for target in targets if targets.count(target) > 1})
    if repeated:
        raise ModelError(f"--tgt-lang names {', '.join(repeated)} more than once.")
    if src_lang is not None and src_lang in targets:
        raise ModelError(f"--tgt-lang {src_lang} is also the source language (--src-lang).")
    if detect_source:
        from mtfleet.engines.detect import SourceDetector

        if targets[0] is None:
            raise ModelError(
                "--src-lang auto needs --tgt-lang, so that text already in it is kept."
            )
        for target in targets:
            SourceDetector(target, codes)
    return src_lang, targets if isinstance(tgt_lang, list) else targets[0]


def _detects_source(src_lang: str | None, preprocessor: str | None) -> bool:
    """Whether the source language is to be detected (`--src-lang auto`)."""
    from mtfleet.engines.detect import AUTO

    if src_lang != AUTO:
        return False
    if preprocessor is not None:
        raise ModelError(
            f"--src-lang {AUTO} cannot be used with --preprocessor {preprocessor}, which needs the "
            f"source's own code."
        )
    return True


def _check_preprocessor_name(preprocessor: str | None) -> None:
    if preprocessor is not None and preprocessor not in PREPROCESSORS:
        raise ModelError(
            f"Preprocessor {preprocessor!r} does not exist; mtfleet has {', '.join(PREPROCESSORS)}."
        )


def _check_preprocessor_fits(tokens: Any, preprocessor: str | None) -> None:
    """IndicTrans2 reads its languages from the text IndicProcessor prepares, and only from it."""
    if tokens.languages.mark == "preprocessor" and preprocessor is None:
        raise ModelError(
            f"Model {tokens.model_name} is IndicTrans2, which takes its text through AI4Bharat's "
            f"IndicProcessor: add --preprocessor indictrans."
        )


def inspect_model(model: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """What a job would do with `model`: its family, the languages it knows and how they are
    given, its input limit and the engines that can run it. Loads no weights."""
    from mtfleet.engines.languages import iso_639
    from mtfleet.engines.tokens import ModelTokenizer, language_scheme

    tokens = ModelTokenizer.without_languages(model, trust_remote_code=trust_remote_code)
    scheme = language_scheme(tokens.config, tokens.tokenizer)
    return {
        "model": model,
        "model_type": tokens.config.model_type,
        "architecture": (tokens.config.architectures or [tokens.config.model_type])[0],
        "family": scheme.family,
        "tokenizer_class": type(tokens.tokenizer).__name__,
        "languages": {
            "count": len(scheme.codes),
            "codes": sorted(scheme.codes),
            "given_as": LANGUAGE_MARKS[scheme.mark].format(tag=scheme.tag.format("xx")),
            # what each code is in ISO 639, as users type it (mar_Deva: mr)
            "iso639": {code: iso_639(code) for code in sorted(scheme.codes)},
        },
        "max_input_tokens": tokens.max_input_tokens,
        "remote_code": bool(tokens.remote_code),
        "engines": _engines_for(tokens.config, remote=bool(tokens.remote_code)),
    }


# How a job gives a family its languages, by LanguageScheme.mark
LANGUAGE_MARKS = {
    "code": "--src-lang and --tgt-lang: the source's code starts it, the target's is forced first",
    "tag": "--tgt-lang: {tag} before each source",
    "preprocessor": "--preprocessor indictrans with FLORES --src-lang and --tgt-lang",
    "none": "none: one language pair",
}


def _engines_for(config: Any, *, remote: bool) -> list[str]:
    engines = ["hf"]
    try:
        from mtfleet.engines.ct2 import CONVERTIBLE_CONFIGS
    except ModelError:  # CTranslate2 is not installed
        return engines
    # a model with its own code has a config class CTranslate2 has never seen
    if not remote and type(config).__name__ in CONVERTIBLE_CONFIGS:
        engines.append("ct2")
    return engines


def _unknown_engine(name: str) -> ModelError:
    return ModelError(f"Engine {name!r} does not exist; mtfleet has {', '.join(ENGINES)}.")


__all__ = ["ENGINES", "PREPROCESSORS", "Engine", "check_model", "inspect_model", "load_engine"]
