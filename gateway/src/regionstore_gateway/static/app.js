// regionstore console: a plain ES module served by the gateway, no build step and no framework.
// Rule for the whole file: data from the API is written as text (textContent, text nodes or
// attributes), never parsed as HTML. The page runs under a strict Content-Security-Policy: no
// inline script or style, no eval; styling goes through classes in app.css.
//
// Signing in: the API key goes to POST /v1/session once and is forgotten; the gateway answers
// with an HttpOnly session cookie and a CSRF token, which every state-changing request sends.

const UF_CODES = [
  "AC", "AL", "AM", "AP", "BA", "CE", "DF", "ES", "GO", "MA", "MG", "MS", "MT", "PA",
  "PB", "PE", "PI", "PR", "RJ", "RN", "RO", "RR", "RS", "SC", "SE", "SP", "TO",
];
const CUSTOMER_FIELDS = [
  "customer_id", "customer_unique_id", "customer_zip_code_prefix", "customer_city",
  "customer_state",
];
const EDITABLE_FIELDS = CUSTOMER_FIELDS.slice(1);
const FILTER_FIELDS = ["zip_min", "zip_max", "city", "state", "region", "limit"];
// The gateway sends a snapshot every few seconds; silence for this long means a dead stream.
const STREAM_STALE_MS = 45_000;
const MAX_RETRY_MS = 15_000;
const TOAST_MS = 6_000;
// What each role may do, in order: a role may do everything the ones before it may.
const ROLES = ["reader", "writer", "operator"];
const RECENT_CHANGES_SHOWN = 3;
const CHART_WINDOW_MS = 5 * 60_000;
// Two snapshots closer than this make a noisy rate: the later one is not charted.
const CHART_MIN_STEP_MS = 1_000;
const SVG_NS = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------------------------------------
// DOM helpers

const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child); // strings become text nodes
  }
  return node;
}

const sentence = (text) => (text ? text[0].toUpperCase() + text.slice(1) : text);

const formatZip = (zip) => (Number.isInteger(zip) ? String(zip).padStart(5, "0") : String(zip ?? ""));

function listText(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

function randomHex(bytes) {
  const buf = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------------------------
// API client

class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }

  /** FastAPI validation errors keyed by field name (loc[-1]); errors without a field under "". */
  fieldErrors() {
    const errors = new Map();
    const detail = this.body?.detail;
    if (!Array.isArray(detail)) return errors;
    for (const item of detail) {
      const loc = Array.isArray(item?.loc) ? item.loc : [];
      const field = loc.length > 1 ? String(loc.at(-1)) : "";
      const msg = cleanMessage(item?.msg ?? "invalid value");
      errors.set(field, [...(errors.get(field) ?? []), msg]);
    }
    return errors;
  }
}

// Pydantic prefixes custom validator messages with "Value error, "; the rest is the API's text.
const cleanMessage = (msg) => String(msg).replace(/^Value error,\s*/, "");

function describeError(status, body) {
  const detail = body?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => cleanMessage(d?.msg ?? "")).join("; ");
  if (typeof body === "string" && body) return body;
  return status ? `HTTP ${status}` : "The gateway could not be reached.";
}

const SAFE_METHODS = new Set(["GET", "HEAD"]);

/** A request to the gateway. ``signIn``: a 401 is a wrong key, not an ended session. */
async function api(method, path, { body, headers = {}, timeoutMs = 30_000, signIn = false } = {}) {
  const init = {
    method,
    headers: { Accept: "application/json", ...headers },
    credentials: "same-origin",
    signal: AbortSignal.timeout(timeoutMs),
  };
  if (!SAFE_METHODS.has(method) && session.csrf) init.headers["X-CSRF-Token"] = session.csrf;
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    const timedOut = err?.name === "TimeoutError";
    throw new ApiError(0, { detail: timedOut ? "The gateway did not answer in time." : "The gateway could not be reached." });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = parseJson(text);
    } catch {
      data = text;
    }
  }
  if (response.status === 401 && !signIn) signedOut("Your session has ended: sign in again.");
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Versions are hybrid logical clocks (wall-clock ms shifted left, plus a counter): far beyond
// 2^53, so a JS number would round them. Keep the digits exactly as sent, as a string.
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    key === "version" && typeof value === "number" && context?.source ? context.source : value,
  );
}

const customerPath = (id) => `/v1/customers/${encodeURIComponent(id)}`;

// ---------------------------------------------------------------------------------------------
// Toasts

function toast(text, kind = "info") {
  const box = byTestId("toasts");
  const item = h("div", { class: `toast toast-${kind}`, testid: "toast" }, text);
  box.append(item);
  setTimeout(() => item.remove(), TOAST_MS);
}

// ---------------------------------------------------------------------------------------------
// Session: sign in with a key, who is signed in, what the role may do, sign out

const session = { keyId: null, role: null, csrf: null };

/** Whether the signed-in role may do what ``role`` may. */
const can = (role) => session.role !== null && ROLES.indexOf(session.role) >= ROLES.indexOf(role);

function showSignIn(message = "") {
  setConnection("signed out");
  byTestId("console-main").hidden = true;
  byTestId("session").hidden = true;
  byTestId("signin").hidden = false;
  byTestId("signin-error").textContent = message;
  byTestId("signin-key").focus();
}

function signedIn(answer) {
  session.keyId = String(answer?.key_id ?? "");
  session.role = ROLES.includes(answer?.role) ? answer.role : "reader";
  session.csrf = String(answer?.csrf_token ?? "");
  byTestId("session-key-id").textContent = session.keyId;
  const badge = byTestId("session-role");
  badge.textContent = session.role;
  badge.dataset.role = session.role;
  document.documentElement.dataset.role = session.role;
  byTestId("signin").hidden = true;
  byTestId("session").hidden = false;
  byTestId("console-main").hidden = false;
  applyRole();
  loadRegions();
  connectStream();
  restoreListPlace();
  saveListPlace(true);
  showListPlace();
}

/** Forget the session on this page (the cookie is the gateway's) and ask for a key. */
function signedOut(message = "") {
  if (session.role === null && !byTestId("signin").hidden) return;
  session.keyId = session.role = session.csrf = null;
  delete document.documentElement.dataset.role;
  closeStream();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  clearRegions();
  customers.seq += 1; // answers still on their way belong to the old session
  customers.loaded = false;
  clearCustomers("");
  showSignIn(message);
}

/** Show and hide what the role allows: forms for writers, region switches for operators. */
function applyRole() {
  byTestId("new-customer").hidden = !can("writer");
  for (const card of regions.cards.values()) card.switchLabel.hidden = !can("operator");
  const detected =
    " A region whose store fails is marked down by the failure detector, and back once healthy " +
    "again; an operator's switch always wins.";
  byTestId("regions-intro").textContent = (can("operator")
    ? "Switch a region off to simulate an outage: its reads fall back to the replica and its " +
      "writes are parked until it is back."
    : "When a region is switched off, its reads fall back to the replica and its writes are " +
      "parked until it is back.") + detected;
}

async function submitSignIn(event) {
  event.preventDefault();
  const input = byTestId("signin-key");
  const error = byTestId("signin-error");
  const submit = byTestId("signin-submit");
  const key = input.value.trim();
  if (!key) {
    error.textContent = "Enter an API key.";
    input.focus();
    return;
  }
  // The key lives only in this request: out of the field and out of every variable after it.
  input.value = "";
  error.textContent = "";
  submit.disabled = true;
  try {
    signedIn(await api("POST", "/v1/session", { body: { key }, signIn: true }));
  } catch (err) {
    error.textContent =
      err.status === 401 ? "This key was not accepted." : `Could not sign in: ${err.message}`;
    input.focus();
  } finally {
    submit.disabled = false;
  }
}

async function signOut() {
  try {
    await api("DELETE", "/v1/session", { signIn: true });
  } catch (err) {
    // Signed out here either way; the cookie ends with the session it named.
    if (err.status !== 401) toast(`Sign-out did not reach the gateway: ${err.message}`, "warn");
  }
  signedOut();
}

/** The session the cookie names, if any: on load, and before the live stream reconnects. */
async function checkSession() {
  try {
    const answer = await api("GET", "/v1/session", { signIn: true });
    return answer;
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

function wireSession() {
  byTestId("signin-form").addEventListener("submit", submitSignIn);
  byTestId("sign-out").addEventListener("click", signOut);
}

// ---------------------------------------------------------------------------------------------
// Regions: cards, switches and the live event stream

const regions = {
  byName: new Map(),
  cards: new Map(),
};

function setConnection(stateName) {
  const box = byTestId("connection");
  box.dataset.state = stateName;
  document.documentElement.dataset.connection = stateName;
  byTestId("connection-label").textContent = stateName;
}

function createRegionCard(region) {
  const id = `region-${region.name}`;
  const input = h("input", {
    type: "checkbox",
    role: "switch",
    id: `${id}-switch`,
    testid: "region-switch",
    "aria-describedby": `${id}-status`,
  });
  const card = {
    input,
    busy: false,
    status: h("span", { class: "status-badge", id: `${id}-status`, testid: "region-status" }),
    zip: h("dd", { class: "mono", testid: "region-zip" }),
    replicas: h("dd", { testid: "region-replicas" }),
    pending: h("dd", { testid: "region-pending" }),
    source: h("p", { class: "region-source", testid: "region-source" }),
    note: h("p", { class: "region-note", testid: "region-note" }),
    hold: h("button", { type: "button", class: "btn btn-small region-hold", testid: "region-hold", hidden: true }, "Hold for maintenance"),
    changes: h("ol", { class: "region-changes", testid: "region-changes", "aria-label": `Recent status changes of ${region.name}` }),
  };
  card.switchLabel = h(
    "label",
    { class: "switch", for: input.id },
    input,
    h("span", { class: "switch-text" }, h("span", { class: "sr-only" }, `${region.name} `), "Available"),
  );
  card.switchLabel.hidden = !can("operator");
  card.root = h(
    "article",
    { class: "region-card", testid: `region-card-${region.name}`, dataset: { region: region.name }, "aria-labelledby": `${id}-title` },
    h("header", { class: "region-head" }, h("h3", { id: `${id}-title` }, region.name), card.status),
    h(
      "dl",
      { class: "region-facts" },
      h("div", {}, h("dt", {}, "Home zips"), card.zip),
      h("div", {}, h("dt", {}, "Replica"), card.replicas),
      h("div", {}, h("dt", {}, "Pending"), card.pending),
    ),
    card.source,
    card.note,
    card.changes,
    card.switchLabel,
    card.hold,
  );
  input.addEventListener("change", () => flipRegion(region.name, card, card.input.checked ? "available" : "unavailable"));
  // A detected down is the detector's word: an operator may make it theirs (maintenance),
  // which the detector never undoes, or switch the region back on (an override).
  card.hold.addEventListener("click", () => flipRegion(region.name, card, "unavailable"));
  byTestId("region-list").append(card.root);
  regions.cards.set(region.name, card);
  return card;
}

function updateRegionCard(card, region) {
  const up = region.status === "available";
  const detected = region.status === "down";
  card.root.dataset.status = region.status;
  card.root.dataset.setBy = region.set_by ?? "";
  if (!card.busy) card.input.checked = up;
  card.status.textContent = STATUS_TEXT[region.status] ?? String(region.status);
  card.hold.hidden = !(detected && can("operator"));
  card.source.replaceChildren(...statusSource(region));
  card.source.hidden = !region.set_by;
  card.zip.textContent = `${formatZip(region.zip_min)} – ${formatZip(region.zip_max)}`;
  const replicas = region.replicas ?? [];
  card.replicas.textContent = replicas.length ? replicas.join(", ") : "none";

  const pending = region.pending;
  card.pending.classList.toggle("muted", pending === null || pending === undefined);
  card.pending.classList.toggle("has-backlog", Number(pending) > 0);
  card.pending.textContent =
    pending === null || pending === undefined ? "unknown" : `${Number(pending).toLocaleString()} parked`;

  let note = "";
  if (!up) {
    const via = replicas.length ? `Reads served by ${listText(replicas)}` : "Reads unavailable";
    const until = detected ? "its store is healthy again" : "it is back";
    note = `${via}; writes are parked until ${until}.`;
  } else if (Number(pending) > 0) {
    note = "Replaying parked writes…";
  }
  card.note.textContent = note;
  card.note.hidden = !note;

  const recent = Array.isArray(region.recent_changes) ? region.recent_changes : [];
  card.changes.replaceChildren(...recent.slice(0, RECENT_CHANGES_SHOWN).map(changeItem));
  card.changes.hidden = !recent.length;
}

const STATUS_TEXT = { available: "available", unavailable: "unavailable", down: "down (detected)" };

// Who set the status and since when: the operator's word and the detector's, told apart.
function statusSource(region) {
  if (!region.set_by) return [];
  const since = new Date(region.since);
  const when = Number.isNaN(since.getTime())
    ? h("span", {}, "at an unknown time")
    : h("time", { datetime: since.toISOString(), title: since.toLocaleString() }, timeAgo(since));
  if (region.set_by === "detector") {
    const what = region.status === "down" ? "Detected down" : "Detected healthy again";
    const why = region.reason ? h("span", { class: "source-reason", testid: "region-source-reason" }, `: ${region.reason}`) : "";
    return [h("span", { class: "source-by", dataset: { by: "detector" } }, `${what} by the failure detector`), " ", when, why];
  }
  const what = region.status === "unavailable" ? "Taken out" : "Put back";
  const key = h("span", { class: "mono change-key" }, String(region.set_by_key ?? "unknown key"));
  return [h("span", { class: "source-by", dataset: { by: "operator" } }, `${what} by operator`), " ", key, " ", when];
}

// The audit trail records a change before making it; a follow-up says when it then failed
// (nothing changed) or may or may not have happened.
const CHANGE_OUTCOMES = {
  failed: { label: "failed", title: "Refused: the status was not changed." },
  unknown: { label: "outcome unknown", title: "It may or may not have happened: read the status." },
};

// A change's words by who made it and which way it went: [done, only attempted].
const CHANGE_VERBS = {
  detector: { off: ["Detected down", "Marking down attempted"], on: ["Detected back", "Marking back attempted"] },
  operator: { off: ["Switched off", "Switch off attempted"], on: ["Switched on", "Switch on attempted"] },
};

function changeItem(change) {
  const at = new Date(change?.at);
  const known = !Number.isNaN(at.getTime());
  const off = change?.status !== "available";
  const detector = change?.by === "detector";
  const outcome = CHANGE_OUTCOMES[change?.outcome] ?? null;
  const name = typeof change?.key_name === "string" && change.key_name ? change.key_name : "";
  const keyId = String(change?.key_id ?? "unknown key");
  const what = CHANGE_VERBS[detector ? "detector" : "operator"][off ? "off" : "on"][outcome ? 1 : 0];
  return h(
    "li",
    {
      class: "region-change",
      testid: "region-change",
      dataset: {
        status: String(change?.status ?? ""),
        by: String(change?.by ?? "operator"),
        outcome: String(change?.outcome ?? "done"),
      },
      title: change?.reason ?? "",
    },
    h("span", { class: "change-status" }, what),
    " by ",
    detector
      ? [h("span", { class: "change-key", testid: "region-change-key" }, "the detector"), " "]
      : [
          name ? h("span", { class: "change-name", testid: "region-change-name" }, name) : null,
          name ? " (" : null,
          h("span", { class: "mono change-key", testid: "region-change-key" }, keyId),
          name ? ") " : " ",
        ],
    known
      ? h("time", { datetime: at.toISOString(), title: at.toLocaleString() }, timeAgo(at))
      : h("span", {}, "at an unknown time"),
    outcome ? " " : null,
    outcome
      ? h("span", { class: "change-outcome", testid: "region-change-outcome", title: outcome.title }, outcome.label)
      : null,
  );
}

function timeAgo(date) {
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return `on ${date.toLocaleDateString()}`;
}

function clearRegions() {
  for (const card of regions.cards.values()) card.root.remove();
  regions.cards.clear();
  regions.byName = new Map();
  const grid = byTestId("region-list");
  grid.setAttribute("aria-busy", "true");
  if (!byTestId("region-placeholder")) {
    grid.append(h("p", { class: "muted placeholder", testid: "region-placeholder" }, "Loading regions…"));
  }
  byTestId("consumer-lag").textContent = "";
  chart.samples = [];
  renderCharts();
}

function renderRegions(list) {
  const grid = byTestId("region-list");
  grid.setAttribute("aria-busy", "false");
  byTestId("region-placeholder")?.remove();

  const previous = regions.byName;
  regions.byName = new Map(list.map((r) => [r.name, r]));
  for (const region of list) {
    const card = regions.cards.get(region.name) ?? createRegionCard(region);
    updateRegionCard(card, region);
  }
  for (const [name, card] of regions.cards) {
    if (!regions.byName.has(name)) {
      card.root.remove();
      regions.cards.delete(name);
    }
  }
  fillRegionFilter();
  updateZipHint();

  // A flip changes who serves reads: show the current page as it is now.
  const flipped = list.some((r) => previous.has(r.name) && previous.get(r.name).status !== r.status);
  if (flipped && customers.loaded) refreshCustomers();
}

async function flipRegion(name, card, wanted) {
  if (!can("operator")) return;
  card.busy = true;
  card.input.disabled = true;
  card.root.setAttribute("aria-busy", "true");
  try {
    const region = await api("PUT", `/v1/regions/${encodeURIComponent(name)}/status`, {
      body: { status: wanted },
    });
    const next = [...regions.byName.values()].map((r) => (r.name === name ? { ...r, ...region } : r));
    card.busy = false;
    renderRegions(next);
    toast(`${name} is now ${wanted}.`, wanted === "available" ? "ok" : "warn");
  } catch (err) {
    card.input.checked = regions.byName.get(name)?.status === "available";
    toast(`Could not switch ${name}: ${err.message}`, "error");
  } finally {
    card.busy = false;
    card.input.disabled = false;
    card.root.removeAttribute("aria-busy");
  }
}

function renderLag(lag) {
  const count = (name) => {
    const value = lag?.[name];
    return value === null || value === undefined ? "unknown" : Number(value).toLocaleString();
  };
  byTestId("consumer-lag").textContent =
    `Accepted, not yet applied: ${count("writer")} by the writer (home regions), ` +
    `${count("replicator")} by the replicator (replicas).`;
}

function renderRegionList(data) {
  if (session.role === null) return; // an answer that arrived after signing out
  renderRegions(data.regions ?? []);
  renderLag(data.lag);
  recordSample(data.regions ?? []);
}

async function loadRegions() {
  try {
    renderRegionList(await api("GET", "/v1/regions"));
  } catch (err) {
    if (err.status === 401) return;
    const placeholder = byTestId("region-placeholder");
    if (placeholder) placeholder.textContent = `Could not load regions: ${err.message}`;
  }
}

const stream = { source: null, watchdog: null, retryMs: 1000, retryTimer: null };

function closeStream() {
  clearTimeout(stream.retryTimer);
  clearTimeout(stream.watchdog);
  stream.source?.close();
  stream.source = null;
  stream.retryMs = 1000;
}

function connectStream() {
  clearTimeout(stream.retryTimer);
  stream.source?.close();
  const source = new EventSource("/v1/regions/events");
  stream.source = source;

  source.addEventListener("open", () => {
    if (source !== stream.source) return;
    stream.retryMs = 1000;
    setConnection("live");
    armWatchdog();
    loadRegions(); // the first pushed snapshot may be seconds away
  });
  source.addEventListener("regions", (event) => {
    if (source !== stream.source) return;
    setConnection("live");
    armWatchdog();
    try {
      renderRegionList(parseJson(event.data));
    } catch (err) {
      console.error("bad regions event", err);
    }
  });
  source.addEventListener("error", () => {
    if (source !== stream.source) return;
    setConnection("reconnecting");
    // The browser retries by itself unless the server refused the stream outright.
    if (source.readyState === EventSource.CLOSED) scheduleReconnect();
  });
}

// A refused stream may mean the session ended (EventSource does not say why): ask first.
function scheduleReconnect() {
  stream.source?.close();
  clearTimeout(stream.retryTimer);
  stream.retryTimer = setTimeout(reconnect, stream.retryMs);
  stream.retryMs = Math.min(stream.retryMs * 2, MAX_RETRY_MS);
}

async function reconnect() {
  let answer;
  try {
    answer = await checkSession();
  } catch {
    if (session.role !== null) scheduleReconnect(); // the gateway is unreachable: try later
    return;
  }
  if (session.role === null) return;
  if (answer === null) {
    signedOut("Your session has ended: sign in again.");
    return;
  }
  if (answer.key_id !== session.keyId || answer.role !== session.role) {
    signedIn(answer); // another tab signed in with another key: follow the cookie
    return;
  }
  session.csrf = String(answer.csrf_token ?? session.csrf);
  connectStream();
}

function armWatchdog() {
  clearTimeout(stream.watchdog);
  stream.watchdog = setTimeout(() => {
    setConnection("reconnecting");
    scheduleReconnect();
  }, STREAM_STALE_MS);
}

// ---------------------------------------------------------------------------------------------
// Throughput chart: applied/s and pending per region, from the region snapshots of the stream

const chart = { samples: [] }; // { t, values: Map(region -> { applied, pending }) }, oldest first

function recordSample(list) {
  const t = Date.now();
  const last = chart.samples.at(-1);
  if (last && t - last.t < CHART_MIN_STEP_MS) return;
  const number = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));
  chart.samples.push({
    t,
    values: new Map(list.map((r) => [r.name, { applied: number(r.applied), pending: number(r.pending) }])),
  });
  // Keep one sample older than the window, so the first rate in it has a start.
  while (chart.samples.length > 2 && chart.samples[1].t < t - CHART_WINDOW_MS) chart.samples.shift();
  renderCharts();
}

/** Points {t, v} per region: documents applied per second since the last known total.
 *
 * An unknown total (Redis did not answer that snapshot) is a gap in the line, and the next
 * known one is measured from the last known one: the documents applied meanwhile still show,
 * as the average rate over the longer span. A total that went down (the counter was reset)
 * is a gap too, and the measure starts again from it. */
function appliedRates(names) {
  const series = new Map(names.map((n) => [n, []]));
  const known = new Map(); // region -> { t, total }: its last known total
  for (const sample of chart.samples) {
    for (const name of names) {
      const total = sample.values.get(name)?.applied ?? null;
      const since = known.get(name);
      if (total === null) {
        if (since) series.get(name).push({ t: sample.t, v: null });
        continue;
      }
      known.set(name, { t: sample.t, total });
      if (!since) continue;
      const v = total < since.total ? null : (total - since.total) / ((sample.t - since.t) / 1000);
      series.get(name).push({ t: sample.t, v });
    }
  }
  return series;
}

function pendingSeries(names) {
  return new Map(
    names.map((n) => [n, chart.samples.map((s) => ({ t: s.t, v: s.values.get(n)?.pending ?? null }))]),
  );
}

/** A round upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function formatRate(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return Math.round(v).toLocaleString();
  return v.toLocaleString(undefined, { maximumFractionDigits: 1 });
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

const CHART_BOX = { width: 560, height: 150, left: 46, right: 8, top: 8, bottom: 20 };

function drawChart(container, series, names, unit) {
  const box = CHART_BOX;
  const plotW = box.width - box.left - box.right;
  const plotH = box.height - box.top - box.bottom;
  const now = Date.now();
  const start = now - CHART_WINDOW_MS;
  const values = [...series.values()].flat().filter((p) => p.t >= start && p.v !== null).map((p) => p.v);
  const top = niceCeiling(Math.max(0, ...values));
  const x = (t) => box.left + ((t - start) / CHART_WINDOW_MS) * plotW;
  const y = (v) => box.top + plotH - (v / top) * plotH;

  const root = svg("svg", {
    viewBox: `0 0 ${box.width} ${box.height}`,
    class: "chart-svg",
    role: "img",
    "aria-label": `${unit} per region over the last ${CHART_WINDOW_MS / 60_000} minutes`,
  });
  for (const fraction of [0, 0.5, 1]) {
    const v = top * fraction;
    root.append(
      svg("line", { class: "chart-grid", x1: box.left, x2: box.width - box.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "chart-label", x: box.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatRate(v)),
    );
  }
  root.append(
    svg("text", { class: "chart-label", x: box.left, y: box.height - 4 }, `−${CHART_WINDOW_MS / 60_000} min`),
    svg("text", { class: "chart-label", x: box.width - box.right, y: box.height - 4, "text-anchor": "end" }, "now"),
  );

  names.forEach((name, index) => {
    const points = (series.get(name) ?? []).filter((p) => p.t >= start);
    let d = "";
    let pen = false;
    let drawn = 0;
    let last = null;
    for (const p of points) {
      if (p.v === null) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)} `;
      pen = true;
      drawn += 1;
      last = p;
    }
    const peak = Math.max(0, ...points.filter((p) => p.v !== null).map((p) => p.v));
    const group = svg("g", {
      class: `chart-series series-${index % 6}`,
      "data-testid": "chart-series",
      "data-region": name,
      "data-points": drawn,
      "data-peak": peak,
    });
    if (d) group.append(svg("path", { class: "chart-line", d: d.trim() }));
    if (last) group.append(svg("circle", { class: "chart-dot", cx: x(last.t), cy: y(last.v), r: 2.5 }));
    root.append(group);
  });
  container.replaceChildren(root);
  container.dataset.samples = String(chart.samples.length);
}

function renderCharts() {
  const names = [...regions.byName.keys()];
  const rates = appliedRates(names);
  const pending = pendingSeries(names);
  drawChart(byTestId("chart-applied"), rates, names, "Documents applied per second");
  drawChart(byTestId("chart-pending"), pending, names, "Pending commands");

  const legend = byTestId("chart-legend");
  legend.replaceChildren(
    ...names.map((name, index) => {
      const rate = rates.get(name)?.at(-1)?.v ?? null;
      const parked = pending.get(name)?.at(-1)?.v ?? null;
      return h(
        "li",
        { class: "legend-item", testid: `chart-legend-${name}`, dataset: { rate: rate ?? "", pending: parked ?? "" } },
        h("span", { class: `legend-swatch series-${index % 6}`, "aria-hidden": "true" }),
        h("span", { class: "mono legend-name" }, name),
        h("span", { class: "legend-figure" }, `${formatRate(rate)}/s`),
        h("span", { class: "legend-figure muted" }, `${parked === null ? "–" : parked.toLocaleString()} pending`),
      );
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Customers: filters, table, banners, paging

// The list's place lives in the URL (the filters, the page's cursor and number, or what was
// found), so a reload or a shared link shows the same page. The cursors of the pages before it
// live in the history entry's state, which a reload keeps and a shared link does not: there,
// Previous goes back to the first page. Nothing is ever counted: a page is all that is read.
const customers = {
  query: {},
  cursors: [null], // cursor of every page visited so far; the last one is the current page
  firstPage: 1, // the number of the page cursors[0] opens (above 1 after a shared link)
  find: "", // a customer id or unique id looked up instead of the list
  nextCursor: null,
  items: [],
  seq: 0,
  loaded: false,
};

const ORDER_TEXT = {
  customer_id: "customer id",
  customer_zip_code_prefix: "zip",
  customer_city: "city",
};
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const UNIQUE_ID_PATTERN = /^[0-9a-fA-F]{32}$/;

const pageNumber = () => customers.firstPage + customers.cursors.length - 1;

function listUrl() {
  const params = new URLSearchParams(customers.find ? { find: customers.find } : customers.query);
  const cursor = customers.cursors.at(-1);
  if (!customers.find && cursor) {
    params.set("cursor", cursor);
    params.set("page", String(pageNumber()));
  }
  return `${location.pathname}${params.size ? `?${params}` : ""}`;
}

/** Record where the list is: a new history entry, or (replace) the current one. */
function saveListPlace(replace = false) {
  const state = { cursors: customers.cursors, firstPage: customers.firstPage };
  const url = listUrl();
  if (replace || url === `${location.pathname}${location.search}`) history.replaceState(state, "", url);
  else history.pushState(state, "", url);
}

/** The list's place from the URL (and the history entry), into the form and the state. */
function restoreListPlace() {
  const params = new URLSearchParams(location.search);
  for (const key of FILTER_FIELDS) {
    const control = byTestId(`filter-${key}`);
    control.value = params.get(key) ?? (key === "limit" ? "25" : "");
  }
  customers.query = readFilters();
  if (params.get("region")) customers.query.region = params.get("region");
  customers.find = (params.get("find") ?? "").trim();
  byTestId("find-text").value = customers.find;
  const cursor = params.get("cursor");
  const saved = history.state?.cursors;
  if (cursor && Array.isArray(saved) && saved.at(-1) === cursor) {
    customers.cursors = saved;
    customers.firstPage = Number(history.state.firstPage) || 1;
  } else if (cursor) {
    customers.cursors = [cursor];
    customers.firstPage = Math.max(1, Math.floor(Number(params.get("page"))) || 1);
  } else {
    customers.cursors = [null];
    customers.firstPage = 1;
  }
}

/** Show the list, or what was found, as the state says. */
function showListPlace() {
  clearFilterErrors();
  byTestId("find-error").textContent = "";
  byTestId("find-clear").hidden = !customers.find;
  if (customers.find) findCustomers();
  else loadCustomers();
}

function fillStateSelects() {
  for (const select of [byTestId("filter-state"), byTestId("field-customer_state")]) {
    select.append(...UF_CODES.map((code) => h("option", { value: code }, code)));
  }
}

function fillRegionFilter() {
  const select = byTestId("filter-region");
  const names = [...regions.byName.keys()];
  const current = [...select.options].slice(1).map((o) => o.value);
  if (names.join() === current.join()) return;
  // Before the regions are known, a region from the URL has no option to select yet.
  const chosen = select.value || customers.query.region || "";
  select.replaceChildren(h("option", { value: "" }, "Any"), ...names.map((n) => h("option", { value: n }, n)));
  select.value = names.includes(chosen) ? chosen : "";
}

function readFilters() {
  const data = new FormData(byTestId("filter-form"));
  const query = {};
  for (const key of FILTER_FIELDS) {
    const value = String(data.get(key) ?? "").trim();
    if (value) query[key] = value;
  }
  return query;
}

function clearFilterErrors() {
  for (const key of FILTER_FIELDS) {
    byTestId(`filter-error-${key}`).textContent = "";
    byTestId(`filter-${key}`).removeAttribute("aria-invalid");
  }
}

function showBanner(testid, title, detail) {
  const banner = byTestId(testid);
  banner.querySelector(".banner-title").textContent = title;
  banner.querySelector(".banner-detail").textContent = detail;
  banner.hidden = false;
}

const hideBanner = (testid) => {
  byTestId(testid).hidden = true;
};

function renderBanners(data) {
  const degraded = data.degraded_regions ?? [];
  if (degraded.length) {
    const routes = degraded.map((name) => {
      const replicas = regions.byName.get(name)?.replicas ?? [];
      return replicas.length ? `${name} → ${listText(replicas)}` : name;
    });
    showBanner(
      "banner-degraded",
      `Served from replicas: ${degraded.join(", ")}`,
      `Unavailable, read from a replica instead (${routes.join("; ")}). Rows marked ↪ came from a replica and may lag slightly.`,
    );
  } else {
    hideBanner("banner-degraded");
  }

  const unreachable = data.unreachable_regions ?? [];
  if (data.incomplete || unreachable.length) {
    const detail = unreachable.length
      ? `${unreachable.length > 1 ? `${listText(unreachable)}, and their replicas, are` : `${unreachable[0]} and its replica are`} down. Customers homed there are missing from this list.`
      : "Some customers may be missing from this list.";
    showBanner(
      "banner-incomplete",
      `Some data could not be reached${unreachable.length ? `: ${unreachable.join(", ")}` : ""}`,
      detail,
    );
  } else {
    hideBanner("banner-incomplete");
  }
}

function servedByBadge(item) {
  if (!item.fallback) {
    return h("span", { class: "served", testid: "served-by", dataset: { fallback: "false" } }, item.served_by);
  }
  return h(
    "span",
    {
      class: "served served-fallback",
      testid: "served-by",
      dataset: { fallback: "true" },
      title: `${item.region} is unavailable: read from its replica ${item.served_by}`,
    },
    h("span", { "aria-hidden": "true" }, "↪"),
    h("span", {}, item.served_by),
    h("span", { class: "served-note" }, "replica"),
  );
}

function customerRow(item) {
  const id = item.customer_id;
  return h(
    "tr",
    { testid: "customer-row", dataset: { customerId: id } },
    h("td", { class: "mono cell-id", testid: "cell-id", title: id }, id),
    h("td", { class: "mono cell-id subtle", testid: "cell-unique-id", title: item.customer_unique_id }, item.customer_unique_id),
    h("td", { class: "mono num", testid: "cell-zip" }, formatZip(item.customer_zip_code_prefix)),
    h("td", { class: "cell-city", testid: "cell-city", title: item.customer_city }, item.customer_city),
    h("td", { testid: "cell-state" }, h("span", { class: "uf" }, item.customer_state)),
    h("td", { testid: "cell-region" }, item.region),
    h("td", { testid: "cell-served-by" }, servedByBadge(item)),
    h("td", { class: "actions-cell" }, can("writer") ? rowActions(item) : null),
  );
}

function rowActions(item) {
  const id = item.customer_id;
  return h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "btn btn-small", testid: "row-edit", "aria-label": `Edit ${id}`, onclick: () => openEditDialog(item) }, "Edit"),
    h("button", { type: "button", class: "btn btn-small btn-danger-quiet", testid: "row-delete", "aria-label": `Delete ${id}`, onclick: () => confirmDelete(item) }, "Delete"),
  );
}

function orderText(order) {
  const fields = (order ?? []).map((name) => ORDER_TEXT[name] ?? name);
  return fields.length ? `sorted by ${fields.join(", then ")}` : "";
}

function renderCustomers(data, highlight) {
  customers.items = data.items ?? [];
  customers.nextCursor = data.next_cursor ?? null;
  const body = byTestId("customers-body");
  body.replaceChildren(...customers.items.map(customerRow));
  const empty = byTestId("customers-empty");
  empty.textContent = data.incomplete
    ? "Nothing to show: the regions holding these customers cannot be reached."
    : customers.find
      ? `No customer has the id or unique id ${customers.find}.`
      : customers.nextCursor
        ? "None on this page: this zip range holds few customers of this city here. Next reads on."
        : "No customers match these filters.";
  empty.hidden = customers.items.length > 0;
  renderBanners(data);
  hideBanner("banner-error");

  const page = pageNumber();
  const count = customers.items.length;
  const rows = `${count} customer${count === 1 ? "" : "s"}`;
  byTestId("page-label").textContent = customers.find ? `Found ${rows}` : `Page ${page} · ${rows}`;
  byTestId("page-prev").disabled = customers.find !== "" || page <= 1;
  byTestId("page-next").disabled = !customers.nextCursor;
  const order = orderText(data.order);
  byTestId("customers-order").textContent = `Read from every region at once, a page at a time${order ? `, ${order}` : ""}.`;

  if (highlight) {
    const row = body.querySelector(`tr[data-customer-id="${CSS.escape(highlight)}"]`);
    row?.classList.add("flash");
  }
}

/** Read what is on screen again: the list's page, or what was found. */
const refreshCustomers = (options) => (customers.find ? findCustomers() : loadCustomers(options));

async function loadCustomers({ highlight } = {}) {
  const seq = ++customers.seq;
  const params = new URLSearchParams(customers.query);
  const cursor = customers.cursors.at(-1);
  if (cursor) params.set("cursor", cursor);
  const table = byTestId("customers-table");
  table.setAttribute("aria-busy", "true");
  try {
    const data = await api("GET", `/v1/customers?${params}`);
    if (seq !== customers.seq) return;
    customers.loaded = true;
    renderCustomers(data, highlight);
  } catch (err) {
    if (seq !== customers.seq || err.status === 401) return;
    showQueryError(err);
  } finally {
    if (seq === customers.seq) table.setAttribute("aria-busy", "false");
  }
}

// Rows that do not match the filters on screen would mislead: show none until the query works.
function clearCustomers(message) {
  customers.items = [];
  customers.nextCursor = null;
  byTestId("customers-body").replaceChildren();
  const empty = byTestId("customers-empty");
  empty.textContent = message;
  empty.hidden = false;
  hideBanner("banner-degraded");
  hideBanner("banner-incomplete");
  byTestId("page-label").textContent = "";
  byTestId("page-prev").disabled = customers.find !== "" || pageNumber() <= 1;
  byTestId("page-next").disabled = true;
}

function showQueryError(err) {
  clearCustomers(
    err.status === 422 ? "Fix the filters above to see customers." : "Customers could not be loaded.",
  );
  const unplaced = [];
  if (err.status === 422) {
    for (const [field, messages] of err.fieldErrors()) {
      const slot = FILTER_FIELDS.includes(field) ? byTestId(`filter-error-${field}`) : null;
      if (slot) {
        slot.textContent = messages.join(" ");
        byTestId(`filter-${field}`).setAttribute("aria-invalid", "true");
      } else {
        unplaced.push(...messages);
      }
    }
    if (!unplaced.length) return;
  }
  showBanner("banner-error", "Could not load customers", unplaced.length ? unplaced.join(" ") : err.message);
}

function applyFilters() {
  customers.query = readFilters();
  customers.find = "";
  byTestId("find-text").value = "";
  customers.cursors = [null];
  customers.firstPage = 1;
  saveListPlace();
  showListPlace();
}

/** A customer id and a unique id look alike (Olist's are both 32 hex): ask for both at once. */
async function findCustomers() {
  const seq = ++customers.seq;
  const text = customers.find;
  const table = byTestId("customers-table");
  table.setAttribute("aria-busy", "true");
  const byId = ID_PATTERN.test(text)
    ? api("GET", customerPath(text)).catch((err) => (err.status === 404 ? null : Promise.reject(err)))
    : Promise.resolve(null);
  const byPerson = UNIQUE_ID_PATTERN.test(text)
    ? api("GET", `/v1/customers?${new URLSearchParams({ unique_id: text, limit: "100" })}`)
    : Promise.resolve({ items: [], next_cursor: null });
  try {
    const [one, person] = await Promise.all([byId, byPerson]);
    if (seq !== customers.seq) return;
    customers.loaded = true;
    const items = [...(one ? [one] : []), ...person.items.filter((item) => item.customer_id !== one?.customer_id)];
    renderCustomers({ ...person, items, next_cursor: null, order: null }, one?.customer_id);
    if (!ID_PATTERN.test(text)) {
      byTestId("find-error").textContent = "An id is 1 to 64 letters, digits, '_' or '-'.";
    }
  } catch (err) {
    if (seq !== customers.seq || err.status === 401) return;
    showQueryError(err);
  } finally {
    if (seq === customers.seq) table.setAttribute("aria-busy", "false");
  }
}

function wireCustomerList() {
  const form = byTestId("filter-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  // "reset" fires before the inputs are cleared.
  form.addEventListener("reset", () => setTimeout(applyFilters, 0));
  byTestId("page-next").addEventListener("click", () => {
    if (!customers.nextCursor) return;
    customers.cursors = [...customers.cursors, customers.nextCursor];
    saveListPlace();
    loadCustomers();
  });
  byTestId("page-prev").addEventListener("click", () => {
    if (pageNumber() <= 1) return;
    if (customers.cursors.length > 1) {
      customers.cursors = customers.cursors.slice(0, -1);
    } else {
      // Opened on a page by a link: the pages before it were never read here.
      customers.cursors = [null];
      customers.firstPage = 1;
    }
    saveListPlace();
    loadCustomers();
  });
  byTestId("find-form").addEventListener("submit", (event) => {
    event.preventDefault();
    customers.find = byTestId("find-text").value.trim();
    saveListPlace();
    showListPlace();
  });
  byTestId("find-clear").addEventListener("click", () => {
    customers.find = "";
    byTestId("find-text").value = "";
    saveListPlace();
    showListPlace();
  });
  window.addEventListener("popstate", () => {
    if (session.role === null) return;
    restoreListPlace();
    showListPlace();
  });
  byTestId("new-customer").addEventListener("click", openCreateDialog);
}

// ---------------------------------------------------------------------------------------------
// Create / edit / delete

const editor = {
  mode: "create",
  original: null,
};

const field = (name) => byTestId(`field-${name}`);

function clearFormErrors() {
  for (const name of CUSTOMER_FIELDS) {
    byTestId(`error-${name}`).textContent = "";
    field(name).removeAttribute("aria-invalid");
  }
  setFormMessage("form-message", "");
}

function setFormMessage(testid, text, kind = "error") {
  const box = byTestId(testid);
  box.textContent = sentence(text);
  box.dataset.kind = kind;
  box.hidden = !text;
}

function homeOf(zip) {
  for (const region of regions.byName.values()) {
    if (region.zip_min <= zip && zip <= region.zip_max) return region;
  }
  return null;
}

function updateZipHint() {
  const hint = byTestId("zip-home-hint");
  const raw = field("customer_zip_code_prefix").value.trim();
  hint.classList.remove("hint-warn");
  if (!/^\d+$/.test(raw)) {
    hint.textContent = "Decides the home region.";
    return;
  }
  const region = homeOf(Number(raw));
  if (region) {
    const replicas = region.replicas?.length ? `, replica ${listText(region.replicas)}` : "";
    hint.textContent = `Home ${region.name}${replicas}.`;
  } else if (regions.byName.size) {
    const all = [...regions.byName.values()];
    const low = Math.min(...all.map((r) => r.zip_min));
    const high = Math.max(...all.map((r) => r.zip_max));
    hint.textContent = `Outside every region (${formatZip(low)}–${formatZip(high)}).`;
    hint.classList.add("hint-warn");
  }
}

function fillForm(item) {
  for (const name of CUSTOMER_FIELDS) {
    const value = item?.[name];
    field(name).value = value === null || value === undefined ? "" : String(value);
  }
  updateZipHint();
}

/** Values as the API expects them; a zip that is not all digits is sent as typed, so the API
 * explains what is wrong with it. */
function readForm() {
  const values = {};
  for (const name of CUSTOMER_FIELDS) {
    const raw = field(name).value.trim();
    values[name] = name === "customer_zip_code_prefix" && /^\d+$/.test(raw) ? Number(raw) : raw;
  }
  return values;
}

function setEditorBusy(busy) {
  const dialog = byTestId("customer-dialog");
  dialog.setAttribute("aria-busy", String(busy));
  byTestId("customer-save").disabled = busy;
  byTestId("customer-delete").disabled = busy;
}

function openCreateDialog() {
  if (!can("writer")) return;
  editor.mode = "create";
  editor.original = null;
  byTestId("customer-form").reset();
  clearFormErrors();
  fillForm({ customer_id: randomHex(16), customer_unique_id: "" });
  field("customer_id").readOnly = false;
  byTestId("customer-dialog-title").textContent = "New customer";
  byTestId("customer-meta").textContent = "The write is acknowledged by Kafka, then applied to the home region and its replica.";
  byTestId("customer-save").textContent = "Create";
  byTestId("customer-delete").hidden = true;
  setEditorBusy(false);
  byTestId("customer-dialog").showModal();
  field("customer_unique_id").focus();
}

function describeItem(item) {
  const served = item.fallback ? ` · read from replica ${item.served_by}` : "";
  return `Home ${item.region} · version ${item.version}${served}`;
}

async function openEditDialog(item) {
  if (!can("writer")) return;
  editor.mode = "edit";
  editor.original = item;
  byTestId("customer-form").reset();
  clearFormErrors();
  fillForm(item);
  field("customer_id").readOnly = true;
  byTestId("customer-dialog-title").textContent = "Edit customer";
  byTestId("customer-meta").textContent = describeItem(item);
  byTestId("customer-save").textContent = "Save changes";
  byTestId("customer-delete").hidden = false;
  setEditorBusy(false);
  byTestId("customer-dialog").showModal();
  field("customer_city").focus();

  // The row may be stale: edit against the latest version if it is there.
  try {
    const fresh = await api("GET", customerPath(item.customer_id));
    if (editor.original !== item) return;
    editor.original = fresh;
    byTestId("customer-meta").textContent = describeItem(fresh);
  } catch (err) {
    if (editor.original !== item) return;
    if (err.status === 404) {
      setFormMessage("form-message", "This customer no longer exists.");
      byTestId("customer-save").disabled = true;
    }
  }
}

function changedFields(values, original) {
  const changes = {};
  for (const name of EDITABLE_FIELDS) {
    if (String(values[name]) !== String(original[name] ?? "")) changes[name] = values[name];
  }
  return changes;
}

function showWriteError(err, testidPrefix = "error-", messageBox = "form-message") {
  if (err.status === 422) {
    const unplaced = [];
    let first = null;
    for (const [name, messages] of err.fieldErrors()) {
      if (!CUSTOMER_FIELDS.includes(name)) {
        unplaced.push(...messages);
        continue;
      }
      byTestId(`${testidPrefix}${name}`).textContent = messages.join(" ");
      field(name).setAttribute("aria-invalid", "true");
      first ??= field(name);
    }
    first?.focus();
    setFormMessage(messageBox, unplaced.length ? unplaced.join(" ") : first ? "" : err.message);
    return;
  }
  let text;
  if (err.status === 409) text = `${err.message}: choose another id, or edit the existing customer.`;
  else if (err.status === 404) text = `Not found: ${err.message}`;
  else if (err.status === 503) text = `The write was not accepted, try again shortly: ${err.message}`;
  else if (err.status === 504) text = "Kafka did not confirm the write in time: it may or may not have been saved. Reload the customer before trying again.";
  else if (err.status === 0) text = err.message;
  else text = `Error ${err.status}: ${err.message}`;
  setFormMessage(messageBox, text);
}

function reportAccepted(verb, result) {
  const where = result?.region ? ` in ${result.region}` : "";
  if (result?.applied === false) {
    toast(`${verb} ${result.customer_id}: accepted, not yet applied${where}; it will appear once replayed.`, "warn");
  } else {
    toast(`${verb} ${result?.customer_id ?? "customer"}${where}.`, "ok");
  }
}

async function submitCustomer(event) {
  event.preventDefault();
  clearFormErrors();
  const values = readForm();
  let request;
  if (editor.mode === "create") {
    // Leave empty fields out so the API answers "Field required" for them.
    const body = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));
    request = () =>
      api("POST", "/v1/customers?wait=applied", { body, headers: { "If-None-Match": "*" } });
  } else {
    const changes = changedFields(values, editor.original);
    if (!Object.keys(changes).length) {
      setFormMessage("form-message", "Nothing changed.", "info");
      return;
    }
    request = () => api("PATCH", `${customerPath(editor.original.customer_id)}?wait=applied`, { body: changes });
  }

  setEditorBusy(true);
  try {
    const result = await request();
    byTestId("customer-dialog").close();
    reportAccepted(editor.mode === "create" ? "Created" : "Updated", result);
    await refreshCustomers({ highlight: result?.customer_id });
  } catch (err) {
    showWriteError(err);
  } finally {
    setEditorBusy(false);
  }
}

let pendingDelete = null;

function confirmDelete(item) {
  if (!can("writer")) return;
  pendingDelete = item;
  byTestId("confirm-text").textContent =
    `Delete customer ${item.customer_id} (${item.customer_city}, ${item.customer_state})? ` +
    "It is replaced by a tombstone, so a late replay cannot bring it back. This cannot be undone.";
  setFormMessage("confirm-message", "");
  byTestId("confirm-yes").disabled = false;
  byTestId("confirm-dialog").showModal();
  byTestId("confirm-no").focus();
}

async function deleteConfirmed() {
  const item = pendingDelete;
  if (!item) return;
  byTestId("confirm-yes").disabled = true;
  try {
    const result = await api("DELETE", `${customerPath(item.customer_id)}?wait=applied`);
    pendingDelete = null;
    byTestId("confirm-dialog").close();
    const editorDialog = byTestId("customer-dialog");
    if (editorDialog.open) editorDialog.close();
    reportAccepted("Deleted", { customer_id: item.customer_id, ...result });
    await refreshCustomers();
  } catch (err) {
    showWriteError(err, "error-", "confirm-message");
    byTestId("confirm-yes").disabled = false;
  }
}

function wireEditor() {
  byTestId("customer-form").addEventListener("submit", submitCustomer);
  byTestId("customer-cancel").addEventListener("click", () => byTestId("customer-dialog").close());
  byTestId("customer-delete").addEventListener("click", () => confirmDelete(editor.original));
  field("customer_zip_code_prefix").addEventListener("input", updateZipHint);
  for (const name of CUSTOMER_FIELDS) {
    // Once the user edits a field, the API's old complaint about it no longer applies.
    field(name).addEventListener("input", () => {
      byTestId(`error-${name}`).textContent = "";
      field(name).removeAttribute("aria-invalid");
      if (byTestId("form-message").dataset.kind === "info") setFormMessage("form-message", "");
    });
  }
  byTestId("confirm-yes").addEventListener("click", deleteConfirmed);
  byTestId("confirm-no").addEventListener("click", () => byTestId("confirm-dialog").close());
  byTestId("confirm-dialog").addEventListener("close", () => {
    pendingDelete = null;
  });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  fillStateSelects();
  wireSession();
  wireCustomerList();
  wireEditor();
  try {
    const answer = await checkSession();
    if (answer) signedIn(answer);
    else showSignIn();
  } catch (err) {
    showSignIn(`The gateway could not be asked for a session: ${err.message}`);
  }
  document.documentElement.dataset.ready = "true";
}

main();
