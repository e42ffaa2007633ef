// Absconder cases, the tracer's view (#/cases, #/cases/<id>): made for a phone in the field.
// The open cases the caller may work (his regions', and his tracing unit's in any region while
// they are open); one case with the photo, the map (trail and last known position), the trace
// attempts, "log a trace attempt" and "mark traced". Every read is audited by the API; the
// photo is fetched with the token (never an <img src> to the API) and shown as a data: URL.
// "Case details" sets the officer and the police case and warrant numbers (every role that
// works cases), and the tracing unit for an admin (the one role that may list the units).

import { get, post, patch, may, session, API, ApiError } from "./api.js";
import { h, clear, when, status, spinner, humanType } from "./ui.js";
import * as maps from "./map.js";

const CAUSES = { strap_tamper: "strap cut", silence: "went silent", inclusion_exit: "left his area", declared: "declared" };
const OUTCOMES = [
  ["returned_to_supervision", "returned to supervision"],
  ["arrested", "arrested"],
  ["deceased", "deceased"],
  ["other", "other"],
];
const METHODS = ["home visit", "phone call", "visit to family or friends", "roadblock", "informant", "hospital or mortuary check", "other"];

const PHOTO_URL = /^data:image\/(png|jpeg|webp);base64,/;
const iso = (ts) => (ts == null ? null : new Date(ts * 1000).toISOString());
const days = (d) => (d < 1 ? `${Math.round(d * 24)} h` : `${d.toFixed(1)} d`);

export async function showList(side) {
  clear(side).append(spinner("Loading cases…"));
  maps.clearMap();
  let cases;
  try {
    cases = await get("/cases", { query: { status: ["outstanding", "traced"], limit: 500 } });
  } catch (error) {
    clear(side).append(h("p", { class: "status error" }, error.message));
    return;
  }
  for (const c of cases) {
    if (c.last_known) maps.addLastPosition({ ...c.last_known, ts: iso(c.last_known.ts) }, c.subject_name);
  }
  maps.fit();
  const items = cases.map((c) =>
    h(
      "li",
      { class: `case-card status-${c.status}`, dataset: { caseId: c.id } },
      h(
        "a",
        { href: `#/cases/${c.id}` },
        h("strong", { class: "case-name" }, c.subject_name),
        h("span", { class: `case-status ${c.status}` }, c.status),
        h(
          "span",
          { class: "case-meta" },
          `${CAUSES[c.cause] || c.cause} · at large ${days(c.days_at_large)}`,
          c.tracing_unit_name ? ` · ${c.tracing_unit_name}` : "",
        ),
        c.access === "grant" ? h("span", { class: "case-grant" }, "routed to your unit") : null,
      ),
    ),
  );
  clear(side).append(
    h(
      "div",
      { class: "panel cases" },
      h("h2", {}, `Open cases (${cases.length})`),
      cases.length
        ? h("ul", { class: "case-list", id: "case-list" }, items)
        : h("p", { class: "muted", id: "case-empty" }, "No open absconder cases for you."),
    ),
  );
}

async function photoData(path) {
  const current = session();
  const response = await fetch(new URL(API + path.replace(/^\/api\/v1/, ""), location.origin), {
    headers: { Authorization: `Bearer ${current.token}` },
  });
  if (!response.ok) return null;
  const blob = await response.blob();
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => resolve(null);
    reader.readAsDataURL(blob);
  });
}

function drawMap(c) {
  maps.clearMap();
  const trail = (c.trail || []).map((p) => ({
    type: "Feature",
    geometry: { type: "Point", coordinates: [p.lon, p.lat] },
    properties: { ts: iso(p.ts), acc: p.acc },
  }));
  if (trail.length) maps.addTrack(trail, { label: "trail before he absconded" });
  if (c.last_known) maps.addLastPosition({ ...c.last_known, ts: iso(c.last_known.ts) }, "last known");
  for (const a of c.attempts || []) {
    if (a.lat != null) maps.addAlertMarker(a.lat, a.lon, `${a.method}: ${a.outcome}`);
  }
  maps.fit();
}

export async function show(side, caseId) {
  clear(side).append(spinner(`Loading case ${caseId}…`));
  let c;
  try {
    c = await get(`/cases/${caseId}`);
  } catch (error) {
    maps.clearMap();
    const text = error instanceof ApiError && error.status === 404 ? "This case is not (or no longer) yours to see." : error.message;
    clear(side).append(h("div", { class: "panel" }, h("p", { class: "status error", id: "case-error" }, text), h("a", { href: "#/cases" }, "← open cases")));
    return;
  }
  drawMap(c);
  const photo = h("div", { class: "case-photo", id: "case-photo" }, c.photo_url ? spinner("photo…") : h("span", { class: "muted" }, "no photo"));
  if (c.photo_url) {
    photoData(c.photo_url).then((data) => {
      // h() refuses every data: URL; this one is an image the API checked by its magic numbers,
      // and an <img> never runs what it loads
      if (!data || !PHOTO_URL.test(data)) {
        clear(photo).append(h("span", { class: "muted" }, "photo unavailable"));
        return;
      }
      const img = h("img", { alt: `photo of ${c.subject_name}` });
      img.src = data;
      clear(photo).append(img);
    });
  }
  const message = h("p", { class: "status", id: "case-status", hidden: true });
  const fact = (label, value) => (value ? [h("dt", {}, label), h("dd", {}, value)] : null);
  const facts = h(
    "dl",
    { class: "case-facts" },
    fact("Status", c.outcome ? `${c.status} (${humanType(c.outcome)})` : c.status),
    fact("Cause", CAUSES[c.cause] || c.cause),
    fact("Opened", when(c.opened_at)),
    fact("At large", days(c.days_at_large)),
    fact("Last known", c.last_known ? `${when(iso(c.last_known.ts))} · ${c.last_known.lat.toFixed(5)}, ${c.last_known.lon.toFixed(5)}` : "unknown"),
    fact("Tracing unit", c.tracing_unit_name),
    fact("Officer", c.officer),
    fact("Police case", c.police_case_number),
    fact("Warrant", c.warrant_number),
  );
  const attempts = h(
    "ol",
    { class: "attempt-list", id: "attempt-list" },
    (c.attempts || []).map((a) =>
      h("li", {}, h("strong", {}, a.method), ` · ${when(a.at)}`, h("br"), a.place || `${a.lat.toFixed(5)}, ${a.lon.toFixed(5)}`, " — ", a.outcome, h("span", { class: "muted small" }, ` (${a.by_username})`)),
    ),
  );
  const open = c.status !== "closed";
  const panel = h(
    "div",
    { class: "panel case-detail", id: "case-detail", dataset: { caseId: c.id, status: c.status } },
    h("a", { href: "#/cases", class: "small" }, "← open cases"),
    h("div", { class: "case-head" }, photo, h("div", {}, h("h2", { id: "case-name" }, c.subject_name), c.access === "grant" ? h("span", { class: "case-grant" }, "routed to your unit") : null)),
    message,
    facts,
    h("h3", {}, `Trace attempts (${(c.attempts || []).length})`),
    (c.attempts || []).length ? attempts : h("p", { class: "muted" }, "None yet."),
    open ? attemptForm(c, message) : null,
    open ? detailsForm(c, message) : null,
    c.status === "outstanding" ? traceForm(c, message) : null,
    c.status === "traced" && may("admin", "supervisor", "operator") ? closeButton(c, message) : null,
  );
  clear(side).append(panel);
}

function attemptForm(c, message) {
  const method = h("select", { id: "attempt-method", required: true }, METHODS.map((m) => h("option", { value: m }, m)));
  const place = h("input", { id: "attempt-place", placeholder: "where (address, landmark)", maxlength: 500 });
  const outcome = h("textarea", { id: "attempt-outcome", rows: 2, placeholder: "what came of it", required: true, maxlength: 1000 });
  const here = h("label", { class: "small" }, h("input", { type: "checkbox", id: "attempt-here" }), " at the last known position");
  const form = h(
    "form",
    { class: "case-form", id: "attempt-form" },
    h("h3", {}, "Log a trace attempt"),
    h("label", {}, "How ", method),
    h("label", {}, "Where ", place),
    c.last_known ? here : null,
    h("label", {}, "Outcome ", outcome),
    h("button", { type: "submit", class: "primary", id: "attempt-submit" }, "Log attempt"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { method: method.value, outcome: outcome.value.trim() };
    if (place.value.trim()) body.place = place.value.trim();
    if (here.querySelector("input").checked && c.last_known) Object.assign(body, { lon: c.last_known.lon, lat: c.last_known.lat });
    if (!body.place && body.lon == null) {
      status(message, "Say where: a place, or tick the last known position.", "error");
      return;
    }
    try {
      await post(`/cases/${c.id}/attempts`, body);
      await show(document.getElementById("side"), c.id);
      status(document.getElementById("case-status"), "Attempt logged.", "ok");
    } catch (error) {
      status(message, error.message, "error");
    }
  });
  return form;
}

// The officer, the police case and warrant numbers; the tracing unit for an admin (GET
// /tracing-units is his alone: supervisors and operators, who may also reassign, get no
// select rather than a bare id box). Only changed fields are sent; a cleared one is null.
function detailsForm(c, message) {
  const text = (id, value, max, placeholder) => h("input", { id, value: value || "", maxlength: max, placeholder, autocomplete: "off" });
  const officer = text("details-officer", c.officer, 200, "name, rank");
  const policeCase = text("details-police-case", c.police_case_number, 100, "e.g. CAS 123/11/2026");
  const warrant = text("details-warrant", c.warrant_number, 100, "warrant number");
  const unitLabel = h("label", { hidden: true }, "Tracing unit ");
  let unit = null;
  if (may("admin")) {
    get("/tracing-units", { query: { limit: 1000 }, quiet: true })
      .then((units) => {
        const known = new Map(units.map((u) => [u.id, u.name]));
        if (c.tracing_unit_id != null && !known.has(c.tracing_unit_id)) known.set(c.tracing_unit_id, c.tracing_unit_name || `unit ${c.tracing_unit_id}`);
        unit = h(
          "select",
          { id: "details-unit" },
          h("option", { value: "" }, "— none —"),
          [...known].map(([id, name]) => h("option", { value: String(id), selected: id === c.tracing_unit_id }, name)),
        );
        unitLabel.append(unit);
        unitLabel.hidden = false;
      })
      .catch(() => unitLabel.remove()); // not an admin after all: no select
  }
  const form = h(
    "form",
    { class: "case-form", id: "details-form" },
    h("h3", {}, "Case details"),
    unitLabel,
    h("label", {}, "Officer ", officer),
    h("label", {}, "Police case number ", policeCase),
    h("label", {}, "Warrant number ", warrant),
    h("button", { type: "submit", class: "primary", id: "details-submit" }, "Save details"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [key, input, before] of [
      ["officer", officer, c.officer],
      ["police_case_number", policeCase, c.police_case_number],
      ["warrant_number", warrant, c.warrant_number],
    ]) {
      const value = input.value.trim() || null;
      if (value !== (before || null)) body[key] = value;
    }
    if (unit) {
      const value = unit.value ? Number(unit.value) : null;
      if (value !== (c.tracing_unit_id ?? null)) body.tracing_unit_id = value;
    }
    if (!Object.keys(body).length) {
      status(message, "Nothing changed.", "info");
      return;
    }
    try {
      await patch(`/cases/${c.id}`, body);
      await show(document.getElementById("side"), c.id);
      status(document.getElementById("case-status"), "Case details saved.", "ok");
    } catch (error) {
      status(message, error.message, "error");
    }
  });
  return form;
}

function traceForm(c, message) {
  const outcome = h("select", { id: "trace-outcome" }, OUTCOMES.map(([value, label]) => h("option", { value }, label)));
  const form = h(
    "form",
    { class: "case-form", id: "trace-form" },
    h("h3", {}, "Mark traced"),
    h("label", {}, "Outcome ", outcome),
    h("button", { type: "submit", class: "primary", id: "trace-submit" }, "Mark traced"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await post(`/cases/${c.id}/trace`, { outcome: outcome.value });
      await show(document.getElementById("side"), c.id);
      status(document.getElementById("case-status"), "Case marked traced.", "ok");
    } catch (error) {
      status(message, error.message, "error");
    }
  });
  return form;
}

function closeButton(c, message) {
  return h(
    "button",
    {
      type: "button",
      id: "case-close",
      onclick: async () => {
        try {
          await post(`/cases/${c.id}/close`, {});
          await show(document.getElementById("side"), c.id);
        } catch (error) {
          status(message, error.message, "error");
        }
      },
    },
    "Close case",
  );
}
