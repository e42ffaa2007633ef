// Regions & offices: each region's boundary, every office (a marker) with its service area (a
// polygon, or a circle of its radius), and the tracing units that work from each office. Every
// geography route of the API is an admin's, so the page is too; a regional admin sees and
// changes only their regions' (the API decides).
//
// Drawing: a region's boundary is a polygon of clicked corners (drag a corner to move it, click
// it to remove it), as zones are drawn. A click on the map outside any editor starts a new office
// there; an office's service area is a radius (typed, or a click on its edge) or a polygon of
// clicked corners. GeoJSON positions are [lon, lat]; distances are metres on the ground. The
// geofence core checks every area; a refused one comes back as a 422 whose reasons are listed
// under the form as they are.

import { get, post, put, patch, del, may, ApiError } from "./api.js";
import { h, clear, status, spinner, navigate, humanType } from "./ui.js";
import * as maps from "./map.js";

const REGION_COLOUR = "#34495e";
const OFFICE_COLOUR = "#0b3d5c";
const SERVICE_COLOUR = "#0f8b8d";
const PAGE = 1000;

let clickHandler = null;
let draftLayer = null;
let pendingPosition = null; // a click on the overview's map: where the new office goes
let flash = null; // { target: element id, text }: what the last change did, shown once

export function leave() {
  const map = maps.getMap();
  if (map && clickHandler) map.off("click", clickHandler);
  clickHandler = null;
  if (draftLayer) draftLayer.remove();
  draftLayer = null;
  const container = document.getElementById("map");
  if (container) container.classList.remove("drawing");
}

function onMapClick(handler) {
  const map = maps.getMap();
  if (!map) return;
  clickHandler = handler;
  map.on("click", handler);
  document.getElementById("map").classList.add("drawing");
}

// ------------------------------------------------------------------ reading

async function everyPage(read) {
  const rows = [];
  let after = 0;
  for (;;) {
    const page = await read({ limit: PAGE, after_id: after });
    rows.push(...page);
    if (page.length < PAGE) return rows;
    after = page[page.length - 1].id;
  }
}

// GET /regions lists ids and names; each boundary is one read of its own, a few at a time.
async function regionsWithBoundaries() {
  const regions = await get("/regions");
  const found = new Array(regions.length);
  let next = 0;
  async function reader() {
    while (next < regions.length) {
      const index = next++;
      try {
        found[index] = await get(`/regions/${encodeURIComponent(regions[index].id)}`, { quiet: true });
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 404) throw error;
        found[index] = { ...regions[index], boundary: null, missing: true };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(6, regions.length) }, reader));
  return found.filter((r) => !r.missing);
}

async function load() {
  const [regions, offices, units] = await Promise.all([
    regionsWithBoundaries(),
    everyPage((query) => get("/offices", { query })),
    everyPage((query) => get("/tracing-units", { query })),
  ]);
  return { regions, offices, units };
}

// ------------------------------------------------------------------ the page

// #/places, #/places/region/<id>, #/places/office/<id>, #/places/office/new. `fresh`: coming
// from another tab, the map frames what is shown; within the tab it stays where the admin put it.
let generation = 0;

export async function show(side, { kind = null, id = null, fresh = true } = {}) {
  const mine = ++generation;
  leave();
  maps.clearMap();
  const panel = h("div", { class: "panel", id: "places" }, h("h2", {}, "Regions & offices"));
  if (!may("admin")) {
    clear(side).append(panel);
    panel.append(h("p", { class: "status info", id: "places-status" }, "Regions' boundaries, offices and tracing units are kept by admins: the API shows them to no other role."));
    return;
  }
  clear(side).append(spinner("Loading regions and offices…"));
  let world;
  try {
    world = await load();
  } catch (error) {
    if (mine !== generation) return;
    clear(side).append(panel);
    panel.append(h("p", { class: "status error", id: "places-status" }, error.message));
    return;
  }
  if (mine !== generation) return; // a newer render of the page took over
  leave();
  maps.clearMap();
  const region = kind === "region" ? world.regions.find((r) => r.id === id) : null;
  const office = kind === "office" && id !== "new" ? world.offices.find((o) => o.id === Number(id)) : null;
  const editing = kind === "region" || kind === "office";
  drawPlaces(world, { skipRegion: region && region.id, skipOffice: office && office.id, editing });

  let editor = null;
  if (kind === "region") editor = region ? regionEditor(region) : notFound(`region ${id}`);
  else if (kind === "office" && id === "new") editor = officeEditor(world, null);
  else if (kind === "office") editor = office ? officeEditor(world, office) : notFound(`office ${id}`);
  else onMapClick(newOfficeAt);

  clear(side).append(panel);
  // Element.append would write a null as the text "null": leave the absent parts out
  append(
    panel,
    editor ? null : h("p", { class: "muted small" }, "Click the map where an office is to place a new one; open a region to draw its boundary. Positions are longitude, latitude; distances are metres on the ground."),
    gotoControl(),
    h("div", { class: "status", id: "places-status", role: "alert", hidden: true }),
    editor,
    h("h3", {}, `Regions (${world.regions.length})`),
    world.regions.length ? h("ul", { class: "place-list", id: "region-list" }, world.regions.map((r) => regionItem(world, r, { region, office }))) : h("p", { class: "muted small" }, "No region."),
    editor ? null : h("div", { class: "row" }, h("button", { type: "button", id: "office-new", onclick: () => navigate("#/places/office/new") }, "New office")),
  );
  showFlash();
  maps.invalidate();
  frame({ fresh, region, office });
}

// Where the map looks: everything on a fresh visit; the region or office being edited.
function frame({ fresh, region, office }) {
  const map = maps.getMap();
  const L = maps.leaflet();
  if (!map || !L) return;
  const drawn = draftLayer ? draftLayer.getBounds() : null;
  if ((region || (office && fresh)) && drawn && drawn.isValid()) {
    map.fitBounds(drawn, { padding: [40, 40], maxZoom: 15 });
  } else if (office && !map.getBounds().contains([office.lat, office.lon])) {
    map.panTo([office.lat, office.lon]);
  } else if (fresh && !region && !office) {
    maps.fit();
  }
}

function append(parent, ...children) {
  parent.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
}

function showFlash() {
  if (!flash) return;
  const target = document.getElementById(flash.target) || document.getElementById("places-status");
  if (target) status(target, flash.text, flash.kind || "ok");
  flash = null;
}

function notFound(what) {
  return h("p", { class: "status error" }, `${what} is not among your regions' (or no longer exists).`);
}

function newOfficeAt(event) {
  pendingPosition = event.latlng;
  navigate("#/places/office/new");
}

// Offline there are no tiles: a place is found by its coordinates.
function gotoControl() {
  const input = h("input", { id: "places-goto", placeholder: "lon, lat", size: 18, title: "longitude, latitude (and a zoom level)" });
  const go = () => {
    const [lon, lat, zoom] = input.value.split(/[\s,;]+/).filter(Boolean).map(Number);
    const map = maps.getMap();
    if (!map || !Number.isFinite(lon) || !Number.isFinite(lat) || Math.abs(lon) > 180 || Math.abs(lat) > 90) {
      input.setCustomValidity("longitude, latitude in degrees, e.g. 24.76, -28.74");
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    map.setView([lat, lon], Number.isFinite(zoom) ? zoom : 10, { animate: false });
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") go();
  });
  return h("div", { class: "row goto" }, h("label", {}, "Centre the map on ", input), h("button", { type: "button", id: "places-goto-go", onclick: go }, "Go"));
}

function regionItem(world, region, selected) {
  const offices = world.offices.filter((o) => o.region_id === region.id);
  return h(
    "li",
    { dataset: { regionId: region.id }, class: selected.region && selected.region.id === region.id ? "selected" : "" },
    h(
      "div",
      {},
      h("i", { class: "sw region" }),
      h("a", { href: `#/places/region/${encodeURIComponent(region.id)}` }, region.name || region.id),
      h("span", { class: "muted small" }, ` ${region.id} · ${region.boundary ? describeArea(region.boundary) : "no boundary drawn"}`),
    ),
    offices.length
      ? h("ul", { class: "office-list" }, offices.map((o) => officeItem(world, o, selected)))
      : h("p", { class: "muted small indent" }, "No office."),
  );
}

function officeItem(world, office, selected) {
  const units = world.units.filter((u) => u.office_id === office.id);
  return h(
    "li",
    { dataset: { officeId: office.id }, class: selected.office && selected.office.id === office.id ? "selected" : "" },
    h("i", { class: "sw office" }),
    h("a", { href: `#/places/office/${office.id}` }, office.name),
    h("div", { class: "small muted sub" }, serviceText(office)),
    h("div", { class: "small sub units" }, units.length ? `Tracing units: ${units.map((u) => u.name).join(", ")}` : "No tracing unit."),
  );
}

function describeArea(geometry) {
  if (geometry.type === "Polygon") return `boundary of ${geometry.coordinates[0].length - 1} corners`;
  if (geometry.type === "MultiPolygon") return `boundary in ${geometry.coordinates.length} parts`;
  return "boundary";
}

export function metres(value) {
  return `${Math.round(Number(value)).toLocaleString("en-GB")} m`;
}

function serviceText(office) {
  if (office.service_area) return `serves ${office.service_area.type === "MultiPolygon" ? "a drawn area" : "a drawn polygon"}`;
  if (office.service_radius_m) return `serves ${metres(office.service_radius_m)} around it`;
  return "no service area";
}

// ------------------------------------------------------------------ the map

function token(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

function serviceLayer(L, office, extra = {}) {
  const style = { color: SERVICE_COLOUR, weight: 2, fillColor: SERVICE_COLOUR, fillOpacity: 0.1, className: `tw-service tw-service-id-${Number(office.id)}`, ...extra };
  if (office.service_area) return L.geoJSON(office.service_area, { style: () => style });
  if (office.service_radius_m) return L.circle([office.lat, office.lon], { radius: office.service_radius_m, ...style });
  return null;
}

// Everything but what an editor draws itself. In an editor a click on another office is a click
// on the map (a corner, a position); outside one it opens that office.
function drawPlaces(world, { skipRegion = null, skipOffice = null, editing = false } = {}) {
  const L = maps.leaflet();
  if (!L || !maps.getMap()) return;
  for (const region of world.regions) {
    if (!region.boundary || region.id === skipRegion) continue;
    const style = { color: REGION_COLOUR, weight: 2, dashArray: "10 6", fillColor: REGION_COLOUR, fillOpacity: 0.04, className: `tw-region tw-region-id-${token(region.id)}` };
    const layer = L.geoJSON(region.boundary, { style: () => style });
    layer.bindTooltip(maps.tip(h("strong", {}, region.name || region.id), ` region ${region.id}`), { sticky: true });
    maps.addLayer(layer);
  }
  for (const office of world.offices) {
    if (office.id === skipOffice) continue;
    const units = world.units.filter((u) => u.office_id === office.id);
    const area = serviceLayer(L, office);
    if (area) {
      area.bindTooltip(maps.tip(`${office.name}: service area`), { sticky: true });
      maps.addLayer(area);
    }
    const marker = L.circleMarker([office.lat, office.lon], {
      radius: 7, color: "#fff", weight: 2, fillColor: OFFICE_COLOUR, fillOpacity: 1, className: `tw-office tw-office-id-${Number(office.id)}`, bubblingMouseEvents: editing,
    });
    marker.bindTooltip(maps.tip(h("strong", {}, office.name), h("div", {}, `${office.region_id} · ${serviceText(office)}`), h("div", {}, units.length ? `Tracing units: ${units.map((u) => u.name).join(", ")}` : "No tracing unit.")));
    if (!editing) marker.on("click", () => navigate(`#/places/office/${office.id}`));
    maps.addLayer(marker);
  }
}

// A polygon being drawn: corners as LatLngs; the holes of a polygon being edited are kept, and
// a MultiPolygon is kept whole until a corner is clicked.
class PolygonDraft {
  constructor(L, layer, { colour, className, onChange }) {
    Object.assign(this, { L, colour, className, onChange, vertices: [], holes: [], keep: null });
    this.group = L.featureGroup().addTo(layer);
  }

  load(geometry) {
    this.vertices = [];
    this.holes = [];
    this.keep = null;
    if (geometry && geometry.type === "Polygon") {
      this.vertices = geometry.coordinates[0].slice(0, -1).map(([lon, lat]) => this.L.latLng(lat, lon));
      this.holes = geometry.coordinates.slice(1);
    } else if (geometry) {
      this.keep = geometry;
    }
    this.redraw();
  }

  add(latlng) {
    this.keep = null;
    this.vertices.push(latlng);
    this.redraw();
  }

  undo() {
    this.vertices.pop();
    this.redraw();
  }

  reset() {
    Object.assign(this, { vertices: [], holes: [], keep: null });
    this.redraw();
  }

  geometry() {
    if (this.keep) return this.keep;
    if (this.vertices.length < 3) return undefined;
    const ring = this.vertices.map((p) => [round(p.lng), round(p.lat)]);
    ring.push(ring[0]);
    return { type: "Polygon", coordinates: [ring, ...this.holes] };
  }

  describe(what) {
    if (this.keep) return `The ${what} is kept as it is (${this.keep.coordinates.length} parts); click the map to draw a new one instead.`;
    const n = this.vertices.length;
    if (n < 3) return `Click the map to add the corners of the ${what} (${n} so far, 3 at least).`;
    return `${n} corners. Drag a corner to move it, click it to remove it.`;
  }

  redraw() {
    const { L } = this;
    this.group.clearLayers();
    const style = { color: this.colour, weight: 2, dashArray: "4 4", fillColor: this.colour, fillOpacity: 0.12, className: `tw-draft ${this.className}` };
    if (this.keep) L.geoJSON(this.keep, { style: () => style }).addTo(this.group);
    if (this.vertices.length) {
      const shape = this.vertices.length >= 3 ? L.polygon(this.vertices, style) : L.polyline(this.vertices, style);
      shape.addTo(this.group);
      this.vertices.forEach((latlng, index) => {
        const handle = L.marker(latlng, { draggable: true, icon: L.divIcon({ className: "tw-vertex", iconSize: [12, 12] }), title: `corner ${index + 1} (drag to move, click to remove)` });
        handle.on("drag", (e) => {
          this.vertices[index] = e.target.getLatLng();
          shape.setLatLngs(this.vertices);
        });
        handle.on("dragend", () => this.redraw());
        handle.on("click", () => {
          this.vertices.splice(index, 1);
          this.redraw();
        });
        handle.addTo(this.group);
      });
    }
    if (this.onChange) this.onChange();
  }
}

// A refusal under the form: the geofence core's reasons one a line, or the API's message.
function refusal(el, error) {
  clear(el);
  el.hidden = false;
  el.className = "status error";
  el.dataset.kind = "error";
  const code = error instanceof ApiError ? `${error.status}: ` : "";
  const detail = error instanceof ApiError ? error.detail : null;
  const reasons = detail && Array.isArray(detail.reasons) && detail.reasons.length ? detail.reasons : null;
  if (reasons) {
    el.append(h("strong", {}, `${code}${humanType(detail.reason || "refused")}`), h("ul", { class: "reasons" }, reasons.map((r) => h("li", {}, r))));
  } else {
    el.append(`${code}${error.message || String(error)}`);
  }
}

// ------------------------------------------------------------------ a region's boundary

function regionEditor(region) {
  const L = maps.leaflet();
  const message = h("div", { class: "status", id: "region-status", role: "alert", hidden: true });
  const hint = h("p", { class: "muted small", id: "region-hint" });
  const label = region.name || region.id;
  let draft = null;
  if (L && maps.getMap()) {
    draftLayer = maps.addLayer(L.featureGroup());
    draft = new PolygonDraft(L, draftLayer, { colour: REGION_COLOUR, className: "tw-region-draft", onChange: () => (hint.textContent = draft ? draft.describe("boundary") : "") });
    draft.load(region.boundary);
    hint.textContent = draft.describe("boundary");
    onMapClick((event) => draft.add(event.latlng));
  }

  const save = h("button", { type: "button", class: "primary", id: "region-save" }, "Save boundary");
  save.addEventListener("click", async () => {
    const boundary = draft && draft.geometry();
    if (!boundary) {
      status(message, "Draw at least 3 corners on the map first.", "error");
      return;
    }
    save.disabled = true;
    status(message, "saving…", "info");
    try {
      await put(`/regions/${encodeURIComponent(region.id)}/boundary`, { boundary });
      flash = { target: "places-status", text: `The boundary of ${label} is saved.` };
      leave();
      navigate("#/places");
    } catch (error) {
      refusal(message, error);
    } finally {
      save.disabled = false;
    }
  });
  const remove = region.boundary ? h("button", { type: "button", class: "danger", id: "region-delete" }, "Remove boundary") : null;
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!confirm(`Remove the boundary of ${label}? Routing then no longer knows who is outside it.`)) return;
      try {
        await del(`/regions/${encodeURIComponent(region.id)}/boundary`);
        flash = { target: "places-status", text: `The boundary of ${label} is removed.` };
        leave();
        navigate("#/places");
      } catch (error) {
        refusal(message, error);
      }
    });
  }
  const disabled = !draft;
  if (disabled) status(message, "The map library is not installed, so boundaries cannot be drawn here.", "error");
  return h(
    "div",
    { class: "place-form", id: "region-form", dataset: { regionId: region.id } },
    h("h3", {}, `Boundary of ${label}`),
    hint,
    h(
      "div",
      { class: "row" },
      h("button", { type: "button", id: "region-undo", disabled, onclick: () => draft.undo() }, "Undo corner"),
      h("button", { type: "button", id: "region-clear", disabled, onclick: () => draft.reset() }, "Clear"),
    ),
    h("div", { class: "row" }, save, remove, h("a", { href: "#/places" }, "Cancel")),
    message,
  );
}

// ------------------------------------------------------------------ an office

// Is (lon, lat) inside the outer rings of a GeoJSON (Multi)Polygon? Only to propose a region.
function holds(geometry, lon, lat) {
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
  return polygons.some(([ring]) => {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i];
      const [xj, yj] = ring[j];
      if (yi > lat !== yj > lat && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  });
}

function officeEditor(world, office) {
  const L = maps.leaflet();
  const message = h("div", { class: "status", id: "office-status", role: "alert", hidden: true });
  const hint = h("p", { class: "muted small", id: "office-hint" });
  const start = office ? { lat: office.lat, lng: office.lon } : pendingPosition;
  pendingPosition = null;
  const name = h("input", { id: "office-name", value: office ? office.name : "", maxlength: 200, placeholder: "e.g. Kimberley community corrections" });
  const region = h(
    "select",
    { id: "office-region" },
    world.regions.map((r) => h("option", { value: r.id }, r.name && r.name !== r.id ? `${r.name} (${r.id})` : r.id)),
  );
  const around = start && world.regions.find((r) => r.boundary && holds(r.boundary, start.lng, start.lat));
  region.value = office ? office.region_id : around ? around.id : world.regions.length ? world.regions[0].id : "";
  const lon = h("input", { id: "office-lon", type: "number", step: "any", min: -180, max: 180, value: start ? round(start.lng) : "" });
  const lat = h("input", { id: "office-lat", type: "number", step: "any", min: -90, max: 90, value: start ? round(start.lat) : "" });
  const modeRadius = h("input", { type: "radio", name: "office-mode", value: "radius", id: "office-mode-radius" });
  const modePolygon = h("input", { type: "radio", name: "office-mode", value: "polygon", id: "office-mode-polygon" });
  (office && office.service_area ? modePolygon : modeRadius).checked = true;
  const radius = h("input", { id: "office-radius", type: "number", min: 1, step: 1, value: office && office.service_radius_m ? office.service_radius_m : "", placeholder: "metres" });
  let placing = !start; // the next click on the map places the office

  const position = () => {
    const x = Number(lon.value);
    const y = Number(lat.value);
    return lon.value !== "" && lat.value !== "" && Number.isFinite(x) && Number.isFinite(y) && L ? L.latLng(y, x) : null;
  };
  const mode = () => (modePolygon.checked ? "polygon" : "radius");

  let positionGroup = null;
  let polygon = null;
  function refresh() {
    if (!positionGroup) return;
    positionGroup.clearLayers();
    const here = position();
    if (here && mode() === "radius" && Number(radius.value) > 0) {
      L.circle(here, { radius: Number(radius.value), color: SERVICE_COLOUR, weight: 2, dashArray: "4 4", fillColor: SERVICE_COLOUR, fillOpacity: 0.12, className: "tw-draft tw-service-draft", interactive: false }).addTo(positionGroup);
    }
    if (here) {
      const handle = L.marker(here, { draggable: true, icon: L.divIcon({ className: "tw-vertex centre tw-office-draft", iconSize: [16, 16] }), title: "the office (drag to move)" });
      handle.on("dragend", (e) => {
        const moved = e.target.getLatLng();
        lon.value = round(moved.lng);
        lat.value = round(moved.lat);
        refresh();
      });
      handle.addTo(positionGroup);
    }
    if (mode() === "polygon") draftLayer.addLayer(polygon.group);
    else draftLayer.removeLayer(polygon.group);
    describe();
  }
  function arrange() {
    radiusRow.hidden = mode() !== "radius";
    polygonRow.hidden = mode() !== "polygon";
  }
  function describe() {
    if (placing || !position()) hint.textContent = "Click the map where the office is (or type its longitude and latitude).";
    else if (mode() === "radius") hint.textContent = "Type the service radius in metres, or click a point on its edge. Drag the office to move it.";
    else hint.textContent = `${polygon.describe("service area")} Drag the office to move it.`;
  }

  if (L && maps.getMap()) {
    draftLayer = maps.addLayer(L.featureGroup());
    positionGroup = L.featureGroup().addTo(draftLayer);
    polygon = new PolygonDraft(L, draftLayer, { colour: SERVICE_COLOUR, className: "tw-service-draft", onChange: () => positionGroup && describe() });
    polygon.load(office && office.service_area);
    onMapClick((event) => {
      if (placing || !position()) {
        lon.value = round(event.latlng.lng);
        lat.value = round(event.latlng.lat);
        placing = false;
        if (!office) {
          const inside = world.regions.find((r) => r.boundary && holds(r.boundary, event.latlng.lng, event.latlng.lat));
          if (inside) region.value = inside.id;
        }
      } else if (mode() === "radius") {
        radius.value = String(Math.max(1, Math.round(position().distanceTo(event.latlng))));
      } else {
        polygon.add(event.latlng);
      }
      refresh();
    });
    refresh();
  } else {
    status(message, "The map library is not installed: type the position; a polygon cannot be drawn here.", "error");
  }
  for (const input of [lon, lat, radius]) input.addEventListener("input", refresh);
  for (const radio of [modeRadius, modePolygon]) {
    radio.addEventListener("change", () => {
      arrange();
      refresh();
    });
  }

  const save = h("button", { type: "button", class: "primary", id: "office-save" }, office ? "Save office" : "Create office");
  save.addEventListener("click", async () => {
    const here = position();
    if (!here) {
      status(message, "Place the office on the map first.", "error");
      return;
    }
    const body = { name: name.value.trim(), region_id: region.value, lon: round(here.lng), lat: round(here.lat) };
    if (mode() === "radius") {
      if (!(Number(radius.value) > 0)) {
        status(message, "Type the service radius in metres, or click a point on its edge.", "error");
        return;
      }
      body.service_radius_m = Number(radius.value);
    } else {
      const area = polygon && polygon.geometry();
      if (!area) {
        status(message, "Draw at least 3 corners of the service area first.", "error");
        return;
      }
      body.service_area = area;
    }
    save.disabled = true;
    status(message, "saving…", "info");
    try {
      const saved = office ? await patch(`/offices/${office.id}`, body) : await post("/offices", body);
      flash = { target: "office-status", text: `Office ${saved.name} is saved.` };
      leave();
      navigate(`#/places/office/${saved.id}`);
    } catch (error) {
      refusal(message, error);
    } finally {
      save.disabled = false;
    }
  });
  const remove = office ? h("button", { type: "button", class: "danger", id: "office-delete" }, "Delete office") : null;
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete office ${office.name}?`)) return;
      try {
        await del(`/offices/${office.id}`);
        flash = { target: "places-status", text: `Office ${office.name} is deleted.` };
        leave();
        navigate("#/places");
      } catch (error) {
        refusal(message, error);
      }
    });
  }
  const radiusRow = h("label", { class: "inline" }, "Radius (m) ", radius);
  const polygonRow = h(
    "div",
    { class: "row" },
    h("button", { type: "button", id: "office-undo", onclick: () => polygon && polygon.undo() }, "Undo corner"),
    h("button", { type: "button", id: "office-clear", onclick: () => polygon && polygon.reset() }, "Clear polygon"),
  );
  arrange();
  const move = h("button", { type: "button", id: "office-move", onclick: () => ((placing = true), describe()) }, "Place on the map");

  return h(
    "div",
    { class: "place-form", id: "office-form", dataset: { officeId: office ? office.id : "new" } },
    h("h3", {}, office ? `Office ${office.name}` : "New office"),
    hint,
    h("label", {}, "Name ", name),
    h("label", {}, "Region ", region),
    h("label", {}, "Longitude ", lon),
    h("label", {}, "Latitude ", lat),
    h("div", { class: "row" }, move),
    h(
      "fieldset",
      { class: "service" },
      h("legend", {}, "Service area"),
      h("div", { class: "row" }, h("label", {}, modeRadius, " a radius"), h("label", {}, modePolygon, " a drawn polygon")),
      radiusRow,
      polygonRow,
    ),
    h("div", { class: "row" }, save, remove, h("a", { href: "#/places" }, "Cancel")),
    message,
    office ? unitsSection(world, office) : h("p", { class: "muted small" }, "Tracing units are attached once the office is created."),
  );
}

// ------------------------------------------------------------------ tracing units

function unitsSection(world, office) {
  const here = `#/places/office/${office.id}`;
  const message = h("div", { class: "status", id: "unit-status", role: "alert", hidden: true });
  const units = world.units.filter((u) => u.office_id === office.id);
  const elsewhere = world.units.filter((u) => u.office_id !== office.id);
  const others = world.offices.filter((o) => o.id !== office.id);
  const officeName = (id) => (world.offices.find((o) => o.id === id) || { name: `office ${id}` }).name;

  async function act(work, done) {
    try {
      await work();
      flash = { target: "unit-status", text: done };
      navigate(here);
    } catch (error) {
      refusal(message, error);
    }
  }

  const rows = units.map((unit) => {
    const target = h("select", { class: "unit-move-to", "aria-label": `move ${unit.name} to` }, h("option", { value: "" }, "move to…"), others.map((o) => h("option", { value: o.id }, `${o.name} (${o.region_id})`)));
    target.addEventListener("change", () => {
      if (!target.value) return;
      const to = Number(target.value);
      act(() => patch(`/tracing-units/${unit.id}`, { office_id: to }), `${unit.name} now works from ${officeName(to)}.`);
    });
    const remove = h("button", { type: "button", class: "link unit-delete" }, "delete");
    remove.addEventListener("click", () => {
      if (!confirm(`Delete tracing unit ${unit.name}?`)) return;
      act(() => del(`/tracing-units/${unit.id}`), `${unit.name} is deleted.`);
    });
    return h("li", { dataset: { unitId: unit.id } }, h("span", { class: "unit-name" }, unit.name), " ", others.length ? target : null, remove);
  });

  const newName = h("input", { id: "unit-name", placeholder: "e.g. Tracing team North", maxlength: 200 });
  const add = h("button", { type: "button", id: "unit-add" }, "Add unit");
  add.addEventListener("click", () => {
    const unitName = newName.value.trim();
    if (!unitName) {
      status(message, "Name the tracing unit first.", "error");
      return;
    }
    act(() => post("/tracing-units", { name: unitName, office_id: office.id }), `${unitName} works from ${office.name}.`);
  });
  newName.addEventListener("keydown", (event) => {
    if (event.key === "Enter") add.click();
  });
  const attach = elsewhere.length
    ? h("select", { id: "unit-attach" }, h("option", { value: "" }, "a unit of another office…"), elsewhere.map((u) => h("option", { value: u.id }, `${u.name} (${officeName(u.office_id)})`)))
    : null;
  const attachGo = attach ? h("button", { type: "button", id: "unit-attach-go" }, "Attach here") : null;
  if (attachGo) {
    attachGo.addEventListener("click", () => {
      const unit = elsewhere.find((u) => u.id === Number(attach.value));
      if (!unit) return;
      act(() => patch(`/tracing-units/${unit.id}`, { office_id: office.id }), `${unit.name} now works from ${office.name}.`);
    });
  }
  return h(
    "div",
    { class: "units-section", id: "office-units" },
    h("h3", {}, `Tracing units of ${office.name} (${units.length})`),
    units.length ? h("ul", { class: "place-list", id: "unit-list" }, rows) : h("p", { class: "muted small", id: "unit-list-empty" }, "No tracing unit works from this office yet."),
    h("div", { class: "row" }, newName, add),
    attach ? h("div", { class: "row" }, attach, attachGo) : null,
    h("p", { class: "muted small" }, "A unit works in its office's region. To detach a unit, move it to another office or delete it; a unit that a subscription targets cannot be deleted."),
    message,
  );
}

function round(x) {
  return Math.round(Number(x) * 1e7) / 1e7;
}
