"""The console: the page `mtfleet serve` answers at `/`, driven in a real Chromium (Debian's, through
Playwright), and the terminal console's tables and JSON for narrow terminals and scripts.

One server serves the module, over a local multi-node Ray cluster (`ray.cluster_utils.Cluster`),
so a test can add a node and watch the page show it. Jobs run the reverse engine (each segment's
characters reversed, no model), slowed by MTFLEET_REVERSE_DELAY_S so that a job lasts a few
seconds: long enough to watch its shard map fill in, and to pause, resume or cancel it. A test
fails on any JavaScript error and on any console error it did not expect (a refused call logs one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.cluster_utils import Cluster

from mtfleet.api.server import ServerSettings
from mtfleet.cluster.plan import HELD_VARIABLE
from mtfleet.testing.api import ConsoleRun, authorized, run_console, serving
from mtfleet.testing.cluster import local_cluster, wait_for

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: `make install` installs Debian's chromium", allow_module_level=True
    )

pytestmark = pytest.mark.cluster

TOKEN = "console-test-token-4d2a9c-91b6e03f5d"
DELAY_S = "0.1"
# 40 rows of one shard each at shard_tokens=16 (one sentence of 13 words, 14 estimated tokens)
ROWS = [
    {"id": i, "text": f"Sentence number {i:02d} is a plain line of words for the whole fleet"}
    for i in range(40)
]
SMALL_ROWS = ROWS[:6]
# enough rows that planning hands its shards over in steps (a step is looked at every 256 rows)
LONG_ROWS = [
    {"id": i, "text": f"Row {i} of a long input that is planned in steps"} for i in range(800)
]
# the reverse engine refuses a segment holding this word, on every attempt: that row fails
POISON = "POISON"
WAIT_MS = 90_000


def job_spec(output: str, job_id: str, **settings: Any) -> dict[str, Any]:
    return {
        "input": "rows.jsonl",
        "output": output,
        "fields": ["text"],
        "model": "reverse",
        "engine": "reverse",
        "shard_tokens": 16,
        "job_id": job_id,
        # the sample viewer reads a done shard's part, which a succeeded job keeps only so
        "keep_work": True,
        **settings,
    }


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data_root")
    (root / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    (root / "small.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SMALL_ROWS))
    (root / "long.jsonl").write_text("".join(json.dumps(row) + "\n" for row in LONG_ROWS))
    poisoned = [*SMALL_ROWS[:2], {"id": 2, "text": f"This one carries {POISON}."}]
    (root / "poisoned.jsonl").write_text("".join(json.dumps(row) + "\n" for row in poisoned))
    (root / "out" / "a" / "deep" / "folder").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def plan_held(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, a job's planning stops after each step that handed over shards."""
    return tmp_path_factory.mktemp("plan") / "held"


@pytest.fixture(scope="module")
def cluster(plan_held: Path) -> Iterator[Cluster]:
    with pytest.MonkeyPatch.context() as env:
        # Ray's workers inherit the environment of the process that starts the cluster.
        env.setenv("MTFLEET_REVERSE_DELAY_S", DELAY_S)
        env.setenv(HELD_VARIABLE, str(plan_held))
        env.setenv("MTFLEET_REVERSE_FAIL_ON", POISON)
        env.setenv("OMP_NUM_THREADS", "1")
        with local_cluster(head_cpus=2) as started:
            yield started


@pytest.fixture(scope="module")
def api(
    cluster: Cluster, data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API on a free loopback port, over the module's cluster (which it leaves running)."""
    settings = ServerSettings(
        data_root=data_root,
        token=TOKEN,
        state_dir=tmp_path_factory.mktemp("state"),
        address=cluster.address,
    )
    with serving(settings) as url:
        yield url


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with authorized(api, TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests leave a screenshot of each view."""
    return tmp_path_factory.mktemp("console-screens")


class Errors:
    """JavaScript errors and console errors of a page; a test names the refusals it expects."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.seen.append(f"console error: {message.text}")
                if message.type == "error"
                else None
            ),
        )

    def expect_refusal(self, status: int) -> None:
        """The browser logs every answer of this status, which the test provokes on purpose."""
        self.expected.append(re.compile(rf"status of {status}\b"))

    def unexpected(self) -> list[str]:
        return [seen for seen in self.seen if not any(p.search(seen) for p in self.expected)]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 860})
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def errors(page: Page) -> Iterator[Errors]:
    """The page's errors; every test that drives a page asks for them, and fails on any left."""
    watched = Errors(page)
    yield watched
    assert watched.unexpected() == []


def sign_in(page: Page, api: str, view: str = "#/fleet") -> None:
    page.goto(f"{api}/#token={TOKEN}")
    expect(page.locator("#nav")).to_be_visible()
    page.evaluate("view => { location.hash = view; }", view)


def shards(page: Page, state: str) -> Any:
    return page.locator(f"#shard-map .shard.s-{state}")


def run_to_end(http: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=spec)
    assert response.status_code in (200, 201), response.text
    job_id = response.json()["id"]
    wait_for(
        lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] in ("succeeded", "failed"),
        timeout_s=120,
    )
    return http.get(f"/v1/jobs/{job_id}").json()


@pytest.fixture(scope="module")
def finished(http: httpx.Client) -> dict[str, Any]:
    """A small job (six shards), run to its end before the test that needs it."""
    return run_to_end(http, job_spec("out/small.jsonl", "small-done", input="small.jsonl"))


# --- signing in


def test_a_wrong_token_shows_the_apis_error_and_the_right_one_signs_in(
    page: Page, errors: Errors, api: str, screens: Path
) -> None:
    errors.expect_refusal(401)
    response = page.goto(f"{api}/")

    assert response is not None and response.ok
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page.fill("#token", "not-the-token")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in-error")).to_have_text("The API token is wrong.")
    expect(page.locator("#nav")).to_be_hidden()
    page.screenshot(path=screens / "sign-in-refused.png")

    page.fill("#token", TOKEN)
    page.click("#sign-in button[type=submit]")

    expect(page.locator("#nodes tbody tr[data-state=alive]")).to_have_count(1)
    assert page.evaluate("sessionStorage.getItem('mtfleet.api_token')") == TOKEN
    assert page.context.cookies() == []


def test_a_token_in_the_url_fragment_signs_in_and_leaves_the_address_bar(
    page: Page, errors: Errors, api: str
) -> None:
    calls: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda request: (
            calls.append((request.url, request.headers.get("authorization")))
            if "/v1/" in request.url
            else None
        ),
    )

    page.goto(f"{api}/#token={TOKEN}")

    expect(page.locator("#nodes tbody tr[data-state=alive]")).to_have_count(1)
    assert page.url == f"{api}/#/fleet"
    assert calls and all(auth == f"Bearer {TOKEN}" for _, auth in calls), calls


# --- the fleet


def test_a_node_that_joins_appears_in_the_fleet_view_and_one_that_leaves_shows_dead(
    page: Page, errors: Errors, api: str, cluster: Cluster, screens: Path
) -> None:
    sign_in(page, api)
    expect(page.locator("#nodes tbody tr[data-state=alive]")).to_have_count(1)

    joined = cluster.add_node(num_cpus=1)

    row = page.locator(f"#nodes tbody tr[data-node-id='{joined.node_id}']")
    expect(row).to_have_attribute("data-state", "alive", timeout=30_000)
    expect(page.locator("#fleet-summary")).to_contain_text("2 of 2 nodes alive")
    page.screenshot(path=screens / "fleet.png")

    cluster.remove_node(joined)

    expect(row).to_have_attribute("data-state", "dead", timeout=60_000)
    expect(page.locator("#nodes tbody tr[data-state=alive]")).to_have_count(1)


# --- jobs


def test_a_job_submitted_through_the_form_fills_its_shard_map_and_succeeds(
    page: Page, errors: Errors, api: str, data_root: Path, screens: Path
) -> None:
    errors.expect_refusal(400)
    errors.expect_refusal(422)
    sign_in(page, api, "#/submit")
    # the form is built from the API's JobRequest schema: every field, defaults as hints; the
    # settings beyond the common ones are folded away
    expect(page.locator("#field-max_batch_tokens")).to_have_attribute("placeholder", "default 4096")
    expect(page.locator("#field-shard_tokens")).to_be_hidden()
    page.fill("#field-input", "../elsewhere.jsonl")
    page.fill("#field-output", "out/form.jsonl")
    page.fill("#field-model", "reverse")
    page.fill("#field-fields", "text")
    page.select_option("#field-engine", "reverse")
    page.fill("#field-job_id", "from-the-form")
    page.click("#advanced > summary")
    page.fill("#field-shard_tokens", "16")
    page.fill("#field-beam", "0")
    page.screenshot(path=screens / "submit.png", full_page=True)
    page.click("#advanced > summary")

    page.click("#submit-job")

    # a 422 names the field: beam must be at least 1, shown at the field, unfolded
    expect(page.locator("#field-beam-error")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#field-beam-error")).to_be_visible()
    page.fill("#field-beam", "")
    page.click("#submit-job")
    # a 400 names the field in its sentence: the input lies outside the data root
    expect(page.locator("#field-input-error")).to_contain_text("outside the data root")
    expect(page.locator("#field-beam-error")).to_have_text("")
    page.fill("#field-input", "rows.jsonl")

    page.click("#submit-job")

    expect(page).to_have_url(f"{api}/#/job/from-the-form")
    page.wait_for_function(
        "() => document.querySelector('#shard-map .s-done')"
        " && document.querySelector('#shard-map .s-pending')",
        timeout=WAIT_MS,
    )
    page.screenshot(path=screens / "job-running.png", full_page=True)
    expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(shards(page, "done")).to_have_count(40)
    expect(page.locator("#rows-done")).to_have_text("40 / 40 rows")
    expect(page.locator("#manifest-summary")).to_contain_text("40 rows")
    page.screenshot(path=screens / "job-succeeded.png", full_page=True)
    translated = [json.loads(line) for line in (data_root / "out" / "form.jsonl").open()]
    assert translated == [{**row, "text": row["text"][::-1]} for row in ROWS]


@pytest.fixture(scope="module")
def models(data_root: Path) -> Path:
    """Tiny NLLB (202 language codes) and Marian (one pair, none) models under the data root."""
    from mtfleet.random_models import build_tiny_model

    tiny = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
    for family in ("nllb", "marian"):
        build_tiny_model(family, data_root / "models" / family, **tiny)
    return data_root / "models"


def choose_model(page: Page, model: str) -> None:
    page.fill("#field-model", model)
    page.locator("#field-model").dispatch_event("change")


def test_the_form_offers_the_chosen_models_own_languages_and_still_takes_typed_codes(
    page: Page, errors: Errors, api: str, models: Path, screens: Path
) -> None:
    errors.expect_refusal(400)
    sign_in(page, api, "#/submit")
    expect(page.locator("#field-model")).to_be_visible()
    expect(page.locator("#pick-tgt_lang")).to_be_hidden()

    choose_model(page, "models/nllb")

    expect(page.locator("#model-languages")).to_have_text(
        "nllb: 202 language codes: pick them beside src lang and tgt lang, or type them"
    )
    expect(page.locator("#pick-src_lang option")).to_have_count(1 + 202)
    # each code with the ISO 639-1 code a user knows it by
    expect(page.locator("#pick-tgt_lang option[value=mar_Deva]")).to_have_text("mar_Deva · mr")
    page.select_option("#pick-src_lang", "eng_Latn")
    page.fill("#field-tgt_lang", "de")
    page.select_option("#pick-tgt_lang", "mar_Deva")
    page.select_option("#pick-tgt_lang", "hin_Deva")
    page.select_option("#pick-tgt_lang", "mar_Deva")
    expect(page.locator("#field-src_lang")).to_have_value("eng_Latn")
    expect(page.locator("#field-tgt_lang")).to_have_value("de, mar_Deva, hin_Deva")
    page.screenshot(path=screens / "submit-languages.png", full_page=True)

    # a model of one pair lists no codes: no picker, and a code may still be typed
    choose_model(page, "models/marian")
    expect(page.locator("#model-languages")).to_have_text(
        "marian: no language codes (one language pair)"
    )
    expect(page.locator("#pick-tgt_lang")).to_be_hidden()
    # a hub id this machine has not cached is one sentence at once, and typing goes on
    choose_model(page, "no-such-org/no-such-model-4d2a9c")
    expect(page.locator("#model-languages")).to_contain_text(
        "Model 'no-such-org/no-such-model-4d2a9c' is not found locally"
    )
    expect(page.locator("#pick-src_lang")).to_be_hidden()
    expect(page.locator("#field-tgt_lang")).to_have_value("de, mar_Deva, hin_Deva")
    expect(page.locator("#field-tgt_lang")).to_be_editable()


def test_a_running_job_is_paused_and_resumed_from_its_page(
    page: Page, errors: Errors, api: str, http: httpx.Client
) -> None:
    http.post("/v1/jobs", json=job_spec("out/steered.jsonl", "steered"))
    sign_in(page, api, "#/job/steered")
    expect(page.locator("#job")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(shards(page, "done").first).to_be_visible(timeout=WAIT_MS)

    page.click("#pause")

    expect(page.locator("#job")).to_have_attribute("data-state", "paused")
    expect(page.locator("#resume")).to_be_enabled()
    # shards leased before the pause finish; none is leased after it
    expect(shards(page, "leased")).to_have_count(0, timeout=30_000)
    assert http.get("/v1/jobs/steered").json()["state"] == "paused"
    assert shards(page, "pending").count() > 0

    page.click("#resume")

    expect(page.locator("#job")).to_have_attribute("data-state", "running")
    expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(shards(page, "done")).to_have_count(40)
    # the history says the console asked for both
    for kind in ("paused", "resumed"):
        expect(page.locator(f"#timeline li[data-kind='{kind}']")).to_contain_text(
            "by console at 127.0.0.1"
        )


def test_a_finished_job_is_deleted_from_its_page_after_a_second_click(
    page: Page, errors: Errors, api: str, http: httpx.Client, data_root: Path, screens: Path
) -> None:
    final = run_to_end(http, job_spec("out/deleted.jsonl", "deleted", input="small.jsonl"))
    assert final["state"] == "succeeded", final["error"]
    sign_in(page, api, "#/job/deleted")
    expect(page.locator("#timeline li[data-kind='succeeded']")).to_be_visible()
    expect(page.locator("#work-bytes")).to_contain_text("work files")
    page.screenshot(path=screens / "job-history.png", full_page=True)
    # a poll in flight when the job goes is answered 404
    errors.expect_refusal(404)

    page.click("#delete")
    page.click("#delete-confirm")

    expect(page).to_have_url(re.compile(r"#/jobs$"))
    assert http.get("/v1/jobs/deleted").status_code == 404
    assert (data_root / "out" / "deleted.jsonl").is_file()


def test_a_running_job_is_cancelled_from_its_page_after_a_second_click(
    page: Page, errors: Errors, api: str, http: httpx.Client
) -> None:
    http.post("/v1/jobs", json=job_spec("out/cancelled.jsonl", "cancelled"))
    sign_in(page, api, "#/job/cancelled")
    expect(shards(page, "done").first).to_be_visible(timeout=WAIT_MS)

    page.click("#cancel")
    expect(page.locator("#cancel-confirm")).to_be_visible()
    assert http.get("/v1/jobs/cancelled").json()["state"] in ("planning", "queued", "running")
    page.click("#cancel-confirm")

    expect(page.locator("#job")).to_have_attribute("data-state", "cancelled")
    assert http.get("/v1/jobs/cancelled").json()["state"] == "cancelled"
    for control in ("#pause", "#resume", "#cancel"):
        expect(page.locator(control)).to_be_disabled()

    page.click("#submit-again")

    # the form holds the job's settings, its paths as the submitter wrote them, and its id
    expect(page).to_have_url(f"{api}/#/submit/cancelled")
    expect(page.locator("#field-job_id")).to_have_value("cancelled")
    for field, value in (("input", "rows.jsonl"), ("output", "out/cancelled.jsonl")):
        expect(page.locator(f"#field-{field}")).to_have_value(value)
    expect(page.locator("#field-fields")).to_have_value("text")
    expect(page.locator("#field-shard_tokens")).to_have_value("16")
    expect(page.locator("#field-keep_work")).to_be_checked()


def test_a_succeeded_jobs_failed_rows_are_retried_from_its_page(
    page: Page, errors: Errors, api: str, http: httpx.Client
) -> None:
    spec = job_spec("out/poisoned.jsonl", "poisoned", input="poisoned.jsonl", max_attempts=1)
    final = run_to_end(http, spec)
    assert (final["state"], final["failures_total"]) == ("succeeded", 1)
    sign_in(page, api, "#/job/poisoned")

    page.click("#retry")

    # only the failed row runs again; the engine still refuses it, so it fails once more
    expect(page.locator("#timeline li[data-kind='retried']")).to_contain_text("by console")
    expect(page.locator("#timeline li[data-kind='succeeded']")).to_have_count(2, timeout=WAIT_MS)
    retried = http.get("/v1/jobs/poisoned").json()
    assert (retried["state"], retried["failures_total"], retried["rows_done"]) == (
        "succeeded",
        1,
        2,
    )


def test_the_jobs_view_filters_by_state_and_searches_ids_and_paths(
    page: Page, errors: Errors, api: str, finished: dict[str, Any], screens: Path
) -> None:
    sign_in(page, api, "#/jobs")
    expect(page.locator("#jobs tbody tr[data-job-id='small-done']")).to_be_visible()

    page.select_option("#state-filter", "succeeded")
    rows = page.locator("#jobs tbody tr[data-job-id]")
    expect(rows.first).to_be_visible()
    assert set(rows.evaluate_all("rows => rows.map(row => row.dataset.state)")) == {"succeeded"}
    page.screenshot(path=screens / "jobs.png")

    page.select_option("#state-filter", "")
    page.fill("#job-search", "out/small")

    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-job-id", "small-done")
    # paths relative to the data root, a targets column, and no sideways scrolling at 1280 px
    expect(rows.locator("td").nth(7)).to_have_text("small.jsonl")
    expect(page.locator("#jobs th").nth(5)).to_have_text("targets")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_the_sample_viewer_shows_a_done_shards_rows_beside_their_translations(
    page: Page, errors: Errors, api: str, finished: dict[str, Any], screens: Path
) -> None:
    sign_in(page, api, "#/job/small-done")
    expect(shards(page, "done")).to_have_count(6)

    shards(page, "done").nth(2).click()

    expect(page.locator("#sample-title")).to_have_text("Shard 2, row 2")
    sample = page.locator("#sample-rows tbody tr")
    expect(sample).to_have_count(1)
    expect(sample.locator(".source")).to_have_text(SMALL_ROWS[2]["text"])
    expect(sample.locator(".translation")).to_have_text(SMALL_ROWS[2]["text"][::-1])
    page.screenshot(path=screens / "sample.png", full_page=True)


def test_a_job_whose_input_is_still_planned_says_so_instead_of_an_eta(
    page: Page, errors: Errors, api: str, http: httpx.Client, plan_held: Path, screens: Path
) -> None:
    plan_held.touch()
    try:
        spec = job_spec("out/long.jsonl", "planned-in-steps", input="long.jsonl", shard_tokens=1000)
        http.post("/v1/jobs", json=spec)
        sign_in(page, api, "#/job/planned-in-steps")

        # the first shards are leased and done while the rest of the input waits to be planned
        expect(page.locator("#planning")).to_have_text(
            re.compile("planning the rest"), timeout=WAIT_MS
        )
        expect(shards(page, "done").first).to_be_visible(timeout=WAIT_MS)
        view = http.get("/v1/jobs/planned-in-steps").json()
        assert view["planning"] is True and view["eta_s"] is None
        assert 0 < view["rows_total"] < len(LONG_ROWS)
        page.screenshot(path=screens / "job-planning.png", full_page=True)
    finally:
        plan_held.unlink()

    expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    expect(page.locator("#planning")).to_have_count(0)
    expect(page.locator("#rows-done")).to_have_text(f"{len(LONG_ROWS)} / {len(LONG_ROWS)} rows")
    assert http.get("/v1/jobs/planned-in-steps").json()["planning"] is False


def test_a_job_into_several_languages_lists_them_and_samples_each(
    page: Page, errors: Errors, api: str, http: httpx.Client, screens: Path
) -> None:
    final = run_to_end(
        http,
        job_spec(
            "out/languages.{tgt_lang}.jsonl", "languages", input="small.jsonl", tgt_lang="de,fr,hi"
        ),
    )
    assert final["state"] == "succeeded", final["error"]

    sign_in(page, api, "#/job/languages")

    languages = page.locator("#job-targets tbody tr")
    expect(languages).to_have_count(3)
    for position, code in enumerate(["de", "fr", "hi"]):
        expect(languages.nth(position)).to_contain_text(code)
        expect(languages.nth(position)).to_contain_text("6 / 6")
        expect(languages.nth(position)).to_contain_text(f"languages.{code}.jsonl")
    shards(page, "done").nth(1).click()
    translation = page.locator("#sample-rows tbody tr .translation")
    expect(translation).to_contain_text(f"fr: {SMALL_ROWS[1]['text'][::-1]}")
    page.screenshot(path=screens / "job-languages.png", full_page=True)


def test_the_logs_panel_shows_only_when_the_api_serves_a_jobs_logs(
    page: Page, errors: Errors, api: str, http: httpx.Client, finished: dict[str, Any]
) -> None:
    served = "/v1/jobs/{job_id}/logs" in http.get("/openapi.json").json()["paths"]
    answered = served and http.get("/v1/jobs/small-done/logs").status_code == 200
    sign_in(page, api, "#/job/small-done")

    expect(page.locator("#manifest-summary")).to_be_visible()
    # a whole look at the job after it: the logs are asked for beside the manifest. The
    # manifest can show before the first look has ended, when no look is counted yet.
    looks = "Number(document.body.dataset.refreshed ?? 0)"
    seen = page.evaluate(looks)
    page.wait_for_function(f"seen => {looks} > seen", arg=seen)

    panel = expect(page.locator("#logs-panel"))
    if answered:
        panel.to_be_visible()
    else:
        panel.to_be_hidden()


def test_the_page_is_served_with_a_strict_policy_and_nothing_else_of_the_package(
    api: str,
) -> None:
    page = httpx.get(f"{api}/")
    script = httpx.get(f"{api}/console.js")

    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script type="module" src="console.js">' in page.text
    assert "javascript" in script.headers["content-type"]
    for answer in (page, script):
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe" not in policy and answer.headers["x-content-type-options"] == "nosniff"
    for hidden in ("__init__.py", "__pycache__/", "../shards.py"):
        assert httpx.get(f"{api}/{hidden}").status_code == 404


# --- the endpoints the page needs


def test_shards_are_paged_in_row_order_and_say_how_many_there_are(
    http: httpx.Client, finished: dict[str, Any]
) -> None:
    first = http.get("/v1/jobs/small-done/shards", params={"limit": 4}).json()
    rest = http.get(
        "/v1/jobs/small-done/shards", params={"row_start": first["next_row_start"]}
    ).json()

    assert first["shards_total"] == rest["shards_total"] == 6
    pages = first["shards"] + rest["shards"]
    assert [(s["row_start"], s["row_end"], s["state"]) for s in pages] == [
        (row, row + 1, "done") for row in range(6)
    ]
    assert rest["next_row_start"] is None
    assert set(pages[0]) == {"index", "row_start", "row_end", "state", "lease_owner"}
    assert http.get("/v1/jobs/ghost/shards").status_code == 404
    assert http.get("/v1/jobs/small-done/shards", params={"limit": 0}).status_code == 422


def test_a_sample_is_capped_names_no_host_path_and_needs_a_done_shard(
    http: httpx.Client, finished: dict[str, Any], data_root: Path
) -> None:
    answer = http.get("/v1/jobs/small-done/sample", params={"row_start": 3, "limit": 1})

    assert answer.status_code == 200
    body = answer.json()
    assert [(u["row"], u["loc"], u["source"], u["translation"]) for u in body["units"]] == [
        (3, "text", SMALL_ROWS[3]["text"], SMALL_ROWS[3]["text"][::-1])
    ]
    assert body["next_row_start"] is None and body["text_limit"] == 2000
    assert str(data_root.parent) not in answer.text
    assert http.get("/v1/jobs/small-done/sample", params={"row_start": 6}).status_code == 404
    too_many = http.get("/v1/jobs/small-done/sample", params={"row_start": 0, "limit": 51})
    assert too_many.status_code == 422 and too_many.json()["error"].startswith("Field limit")
    http.post("/v1/jobs", json=job_spec("out/held.jsonl", "held"))
    http.post("/v1/jobs/held/pause")
    wait_for(lambda: http.get("/v1/jobs/held/shards").json()["shards_total"] == 40)
    wait_for(lambda: http.get("/v1/jobs/held").json()["shards"]["leased"] == 0)
    refused = http.get("/v1/jobs/held/sample", params={"row_start": 39})
    http.post("/v1/jobs/held/cancel")
    assert refused.status_code == 409 and "pending" in refused.json()["error"]


# --- the terminal console


@pytest.fixture(scope="module")
def mtfleet_cli(api: str) -> Callable[..., ConsoleRun]:
    def run(*args: str, columns: int = 200) -> ConsoleRun:
        return run_console(api, TOKEN, *args, columns=columns)

    return run


def test_jobs_in_an_80_column_terminal_shows_every_job_id_whole(
    mtfleet_cli: Any, http: httpx.Client, finished: dict[str, Any]
) -> None:
    long_id = "a-rather-long-job-id-for-an-80-column-terminal"
    run_to_end(http, job_spec("out/a/deep/folder/long-id.jsonl", long_id, input="small.jsonl"))
    derived = run_to_end(
        http, {**job_spec("out/derived.jsonl", "unused", input="small.jsonl"), "job_id": None}
    )

    listed = mtfleet_cli("jobs", columns=80)

    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    lines = listed.stdout.splitlines()
    for job_id in (long_id, derived["id"], "small-done"):
        assert any(line.split()[0] == job_id for line in lines), (job_id, listed.stdout)


def test_jobs_shows_paths_whole_relative_to_this_directory_or_else_to_the_data_root(
    mtfleet_cli: Any, http: httpx.Client, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_to_end(http, job_spec("out/a/deep/folder/whole.jsonl", "whole-paths", input="small.jsonl"))

    def paths(listed: Any) -> list[str]:
        assert listed.exit_code == 0, listed.output
        (row,) = [line.split() for line in listed.stdout.splitlines() if "whole-paths" in line]
        return row[4:6]

    from_elsewhere = mtfleet_cli("jobs")
    monkeypatch.chdir(data_root / "out")
    from_its_output_folder = mtfleet_cli("jobs")

    assert paths(from_elsewhere) == ["small.jsonl", "out/a/deep/folder/whole.jsonl"]
    assert paths(from_its_output_folder) == ["small.jsonl", "a/deep/folder/whole.jsonl"]


def test_jobs_status_and_nodes_answer_json_for_scripts(
    mtfleet_cli: Any, http: httpx.Client, finished: dict[str, Any]
) -> None:
    jobs = mtfleet_cli("jobs", "--output", "json", columns=40)
    status = mtfleet_cli("status", "small-done", "--output", "json", columns=40)
    nodes = mtfleet_cli("nodes", "--output", "json", columns=40)
    watched = mtfleet_cli("status", "small-done", "--watch", "--output", "json")

    assert (jobs.exit_code, status.exit_code, nodes.exit_code) == (0, 0, 0)
    assert [job["id"] for job in json.loads(jobs.stdout)] == [
        job["id"] for job in http.get("/v1/jobs").json()
    ]
    assert json.loads(status.stdout)["rows_done"] == 6
    assert json.loads(status.stdout)["state"] == "succeeded"
    assert [node["node_id"] for node in json.loads(nodes.stdout)] == [
        node["node_id"] for node in http.get("/v1/nodes").json()
    ]
    assert watched.exit_code == 0
    assert [json.loads(line)["state"] for line in watched.stdout.splitlines()] == ["succeeded"]
