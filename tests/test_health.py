"""The health checks, one fault at a time, and the retry that may cure a flagged segment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mtfleet.checked import CheckedEngine
from mtfleet.data.segment import Protection, segment
from mtfleet.health import (
    HealthChecks,
    LanguageCheck,
    LengthBand,
    log_length_ratio,
    preload_language_models,
    repetition_loop,
    untranslated,
)
from mtfleet.pipeline import translate_texts
from mtfleet.testing.engines import ReverseEngine

checks = HealthChecks()


def flags(source: str, translation: str) -> list[str]:
    return checks.segment_flags(source, translation)


def test_a_faithful_translation_is_not_flagged() -> None:
    assert (
        flags("Two dogs play in the snow at 5 pm.", "Zwei Hunde spielen um 5 Uhr im Schnee.") == []
    )


def test_a_repeated_word_or_phrase_is_a_loop_unless_the_source_repeats_it() -> None:
    assert repetition_loop("The poor man.", "Der arme, arme, arme, arme Mann.")
    assert repetition_loop("He went home.", "Er ging nach Hause nach Hause nach Hause.")
    assert not repetition_loop("Ha ha ha ha ha!", "Ha ha ha ha ha!")
    assert not repetition_loop("A man.", "Ein Mann, ein Mann.")


@pytest.mark.parametrize(
    ("source", "translation"),
    [
        ("Identify the odd one out.", "Issssssss, einer ausgewinininin ist."),
        ("Very good.", "Silsssssss, gut."),
        ("It is unbelievable.", "Es ist unbebebebebebesssssssssssss."),
        ("Choose one.", "wähtttelteltelteltelte"),
    ],
)
def test_a_word_that_stutters_in_letters_is_a_loop(source: str, translation: str) -> None:
    assert flags(source, translation) == ["loop"]


def test_letters_the_source_repeats_as_much_are_no_stutter() -> None:
    assert not repetition_loop("Brrrrr, it is cold.", "Brrrrr, es ist kalt.")
    assert not repetition_loop("She laughed: hahaha.", "Sie lachte: hahaha.")
    assert not repetition_loop("A trip to Mississippi.", "Eine Reise nach Mississippi.")
    assert not repetition_loop("Shipping on the river.", "Schifffahrt auf dem Fluss.")


def test_an_emoji_or_symbol_the_translation_lost_is_flagged() -> None:
    source = "A happy dog 🐶 in the snow ❄️ with 👧👦! 🎉 (© 2024, 5 €)"

    assert flags(source, "Ein glücklicher Hund im Schnee mit ! 🎉 (© 2024, 5 €)") == [
        "lost_symbols"
    ]
    assert flags(source, "Ein glücklicher Hund 🐶 im Schnee ❄️ mit 👧👦! 🎉 (© 2024, 5 €)") == []


def test_markdown_emphasis_table_pipes_and_tabs_that_vanish_are_flagged() -> None:
    assert flags("A **big** dog.", "Ein großer Hund.") == ["markdown"]
    assert flags("| dog | cat |", "Hund Katze") == ["markdown"]
    assert flags("Name:\tdog", "Name: Hund") == ["markdown"]
    assert flags("A **big** dog.", "Ein **großer** Hund.") == []


def test_a_copied_source_is_untranslated_but_names_and_numbers_are_not() -> None:
    assert untranslated("A man rides a bike.", "A man rides a bike.")
    assert untranslated("A man rides a bike.", "A man rides a bike!")
    assert not untranslated("New York City", "New York City")
    assert not untranslated("42", "42")
    assert not untranslated("A man rides a bike.", "Ein Mann fährt Fahrrad.")


@pytest.mark.parametrize(
    ("source", "translation", "check"),
    [
        ("Buy 3 apples for 12 euros.", "Kaufe 3 Äpfel für 21 Euro.", "numbers"),
        ("Hello {name}, you have %d messages.", "Hallo, Sie haben %d Nachrichten.", "placeholders"),
        ("This is <b>bold</b> text.", "Das ist fetter Text.", "markup"),
        ("Run `pip install x` first.", "Führe zuerst pip install x aus.", "code"),
        ("See https://example.com/a for more.", "Siehe example.com für mehr.", "urls"),
        ("Write to ann@example.com today.", "Schreib heute an Ann.", "emails"),
    ],
)
def test_what_must_survive_is_flagged_when_lost(source: str, translation: str, check: str) -> None:
    assert flags(source, translation) == [check]


def test_decimal_separators_of_another_locale_are_the_same_number() -> None:
    assert flags("It costs 3.50 dollars.", "Es kostet 3,50 Dollar.") == []


def test_a_value_keeps_its_lines_and_list_markers() -> None:
    source = "Steps:\n1. Open it.\n2. Close it."
    assert checks.value_flags(source, "Schritte:\n1. Öffne es.\n2. Schließe es.") == []
    assert checks.value_flags(source, "Schritte: 1. Öffne es. 2. Schließe es.") == ["lines"]
    assert checks.value_flags(source, "Schritte:\n1) Öffne es.\n2. Schließe es.") == ["lines"]


def test_the_length_band_is_the_jobs_own_and_flags_only_outliers() -> None:
    pairs = [("A man rides a red bike.", "Ein Mann fährt ein rotes Fahrrad.")] * 30
    band = LengthBand.learn([log_length_ratio(s, t) for s, t in pairs])
    assert band is not None
    assert not band.outside(log_length_ratio("Two dogs play.", "Zwei Hunde spielen."))
    long = "A man in a blue shirt is standing on a ladder cleaning windows of a house."
    assert band.outside(log_length_ratio(long, "Ein Mann."))
    assert LengthBand.learn([0.1] * 5) is None


def test_wrong_language_is_flagged_only_where_the_target_is_named_and_known() -> None:
    german = HealthChecks(tgt_lang="de")
    assert german.segment_flags(
        "Two dogs play in the snow.", "Deux chiens jouent dans la neige ensemble."
    ) == ["language"]
    assert german.segment_flags("Two dogs play in the snow.", "Zwei Hunde spielen im Schnee.") == []
    assert HealthChecks(tgt_lang="xx_Unknown").language is None
    assert HealthChecks(tgt_lang="deu_Latn").language is not None


def test_a_jobs_language_models_load_before_its_checks_for_each_target_it_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mtfleet.spec import JobSpec

    base = {"input": "a.jsonl", "output": "b.{tgt_lang}.jsonl", "model": "m", "fields": ["text"]}
    loaded: list[tuple[str | None, str | None, bool]] = []
    real = LanguageCheck.for_codes

    def for_codes(tgt_lang: str | None, src_lang: str | None, *, preloaded: bool = False) -> Any:
        loaded.append((tgt_lang, src_lang, preloaded))
        return real(tgt_lang, src_lang, preloaded=preloaded)

    monkeypatch.setattr(LanguageCheck, "for_codes", for_codes)
    translating = object()  # an engine whose output is a translation, so checked
    preload_language_models(JobSpec(**base, src_lang="en", tgt_lang=["de", "fr"]), translating)
    preload_language_models(
        JobSpec(**base, src_lang="en", tgt_lang="hi", checks=False), translating
    )
    preload_language_models(JobSpec(**base, src_lang="en", tgt_lang="ta"), ReverseEngine())

    assert loaded == [("de", "en", True), ("fr", "en", True)]
    # a check made after the load judges as one that loads at its first check
    german = LanguageCheck.for_codes("de", "en")
    assert german is not None
    assert german.wrong("Deux chiens jouent dans la neige ensemble.")
    assert not german.wrong("Zwei Hunde spielen im Schnee.")


def test_protected_spans_and_dnt_tags_are_kept_verbatim_and_the_tags_dropped() -> None:
    engine = ReverseEngine()
    protection = Protection(patterns=[r"ACME-\d+"])
    text = "Order ACME-42 now. Use <dnt>Hugging Face</dnt> models."
    pieces = segment(text, 128, engine.count_tokens, protection)
    sent = [piece.text for piece in pieces if piece.translate]
    assert not any("ACME-42" in s or "Hugging" in s for s in sent)
    outcome = translate_texts([text], engine, protection=protection)
    assert "ACME-42" in outcome.translations[0]
    assert "Hugging Face" in outcome.translations[0]
    assert "<dnt>" not in outcome.translations[0]


def test_a_glossary_term_becomes_its_target_term() -> None:
    protection = Protection(glossary={"mtfleet": "MT-Flotte"})
    outcome = translate_texts(
        ["We use mtfleet daily."],
        ReverseEngine(),
        protection=protection,
        checks=HealthChecks(protection=protection),
    )
    assert "MT-Flotte" in outcome.translations[0]
    assert "glossary" not in outcome.flags[0]
    assert checks.value_flags("We use mtfleet.", "Wir nutzen es.") == []
    assert HealthChecks(protection=protection).value_flags("We use mtfleet.", "Wir nutzen es.") == [
        "glossary"
    ]


class _LoopsOnLongSentences(ReverseEngine):
    """Loops on any segment of more than four words; reverses shorter ones."""

    def translate(self, segments):  # type: ignore[no-untyped-def]
        self.calls.append(list(segments))
        return [s + " again" * 6 if len(s.split()) > 4 else s[::-1] for s in segments]


def test_a_flagged_segment_is_retried_by_clauses_and_the_better_kept() -> None:
    engine = _LoopsOnLongSentences()
    outcome = translate_texts(
        ["the man walked home, then he slept."], engine, checks=HealthChecks()
    )
    assert outcome.translations == [",emoh deklaw nam eht .tpels eh neht"]
    assert outcome.flags == [[]]
    assert engine.calls[1] == ["the man walked home,", "then he slept."]


def test_a_segment_still_flagged_after_the_retry_is_reported_and_kept() -> None:
    engine = _LoopsOnLongSentences()
    checked = CheckedEngine(engine, HealthChecks())
    assert checked.translate(["one two three four five"]) == [
        "one two three four five" + " again" * 6
    ]
    assert checked.flags_of == {"one two three four five": ["loop"]}


def test_the_report_counts_per_check_and_field_and_lists_every_flagged_unit(tmp_path: Path) -> None:
    from mtfleet.api.views import JobHealth
    from mtfleet.health import HealthReport, flags_path

    report = HealthReport(tmp_path / "out.json", "keep")
    report.add(0, "items[0].text", [], "A man.", "Ein Mann.")
    report.add(1, "items[2].text", ["loop", "numbers"], "3 dogs.", "4 Hunde Hunde Hunde Hunde.")
    report.close()
    health = report.to_json()
    assert health["units_checked"] == 2 and health["units_flagged"] == 1
    assert health["per_field"] == {"items[].text": {"loop": 1, "numbers": 1}}
    lines = flags_path(tmp_path / "out.json").read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == [1]
    assert JobHealth(**health).per_check == {"loop": 1, "numbers": 1}


def test_a_report_without_flags_leaves_no_flags_file(tmp_path: Path) -> None:
    from mtfleet.health import HealthReport, flags_path

    flags_path(tmp_path / "out.json").write_text("stale\n")
    report = HealthReport(tmp_path / "out.json", "keep")
    report.close()
    assert not flags_path(tmp_path / "out.json").exists()


def test_a_glossary_is_a_tsv_and_a_bad_line_is_named(tmp_path: Path) -> None:
    from mtfleet.errors import DatasetError
    from mtfleet.health import read_glossary

    good = tmp_path / "terms.tsv"
    good.write_text("# terms\nmtfleet\tMT-Flotte\n\nRay\tRay\n")
    assert read_glossary(good) == {"mtfleet": "MT-Flotte", "Ray": "Ray"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("mtfleet MT-Flotte\n")
    with pytest.raises(DatasetError, match="Line 1 of the glossary"):
        read_glossary(bad)


def test_a_protect_pattern_that_is_no_re2_pattern_or_matches_nothing_is_refused() -> None:
    from pydantic import ValidationError

    from mtfleet.spec import JobSpec

    base = {"input": "a.jsonl", "output": "b.jsonl", "model": "m", "fields": ["text"]}
    assert JobSpec(**base, protect=[r"ACME-\d+"]).protect == [r"ACME-\d+"]
    with pytest.raises(ValidationError, match=r"the pattern '\(' is not one RE2 runs"):
        JobSpec(**base, protect=["("])
    with pytest.raises(ValidationError, match="lookarounds and backreferences"):
        JobSpec(**base, protect=[r"ACME(?=-\d)"])
    with pytest.raises(ValidationError, match="longer than 1024 characters"):
        JobSpec(**base, protect=["(" * 1000 + "a" + ")" * 1000])
    with pytest.raises(ValidationError, match="at most 64"):
        JobSpec(**base, protect=[f"a{i}" for i in range(65)])
    with pytest.raises(ValidationError, match="matches empty text"):
        JobSpec(**base, protect=["x*"])


def test_a_backtracking_pattern_finds_its_spans_in_time_linear_in_the_text() -> None:
    from mtfleet.data.segment import Protection

    # Python's re takes exponential time over this text; RE2 runs it once per character.
    protection = Protection(patterns=(r"(\D+)+\d",))
    text = "no digits here at all " * 200

    assert protection.spans(text) == []
    assert [span.end for span in protection.spans(text + "7")] == [len(text) + 1]


def test_glossary_terms_match_whole_words_only() -> None:
    from mtfleet.data.segment import Protection

    protection = Protection(glossary={"Ray": "Ray", "New York": "NY"})
    spans = protection.spans("Ray, Rays, Ray_x, New York and Ray.")

    assert sorted((span.start, span.end, span.output) for span in spans) == [
        (0, 3, "Ray"),
        (18, 26, "NY"),
        (31, 34, "Ray"),
    ]


def test_the_cli_refuses_a_pattern_re2_cannot_run_with_one_sentence_naming_it(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "ACME-1 ships."}\n')
    command = ["translate", str(rows), "-m", "reverse", "--engine", "reverse", "-f", "text"]
    command += ["-o", str(tmp_path / "out.jsonl"), "--protect", r"ACME(?=-\d)"]

    result = CliRunner().invoke(app, command)

    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()).startswith(
        "error: --protect: the pattern 'ACME(?=-\\\\d)' is not one RE2 runs"
    )
    assert "Traceback" not in result.output and not (tmp_path / "out.jsonl").exists()
