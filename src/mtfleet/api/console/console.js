// The mtfleet console: every number on the page comes from the public /v1 API, polled with the
// operator's bearer token (kept in sessionStorage, never in a cookie).

const POLL_MS = 1500;
const TOKEN_KEY = "mtfleet.api_token";
const STATES = ["planning", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const ACTIVE = new Set(["planning", "queued", "running", "paused"]);
const SHARD_STATES = ["pending", "leased", "done", "failed"];
const COUNTERS = ["shards_reused", "lease_expiries", "translator_deaths", "coordinator_restarts"];
const SHARD_PAGE = 2000;
const SHARD_PAGES = 5;
const CHART_SAMPLES = 240;
const SAMPLE_UNITS = 20;
const FLAG_PAGE = 20;
// jobs whose rate the list asks for, one call each per poll
const RATED_JOBS = 20;
// the submit form's fields shown at once, after the required ones; the rest are advanced settings
const BASIC_FIELDS = ["src_lang", "tgt_lang", "engine", "overwrite", "job_id"];

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// --- the API

async function api(path, { method = "GET", body } = {}) {
  // the client's name goes into the history of the jobs it steers
  const headers = {
    Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ""}`,
    "X-Mtfleet-Client": "console",
  };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(`Cannot reach the mtfleet API: ${error.message}.`, 0, null);
  }
  const text = await response.text();
  let payload = text;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: kept as text (a log, or a proxy's error page)
  }
  if (!response.ok) {
    const message =
      payload && typeof payload.error === "string"
        ? payload.error
        : `The API answered ${response.status} ${response.statusText}.`;
    if (response.status === 401) signOut(message);
    throw new ApiError(message, response.status, payload);
  }
  return payload;
}

const jobPath = (id) => `v1/jobs/${encodeURIComponent(id)}`;

let openapi = null;
async function openapiDocument() {
  openapi ??= await api("openapi.json");
  return openapi;
}

// --- the DOM

function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

// replaceChildren, but null, undefined and false stand for nothing (replaceChildren writes "null")
function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

function svg(tag, attributes, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes ?? {})) element.setAttribute(key, value);
  append(element, children);
  return element;
}

function table(id, headings, rows, empty) {
  return h(
    "table",
    { id },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        headings.map((heading) => h("th", null, heading)),
      ),
    ),
    h(
      "tbody",
      null,
      rows.length ? rows : h("tr", null, h("td", { colspan: headings.length, class: "muted" }, empty)),
    ),
  );
}

const checkBadges = (checks) => checks.map((check) => h("span", { class: "check", dataset: { check } }, check));
const badge = (state) => h("span", { class: `state s-${state}`, dataset: { state } }, state);
const jobLink = (id) => h("a", { href: `#/job/${encodeURIComponent(id)}`, class: "id" }, id);
const dash = (value, format) => (value === null || value === undefined ? "–" : format(value));
const number = (value) => value.toLocaleString("en");
const rate = (value) => `${value.toFixed(1)}/s`;
const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

// 12 B, 340.0 KB, 13.2 MB: as `mtfleet jobs` shows sizes
function size(bytes) {
  let value = bytes;
  for (const unit of ["B", "KB", "MB"]) {
    if (value < 1000) return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1000;
  }
  return `${value.toFixed(1)} GB`;
}

function duration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const [hours, minutes, rest] = [Math.floor(total / 3600), Math.floor(total / 60) % 60, total % 60];
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  if (minutes) return `${minutes}m ${String(rest).padStart(2, "0")}s`;
  return `${rest}s`;
}

const ago = (epoch_s) => `${duration(Date.now() / 1000 - epoch_s)} ago`;

// A long path keeps its last two parts whole (the file and its folder); the title has it all.
function path(value) {
  const parts = value.split("/");
  const shown = value.length > 40 && parts.length > 3 ? `…/${parts.slice(-2).join("/")}` : value;
  return h("span", { class: "path", title: value }, shown);
}

function progressBar(done, total) {
  const bar = h("span", { class: "bar" }, h("span", { class: "fill" }));
  bar.firstChild.style.width = `${total ? (100 * done) / total : 0}%`;
  return bar;
}

function showBanner(message) {
  const banner = document.getElementById("banner");
  banner.hidden = !message;
  banner.textContent = message ?? "";
}

// --- sign-in

function takeTokenFromFragment() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  // the token leaves the address bar (and the history) at once
  history.replaceState(null, "", `${location.pathname}${location.search}#/fleet`);
}

let signInError = null;

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  signInError = message ?? null;
  render();
}

function signInView() {
  const input = h("input", {
    id: "token",
    type: "password",
    name: "token",
    autocomplete: "current-password",
    placeholder: "MTFLEET_API_TOKEN",
    required: true,
  });
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" }, signInError ?? "");
  error.hidden = !signInError;
  const form = h(
    "form",
    { id: "sign-in", class: "card narrow" },
    h("h1", null, "Sign in"),
    h("p", { class: "muted" }, "The API token of this mtfleet server (MTFLEET_API_TOKEN)."),
    h("label", { for: "token" }, "API token"),
    input,
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    signInError = null;
    try {
      await api("v1/nodes");
    } catch (failure) {
      // a 401 has signed out and drawn this form again with the API's sentence
      if (failure.status !== 401) {
        error.hidden = false;
        error.textContent = failure.message;
      }
      return;
    }
    if (!location.hash || location.hash === "#/") location.hash = "#/fleet";
    else render();
  });
  return { element: form, focus: input };
}

// --- views: each has `element` and `refresh()`, called every POLL_MS (once when `once`)

function fleetView() {
  const summary = h("p", { id: "fleet-summary", class: "summary" });
  const holder = h("div");
  return {
    element: h("section", { id: "fleet" }, h("h1", null, "Fleet"), summary, holder),
    async refresh() {
      const nodes = await api("v1/nodes");
      const alive = nodes.filter((node) => node.state === "alive");
      const translators = alive.flatMap((node) => node.translators);
      const sum = (key) => alive.reduce((total, node) => total + node[key], 0);
      fill(
        summary,
        `${alive.length} of ${nodes.length} nodes alive · ${sum("gpus")} GPUs · ` +
          `${sum("cpus")} CPUs · ${gib(sum("memory_bytes"))} · ${translators.length} translators`,
      );
      const rows = nodes.map((node) =>
        h(
          "tr",
          { dataset: { nodeId: node.node_id, state: node.state } },
          h(
            "td",
            null,
            h("span", { class: "id" }, node.node_id),
            node.head ? h("span", { class: "tag" }, "head") : null,
          ),
          h("td", null, node.address),
          h("td", null, badge(node.state)),
          h("td", { class: "num" }, node.cpus),
          h("td", { class: "num" }, node.gpus),
          h("td", { class: "num" }, gib(node.memory_bytes)),
          h(
            "td",
            null,
            node.translators.length
              ? h(
                  "ul",
                  { class: "translators" },
                  node.translators.map((translator) =>
                    h(
                      "li",
                      null,
                      h("span", { class: "device" }, translator.device),
                      " ",
                      h("span", { class: "id small" }, translator.worker_id),
                      translator.job_id ? [" → ", jobLink(translator.job_id)] : " idle",
                    ),
                  ),
                )
              : h("span", { class: "muted" }, "none"),
          ),
        ),
      );
      fill(
        holder,
        table(
          "nodes",
          ["node", "address", "state", "CPUs", "GPUs", "memory", "translators"],
          rows,
          "no nodes",
        ),
      );
    },
  };
}

function jobsView() {
  const filter = h(
    "select",
    { id: "state-filter", "aria-label": "State" },
    h("option", { value: "" }, "every state"),
    STATES.map((state) => h("option", { value: state }, state)),
  );
  const search = h("input", {
    id: "job-search",
    type: "search",
    placeholder: "search id, input, output, model",
    "aria-label": "Search",
  });
  const holder = h("div");
  let jobs = [];
  const rates = new Map();

  function draw() {
    const wanted = search.value.trim().toLowerCase();
    const shown = jobs.filter(
      (job) =>
        (!filter.value || job.state === filter.value) &&
        (!wanted ||
          [job.id, job.input, job.output, job.model, ...job.tgt_lang].some((text) =>
            text.toLowerCase().includes(wanted),
          )),
    );
    const rows = shown
      .slice()
      .reverse()
      .map((job) => {
        const rated = rates.get(job.id);
        return h(
          "tr",
          { dataset: { jobId: job.id, state: job.state } },
          h("td", null, jobLink(job.id)),
          h("td", null, badge(job.state)),
          h(
            "td",
            null,
            progressBar(job.rows_done, job.rows_total),
            ` ${number(job.rows_done)}/${number(job.rows_total)}`,
          ),
          h("td", { class: "num" }, dash(rated?.rows_per_s, rate)),
          h("td", { class: "num" }, ACTIVE.has(job.state) ? dash(rated?.eta_s, duration) : "–"),
          h("td", { class: "targets" }, job.tgt_lang.join(", ") || "–"),
          h("td", null, path(job.relative.model)),
          h("td", null, path(job.relative.input)),
          h("td", null, path(job.relative.output)),
          h("td", { class: "small" }, ago(job.updated_at)),
        );
      });
    fill(
      holder,
      table(
        "jobs",
        ["job", "state", "rows", "rows/s", "ETA", "targets", "model", "input", "output", "updated"],
        rows,
        "no jobs",
      ),
    );
  }

  filter.addEventListener("change", draw);
  search.addEventListener("input", draw);
  return {
    element: h(
      "section",
      { id: "jobs-view" },
      h("h1", null, "Jobs"),
      h(
        "div",
        { class: "toolbar" },
        filter,
        search,
        h("a", { href: "#/submit", class: "button" }, "Submit a job"),
      ),
      holder,
    ),
    async refresh() {
      jobs = await api("v1/jobs");
      const active = jobs.filter((job) => ACTIVE.has(job.state)).slice(-RATED_JOBS);
      const views = await Promise.all(active.map((job) => api(jobPath(job.id)).catch(() => null)));
      rates.clear();
      for (const view of views) if (view) rates.set(view.id, view);
      draw();
    },
  };
}

function jobView(jobId) {
  const section = h("section", { id: "job", dataset: { jobId } });
  const header = h("div", { class: "job-header" });
  const controls = h("div", { id: "controls", class: "toolbar" });
  const progress = h("div", { id: "progress", class: "card" });
  const quality = h("div", { id: "quality" });
  const shardMap = h("div", { id: "shard-map", class: "shard-map", role: "img", "aria-label": "Shard map" });
  const shardLegend = h("p", { id: "shard-legend", class: "legend" });
  const chart = h("div", { id: "throughput", class: "chart" });
  const counters = h("dl", { id: "counters", class: "counters" });
  const fleet = h("div", { id: "job-fleet" });
  const failures = h("div", { id: "failures" });
  const manifest = h("div", { id: "manifest" });
  const logs = h("pre", { id: "logs", class: "logs" });
  const logFile = h("select", { id: "log-file", "aria-label": "Log file", onchange: () => drawLogs() });
  const logsPanel = h("div", { class: "card", id: "logs-panel" }, h("h2", null, "Logs ", logFile), logs);
  logsPanel.hidden = true;
  const timeline = h("ol", { id: "timeline", class: "timeline" });
  const history = [];
  const sample = h(
    "div",
    { id: "sample" },
    h(
      "p",
      { class: "muted" },
      "Click a done (green) shard in the map to read its rows beside their translations.",
    ),
  );
  const samples = [];
  const shardElements = new Map();
  let view = null;
  let confirming = false;
  let deleting = false;
  let manifestShown = false;
  let qualityDrawn = null;
  let lastShards = null;

  append(section, [
    header,
    controls,
    progress,
    quality,
    h("div", { class: "card" }, h("h2", null, "Shards"), shardLegend, shardMap),
    h(
      "div",
      { class: "columns" },
      h("div", { class: "card" }, h("h2", null, "Throughput"), chart),
      h("div", { class: "card" }, h("h2", null, "Counters"), counters),
    ),
    h("div", { class: "card" }, h("h2", null, "Translators"), fleet),
    failures,
    manifest,
    h("div", { class: "card" }, h("h2", null, "History"), timeline),
    logsPanel,
    h("div", { class: "card" }, h("h2", null, "Sample"), sample),
  ]);

  async function steer(verb) {
    try {
      view = await api(`${jobPath(jobId)}/${verb}`, { method: "POST" });
      showBanner(null);
      drawJob();
    } catch (error) {
      showBanner(error.message);
    }
  }

  async function deleteJob() {
    try {
      await api(jobPath(jobId), { method: "DELETE" });
    } catch (error) {
      deleting = false;
      showBanner(error.message);
      drawControls();
      return;
    }
    location.hash = "#/jobs";
  }

  function drawDelete() {
    if (!deleting)
      return h(
        "button",
        {
          type: "button",
          id: "delete",
          class: "danger",
          disabled: ACTIVE.has(view.state),
          title: "A finished job only: its work files and record go, its output stays.",
          onclick: () => {
            deleting = true;
            drawControls();
          },
        },
        "Delete",
      );
    return h(
      "span",
      { class: "confirm" },
      `Delete ${jobId}? Its work files and record go; its output stays. `,
      h("button", { type: "button", id: "delete-confirm", class: "danger", onclick: deleteJob }, "Yes, delete"),
      h(
        "button",
        {
          type: "button",
          id: "delete-keep",
          onclick: () => {
            deleting = false;
            drawControls();
          },
        },
        "No",
      ),
    );
  }

  function drawControls() {
    const state = view.state;
    const button = (label, verb, enabled) =>
      h("button", { type: "button", id: verb, disabled: !enabled, onclick: () => steer(verb) }, label);
    const cancel = confirming
      ? h(
          "span",
          { class: "confirm" },
          `Cancel ${jobId}? Finished shards are kept. `,
          h(
            "button",
            {
              type: "button",
              id: "cancel-confirm",
              class: "danger",
              onclick: () => {
                confirming = false;
                steer("cancel");
              },
            },
            "Yes, cancel",
          ),
          h(
            "button",
            {
              type: "button",
              id: "cancel-keep",
              onclick: () => {
                confirming = false;
                drawControls();
              },
            },
            "No",
          ),
        )
      : h(
          "button",
          {
            type: "button",
            id: "cancel",
            class: "danger",
            disabled: !ACTIVE.has(state),
            onclick: () => {
              confirming = true;
              drawControls();
            },
          },
          "Cancel",
        );
    // a succeeded job's failed rows (kept as source) are translated again into the same output
    const retry =
      state === "succeeded" && view.failures_total > 0
        ? h(
            "button",
            {
              type: "button",
              id: "retry",
              title: "Translate the failed rows again; the output is assembled anew from every shard.",
              onclick: () => steer("retry"),
            },
            `Retry failed rows (${number(view.failures_total)})`,
          )
        : null;
    const again = ACTIVE.has(state)
      ? null
      : h(
          "a",
          {
            href: `#/submit/${encodeURIComponent(jobId)}`,
            id: "submit-again",
            class: "button",
            title: "The submit form, filled in with this job's settings.",
          },
          "Submit again",
        );
    fill(
      controls,
      button("Pause", "pause", ["planning", "queued", "running"].includes(state)),
      button("Resume", "resume", state === "paused"),
      cancel,
      retry,
      again,
      drawDelete(),
    );
  }

  function drawJob() {
    section.dataset.state = view.state;
    fill(
      header,
      h(
        "h1",
        null,
        h("span", { class: "id", id: "job-id" }, view.id),
        " ",
        h("span", { id: "job-state" }, badge(view.state)),
      ),
      h(
        "p",
        { class: "meta" },
        path(view.relative.model),
        " · ",
        path(view.relative.input),
        " → ",
        path(view.relative.output),
        view.tgt_lang.length ? ` (${view.tgt_lang.join(", ")})` : "",
      ),
      h("p", { class: "meta small" }, `created ${ago(view.created_at)} · updated ${ago(view.updated_at)}`),
      view.error ? h("p", { class: "error", id: "job-error" }, view.error) : null,
    );
    drawControls();
    const fraction = view.rows_total ? view.rows_done / view.rows_total : 0;
    fill(
      progress,
      h("div", { class: "big-bar" }, progressBar(view.rows_done, view.rows_total)),
      h(
        "p",
        { class: "summary" },
        h("strong", { id: "rows-done" }, `${number(view.rows_done)} / ${number(view.rows_total)} rows`),
        ` (${(100 * fraction).toFixed(0)}%) · ${number(view.units_done)} / ${number(view.units_total)} units · `,
        `${number(view.segments_done)} segments · ${dash(view.rows_per_s, rate)} rows · `,
        `${dash(view.segments_per_s, rate)} segments · `,
        view.planning
          ? h("strong", { id: "planning" }, "planning the rest of the input · ")
          : `ETA ${dash(view.eta_s, duration)} · `,
        h("span", { id: "work-bytes" }, `work files ${size(view.work_bytes)}`),
        view.health && view.health.checks !== "off"
          ? [" · ", h("strong", { id: "units-flagged" }, `${number(view.health.units_flagged)} flagged`)]
          : "",
      ),
      // several target languages: one lease covers them all, so each shows the done shards' units
      view.targets.length > 1
        ? table(
            "job-targets",
            ["language", "units", "segments", "output"],
            view.targets.map((target) =>
              h(
                "tr",
                { dataset: { language: target.tgt_lang } },
                h("td", null, target.tgt_lang),
                h("td", { class: "num" }, `${number(target.units_done)} / ${number(target.units_total)}`),
                h("td", { class: "num" }, number(target.segments_done)),
                h("td", null, path(target.output)),
              ),
            ),
            "",
          )
        : null,
    );
    drawQuality();
    fill(
      counters,
      ...[
        ...COUNTERS,
        ...Object.keys(view.counters)
          .filter((name) => !COUNTERS.includes(name))
          .sort(),
      ].flatMap((name) => [
        h("dt", null, name.replaceAll("_", " ")),
        h("dd", { dataset: { counter: name } }, number(view.counters[name] ?? 0)),
      ]),
    );
    const devices = new Map(view.translators.map((translator) => [translator.worker_id, translator]));
    fill(
      fleet,
      table(
        "job-translators",
        ["node", "translators now", "shards done", "segments", "segments/s"],
        view.nodes.map((node) =>
          h(
            "tr",
            null,
            h("td", null, h("span", { class: "id" }, node.node_id)),
            h(
              "td",
              null,
              node.translators.map((worker) =>
                h(
                  "div",
                  null,
                  devices.get(worker)?.device ?? "?",
                  " ",
                  h("span", { class: "id small" }, worker),
                ),
              ),
            ),
            h("td", { class: "num" }, node.shards_done),
            h("td", { class: "num" }, number(node.segments_done)),
            h(
              "td",
              { class: "num" },
              dash(node.segments_per_s, (value) => value.toFixed(1)),
            ),
          ),
        ),
        "no translator has worked on this job yet",
      ),
    );
    fill(
      failures,
      view.failures.length
        ? h(
            "div",
            { class: "card" },
            h("h2", null, `Failures (${view.failures.length})`),
            table(
              "failure-rows",
              ["rows", "error"],
              view.failures.map((failure) =>
                h(
                  "tr",
                  null,
                  h(
                    "td",
                    { class: "num" },
                    failure.row_end - 1 === failure.row_start
                      ? failure.row_start
                      : `${failure.row_start}–${failure.row_end - 1}`,
                  ),
                  h("td", { class: "error" }, failure.error ?? ""),
                ),
              ),
              "",
            ),
          )
        : "",
    );
  }

  function drawChart() {
    const width = 600;
    const height = 140;
    const values = samples.map((point) => point.rows_per_s ?? 0);
    const peak = Math.max(0, ...values);
    const top = Math.max(peak, 1e-9);
    const x = (index) => (samples.length < 2 ? 0 : (index / (samples.length - 1)) * width);
    const y = (value) => height - (value / top) * (height - 10);
    const line = values.map((value, index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    const last = samples.at(-1);
    fill(
      chart,
      svg(
        "svg",
        {
          viewBox: `0 0 ${width} ${height}`,
          preserveAspectRatio: "none",
          class: "plot",
          "aria-label": "rows per second",
        },
        svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }),
        svg("polyline", { points: line, class: "rows-line" }),
      ),
      h(
        "p",
        { class: "small muted" },
        `rows/s over the last ${duration((last.t - samples[0].t) / 1000)}: ` +
          `now ${dash(last.rows_per_s, (value) => value.toFixed(1))}, peak ${peak.toFixed(1)}`,
      ),
    );
  }

  async function fetchShards() {
    const page = [];
    let total = 0;
    let rowStart = 0;
    for (let pages = 0; pages < SHARD_PAGES && rowStart !== null; pages += 1) {
      const answer = await api(`${jobPath(jobId)}/shards?row_start=${rowStart}&limit=${SHARD_PAGE}`);
      page.push(...answer.shards);
      total = answer.shards_total;
      rowStart = answer.next_row_start;
    }
    return { page, total };
  }

  function drawShards({ page, total }) {
    const counts = Object.fromEntries(SHARD_STATES.map((state) => [state, 0]));
    const seen = new Set();
    const owners = new Map(view.translators.map((translator) => [translator.worker_id, translator]));
    for (const shard of page) {
      counts[shard.state] += 1;
      seen.add(shard.index);
      let element = shardElements.get(shard.index);
      if (!element) {
        element = h("span", { class: "shard", dataset: { index: shard.index } });
        element.addEventListener("click", () => {
          if (element.dataset.state === "done") loadSample(Number(element.dataset.rowStart));
        });
        shardElements.set(shard.index, element);
      }
      const owner = shard.lease_owner ? owners.get(shard.lease_owner) : null;
      const rows =
        shard.row_end - shard.row_start === 1
          ? `row ${shard.row_start}`
          : `rows ${shard.row_start}–${shard.row_end - 1}`;
      element.className = `shard s-${shard.state}`;
      element.dataset.state = shard.state;
      element.dataset.rowStart = shard.row_start;
      element.style.flexGrow = String(shard.row_end - shard.row_start);
      element.title =
        `shard ${shard.index}, ${rows}: ${shard.state}` +
        (shard.lease_owner
          ? ` by ${shard.lease_owner}${owner ? ` (${owner.device} on ${owner.node_id.slice(0, 12)})` : ""}`
          : "") +
        (shard.state === "done" ? " · click for a sample" : "");
    }
    for (const [index, element] of shardElements) {
      if (!seen.has(index)) {
        element.remove();
        shardElements.delete(index);
      }
    }
    // shards are split (a poison row) but never reordered: row order is the map's order
    const ordered = page.map((shard) => shardElements.get(shard.index));
    if (ordered.some((element, position) => shardMap.children[position] !== element))
      fill(shardMap, ...ordered);
    shardMap.dataset.total = total;
    fill(
      shardLegend,
      ...SHARD_STATES.map((state) =>
        h(
          "span",
          { class: "legend-item" },
          h("span", { class: `swatch s-${state}` }),
          `${counts[state]} ${state}`,
        ),
      ),
      total > page.length
        ? h("span", { class: "muted" }, ` · the first ${page.length} of ${total} shards`)
        : ` · ${total} shards`,
    );
  }

  // which outputs are bad: the health checks' counts, per check and per field, once the job is done
  function drawQuality() {
    const health = view.health;
    // drawn once per report, so that a chosen check stays chosen across polls
    const drawn = JSON.stringify(health ?? null);
    if (drawn === qualityDrawn) return;
    qualityDrawn = drawn;
    if (!health) {
      fill(quality);
      return;
    }
    if (health.checks === "off") {
      fill(quality, h("div", { class: "card" }, h("h2", null, "Quality"), h("p", { id: "quality-summary", class: "muted" }, "The health checks were off for this job.")));
      return;
    }
    const share = health.units_checked ? (100 * health.units_flagged) / health.units_checked : 0;
    const checks = Object.keys(health.per_check);
    const filter = h(
      "select",
      { id: "flag-check", "aria-label": "Check" },
      h("option", { value: "" }, "every check"),
      ...checks.map((check) => h("option", { value: check }, check)),
    );
    fill(
      quality,
      h(
        "div",
        { class: "card" },
        h("h2", null, "Quality"),
        h(
          "p",
          { id: "quality-summary" },
          h("strong", null, `${number(health.units_flagged)} of ${number(health.units_checked)} units flagged`),
          ` (${share.toFixed(1)}%) · on flag: ${health.on_flag}`,
          health.rows_dropped ? ` · ${number(health.rows_dropped)} rows dropped` : "",
        ),
        checks.length
          ? h(
              "div",
              { class: "columns" },
              table(
                "quality-checks",
                ["check", "units"],
                checks.map((check) =>
                  h("tr", { dataset: { check } }, h("td", null, checkBadges([check])), h("td", { class: "num" }, number(health.per_check[check]))),
                ),
                "",
              ),
              table(
                "quality-fields",
                ["field", "flagged by"],
                Object.entries(health.per_field).map(([name, counts]) =>
                  h(
                    "tr",
                    { dataset: { field: name } },
                    h("td", null, name),
                    h("td", null, Object.entries(counts).map(([check, count]) => `${check} ${number(count)}`).join(" · ")),
                  ),
                ),
                "",
              ),
            )
          : null,
        checks.length
          ? h(
              "p",
              { class: "toolbar" },
              filter,
              " ",
              h("button", { type: "button", id: "show-flagged", onclick: () => loadFlags(0, filter.value) }, "Show flagged units"),
            )
          : null,
      ),
    );
  }

  async function loadFlags(cursor, check) {
    const query = `cursor=${cursor}&limit=${FLAG_PAGE}` + (check ? `&check=${encodeURIComponent(check)}` : "");
    let answer;
    try {
      answer = await api(`${jobPath(jobId)}/flags?${query}`);
    } catch (error) {
      fill(sample, h("p", { class: "error" }, error.message));
      return;
    }
    const rows = answer.units.map((unit) =>
      h(
        "tr",
        { class: "flagged", dataset: { row: unit.row } },
        h("td", { class: "num" }, unit.row),
        h("td", { class: "small" }, unit.field),
        h("td", null, checkBadges(unit.checks)),
        h("td", { class: "text source" }, unit.source),
        h("td", { class: "text translation" }, unit.translation),
      ),
    );
    const shown = answer.units.length ? `${number(cursor + 1)}–${number(cursor + answer.units.length)}` : "none";
    fill(
      sample,
      h(
        "p",
        { id: "sample-title" },
        `Flagged units ${shown}` + (check ? ` flagged by ${check}` : "") + ` (${number(answer.units_flagged)} flagged in all)`,
        answer.next_cursor !== null
          ? [" ", h("button", { type: "button", id: "flags-next", onclick: () => loadFlags(answer.next_cursor, check) }, "Next flagged")]
          : "",
      ),
      table("flag-rows", ["row", "field", "checks", "source", "translation"], rows, "no unit was flagged"),
    );
  }

  async function drawManifest() {
    if (manifestShown || view.state !== "succeeded") return;
    const signed = await api(`${jobPath(jobId)}/manifest`);
    manifestShown = true;
    const facts = ["rows", "units_translated", "units_skipped_empty", "units_kept_source"]
      .filter((key) => key in signed)
      .map((key) => `${number(signed[key])} ${key.replaceAll("_", " ")}`);
    fill(
      manifest,
      h(
        "div",
        { class: "card" },
        h("h2", null, "Manifest"),
        h("p", { id: "manifest-summary" }, facts.join(" · ")),
        h(
          "details",
          null,
          h("summary", null, "The whole manifest"),
          h("pre", { class: "json" }, JSON.stringify(signed, null, 2)),
        ),
      ),
    );
  }

  async function drawLogs() {
    const documented = (await openapiDocument()).paths?.["/v1/jobs/{job_id}/logs"];
    if (!documented) return;
    const chosen = logFile.value ? `&file=${encodeURIComponent(logFile.value)}` : "";
    let answer;
    try {
      answer = await api(`${jobPath(jobId)}/logs?tail=200${chosen}`);
    } catch {
      logsPanel.hidden = true;
      return;
    }
    const names = answer.files.map((file) => file.name);
    if (names.join("\n") !== [...logFile.options].map((option) => option.value).join("\n"))
      fill(
        logFile,
        answer.files.map((file) =>
          h("option", { value: file.name, selected: file.name === answer.file }, `${file.name} (${size(file.bytes)})`),
        ),
      );
    logs.textContent = answer.lines.length ? answer.lines.join("\n") : "(no lines yet)";
    logsPanel.hidden = answer.file === null;
  }

  // the job's history: only the events after the last one seen are asked for
  async function drawHistory() {
    const after = history.length ? history.at(-1).id : 0;
    const page = await api(`${jobPath(jobId)}/events?after=${after}`);
    if (!page.events.length && history.length) return;
    history.push(...page.events);
    fill(
      timeline,
      history.length
        ? history.map((event) =>
            h(
              "li",
              { dataset: { kind: event.kind } },
              h("time", { datetime: new Date(event.at * 1000).toISOString() }, new Date(event.at * 1000).toLocaleString("en-GB")),
              " ",
              h("strong", { class: "kind" }, event.kind),
              event.actor ? h("span", { class: "actor" }, ` by ${event.actor}`) : null,
              h("span", { class: "message" }, ` ${event.message}`),
            ),
          )
        : h("li", { class: "muted" }, "no events yet"),
    );
  }

  async function loadSample(rowStart) {
    let answer;
    try {
      answer = await api(`${jobPath(jobId)}/sample?row_start=${rowStart}&limit=${SAMPLE_UNITS}`);
    } catch (error) {
      fill(sample, h("p", { class: "error" }, error.message));
      return;
    }
    const rows = answer.units.map((unit) =>
      h(
        "tr",
        { class: unit.checks.length ? "flagged" : "", dataset: { row: unit.row } },
        h("td", { class: "num" }, unit.row),
        h("td", { class: "small" }, unit.loc),
        h("td", null, checkBadges(unit.checks)),
        h("td", { class: "text source" }, unit.source),
        h("td", { class: "text translation" }, unit.translation ?? h("span", { class: "muted" }, "(none)")),
      ),
    );
    const onlyFlagged = h("input", {
      type: "checkbox",
      id: "only-flagged",
      onchange: () => {
        for (const row of rows) row.hidden = onlyFlagged.checked && !row.classList.contains("flagged");
      },
    });
    const last = answer.shard_row_end - 1;
    fill(
      sample,
      h(
        "p",
        { id: "sample-title" },
        answer.shard_row_start === last
          ? `Shard ${answer.shard_index}, row ${last}`
          : `Shard ${answer.shard_index}, rows ${answer.shard_row_start}–${last}, from row ${rowStart}`,
        answer.next_row_start !== null
          ? [
              " ",
              h(
                "button",
                { type: "button", id: "sample-next", onclick: () => loadSample(answer.next_row_start) },
                "Next rows",
              ),
            ]
          : "",
      ),
      h("label", { class: "small" }, onlyFlagged, " only flagged units"),
      table(
        "sample-rows",
        ["row", "field", "checks", "source", "translation"],
        rows,
        "this shard has no text to translate",
      ),
    );
  }

  return {
    element: section,
    async refresh() {
      // one moment for the numbers and the map: both asked for at once, drawn together
      // the shards of a job that had ended when last seen no longer change
      const ended = view !== null && !ACTIVE.has(view.state);
      const [answer, shards] = await Promise.all([
        api(jobPath(jobId)),
        ended && lastShards ? lastShards : fetchShards(),
      ]);
      view = answer;
      lastShards = shards;
      samples.push({ t: Date.now(), rows_per_s: view.rows_per_s, segments_per_s: view.segments_per_s });
      if (samples.length > CHART_SAMPLES) samples.shift();
      if (!confirming) drawJob();
      else drawControls();
      drawChart();
      drawShards(shards);
      await Promise.all([drawManifest(), drawLogs(), drawHistory()]);
    },
  };
}

function submitView(fromJob) {
  const form = h("form", { id: "submit-form", class: "card", novalidate: true });
  const message = h("p", { id: "submit-error", class: "error", role: "alert" });
  message.hidden = true;
  const inputs = new Map();

  function describe(schema, components) {
    const resolved = schema.$ref ? components[schema.$ref.split("/").at(-1)] : schema;
    const options = resolved.anyOf?.filter((option) => option.type !== "null") ?? [resolved];
    const chosen = options[0].$ref ? components[options[0].$ref.split("/").at(-1)] : options[0];
    return {
      ...chosen,
      nullable: Boolean(resolved.anyOf?.some((option) => option.type === "null")),
      // one value or a list (tgt_lang), which the API also takes as "de, fr"
      listed: chosen.type !== "array" && options.some((option) => option.type === "array"),
    };
  }

  function field(name, schemas, property, required) {
    const kind = describe(property, schemas);
    const id = `field-${name}`;
    const hint = property.description ?? "";
    let input;
    if (kind.enum) {
      input = h(
        "select",
        { id, name },
        required
          ? null
          : h(
              "option",
              { value: "" },
              `default${property.default !== undefined ? ` (${property.default})` : ""}`,
            ),
        kind.enum.map((choice) => h("option", { value: choice }, choice)),
      );
    } else if (kind.type === "boolean") {
      input = h("input", { id, name, type: "checkbox", checked: property.default === true });
    } else if (kind.type === "integer" || kind.type === "number") {
      input = h("input", {
        id,
        name,
        type: "number",
        step: kind.type === "integer" ? "1" : "any",
        min: kind.minimum ?? kind.exclusiveMinimum,
        max: kind.maximum,
        placeholder:
          property.default !== undefined && property.default !== null ? `default ${property.default}` : "",
      });
    } else {
      input = h("input", {
        id,
        name,
        type: "text",
        placeholder:
          kind.type === "array" || kind.listed
            ? "comma, separated"
            : property.default
              ? `default ${property.default}`
              : "",
      });
    }
    inputs.set(name, { input, kind, property });
    const problem = h("span", { class: "field-error", id: `${id}-error`, role: "alert" });
    return h(
      "div",
      { class: `field${required ? " required" : ""}`, dataset: { field: name } },
      h("label", { for: id }, name.replaceAll("_", " "), required ? " *" : ""),
      input,
      h("span", { class: "hint" }, hint),
      problem,
    );
  }

  function body() {
    const spec = {};
    for (const [name, { input, kind, property }] of inputs) {
      if (kind.type === "boolean") {
        if (input.checked !== (property.default === true)) spec[name] = input.checked;
        continue;
      }
      const value = input.value.trim();
      if (value === "") continue;
      if (kind.type === "array")
        spec[name] = value
          .split(",")
          .map((part) => part.trim())
          .filter(Boolean);
      else if (kind.type === "integer" || kind.type === "number") spec[name] = Number(value);
      else spec[name] = value;
    }
    return spec;
  }

  // the API names the field of every refusal: {error, field, problems: [{field, message}]}
  function showErrors(error) {
    const problems = Array.isArray(error.body?.problems) ? error.body.problems : [];
    let placed = false;
    for (const problem of problems) {
      const target = inputs.get(problem.field);
      if (!target) continue;
      const slot = document.getElementById(`field-${problem.field}-error`);
      slot.textContent = problem.message;
      target.input.setAttribute("aria-invalid", "true");
      const holder = target.input.closest(".field");
      holder.classList.add("invalid");
      // an advanced setting at fault is shown, not left folded away
      const folded = holder.closest("details");
      if (folded) folded.open = true;
      if (!placed) target.input.focus();
      placed = true;
    }
    message.hidden = false;
    message.textContent = placed ? error.message : error.message || "The job was refused.";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const item of form.querySelectorAll(".invalid")) item.classList.remove("invalid");
    for (const item of form.querySelectorAll("[aria-invalid]")) item.removeAttribute("aria-invalid");
    message.hidden = true;
    try {
      const job = await api("v1/jobs", { method: "POST", body: body() });
      location.hash = `#/job/${encodeURIComponent(job.id)}`;
    } catch (error) {
      if (error.status !== 401) showErrors(error);
    }
  });

  // the languages a model knows, as GET /v1/models/inspect has them: a picker beside each
  // language field, which a typed code still overrides (a model that lists none gets no picker)
  const LANGUAGE_FIELDS = ["src_lang", "tgt_lang"];
  const languageReport = h("span", { id: "model-languages", class: "hint", "aria-live": "polite" });
  const pickers = new Map();
  let inspected = 0;

  function languagePickers() {
    const model = inputs.get("model")?.input;
    if (!model) return;
    model.closest(".field").append(languageReport);
    for (const name of LANGUAGE_FIELDS) {
      const target = inputs.get(name);
      if (!target) continue;
      const picker = h("select", { id: `pick-${name}`, "aria-label": `${name.replaceAll("_", " ")} from the model` });
      picker.hidden = true;
      picker.addEventListener("change", () => {
        const code = picker.value;
        picker.value = "";
        if (!code) return;
        if (!target.kind.listed) {
          target.input.value = code;
          return;
        }
        // a list field (tgt_lang) gathers the codes picked, in the order picked
        const codes = target.input.value.split(",").map((part) => part.trim()).filter(Boolean);
        if (!codes.includes(code)) target.input.value = [...codes, code].join(", ");
      });
      target.input.after(picker);
      pickers.set(name, picker);
    }
    for (const name of ["model", "engine", "trust_remote_code"])
      inputs.get(name)?.input.addEventListener("change", inspectModel);
  }

  function showLanguages(report) {
    const { codes, iso639 } = report?.languages ?? { codes: [], iso639: {} };
    for (const [name, picker] of pickers) {
      fill(
        picker,
        h("option", { value: "" }, `pick ${name === "tgt_lang" ? "targets" : "the source"} (${codes.length})`),
        codes.map((code) => {
          const typed = iso639[code]?.iso639_1;
          return h("option", { value: code }, typed && typed !== code ? `${code} · ${typed}` : code);
        }),
      );
      picker.hidden = codes.length === 0;
    }
  }

  async function inspectModel() {
    const mine = ++inspected;
    const model = inputs.get("model").input.value.trim();
    // the reverse engine (the tests' oracle) runs no model: there is nothing to inspect
    if (!model || inputs.get("engine")?.input.value === "reverse") {
      showLanguages(null);
      languageReport.textContent = "";
      return;
    }
    const query = new URLSearchParams({ model });
    if (inputs.get("trust_remote_code")?.input.checked) query.set("trust_remote_code", "true");
    languageReport.textContent = "looking at the model…";
    try {
      const report = await api(`v1/models/inspect?${query}`);
      if (mine !== inspected) return;
      showLanguages(report);
      const count = report.languages.count;
      languageReport.textContent = count
        ? `${report.family}: ${count} language codes: pick them beside src lang and tgt lang, or type them`
        : `${report.family}: no language codes (one language pair)`;
    } catch (error) {
      if (mine !== inspected) return;
      showLanguages(null);
      languageReport.textContent = `languages: type their codes (${error.message})`;
    }
  }

  // "Submit again": the form holds a job's settings (its paths relative to the data root), each
  // that differs from the default, and its id, so that submitting it as it is resumes that job
  async function prefill(jobId) {
    const job = await api(jobPath(jobId));
    const values = { ...job.spec, ...job.relative, job_id: job.id };
    for (const [name, { input, kind, property }] of inputs) {
      const value = values[name];
      if (value === undefined || value === null || value === property.default) continue;
      if (kind.type === "boolean") input.checked = Boolean(value);
      else if (Array.isArray(value)) {
        if (value.every((item) => typeof item === "string")) input.value = value.join(", ");
      } else if (typeof value !== "object") input.value = String(value);
    }
  }

  return {
    element: h(
      "section",
      { id: "submit" },
      h("h1", null, fromJob ? `Submit ${fromJob} again` : "Submit a job"),
      form,
    ),
    async refresh() {
      if (inputs.size) return;
      const { components, paths } = await openapiDocument();
      // the body POST /v1/jobs documents: JobRequest, by reference or inline
      const body = paths["/v1/jobs"].post.requestBody.content["application/json"].schema;
      const schema = body.$ref ? components.schemas[body.$ref.split("/").at(-1)] : body;
      const required = new Set(schema.required ?? []);
      const names = Object.keys(schema.properties);
      const basic = [
        ...names.filter((name) => required.has(name)),
        ...BASIC_FIELDS.filter((name) => names.includes(name) && !required.has(name)),
      ];
      const advanced = names.filter((name) => !basic.includes(name));
      const fields = (group) =>
        group.map((name) => field(name, components.schemas, schema.properties[name], required.has(name)));
      fill(
        form,
        h(
          "p",
          { class: "muted" },
          "Paths are relative to the server's data root. Settings left empty take the server's defaults.",
        ),
        h("div", { class: "fields" }, fields(basic)),
        h(
          "details",
          { id: "advanced" },
          h("summary", null, `Advanced settings (${advanced.length})`),
          h("div", { class: "fields" }, fields(advanced)),
        ),
        message,
        h("button", { type: "submit", id: "submit-job" }, "Submit"),
      );
      languagePickers();
      if (fromJob) {
        await prefill(fromJob);
        await inspectModel();
      }
    },
    once: true,
  };
}

// --- the router and the poll

let current = null;
let generation = 0;

function route() {
  const [, view, argument] = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash) ?? [];
  if (view === "job" && argument) return { name: "jobs", make: () => jobView(decodeURIComponent(argument)) };
  if (view === "jobs") return { name: "jobs", make: jobsView };
  if (view === "submit")
    return { name: "submit", make: () => submitView(argument ? decodeURIComponent(argument) : null) };
  return { name: "fleet", make: fleetView };
}

function render() {
  generation += 1;
  current = null;
  showBanner(null);
  const main = document.getElementById("main");
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("live").textContent = "";
  if (!signedIn) {
    const { element, focus } = signInView();
    fill(main, element);
    focus.focus();
    return;
  }
  const { name, make } = route();
  for (const link of document.querySelectorAll("#nav a"))
    link.classList.toggle("current", link.dataset.view === name);
  current = make();
  fill(main, current.element);
  poll(generation);
}

async function poll(mine) {
  while (mine === generation && current) {
    const view = current;
    try {
      await view.refresh?.();
      if (mine !== generation) return;
      showBanner(null);
      document.getElementById("live").textContent = view.once
        ? ""
        : `live · ${new Date().toLocaleTimeString("en-GB")}`;
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed ?? 0) + 1);
    } catch (error) {
      if (mine !== generation) return;
      showBanner(error.message);
    }
    if (view.once) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

takeTokenFromFragment();
document.getElementById("sign-out").addEventListener("click", () => signOut(null));
window.addEventListener("hashchange", () => {
  takeTokenFromFragment();
  render();
});
render();
