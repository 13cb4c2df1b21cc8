"""One message, worded for where it is read: the CLI names options (`--tgt-lang`, `--output`),
the API names the fields of a job's body (`tgt_lang`, `output`).

Library code words a setting as its CLI option, as most of its users meet it; the API rewords
its answers with `api_wording`, the CLI the API's answers (and pydantic's) with `cli_wording`.
"""

from __future__ import annotations

import re

from mtfleet.spec import JobSpec

# Job settings whose CLI option is not the field's name with dashes
OPTION_OF = {"input": "INPUT", "keep_warm_s": "--keep-warm", "lease_ttl_s": "--lease-ttl"}
FIELD_OF = {option: field for field, option in OPTION_OF.items()}
NEEDS_TOKEN = "This call needs the header 'Authorization: Bearer <MTFLEET_API_TOKEN>'."
WRONG_TOKEN = "The API token is wrong."
# The API's answers about its token, as the CLI's user sets it
TOKEN_WORDING = {
    NEEDS_TOKEN: "The API needs a token: set MTFLEET_API_TOKEN to the one mtfleet serve printed.",
    WRONG_TOKEN: "MTFLEET_API_TOKEN is not this API's token.",
}
# `Field output`, `(src_lang)`: a job setting as the API names it
FIELD = re.compile(r"\bField (?P<field>\w+)|\((?P<aside>[a-z_]+)\)")
# `--tgt-lang`: a CLI option; `pass --overwrite`: a flag turned on
OPTION = re.compile(r"(?P<pass>pass )?(?<![\w-])(?P<option>--[a-z][a-z-]*)")


def option_name(field: str) -> str:
    """The CLI option of a job setting: `tgt_lang` is --tgt-lang, `keep_warm_s` --keep-warm."""
    return OPTION_OF.get(field, "--" + field.replace("_", "-"))


def cli_wording(message: str) -> str:
    """`message` naming CLI options where it names a job's fields."""
    for api, cli in TOKEN_WORDING.items():
        message = message.replace(api, cli)

    def option(match: re.Match[str]) -> str:
        field = match["field"] or match["aside"]
        if field not in JobSpec.model_fields:
            return match[0]
        return option_name(field) if match["field"] else f"({option_name(field)})"

    return FIELD.sub(option, message)


def api_wording(message: str) -> str:
    """`message` naming a job's fields where it names CLI options."""

    def field(match: re.Match[str]) -> str:
        option = match["option"]
        name = FIELD_OF.get(option, option.removeprefix("--").replace("-", "_"))
        if name not in JobSpec.model_fields:
            return match[0]
        if match["pass"]:
            return f"set {name} to true"
        return name

    return OPTION.sub(field, message)
