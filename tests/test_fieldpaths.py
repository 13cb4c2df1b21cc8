"""Field paths: naming the values of a row to translate, and finding them."""

from __future__ import annotations

import pytest

from mtfleet.data import (
    EVERY_ITEM,
    FieldPath,
    check_paths_exist,
    find_values,
    format_location,
    parse_field_paths,
    parse_location,
    set_value,
)
from mtfleet.errors import FieldPathError

CHAT = {
    "id": 7,
    "meta": {"title": "Greetings", "lang": "en"},
    "conversations": [
        {"from": "human", "value": "Hi."},
        {"from": "gpt", "value": "Hello!"},
        {"from": "human"},
    ],
    "tags": ["a", "b"],
}


def test_comma_separated_paths_are_parsed_in_order_without_repeats() -> None:
    paths = parse_field_paths(" instruction, input,output,instruction,")
    assert [path.text for path in paths] == ["instruction", "input", "output"]
    assert parse_field_paths(["a,b", "c"]) == parse_field_paths("a,b,c")


def test_dots_name_nested_keys_and_brackets_list_items() -> None:
    assert parse_field_paths("meta.title")[0].steps == ("meta", "title")
    assert parse_field_paths("conversations[].value")[0].steps == (
        "conversations",
        EVERY_ITEM,
        "value",
    )
    assert parse_field_paths("conversations[1].value")[0].steps == ("conversations", 1, "value")


@pytest.mark.parametrize("spec", ["", " , ", "a..b", ".a", "a.", "a[", "a[x]", "[].value", "a]"])
def test_malformed_paths_are_an_error_with_an_example(spec: str) -> None:
    with pytest.raises(FieldPathError, match="instruction"):
        parse_field_paths(spec)


def test_paths_find_every_value_in_document_order() -> None:
    (values,) = [find_values(CHAT, path) for path in parse_field_paths("conversations[].value")]
    assert values == [
        (("conversations", 0, "value"), "Hi."),
        (("conversations", 1, "value"), "Hello!"),
    ]
    assert find_values(CHAT, FieldPath("meta.title", ("meta", "title"))) == [
        (("meta", "title"), "Greetings")
    ]
    assert [value for _, value in find_values(CHAT, parse_field_paths("tags[]")[0])] == ["a", "b"]
    assert find_values(CHAT, parse_field_paths("meta")[0]) == [(("meta",), CHAT["meta"])]


@pytest.mark.parametrize(
    "spec", ["missing", "meta.missing", "id.value", "meta[].title", "conversations[9].value"]
)
def test_a_path_through_a_missing_key_or_a_value_of_another_type_finds_nothing(spec: str) -> None:
    assert find_values(CHAT, parse_field_paths(spec)[0]) == []


def test_set_value_replaces_the_value_at_a_location() -> None:
    row = {"meta": {"title": "a"}, "conversations": [{"value": "x"}, {"value": "y"}]}
    set_value(row, ("conversations", 1, "value"), "Y")
    set_value(row, ("meta", "title"), "A")
    assert row == {"meta": {"title": "A"}, "conversations": [{"value": "x"}, {"value": "Y"}]}


@pytest.mark.parametrize(
    ("location", "text"),
    [
        (("instruction",), "instruction"),
        (("meta", "title"), "meta.title"),
        (("conversations", 2, "value"), "conversations[2].value"),
        (("grid", 0, 1), "grid[0][1]"),
        (("meta", "2"), "meta.2"),
    ],
)
def test_locations_are_written_and_read_back_alike(location: tuple, text: str) -> None:
    assert format_location(location) == text
    assert parse_location(text) == location


def test_a_location_names_one_item_not_every_item() -> None:
    with pytest.raises(FieldPathError, match="one list item"):
        parse_location("conversations[].value")


def test_a_path_matching_nothing_lists_the_fields_the_rows_have() -> None:
    rows = [{"instruction": "a", "input": "", "output": "b"}] * 102
    with pytest.raises(FieldPathError) as raised:
        check_paths_exist(rows, parse_field_paths("instruction,outptu"), "data.json")
    assert str(raised.value) == (
        "Field 'outptu' matches nothing in the first 102 rows of data.json; "
        "its rows have: instruction, input, output."
    )


def test_nested_fields_are_listed_as_paths_to_their_values() -> None:
    with pytest.raises(
        FieldPathError, match=r"id, meta\.title, meta\.lang, conversations\[\]\.from"
    ):
        check_paths_exist([CHAT], parse_field_paths("conversation[].value"), "chat.jsonl")


def test_a_path_found_in_any_sampled_row_passes_and_only_sampled_rows_count() -> None:
    rows = [{"a": "x"}] * 5 + [{"a": "x", "late": "y"}]
    check_paths_exist(rows, parse_field_paths("a,late"), "data.jsonl")
    with pytest.raises(FieldPathError, match="first 5 rows"):
        check_paths_exist(rows, parse_field_paths("late"), "data.jsonl", sample=5)


def test_an_empty_dataset_has_no_paths_to_check() -> None:
    check_paths_exist([], parse_field_paths("anything"), "empty.json")
