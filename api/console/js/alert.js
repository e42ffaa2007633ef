// An alert's detail: the map (the subject's zones, the fixes around the alert, the alert's and
// the last known position), what happened, and the operator's actions.

import { get, post, may, ApiError } from "./api.js";
import { h, clear, when, age, duration, humanType, status, spinner, OUTCOMES } from "./ui.js";
import * as maps from "./map.js";
import * as queue from "./queue.js";

const NOTE_REQUIRED = new Set(["strap_tamper", "case_tamper", "absconder"]);
let current = null; // the alert id shown
let unsubscribe = null;

// What this console's last action answered, laid over the detail read after it: the API may
// answer an action before its transaction is visible to the next read.
let pending = null;
// The last action's message, carried over to the detail rendered after it (a live event may
// change the status pill before the action's answer is in: the message is what says it is done).
let flash = null;

function overlay(detail) {
  if (!pending || pending.alert_id !== detail.id) return detail;
  const rank = { open: 0, acknowledged: 1, resolved: 2 };
  if (pending.status && rank[detail.status] < rank[pending.status]) {
    for (const key of ["status", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by", "outcome"]) {
      if (pending[key] !== undefined && pending[key] !== null) detail[key] = pending[key];
    }
  }
  if (pending.note && !detail.notes.some((n) => n.id === pending.note.id)) detail.notes = [...detail.notes, pending.note];
  return detail;
}

export async function show(side, alertId) {
  current = Number(alertId);
  queue.select(current);
  if (unsubscribe) unsubscribe();
  unsubscribe = queue.onAlertChange((summary) => {
    // a live event for the alert on screen: refresh its status line without a reload
    if (summary.id === current) {
      const pill = document.querySelector("#alert-detail .status-pill");
      if (pill) {
        pill.textContent = summary.status;
        pill.className = `pill st ${summary.status} status-pill`;
      }
    }
  });
  clear(side).append(spinner(`Loading alert ${current}…`));
  maps.clearMap();
  let detail;
  try {
    detail = await get(`/alerts/${current}`, { query: { reason: "operator console: alert review" } });
  } catch (error) {
    clear(side).append(h("div", { class: "panel" }, h("h2", {}, `Alert ${current}`), h("p", { class: "status error" }, error.message)));
    return;
  }
  if (Number(alertId) !== current) return; // the operator moved on meanwhile
  detail = overlay(detail);
  queue.merge(stripDetail(detail));
  renderDetail(side, detail);
  await drawMap(detail);
}

export function leave() {
  current = null;
  queue.select(null);
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
}

function stripDetail(detail) {
  const { history, notes, fixes, lat, lon, resolution_note, ...summary } = detail;
  return summary;
}

async function drawMap(detail) {
  const map = maps.getMap();
  if (!map) return;
  const legendNote = document.getElementById("map-note");
  const zones = [];
  if (detail.subject_id != null) {
    try {
      zones.push(...(await get("/zones", { query: { subject_id: detail.subject_id, limit: 1000 } })));
    } catch (error) {
      if (legendNote) legendNote.textContent = `zones: ${error.message}`;
    }
  }
  if (detail.zone_id != null && !zones.some((z) => z.id === detail.zone_id)) {
    try {
      zones.push(await get(`/zones/${detail.zone_id}`));
    } catch {
      // a deleted or out-of-scope zone is not drawn
    }
  }
  let position = null;
  if (detail.subject_id != null) {
    try {
      position = await get(`/subjects/${detail.subject_id}/position`, { query: { reason: "operator console: alert review" } });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    }
  }
  if (Number(detail.id) !== current) return;
  maps.clearMap();
  maps.addZones(zones, { highlight: detail.zone_id });
  maps.addTrack(detail.fixes.features || [], { label: `fixes around alert ${detail.id}` });
  maps.addAlertMarker(detail.lat, detail.lon, `${humanType(detail.type)} at ${when(detail.last_fix_at || detail.opened_at)}`);
  maps.addLastPosition(position);
  maps.invalidate();
  maps.fit();
  const info = document.getElementById("alert-map-info");
  if (info) {
    const fixes = detail.fixes.properties || {};
    info.textContent = `${fixes.fixes ?? 0} fixes ${when(fixes.from)} – ${when(fixes.to)}${fixes.truncated ? " (latest shown)" : ""}; ${zones.length} zone(s)${position ? `; last position ${age(position.ts)} ago` : "; no last position"}`;
  }
}

// The acknowledgement deadline of an open alert, as the API computed it when the page loaded
// (docs/alerts.md "Escalation"); null once acknowledged or without a deadline.
function ackLeft(detail) {
  const left = detail.ack_seconds_left;
  if (left === null || left === undefined) return null;
  return left >= 0
    ? `${when(detail.ack_deadline)} (${duration(left)} left)`
    : `${when(detail.ack_deadline)} (overdue by ${duration(-left)})`;
}

function row(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return h("div", { class: "kv" }, h("span", { class: "k" }, label), h("span", { class: "v" }, value));
}

function renderDetail(side, detail) {
  const actionStatus = h("p", { class: "status", id: "alert-action-status", role: "alert", hidden: true });
  if (flash && flash.alert_id === detail.id) status(actionStatus, flash.text, "ok");
  flash = null;
  const allowed = may("admin", "supervisor", "operator");
  const canAct = detail.status !== "resolved" && allowed;
  const subjectLink = detail.subject_id != null ? h("a", { href: `#/subject/${detail.subject_id}` }, queue.subjectName(detail.subject_id)) : "no subject";
  const detailsList = Object.entries(detail.details || {})
    .filter(([k]) => !["trail", "last_known"].includes(k))
    .map(([k, v]) => row(humanType(k), typeof v === "object" ? JSON.stringify(v) : String(v)));

  const outcome = h("select", { id: "resolve-outcome", "aria-label": "outcome" }, h("option", { value: "" }, "outcome…"), OUTCOMES.map((o) => h("option", { value: o }, humanType(o))));
  const resolveNote = h("textarea", {
    id: "resolve-note",
    rows: 2,
    placeholder: NOTE_REQUIRED.has(detail.type) ? "note (required for this type)" : "note (optional)",
  });
  const noteBody = h("textarea", { id: "note-body", rows: 2, placeholder: "add a note to the record" });

  async function act(button, call, done) {
    button.disabled = true;
    status(actionStatus, "working…", "info");
    try {
      const result = await call();
      pending = result && result.body !== undefined ? { alert_id: detail.id, note: result } : result;
      const message = done(result);
      // the detail is read again: its new panel shows this message from the start
      flash = { alert_id: detail.id, text: message };
      status(actionStatus, message, "ok");
      await show(side, detail.id);
    } catch (error) {
      button.disabled = false;
      const code = error instanceof ApiError ? `${error.status}: ` : "";
      status(actionStatus, `${code}${error.message}`, "error");
    }
  }

  const ackButton = h("button", { type: "button", id: "btn-acknowledge", class: "primary", disabled: detail.status !== "open" || !allowed }, "Acknowledge");
  ackButton.addEventListener("click", () =>
    act(ackButton, () => post(`/alerts/${detail.id}/acknowledge`, {}), (r) => {
      queue.merge({ id: r.alert_id, status: r.status, acknowledged_at: r.acknowledged_at, acknowledged_by: r.acknowledged_by });
      return r.changed ? `acknowledged by ${r.acknowledged_by}` : "already acknowledged by you";
    }),
  );
  const resolveButton = h("button", { type: "button", id: "btn-resolve", class: "danger", disabled: !canAct }, "Resolve");
  resolveButton.addEventListener("click", () =>
    act(
      resolveButton,
      () => post(`/alerts/${detail.id}/resolve`, { outcome: outcome.value, note: resolveNote.value.trim() || null }),
      (r) => {
        queue.merge({ id: r.alert_id, status: r.status, resolved_at: r.resolved_at, resolved_by: r.resolved_by, outcome: r.outcome });
        return `resolved (${humanType(r.outcome)})`;
      },
    ),
  );
  const noteButton = h("button", { type: "button", id: "btn-note" }, "Add note");
  noteButton.addEventListener("click", () =>
    act(noteButton, () => post(`/alerts/${detail.id}/notes`, { body: noteBody.value }), () => "note added"),
  );

  const panel = h(
    "div",
    // data-status: the status this panel was rendered from (a read of the detail)
    { class: "panel", id: "alert-detail", dataset: { alertId: detail.id, status: detail.status } },
    h(
      "div",
      { class: `detail-head sev-${detail.severity}` },
      h("span", { class: `pill sev ${detail.severity}` }, detail.severity),
      h("h2", {}, humanType(detail.type)),
      h("span", { class: `pill st ${detail.status} status-pill`, id: "alert-status" }, detail.status),
    ),
    h("p", { class: "muted small", id: "alert-map-info" }, "loading map…"),
    h(
      "div",
      { class: "kvs" },
      row("alert", `#${detail.id}`),
      row("subject", subjectLink),
      row("region", detail.region_id),
      row("device", detail.device_id),
      row("opened", `${when(detail.opened_at)} (${age(detail.opened_at)} ago)`),
      row("first fix", detail.first_fix_at && when(detail.first_fix_at)),
      row("last fix", detail.last_fix_at && when(detail.last_fix_at)),
      row("cleared", detail.cleared_at && when(detail.cleared_at)),
      row("fixes", detail.fix_count),
      row("worst distance", detail.worst_distance_m != null ? `${Math.round(detail.worst_distance_m)} m` : null),
      row("late", detail.late ? "yes — raised from fixes uploaded late" : null),
      row("acknowledge by", ackLeft(detail)),
      row("escalated", detail.ack_escalated_at && `${when(detail.ack_escalated_at)}: not acknowledged in time`),
      row("acknowledged", detail.acknowledged_by && `${detail.acknowledged_by}, ${when(detail.acknowledged_at)}`),
      row("resolved", detail.resolved_by && `${detail.resolved_by}, ${when(detail.resolved_at)} — ${humanType(detail.outcome)}`),
      row("resolution", detail.resolution_note),
      detailsList,
    ),
    h(
      "div",
      { class: "actions" },
      allowed ? null : h("p", { class: "muted small" }, "Tracing units add notes; the monitoring centre acknowledges and resolves."),
      h("div", { class: "action-row" }, ackButton),
      h("div", { class: "action-row" }, outcome, resolveNote, resolveButton),
      h("div", { class: "action-row" }, noteBody, noteButton),
      actionStatus,
    ),
    h("h3", {}, "Notes"),
    detail.notes.length
      ? h("ul", { class: "notes", id: "alert-notes" }, detail.notes.map((n) => h("li", {}, h("span", { class: "muted small" }, `${n.author}, ${when(n.at)}`), h("div", {}, n.body))))
      : h("p", { class: "muted small" }, "No notes."),
    h("h3", {}, "History"),
    h(
      "ol",
      { class: "history", id: "alert-history" },
      detail.history.map((e) => h("li", {}, h("span", { class: "muted small" }, when(e.at)), ` ${humanType(e.action)} — ${e.actor}`)),
    ),
  );
  clear(side).append(panel);
}
