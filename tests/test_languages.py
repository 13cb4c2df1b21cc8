"""Language codes as users give them (ISO 639-1 or 639-3) and as each family's model knows them."""

from __future__ import annotations

import pytest

from mtfleet.engines.indictrans import INDICTRANS2_LANGUAGES
from mtfleet.engines.languages import (
    ISO_639_1,
    CodeMapping,
    LanguageCode,
    code_mappings,
    iso_639,
    model_code,
    nearest_codes,
)
from mtfleet.errors import ModelError
from mtfleet.random_models import M2M100_LANGUAGES, MBART50_LANGUAGES, NLLB_LANGUAGES


def code_for(code: str, codes: list[str] | tuple[str, ...]) -> str:
    return model_code(code, codes, "Model m", "--tgt-lang")


@pytest.mark.parametrize(
    ("given", "codes", "meant"),
    [
        ("mr", NLLB_LANGUAGES, "mar_Deva"),
        ("en", NLLB_LANGUAGES, "eng_Latn"),
        ("hin", NLLB_LANGUAGES, "hin_Deva"),
        ("mr", MBART50_LANGUAGES, "mr_IN"),
        ("hin", MBART50_LANGUAGES, "hi_IN"),
        ("mar_Deva", MBART50_LANGUAGES, "mr_IN"),
        ("deu", M2M100_LANGUAGES, "de"),
        ("__de__", M2M100_LANGUAGES, "de"),
        ("mr", INDICTRANS2_LANGUAGES, "mar_Deva"),
        ("ne", INDICTRANS2_LANGUAGES, "npi_Deva"),
        ("or", INDICTRANS2_LANGUAGES, "ory_Orya"),
    ],
)
def test_an_iso_639_code_means_the_models_code_of_its_language(
    given: str, codes: list[str], meant: str
) -> None:
    assert code_for(given, codes) == meant


def test_a_code_the_model_has_is_its_own() -> None:
    assert code_for("mar_Deva", NLLB_LANGUAGES) == "mar_Deva"
    assert code_for("mr", M2M100_LANGUAGES) == "mr"


def test_a_macrolanguage_means_the_language_it_is_written_as() -> None:
    # NLLB names nine Arabics and two Persians; Arabic is written as Standard Arabic
    assert code_for("ar", NLLB_LANGUAGES) == "arb_Arab"
    assert code_for("fa", NLLB_LANGUAGES) == "pes_Arab"
    assert code_for("arb", MBART50_LANGUAGES) == "ar_AR"


def test_a_language_the_model_writes_in_two_scripts_is_refused_naming_both() -> None:
    with pytest.raises(ModelError) as refused:
        code_for("zh", NLLB_LANGUAGES)

    assert str(refused.value) == (
        "Model m has 2 codes for --tgt-lang zh: zho_Hans, zho_Hant; give one of them."
    )


def test_a_code_without_a_script_prefers_the_models_plain_code() -> None:
    # MADLAD-400 has Hindi and romanized Hindi
    assert code_for("hin", ["hi", "hi_Latn", "en"]) == "hi"


def test_an_unknown_code_names_the_codes_of_its_language_first() -> None:
    with pytest.raises(ModelError) as refused:
        code_for("mar_Latn", NLLB_LANGUAGES)

    assert str(refused.value).startswith(
        "Model m has no language code 'mar_Latn' (--tgt-lang); the nearest it has are mar_Deva, "
    )
    assert str(refused.value).endswith("(202 in all).")


def test_a_malformed_code_is_refused_even_when_its_language_reads() -> None:
    with pytest.raises(ModelError, match=r"no language code 'mar_Deva2'.*nearest it has are mar"):
        code_for("mar_Deva2", NLLB_LANGUAGES)


def test_the_nearest_codes_rank_by_language_then_by_spelling() -> None:
    assert nearest_codes("mr", ["mai_Deva", "mar_Deva", "mr_XX"])[:2] == ["mr_XX", "mar_Deva"]
    assert nearest_codes("arb_Latn", NLLB_LANGUAGES)[0] == "arb_Arab"
    assert nearest_codes("kas", INDICTRANS2_LANGUAGES)[:2] == ["kas_Arab", "kas_Deva"]


def test_a_code_reads_as_its_iso_639_3_language_and_script() -> None:
    assert LanguageCode.read("zh-Hant-TW") == LanguageCode("zh-Hant-TW", "zho", "Hant", True)
    assert LanguageCode.read("en_XX") == LanguageCode("en_XX", "eng", None, True)
    assert LanguageCode.read("x").language is None


@pytest.mark.parametrize(
    ("code", "meant"),
    [
        ("mar_Deva", ("mar", "mr", "Deva")),
        ("mr_IN", ("mar", "mr", None)),
        ("__de__", ("deu", "de", None)),
        # Standard Arabic is what ar means to a model; Egyptian Arabic is no ar of its own
        ("arb_Arab", ("arb", "ar", "Arab")),
        ("arz_Arab", ("arz", None, "Arab")),
        ("ast", ("ast", None, None)),
        (">>fr<<", (None, None, None)),
    ],
)
def test_a_models_code_says_what_it_is_in_iso_639_as_users_type_it(
    code: str, meant: tuple[str | None, ...]
) -> None:
    assert tuple(iso_639(code).values()) == meant


def test_iso_639_1_agrees_with_lingua_on_every_language_it_detects() -> None:
    from lingua import Language

    for language in Language.all():
        two = language.iso_code_639_1.name.lower()
        assert ISO_639_1[two] == language.iso_code_639_3.name.lower(), language


def test_code_mappings_name_only_the_codes_that_changed() -> None:
    given = {"src_lang": "en", "tgt_lang": ["mr", "hin_Deva"]}
    resolved = {"src_lang": "eng_Latn", "tgt_lang": ["mar_Deva", "hin_Deva"]}

    assert code_mappings(given, resolved) == [
        CodeMapping("src_lang", "en", "eng_Latn"),
        CodeMapping("tgt_lang", "mr", "mar_Deva"),
    ]


def test_a_script_is_kept_where_the_model_writes_scripts_and_ignored_where_it_writes_none() -> None:
    assert code_for("mar-Deva", NLLB_LANGUAGES) == "mar_Deva"
    assert code_for("mar_Deva", MBART50_LANGUAGES) == "mr_IN"
    with pytest.raises(ModelError, match="no language code 'hin_Latn'"):
        code_for("hin_Latn", NLLB_LANGUAGES)
