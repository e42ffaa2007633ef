// Zones: the list, and drawing or editing one on the map. Polygon: click the corners (drag one
// to move it). Circle: click the centre, then a point on the edge (or type the radius). The
// geofence core validates the zone; its reasons come back as a 422 and are shown as they are.

import { get, post, put, del, may, ApiError } from "./api.js";
import { h, clear, status, spinner, humanType, navigate, ZONE_KINDS } from "./ui.js";
import * as maps from "./map.js";
import { rememberSubjects } from "./queue.js";

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
let draft = null; // { mode, vertices: [LatLng], centre: LatLng, radius, layers }
let clickHandler = null;
let lastSaved = null;
let lastDeleted = null;

export function leave() {
  const map = maps.getMap();
  if (map && clickHandler) map.off("click", clickHandler);
  clickHandler = null;
  if (draft && draft.layer) draft.layer.remove();
  draft = null;
  const container = document.getElementById("map");
  if (container) container.classList.remove("drawing");
}

async function loadSubjects() {
  try {
    const subjects = await get("/subjects", { query: { limit: 1000 } });
    rememberSubjects(subjects);
    return subjects;
  } catch {
    return [];
  }
}

// The Zones tab: every zone the user may see, and the drawing form.
export async function showZones(side, { subjectId = null, zoneId = null } = {}) {
  leave();
  clear(side).append(spinner("Loading zones…"));
  maps.clearMap();
  let zones;
  let subjects;
  try {
    [zones, subjects] = await Promise.all([
      get("/zones", { query: { limit: 1000, subject_id: subjectId ?? undefined } }),
      loadSubjects(),
    ]);
  } catch (error) {
    clear(side).append(h("p", { class: "status error" }, error.message));
    return;
  }
  zones = zones.filter((z) => z.id !== lastDeleted);
  if (lastSaved && !zones.some((z) => z.id === lastSaved.id) && (subjectId == null || lastSaved.subject_id === subjectId)) {
    zones.push(lastSaved); // saved a moment ago, maybe not visible to this read yet
  }
  const editing = zoneId != null ? zones.find((z) => z.id === Number(zoneId)) || (await get(`/zones/${zoneId}`).catch(() => null)) : null;
  // no click actions on the zones here: a click on the map is a corner of the drawing
  maps.addZones(zones.filter((z) => !editing || z.id !== editing.id));
  const list = h(
    "ul",
    { class: "zone-list", id: "zone-list" },
    zones.map((z) =>
      h(
        "li",
        { class: z.id === (editing && editing.id) ? "selected" : "", dataset: { zoneId: z.id } },
        h("i", { class: `sw ${z.kind}` }),
        h("a", { href: `#/zones/${z.id}` }, z.name || `zone ${z.id}`),
        h("span", { class: "muted small" }, ` ${z.kind}${z.subject_id ? ` · subject ${z.subject_id}` : " · global"}${z.schedule ? " · scheduled" : ""}`),
      ),
    ),
  );
  clear(side).append(
    h(
      "div",
      { class: "panel" },
      h("h2", {}, editing ? `Edit zone ${editing.name || editing.id}` : "Draw a zone"),
      drawForm(subjects, { subjectId, zone: editing, onSaved: (saved) => navigate(`#/zones/${saved.id}`) }),
      h("h3", {}, `Zones (${zones.length})`),
      zones.length ? list : h("p", { class: "muted small" }, "No zones yet."),
    ),
  );
  maps.invalidate();
  if (editing) maps.fit();
  else if (zones.length) maps.fit();
}

function defaultSchedule(kind) {
  return kind === "curfew" ? { weekly: [{ days: DAYS, start: "19:00", end: "07:00" }] } : null;
}

export function drawForm(subjects, { subjectId = null, zone = null, onSaved } = {}) {
  const map = maps.getMap();
  const L = maps.leaflet();
  const message = h("p", { class: "status", id: "zone-status", role: "alert", hidden: true });
  const name = h("input", { id: "zone-name", value: zone ? zone.name : "", placeholder: "e.g. victim's home", maxlength: 200 });
  const kind = h("select", { id: "zone-kind" }, ZONE_KINDS.map((k) => h("option", { value: k }, k)));
  kind.value = zone ? zone.kind : "exclusion";
  const owner = h(
    "select",
    { id: "zone-subject" },
    h("option", { value: "" }, "global (every subject)"),
    subjects.map((s) => h("option", { value: s.id }, `${s.name} (${s.region_id})`)),
  );
  owner.value = String(zone ? zone.subject_id ?? "" : subjectId ?? "");
  const victim = h("select", { id: "zone-victim" }, h("option", { value: "" }, "victim…"), subjects.map((s) => h("option", { value: s.id }, s.name)));
  victim.value = String(zone?.victim_subject_id ?? "");
  const buffer = h("input", { id: "zone-buffer", type: "number", min: 0, step: 1, value: zone?.buffer_m ?? "", placeholder: "metres" });
  const radius = h("input", { id: "zone-radius", type: "number", min: 1, step: 1, value: zone?.radius_m ?? "", placeholder: "metres" });
  const modePolygon = h("input", { type: "radio", name: "zone-mode", value: "polygon", id: "zone-mode-polygon" });
  const modeCircle = h("input", { type: "radio", name: "zone-mode", value: "circle", id: "zone-mode-circle" });
  const scheduled = h("input", { type: "checkbox", id: "zone-scheduled" });
  const dayBoxes = DAYS.map((d) => h("input", { type: "checkbox", value: d, checked: true }));
  const start = h("input", { type: "time", id: "zone-start", value: "19:00" });
  const end = h("input", { type: "time", id: "zone-end", value: "07:00" });
  const scheduleJson = h("textarea", { id: "zone-schedule-json", rows: 3, placeholder: '{"weekly": [...], "exceptions": [...]} (overrides the fields above)' });
  const hint = h("p", { class: "muted small", id: "zone-hint" });

  const initialSchedule = zone ? zone.schedule : defaultSchedule(kind.value);
  if (initialSchedule) {
    scheduled.checked = true;
    const weekly = initialSchedule.weekly || [];
    if (weekly.length === 1 && !initialSchedule.exceptions) {
      for (const box of dayBoxes) box.checked = weekly[0].days.includes(box.value);
      start.value = weekly[0].start;
      end.value = weekly[0].end;
    } else {
      scheduleJson.value = JSON.stringify(initialSchedule);
    }
  }

  leave(); // one drawing at a time, even when two renders of this view overlap
  draft = { mode: "polygon", vertices: [], centre: null, radius: null, layer: L ? maps.addLayer(L.featureGroup()) : null };
  if (zone && zone.geometry) {
    if (zone.geometry.type === "Point") {
      draft.mode = "circle";
      draft.centre = L && L.latLng(zone.geometry.coordinates[1], zone.geometry.coordinates[0]);
      draft.radius = zone.radius_m;
    } else if (zone.geometry.type === "Polygon" && L) {
      const ring = zone.geometry.coordinates[0].slice(0, -1);
      draft.vertices = ring.map(([lon, lat]) => L.latLng(lat, lon));
      draft.holes = zone.geometry.coordinates.slice(1);
    } else {
      draft.mode = "keep"; // a MultiPolygon is kept as it is unless redrawn
      draft.keep = zone.geometry;
    }
  }
  (draft.mode === "circle" ? modeCircle : modePolygon).checked = true;

  function redraw() {
    if (!draft || !draft.layer || !L) return;
    draft.layer.clearLayers();
    const colour = { exclusion: "#d62728", inclusion: "#2ca02c", curfew: "#7b4fd6", victim: "#e377c2" }[kind.value];
    if (draft.mode === "keep" && draft.keep) {
      L.geoJSON(draft.keep, { style: { color: colour, dashArray: "4 4", className: "tw-draft" } }).addTo(draft.layer);
    }
    if (draft.mode === "polygon" && draft.vertices.length) {
      const shape = draft.vertices.length >= 3 ? L.polygon(draft.vertices, { color: colour, weight: 2, dashArray: "4 4", className: "tw-draft" }) : L.polyline(draft.vertices, { color: colour, dashArray: "4 4", className: "tw-draft" });
      shape.addTo(draft.layer);
      draft.vertices.forEach((latlng, index) => {
        const handle = L.marker(latlng, { draggable: true, icon: L.divIcon({ className: "tw-vertex", iconSize: [12, 12] }), title: `corner ${index + 1} (drag to move, click to remove)` });
        handle.on("drag", (e) => {
          draft.vertices[index] = e.target.getLatLng();
          shape.setLatLngs(draft.vertices);
        });
        handle.on("dragend", redraw);
        handle.on("click", () => {
          draft.vertices.splice(index, 1);
          redraw();
        });
        handle.addTo(draft.layer);
      });
    }
    if (draft.mode === "circle" && draft.centre) {
      const r = Number(radius.value) || draft.radius || 0;
      if (r > 0) L.circle(draft.centre, { radius: r, color: colour, weight: 2, dashArray: "4 4", className: "tw-draft" }).addTo(draft.layer);
      const handle = L.marker(draft.centre, { draggable: true, icon: L.divIcon({ className: "tw-vertex centre", iconSize: [14, 14] }), title: "centre (drag to move)" });
      handle.on("dragend", (e) => {
        draft.centre = e.target.getLatLng();
        redraw();
      });
      handle.addTo(draft.layer);
    }
    describe();
  }

  function describe() {
    if (kind.value === "victim") {
      hint.textContent = "A victim zone has no fixed shape: it is a circle of the radius around the victim's phone, plus the buffer as a warning band.";
    } else if (draft.mode === "keep") {
      hint.textContent = "This zone's shape is kept; choose polygon or circle to redraw it.";
    } else if (draft.mode === "polygon") {
      hint.textContent = draft.vertices.length < 3 ? `Click the map to add corners (${draft.vertices.length} so far, 3 at least).` : `${draft.vertices.length} corners. Drag a corner to move it, click it to remove it.`;
    } else {
      hint.textContent = draft.centre ? "Click the edge to set the radius, or type it; drag the centre to move it." : "Click the map to place the centre.";
    }
    radius.closest("label").hidden = !(draft.mode === "circle" || kind.value === "victim");
    victim.closest("label").hidden = kind.value !== "victim";
    buffer.closest("label").hidden = !["exclusion", "victim"].includes(kind.value);
  }

  clickHandler = (event) => {
    if (!draft || kind.value === "victim") return;
    if (draft.mode === "keep") {
      draft.mode = "polygon";
      modePolygon.checked = true;
    }
    if (draft.mode === "polygon") {
      draft.vertices.push(event.latlng);
    } else if (!draft.centre) {
      draft.centre = event.latlng;
    } else {
      radius.value = String(Math.max(1, Math.round(draft.centre.distanceTo(event.latlng))));
    }
    redraw();
  };
  const writer = may("admin", "supervisor");
  if (map && writer) {
    map.on("click", clickHandler);

    document.getElementById("map").classList.add("drawing");
  }

  for (const radio of [modePolygon, modeCircle]) {
    radio.addEventListener("change", () => {
      draft.mode = radio.value;
      redraw();
    });
  }
  kind.addEventListener("change", () => {
    if (kind.value === "curfew" && !scheduled.checked) {
      scheduled.checked = true;
    }
    redraw();
  });
  radius.addEventListener("input", redraw);

  function geometry() {
    if (kind.value === "victim") return null;
    if (draft.mode === "keep") return draft.keep;
    if (draft.mode === "circle") {
      if (!draft.centre) return undefined;
      return { type: "Point", coordinates: [round(draft.centre.lng), round(draft.centre.lat)] };
    }
    if (draft.vertices.length < 3) return undefined;
    const ring = draft.vertices.map((p) => [round(p.lng), round(p.lat)]);
    ring.push(ring[0]);
    return { type: "Polygon", coordinates: [ring, ...(draft.holes || [])] };
  }

  function schedule() {
    if (scheduleJson.value.trim()) return JSON.parse(scheduleJson.value);
    if (!scheduled.checked) return null;
    return { weekly: [{ days: dayBoxes.filter((b) => b.checked).map((b) => b.value), start: start.value, end: end.value }] };
  }

  const save = h("button", { type: "button", class: "primary", id: "zone-save" }, zone ? "Save changes" : "Create zone");
  save.addEventListener("click", async () => {
    const shape = geometry();
    if (shape === undefined) {
      status(message, draft.mode === "circle" ? "Place the centre on the map first." : "Draw at least 3 corners on the map first.", "error");
      return;
    }
    let body;
    try {
      body = {
        name: name.value.trim(),
        kind: kind.value,
        geometry: shape,
        radius_m: draft.mode === "circle" || kind.value === "victim" ? numberOrNull(radius.value) : null,
        buffer_m: ["exclusion", "victim"].includes(kind.value) ? numberOrNull(buffer.value) : null,
        subject_id: owner.value ? Number(owner.value) : null,
        victim_subject_id: kind.value === "victim" && victim.value ? Number(victim.value) : null,
        schedule: schedule(),
      };
    } catch (error) {
      status(message, `schedule JSON: ${error.message}`, "error");
      return;
    }
    save.disabled = true;
    status(message, "saving…", "info");
    try {
      const saved = zone ? await put(`/zones/${zone.id}`, body) : await post("/zones", body);
      lastSaved = saved;
      status(message, `zone ${saved.id} saved (revision ${saved.revision})`, "ok");
      leave();
      if (onSaved) onSaved(saved);
    } catch (error) {
      const code = error instanceof ApiError ? `${error.status}: ` : "";
      status(message, `${code}${error.message}`, "error");
    } finally {
      save.disabled = false;
    }
  });

  const undo = h("button", { type: "button", id: "zone-undo" }, "Undo corner");
  undo.addEventListener("click", () => {
    if (draft.mode === "polygon") draft.vertices.pop();
    redraw();
  });
  const reset = h("button", { type: "button", id: "zone-clear" }, "Clear");
  reset.addEventListener("click", () => {
    Object.assign(draft, { mode: draft.mode === "keep" ? "polygon" : draft.mode, vertices: [], centre: null, holes: null });
    radius.value = "";
    if (draft.mode === "polygon") modePolygon.checked = true;
    redraw();
  });
  const remove = zone ? h("button", { type: "button", class: "danger", id: "zone-delete" }, "Delete zone") : null;
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete zone ${zone.name || zone.id}? Alerts keep their reference to it.`)) return;
      try {
        await del(`/zones/${zone.id}`);
        lastDeleted = zone.id;
        leave();
        navigate("#/zones");
      } catch (error) {
        status(message, `${error.status || ""} ${error.message}`, "error");
      }
    });
  }

  const form = h(
    "div",
    { class: "zone-form", id: "zone-form" },
    h("div", { class: "row" }, h("label", {}, modePolygon, " polygon"), h("label", {}, modeCircle, " circle"), undo, reset),
    hint,
    h("label", {}, "Name ", name),
    h("label", {}, "Kind ", kind),
    h("label", {}, "Owner ", owner),
    h("label", {}, "Victim ", victim),
    h("label", {}, "Radius (m) ", radius),
    h("label", {}, "Warning band (m) ", buffer),
    h(
      "fieldset",
      { class: "schedule" },
      h("legend", {}, h("label", {}, scheduled, " active only on a schedule (subject's time zone)")),
      h("div", { class: "days" }, dayBoxes.map((b) => h("label", {}, b, ` ${b.value}`))),
      h("div", { class: "row" }, h("label", {}, "from ", start), h("label", {}, "to ", end)),
      scheduleJson,
    ),
    h("div", { class: "row" }, save, remove),
    message,
  );
  // describe() needs the labels in their parents: run once the form exists
  redraw();
  if (!L) {
    status(message, "The map library is not installed, so zones cannot be drawn here.", "error");
    save.disabled = true;
  } else if (!writer) {
    status(message, "Only supervisors and admins draw and change zones.", "info");
    save.disabled = true;
    if (remove) remove.disabled = true;
  }
  return form;
}

function numberOrNull(value) {
  return value === "" || value === null ? null : Number(value);
}

function round(x) {
  return Math.round(x * 1e7) / 1e7;
}

export function kindLabel(kind) {
  return humanType(kind);
}
