"""One message worded for where it is read: CLI options in the CLI, a job's fields in the API."""

from __future__ import annotations

from mtfleet.wording import NEEDS_TOKEN, WRONG_TOKEN, api_wording, cli_wording, option_name


def test_a_fields_option_is_its_name_with_dashes_or_its_own() -> None:
    assert option_name("tgt_lang") == "--tgt-lang"
    assert option_name("keep_warm_s") == "--keep-warm"
    assert option_name("lease_ttl_s") == "--lease-ttl"
    assert option_name("input") == "INPUT"


def test_the_cli_names_options_where_the_api_names_fields() -> None:
    assert cli_wording("Field output: out/x.json lies outside the data root.") == (
        "--output: out/x.json lies outside the data root."
    )
    assert cli_wording("Field keep_warm_s is required.") == "--keep-warm is required."
    assert cli_wording("de is also the source language (src_lang)") == (
        "de is also the source language (--src-lang)"
    )


def test_the_cli_leaves_words_that_are_no_job_setting() -> None:
    message = "Field colour: unknown (a note) in Field text."
    assert cli_wording(message) == message


def test_the_cli_tells_its_user_to_set_the_token_not_a_header() -> None:
    assert "header" not in cli_wording(NEEDS_TOKEN)
    assert cli_wording(NEEDS_TOKEN).startswith("The API needs a token: set MTFLEET_API_TOKEN")
    assert cli_wording(WRONG_TOKEN) == "MTFLEET_API_TOKEN is not this API's token."


def test_the_api_names_fields_where_the_library_names_options() -> None:
    assert api_wording(
        "Model m has no language code 'xx' (--tgt-lang); the nearest it has are de."
    ) == ("Model m has no language code 'xx' (tgt_lang); the nearest it has are de.")
    assert api_wording("--src-lang auto needs --tgt-lang, or --keep-warm.") == (
        "src_lang auto needs tgt_lang, or keep_warm_s."
    )
    assert api_wording("run mtfleet serve --allow-remote-code") == (
        "run mtfleet serve --allow-remote-code"
    )


def test_the_api_sets_a_field_where_the_library_passes_a_flag() -> None:
    assert api_wording("Field output: x exists; pass --overwrite to replace it.") == (
        "Field output: x exists; set overwrite to true to replace it."
    )
    assert cli_wording("Field output: x exists; pass --overwrite to replace it.") == (
        "--output: x exists; pass --overwrite to replace it."
    )
