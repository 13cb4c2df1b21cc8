"""IndicTrans2's text processing around any engine: AI4Bharat's IndicProcessor before and after.

IndicTrans2 (`ai4bharat/indictrans2-en-indic-1B` and its siblings) is trained on text that
IndicTransToolkit's `IndicProcessor` prepared: punctuation and numerals normalized, URLs, e-mail
addresses and numbers put behind placeholders, Indic scripts transliterated to Devanagari, and the
FLORES codes of both languages before the text (`eng_Latn mar_Deva ...`). Its output goes back
through the same processor: placeholders restored, the target's script, detokenized. AI4Bharat's
own inference does exactly `preprocess_batch(batch, src_lang=, tgt_lang=)`, the model (its
tokenizer decoding with `skip_special_tokens` and `clean_up_tokenization_spaces`), then
`postprocess_batch(translations, lang=tgt_lang)`; `IndicTransEngine` does the same around any
engine.

The processor keeps one placeholder map per preprocessed sentence in a queue that postprocessing
empties in order, so every preprocessing here is followed by exactly one postprocessing of as many.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from mtfleet.engines.base import Engine, EngineWrapper
from mtfleet.engines.languages import model_code
from mtfleet.errors import ModelError

NAME = "indictrans"
# The FLORES codes IndicTrans2 translates between (its model card's 22 scheduled languages,
# in their scripts, and English)
INDICTRANS2_LANGUAGES = (
    "asm_Beng", "ben_Beng", "brx_Deva", "doi_Deva", "eng_Latn", "gom_Deva", "guj_Gujr",
    "hin_Deva", "kan_Knda", "kas_Arab", "kas_Deva", "mai_Deva", "mal_Mlym", "mar_Deva",
    "mni_Beng", "mni_Mtei", "npi_Deva", "ory_Orya", "pan_Guru", "san_Deva", "sat_Olck",
    "snd_Arab", "snd_Deva", "tam_Taml", "tel_Telu", "urd_Arab",
)  # fmt: skip
PACKAGE = "indictranstoolkit"


def indic_processor() -> Any:
    """A fresh IndicProcessor for inference; one sentence naming the package when it is missing."""
    return _processor_class()(inference=True)


def _processor_class() -> Any:
    if importlib.util.find_spec("IndicTransToolkit") is None:
        raise ModelError(
            f"--preprocessor {NAME} needs AI4Bharat's IndicTransToolkit: pip install {PACKAGE}."
        )
    try:
        from IndicTransToolkit import IndicProcessor
    except ImportError:
        # IndicTransToolkit 1.1.1's __init__ also imports its training collator, which asks
        # transformers 5 for a name it no longer has; the processor needs none of it
        return _processor_module().IndicProcessor
    return IndicProcessor


def _processor_module() -> ModuleType:
    """IndicTransToolkit's compiled processor module, loaded without its package's __init__."""
    package = importlib.util.find_spec("IndicTransToolkit")
    assert package is not None and package.submodule_search_locations is not None
    for folder in package.submodule_search_locations:
        for path in sorted(Path(folder).glob("processor.*")):
            if path.suffix in (".so", ".pyd"):
                spec = importlib.util.spec_from_file_location("IndicTransToolkit.processor", path)
                if spec is not None and spec.loader is not None:
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                    return module
    raise ModelError(
        f"--preprocessor {NAME} cannot load IndicTransToolkit's processor from "
        f"{', '.join(package.submodule_search_locations)}: reinstall {PACKAGE}."
    )


def check_languages(src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """The two FLORES codes the processor needs (`mr` is mar_Deva), or one sentence naming the
    nearest ones."""
    if src_lang is None or tgt_lang is None:
        raise ModelError(
            f"--preprocessor {NAME} needs a source and a target language as FLORES codes "
            f"(--src-lang eng_Latn --tgt-lang mar_Deva)."
        )
    return (
        model_code(src_lang, INDICTRANS2_LANGUAGES, "IndicTrans2", "--src-lang"),
        model_code(tgt_lang, INDICTRANS2_LANGUAGES, "IndicTrans2", "--tgt-lang"),
    )


class IndicTransEngine(EngineWrapper):
    """An engine whose segments go through IndicProcessor before it and after it."""

    def __init__(self, engine: Engine, *, src_lang: str | None, tgt_lang: str | None) -> None:
        self.src_lang, self.tgt_lang = check_languages(src_lang, tgt_lang)
        self.processor = indic_processor()
        super().__init__(engine)
        tokens = getattr(engine, "tokens", None)
        if tokens is not None:
            # as AI4Bharat's inference decodes
            tokens.decode_settings["clean_up_tokenization_spaces"] = True

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(self._preprocessed_for_counting(texts))

    def translate(self, segments: Sequence[str]) -> list[str]:
        if not segments:
            return []
        sources = self.processor.preprocess_batch(
            list(segments), src_lang=self.src_lang, tgt_lang=self.tgt_lang
        )
        translations = self.engine.translate(sources)
        return self.processor.postprocess_batch(list(translations), lang=self.tgt_lang)

    def describe(self) -> dict[str, Any]:
        signature = self.engine.describe()
        return {
            **signature,
            "preprocessor": {
                "name": NAME,
                "src_lang": self.src_lang,
                "tgt_lang": self.tgt_lang,
                "version": metadata.version(PACKAGE),
            },
            "versions": {**signature.get("versions", {}), PACKAGE: metadata.version(PACKAGE)},
        }

    # Only these reach the engine inside: its tokens and token ids would bypass the processor
    # (the health checks' retries then translate through `translate`, uncapped)

    @property
    def health_checked(self) -> bool:
        return getattr(self.engine, "health_checked", True)

    @property
    def beam(self) -> int | None:
        return getattr(self.engine, "beam", None)

    @beam.setter
    def beam(self, beam: int) -> None:
        self.engine.beam = beam  # type: ignore[attr-defined]

    def _preprocessed_for_counting(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        sources = self.processor.preprocess_batch(
            list(texts), src_lang=self.src_lang, tgt_lang=self.tgt_lang
        )
        # empties the placeholder queue this preprocessing filled
        self.processor.postprocess_batch([""] * len(sources), lang=self.tgt_lang)
        return sources
