// The live "Positions" layer of the queue's map: the last known position of every subject in
// the user's regions (GET /positions: one audited read per refresh), a dot coloured by the
// fix's age (fresh, stale: the device missed about three reports, old: over an hour), with a
// tooltip (name, age, accuracy) and a click through to the subject's page. Refreshed every
// 5 s while the queue is shown and the layer is switched on; the header counts the subjects.

import { get, ApiError } from "./api.js";
import { h, clear, duration } from "./ui.js";
import * as maps from "./map.js";
import { tip } from "./map.js";

export const REFRESH_MS = 5000;
const OLD_AFTER_S = 3600;
export const AGE_COLOURS = { fresh: "#1a9e47", stale: "#f0a020", old: "#8a8f98" };
const REASON = "operator console: live map";
// A pane of their own above the zones and tracks (overlayPane, z 400), below tooltips: a dot
// inside a zone stays visible and clickable.
const PANE = "positions";

let layer = null; // L.featureGroup of the markers, on the map while switched on
let control = null; // the map's layer switch
const markers = new Map(); // subject id -> circle marker
let timer = null;
let running = false;
let loading = false;
let fitPending = false;
let unavailable = false; // an older server without /positions
let switchedOff = false; // the operator switched the layer off
let switching = false; // the console itself adds or removes the layer (not the operator)

export function ageClass(position) {
  if (position.age_s > OLD_AFTER_S) return "old";
  return position.stale ? "stale" : "fresh";
}

function countElement() {
  return document.getElementById("positions-count");
}

function setCount(text, data = {}) {
  const el = countElement();
  if (!el) return;
  el.hidden = false;
  clear(el).append(h("span", { class: "dot", "aria-hidden": "true" }), text);
  for (const key of ["count", "fresh", "stale", "old", "state"]) delete el.dataset[key];
  Object.assign(el.dataset, data);
}

// The dot's tooltip: text nodes only (the name is whatever the subject was registered as).
function tooltip(position, kind) {
  const accuracy = position.acc != null ? `±${Math.round(position.acc)} m` : "accuracy unknown";
  return h(
    "div",
    { class: "pos-tip" },
    h("strong", {}, position.name),
    h("div", {}, `${duration(position.age_s)} ago · ${accuracy}`),
    h("div", { class: `pos-age ${kind}` }, kind === "fresh" ? "reporting" : kind === "stale" ? "missed reports" : "silent over an hour"),
  );
}

function style(kind) {
  const colour = AGE_COLOURS[kind];
  return { radius: kind === "old" ? 6 : 7, color: "#fff", weight: 2, fillColor: colour, fillOpacity: kind === "old" ? 0.75 : 0.95 };
}

function tag(marker, position, kind) {
  const el = marker.getElement && marker.getElement();
  if (!el) return;
  el.setAttribute("class", `leaflet-interactive tw-pos tw-pos-${kind}`);
  el.dataset.subjectId = String(position.subject_id);
  el.dataset.lat = String(position.lat);
  el.dataset.lon = String(position.lon);
  el.dataset.age = String(Math.round(position.age_s));
}

function draw(items) {
  const L = maps.leaflet();
  if (!L || !layer) return;
  const seen = new Set();
  for (const position of items) {
    seen.add(position.subject_id);
    const kind = ageClass(position);
    const latlng = [position.lat, position.lon];
    let marker = markers.get(position.subject_id);
    if (!marker) {
      marker = L.circleMarker(latlng, { ...style(kind), pane: PANE, className: `tw-pos tw-pos-${kind}` });
      marker.bindTooltip(tip(tooltip(position, kind)), { direction: "top", offset: [0, -6] });
      const id = position.subject_id;
      marker.on("click", () => (location.hash = `#/subject/${id}`));
      marker.addTo(layer);
      markers.set(id, marker);
    } else {
      marker.setLatLng(latlng);
      marker.setStyle(style(kind));
    }
    marker.setTooltipContent(tip(tooltip(position, kind)));
    tag(marker, position, kind);
    // fresh positions on top of stale and old ones
    // (only when another dot is above it: re-appending the element under the pointer between a
    // press and its release swallows the click, once every refresh)
    if (kind === "fresh" && marker._path && marker._path.nextSibling) marker.bringToFront();
  }
  for (const [id, marker] of markers) {
    if (!seen.has(id)) {
      layer.removeLayer(marker);
      markers.delete(id);
    }
  }
}

async function refresh() {
  if (!running || loading || unavailable) return;
  if (document.hidden) return; // nobody is looking: no read, no audit row
  loading = true;
  try {
    const body = await get("/positions", { query: { reason: REASON }, quiet: true });
    if (!running) return;
    const items = body.items || [];
    draw(items);
    const counts = { fresh: 0, stale: 0, old: 0 };
    for (const position of items) counts[ageClass(position)] += 1;
    const noun = items.length === 1 ? "subject" : "subjects";
    setCount(`${items.length}${body.truncated ? "+" : ""} ${noun} on the map`, {
      count: String(items.length),
      fresh: String(counts.fresh),
      stale: String(counts.stale),
      old: String(counts.old),
      state: "live",
    });
    const el = countElement();
    if (el) el.title = `${counts.fresh} reporting, ${counts.stale} missed reports, ${counts.old} silent over an hour${body.truncated ? "; only the first 5000 are shown" : ""}`;
    if (fitPending && items.length) {
      fitPending = false;
      maps.fit();
    }
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) {
      unavailable = true; // an older server: the queue works without the layer
      setCount("positions unavailable", { state: "unavailable" });
    } else if (!(error instanceof ApiError && error.status === 401)) {
      setCount("positions: offline", { state: "error" });
    }
  } finally {
    loading = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

// The queue view is shown: the layer (and its switch) on the map, a read now, then every 5 s.
// `fit`: frame the zones and the positions once the first positions are in.
export function start({ fit = true } = {}) {
  const map = maps.getMap();
  const L = maps.leaflet();
  if (!map || !L || unavailable) {
    if (unavailable) setCount("positions unavailable", { state: "unavailable" });
    return;
  }
  if (!layer) {
    if (!map.getPane(PANE)) map.createPane(PANE).style.zIndex = "450";
    layer = L.featureGroup();
    maps.fitAlso(layer);
    control = L.control.layers(null, { "Positions (live)": layer }, { collapsed: false, position: "topright" });
    // the operator switches the layer on or off with the control
    map.on("overlayadd", (event) => {
      if (event.layer !== layer || switching || !running) return;
      switchedOff = false;
      refresh();
      schedule();
    });
    map.on("overlayremove", (event) => {
      if (event.layer !== layer || switching || !running) return;
      switchedOff = true;
      clearInterval(timer);
      setCount("positions hidden", { state: "hidden" });
    });
  }
  running = true;
  fitPending = fit;
  switching = true;
  try {
    control.addTo(map);
    if (!switchedOff) layer.addTo(map);
  } finally {
    switching = false;
  }
  if (switchedOff) {
    setCount("positions hidden", { state: "hidden" });
    return;
  }
  refresh();
  schedule();
}

// Another view: the layer leaves the map and the reads stop.
export function stop() {
  running = false;
  clearInterval(timer);
  timer = null;
  const map = maps.getMap();
  if (map && layer) {
    switching = true;
    try {
      map.removeLayer(layer);
      if (control) control.remove();
    } finally {
      switching = false;
    }
  }
  const el = countElement();
  if (el) el.hidden = true;
}

// Logged out: forget every marker.
export function reset() {
  stop();
  if (layer) layer.clearLayers();
  markers.clear();
  unavailable = false;
  switchedOff = false;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && running) refresh();
});
