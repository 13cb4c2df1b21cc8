"""Which outputs are bad, as the API, the console and the CLI show it: a finished job's flagged
units paged through GET /v1/jobs/{id}/flags, the sample viewer's marks and its "only flagged"
filter, the console's Quality card, `mtfleet inspect --output json` and the status line.

The job runs the reverse engine over German sentences in a ShareGPT-style nested field, with
faults injected (MTFLEET_REVERSE_FAULTS, one segment in EVERY), so its health checks flag a known
set of units."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mtfleet.api.server import ServerSettings
from mtfleet.cli.console import render_job
from mtfleet.cli.main import app
from mtfleet.testing.api import authorized, serving
from mtfleet.testing.cluster import wait_for
from mtfleet.testing.engines import FAULT_EVERY_VARIABLE, FAULTS_VARIABLE

pytestmark = pytest.mark.cluster

MULTI30K_DE = Path(__file__).parents[2] / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
TOKEN = "quality-test-token-0b7e1f3a9c5d2e8f4a6b"
EVERY = 3
CHROMIUM = Path("/usr/bin/chromium")


def conversations() -> list[dict[str, Any]]:
    with gzip.open(MULTI30K_DE, "rt", encoding="utf-8") as stream:
        sentences = [line.strip() for _, line in zip(range(60), stream, strict=False)]
    return [
        {
            "id": row,
            "conversations": [
                {"from": "human", "value": sentences[2 * row]},
                {"from": "gpt", "value": sentences[2 * row + 1]},
            ],
        }
        for row in range(30)
    ]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data_root")
    (root / "chat.jsonl").write_text("".join(json.dumps(row) + "\n" for row in conversations()))
    (root / "out").mkdir()
    return root


@pytest.fixture(scope="module")
def api(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        # Ray's workers inherit the environment of the process that starts the cluster
        env.setenv(FAULTS_VARIABLE, "loop,stutter,copy,numbers")
        env.setenv(FAULT_EVERY_VARIABLE, str(EVERY))
        env.setenv("OMP_NUM_THREADS", "1")
        settings = ServerSettings(
            data_root=data_root, token=TOKEN, state_dir=tmp_path_factory.mktemp("state")
        )
        with serving(settings) as url:
            yield url


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with authorized(api, TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def finished(http: httpx.Client) -> dict[str, Any]:
    spec = {
        "input": "chat.jsonl",
        "output": "out/chat.de.jsonl",
        "fields": ["conversations[].value"],
        "model": "reverse",
        "engine": "reverse",
        "tgt_lang": "de",
        "shard_tokens": 64,
        "job_id": "chat",
        # a sample reads the done shards' parts, which the job keeps only so
        "keep_work": True,
    }
    response = http.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    wait_for(
        lambda: http.get("/v1/jobs/chat").json()["state"] in ("succeeded", "failed"),
        timeout_s=180,
    )
    view = http.get("/v1/jobs/chat").json()
    assert view["state"] == "succeeded", view["error"]
    return view


def flags_file(data_root: Path) -> list[dict[str, Any]]:
    with open(data_root / "out" / "chat.de.jsonl.flags.jsonl", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def test_the_flags_of_a_job_are_paged_through_whole_with_their_field_paths(
    http: httpx.Client, finished: dict[str, Any], data_root: Path
) -> None:
    units: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        page = http.get("/v1/jobs/chat/flags", params={"cursor": cursor, "limit": 4}).json()
        units += page["units"]
        cursor = page["next_cursor"]

    on_disk = flags_file(data_root)
    assert finished["health"]["units_flagged"] == page["units_flagged"] == len(on_disk) > 0
    assert [(u["row"], u["field"], u["checks"]) for u in units] == [
        (u["row"], u["field"], u["checks"]) for u in on_disk
    ]
    assert {unit["field"] for unit in units} <= {
        "conversations[0].value",
        "conversations[1].value",
    }
    assert "loop" in page["per_check"]
    # the flags file is as readable as the output it describes
    output = data_root / "out" / "chat.de.jsonl"
    flags = output.with_name("chat.de.jsonl.flags.jsonl")
    assert flags.stat().st_mode & 0o777 == output.stat().st_mode & 0o777 == 0o644


def test_the_flags_can_be_asked_for_one_check_and_an_unknown_check_is_refused(
    http: httpx.Client, finished: dict[str, Any], data_root: Path
) -> None:
    page = http.get("/v1/jobs/chat/flags", params={"check": "loop", "limit": 500}).json()

    assert page["units"] and all("loop" in unit["checks"] for unit in page["units"])
    assert len(page["units"]) == finished["health"]["per_check"]["loop"]
    refused = http.get("/v1/jobs/chat/flags", params={"check": "nope"})
    assert refused.status_code == 422
    assert "Check 'nope' does not exist" in refused.json()["error"]


def test_a_sample_marks_each_unit_with_what_its_checks_found(
    http: httpx.Client, finished: dict[str, Any], data_root: Path
) -> None:
    flagged = {(entry["row"], entry["field"]): entry["checks"] for entry in flags_file(data_root)}
    row = min(row for row, _ in flagged)

    sample = http.get("/v1/jobs/chat/sample", params={"row_start": row}).json()

    for unit in sample["units"]:
        assert unit["checks"] == flagged.get((unit["row"], unit["loc"]), [])
    assert any(unit["checks"] for unit in sample["units"])


def test_inspect_answers_json_with_whole_field_paths(
    finished: dict[str, Any], data_root: Path
) -> None:
    result = CliRunner().invoke(
        app, ["inspect", str(data_root / "out" / "chat.de.jsonl"), "--output", "json"]
    )

    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["units_flagged"] == finished["health"]["units_flagged"]
    assert [(u["row"], u["field"]) for u in answer["units"]] == [
        (u["row"], u["field"]) for u in flags_file(data_root)
    ]


def test_the_terminal_status_of_a_finished_job_says_how_many_units_were_flagged(
    finished: dict[str, Any],
) -> None:
    console = Console(width=100, record=True)

    console.print(render_job(finished))

    flagged = finished["health"]["units_flagged"]
    assert f"checks: {flagged} of {finished['health']['units_checked']} units flagged" in (
        console.export_text()
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="make install installs Debian's chromium")
def test_the_console_shows_quality_and_lists_and_marks_the_flagged_units(
    api: str, finished: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    health = finished["health"]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{api}/#token={TOKEN}")
        page.evaluate("() => { location.hash = '#/job/chat'; }")

        summary = page.locator("#quality-summary")
        expect(summary).to_contain_text(
            f"{health['units_flagged']} of {health['units_checked']} units flagged"
        )
        expect(page.locator("#units-flagged")).to_have_text(f"{health['units_flagged']} flagged")
        expect(page.locator("#quality-checks tbody tr")).to_have_count(len(health["per_check"]))

        page.select_option("#flag-check", "loop")
        page.click("#show-flagged")
        rows = page.locator("#flag-rows tbody tr")
        expect(rows).to_have_count(min(health["per_check"]["loop"], 20))
        expect(rows.first.locator(".check[data-check=loop]")).to_be_visible()
        page.screenshot(path=tmp_path / "quality.png", full_page=True)

        page.locator("#shard-map .shard.s-done").first.click()
        sample = page.locator("#sample-rows tbody tr")
        expect(sample.first).to_be_visible()
        total = sample.count()
        flagged = page.locator("#sample-rows tbody tr.flagged").count()
        page.check("#only-flagged")
        expect(page.locator("#sample-rows tbody tr:visible")).to_have_count(flagged)
        assert flagged < total
        browser.close()
    assert errors == []
