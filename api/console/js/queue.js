// The live alert queue: loaded from GET /alerts, kept current by the WebSocket feed
// (/alerts/stream, token as first message, resumed with ?after=<last event id>), ordered like
// the API: most severe first, then the longest waiting.

import { get, session, API } from "./api.js";
import { h, clear, age, humanType, SEVERITY_RANK, STATUS_RANK, showBanner } from "./ui.js";

const alerts = new Map(); // id -> summary
const subjects = new Map(); // id -> name (for labels)
const listeners = new Set();
let lastEventId = null;
let socket = null;
let retry = 0;
let retryTimer = null;
let stopped = true;
let selectedId = null;
let showResolved = false;

export function onAlertChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function alertById(id) {
  return alerts.get(Number(id));
}

export function select(id) {
  selectedId = id == null ? null : Number(id);
  render();
}

export function subjectName(id) {
  if (id == null) return "no subject";
  return subjects.get(id) || `subject ${id}`;
}

export function rememberSubjects(list) {
  for (const s of list) subjects.set(s.id, s.name);
}

// Merge a summary (from the list, an event or an action); never move a status backwards,
// so a list fetched before an event cannot undo what the event said.
export function merge(summary) {
  const id = Number(summary.id ?? summary.alert_id);
  const known = alerts.get(id);
  if (!known && !summary.severity) return null; // a partial update of an alert not listed
  const next = { ...(known || {}), ...summary, id };
  if (known && STATUS_RANK[known.status] > STATUS_RANK[summary.status]) {
    next.status = known.status;
  }
  next._fresh = !known;
  alerts.set(id, next);
  for (const listener of listeners) listener(next);
  render();
  return next;
}

function ordered() {
  return [...alerts.values()]
    .filter((a) => showResolved || a.status !== "resolved")
    .sort(
      (a, b) =>
        SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity] ||
        Date.parse(a.opened_at) - Date.parse(b.opened_at) ||
        a.id - b.id,
    );
}

export function render() {
  const list = document.getElementById("queue");
  if (!list) return;
  const items = ordered();
  clear(list);
  const now = Date.now();
  for (const alert of items) {
    const row = h(
      "li",
      {
        class: `alert-row sev-${alert.severity} st-${alert.status}${alert.id === selectedId ? " selected" : ""}${alert._fresh ? " fresh" : ""}`,
        dataset: { alertId: alert.id, status: alert.status, severity: alert.severity },
        tabindex: 0,
        role: "button",
        title: `${alert.severity} ${humanType(alert.type)} — ${alert.status}`,
        onclick: () => (location.hash = `#/alert/${alert.id}`),
        onkeydown: (e) => {
          if (e.key === "Enter") location.hash = `#/alert/${alert.id}`;
        },
      },
      h("span", { class: "sev-bar", "aria-hidden": "true" }),
      h(
        "div",
        { class: "alert-main" },
        h("div", { class: "alert-type" }, humanType(alert.type), alert.late ? h("span", { class: "tag" }, "late") : null, alert.escalated ? h("span", { class: "tag" }, "escalated") : null),
        h("div", { class: "alert-subject" }, subjectName(alert.subject_id), alert.cleared_at ? h("span", { class: "tag ok" }, "cleared") : null),
      ),
      h(
        "div",
        { class: "alert-meta" },
        h("span", { class: "age", dataset: { openedAt: alert.opened_at } }, age(alert.opened_at, now)),
        h("span", { class: `pill st ${alert.status}` }, alert.status),
      ),
    );
    list.append(row);
    alert._fresh = false;
  }
  document.getElementById("queue-count").textContent = String(items.filter((a) => a.status !== "resolved").length);
  document.getElementById("queue-empty").hidden = items.length > 0;
}

function tickAges() {
  const now = Date.now();
  for (const el of document.querySelectorAll("#queue .age")) el.textContent = age(el.dataset.openedAt, now);
}

function setLive(state, text) {
  const live = document.getElementById("live");
  if (!live) return;
  live.dataset.state = state;
  live.textContent = text || state;
}

async function loadList() {
  const pages = [];
  let cursor = null;
  do {
    const page = await get("/alerts", { query: { status: ["open", "acknowledged"], limit: 500, cursor } });
    pages.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && pages.length < 5000);
  for (const summary of pages) merge(summary);
}

async function loadSubjects() {
  try {
    let after = 0;
    for (let i = 0; i < 20; i += 1) {
      const page = await get("/subjects", { query: { limit: 1000, after_id: after } });
      rememberSubjects(page);
      if (page.length < 1000) break;
      after = page[page.length - 1].id;
    }
    render();
  } catch {
    // names are a convenience; ids are shown without them
  }
}

function connect() {
  if (stopped) return;
  const current = session();
  if (!current) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = lastEventId != null ? `?after=${lastEventId}` : "";
  setLive("connecting", retry ? `reconnecting (${retry})` : "connecting");
  const ws = new WebSocket(`${scheme}//${location.host}${API}/alerts/stream${query}`);
  socket = ws;
  ws.addEventListener("open", () => ws.send(JSON.stringify({ token: current.token })));
  ws.addEventListener("message", (message) => {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    if (data.type === "ready") {
      retry = 0;
      if (lastEventId == null) lastEventId = data.cursor;
      setLive("live", "live");
      // the first connection (or one after a long gap) also reloads the list
      loadList().catch((error) => showBanner(`Could not load the alert queue: ${error.message}`));
    } else if (data.type === "alert") {
      if (lastEventId == null || data.id > lastEventId) lastEventId = data.id;
      merge({ ...data.alert, id: data.alert_id, _event: data.event, _event_at: data.at });
    }
  });
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    if (stopped) return;
    if (event.code === 1008 && !session()) {
      setLive("offline", "signed out");
      return;
    }
    retry += 1;
    const delay = Math.min(15000, 500 * 2 ** Math.min(retry, 5));
    setLive("offline", `offline — retry in ${Math.round(delay / 1000)} s`);
    retryTimer = setTimeout(connect, delay);
  });
}

let ageTimer = null;

export function start() {
  stopped = false;
  document.getElementById("queue-show-resolved").onchange = (e) => {
    showResolved = e.target.checked;
    render();
  };
  loadSubjects();
  connect();
  // without the feed (a proxy that refuses WebSockets), the queue still loads, just not live
  setTimeout(() => {
    if (!stopped && lastEventId == null) loadList().catch((error) => showBanner(`Could not load the alert queue: ${error.message}`));
  }, 5000);
  ageTimer = setInterval(tickAges, 10000);
}

export function stop() {
  stopped = true;
  clearTimeout(retryTimer);
  clearInterval(ageTimer);
  if (socket) socket.close();
  socket = null;
  alerts.clear();
  lastEventId = null;
  retry = 0;
  setLive("offline", "offline");
  render();
}
