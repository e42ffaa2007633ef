// The one map of the console: Leaflet from node_modules (served at /vendor/leaflet/), vector
// layers only unless the server names a tile URL. Zones, tracks and positions are SVG paths
// with classes (tw-zone, tw-track, tw-acc, tw-fix, tw-last, tw-alert) so that styles and tests
// can find them.
//
// Tooltips are DOM nodes built by tip(), never strings: Leaflet puts a string content into
// innerHTML, and a zone or subject name is whatever someone typed. The tile attribution is
// text for the same reason (Leaflet's own attribution control writes HTML).

import { h, when } from "./ui.js";

export const KIND_COLOURS = {
  exclusion: "#d62728",
  inclusion: "#2ca02c",
  curfew: "#7b4fd6",
  victim: "#e377c2",
};
const TRACK_COLOUR = "#1f6fd1";
const MAX_ACCURACY_CIRCLES = 400;

let L = null;
let map = null;
let content = null; // the current view's layers
const fitCompanions = new Set(); // layers of their own (live positions) that fit() frames too
let loadError = null;

export async function loadLeaflet() {
  if (L || loadError) return L;
  try {
    L = await import("/vendor/leaflet/leaflet-src.esm.js");
  } catch (error) {
    loadError = error;
  }
  return L;
}

export function leafletMissing() {
  return Boolean(loadError) || !L;
}

export function leaflet() {
  return L;
}

// The content of every tooltip (and popup) on the map: text and nodes, never HTML.
export function tip(...children) {
  return h("div", { class: "tw-tip" }, ...children);
}

// The tile server's attribution, as text, in the corner Leaflet would use.
function attribution(text) {
  const Attribution = L.Control.extend({
    options: { position: "bottomright" },
    onAdd() {
      return h("div", { class: "leaflet-control-attribution leaflet-control tw-attribution" }, text);
    },
  });
  return new Attribution();
}

export async function initMap(config) {
  await loadLeaflet();
  const missing = document.getElementById("map-missing");
  if (!L) {
    document.getElementById("map-legend").hidden = true;
    missing.hidden = false;
    missing.replaceChildren(
      h("strong", {}, "The map library (Leaflet) is not installed on this server."),
      h("p", {}, "Run scripts/setup.sh (it runs npm ci at the repository root) and reload. Alerts, notes and actions work without the map."),
    );
    return null;
  }
  if (map) return map;
  map = L.map("map", { zoomControl: true, attributionControl: false, preferCanvas: false, zoomSnap: 0.25 });
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { maxZoom: 19 }).addTo(map);
    if (config.tile_attribution) attribution(config.tile_attribution).addTo(map);
  } else {
    // No tiles offline: a plain grid that pans and zooms with the map.
    const Grid = L.GridLayer.extend({
      createTile() {
        const tile = document.createElement("div");
        tile.className = "tw-grid-tile";
        return tile;
      },
    });
    new Grid({ tileSize: 128 }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);
  content = L.featureGroup().addTo(map);
  map.setView([0, 0], 2);
  return map;
}

export function getMap() {
  return map;
}

export function clearMap() {
  if (content) content.clearLayers();
}

// A layer that lives beside the view's content (the live positions): fit() frames it too
// while it is on the map.
export function fitAlso(layer) {
  fitCompanions.add(layer);
}

export function fit(padding = 40) {
  if (!map || !content) return;
  const bounds = L.latLngBounds([]);
  const own = content.getBounds();
  if (own.isValid()) bounds.extend(own);
  for (const layer of fitCompanions) {
    if (!map.hasLayer(layer) || !layer.getBounds) continue;
    const extra = layer.getBounds();
    if (extra.isValid()) bounds.extend(extra);
  }
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [padding, padding], maxZoom: 17 });
}

export function invalidate() {
  if (map) map.invalidateSize();
}

function zoneStyle(kind, extra = {}) {
  const colour = KIND_COLOURS[kind] || "#555";
  return { color: colour, weight: 2, fillColor: colour, fillOpacity: 0.18, className: `tw-zone tw-zone-${kind}`, ...extra };
}

function zoneLabel(zone) {
  const parts = [zone.name || `zone ${zone.id}`, zone.kind];
  if (zone.buffer_m) parts.push(`buffer ${zone.buffer_m} m`);
  if (zone.schedule) parts.push("scheduled");
  if (!zone.subject_id) parts.push(zone.group_name ? `group ${zone.group_name}` : "global");
  return parts.join(" · ");
}

// Zones as polygons or circles (with their warning band dashed); returns the layers added.
export function addZones(zones, { onClick, highlight } = {}) {
  if (!map) return [];
  const added = [];
  for (const zone of zones) {
    if (!zone.geometry) continue; // victim zones follow the victim's phone: no fixed shape
    // the zone's id as a class of its shape (not of its warning band), for tests and styles
    const emphasis = { className: `tw-zone tw-zone-${zone.kind} tw-zone-id-${Number(zone.id)}`, ...(highlight === zone.id ? { weight: 4, fillOpacity: 0.3 } : {}) };
    let layer;
    if (zone.geometry.type === "Point") {
      const [lon, lat] = zone.geometry.coordinates;
      layer = L.featureGroup();
      if (zone.buffer_m) {
        L.circle([lat, lon], { radius: (zone.radius_m || 0) + zone.buffer_m, ...zoneStyle(zone.kind, { dashArray: "6 6", fillOpacity: 0.05, weight: 1, className: `tw-zone-buffer tw-zone-${zone.kind}` }) }).addTo(layer);
      }
      L.circle([lat, lon], { radius: zone.radius_m || 1, ...zoneStyle(zone.kind, emphasis) }).addTo(layer);
    } else {
      layer = L.geoJSON(zone.geometry, { style: () => zoneStyle(zone.kind, emphasis) });
    }
    layer.bindTooltip(tip(zoneLabel(zone)), { sticky: true });
    if (onClick) layer.on("click", (event) => onClick(zone, event));
    layer.addTo(content);
    added.push(layer);
  }
  return added;
}

// Fixes (GeoJSON Point features, in time order): the track line, accuracy circles, fix dots.
export function addTrack(features, { label = "track" } = {}) {
  if (!map) return null;
  const points = features.filter((f) => f.geometry && f.geometry.type === "Point");
  const latlngs = points.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
  const group = L.featureGroup();
  const circles = points.slice(-MAX_ACCURACY_CIRCLES);
  for (const f of circles) {
    const acc = f.properties && f.properties.acc;
    if (acc) {
      L.circle([f.geometry.coordinates[1], f.geometry.coordinates[0]], {
        radius: acc, color: TRACK_COLOUR, weight: 0.5, opacity: 0.5, fillOpacity: 0.06, className: "tw-acc", interactive: false,
      }).addTo(group);
    }
  }
  if (latlngs.length >= 2) {
    L.polyline(latlngs, { color: TRACK_COLOUR, weight: 3, opacity: 0.9, className: "tw-track" }).bindTooltip(tip(label), { sticky: true }).addTo(group);
  }
  for (const f of points) {
    const p = f.properties || {};
    const text = [when(p.ts), p.acc != null ? `±${Math.round(p.acc)} m` : null, p.spd != null ? `${(p.spd * 3.6).toFixed(0)} km/h` : null, p.src && p.src !== "gps" ? p.src : null]
      .filter(Boolean)
      .join(" · ");
    L.circleMarker([f.geometry.coordinates[1], f.geometry.coordinates[0]], {
      radius: 3, color: TRACK_COLOUR, weight: 1, fillColor: "#fff", fillOpacity: 1, className: "tw-fix",
    }).bindTooltip(tip(text)).addTo(group);
  }
  group.addTo(content);
  return group;
}

export function addLastPosition(position, label = "last position") {
  if (!map || !position) return null;
  const latlng = [position.lat, position.lon];
  const group = L.featureGroup();
  if (position.acc) {
    L.circle(latlng, { radius: position.acc, color: "#111", weight: 1, dashArray: "3 3", fillOpacity: 0.05, className: "tw-acc tw-last-acc", interactive: false }).addTo(group);
  }
  L.circleMarker(latlng, { radius: 9, color: "#111", weight: 3, fillColor: "#ffb020", fillOpacity: 1, className: "tw-last" })
    .bindTooltip(tip(`${label}: ${when(position.ts)}${position.acc ? ` ±${Math.round(position.acc)} m` : ""}`), { permanent: false })
    .addTo(group);
  group.addTo(content);
  return group;
}

export function addAlertMarker(lat, lon, label) {
  if (!map || lat == null || lon == null) return null;
  const marker = L.circleMarker([lat, lon], { radius: 13, color: "#d62728", weight: 3, fill: false, className: "tw-alert" }).bindTooltip(tip(label));
  marker.addTo(content);
  return marker;
}

export function addLayer(layer) {
  if (content && layer) layer.addTo(content);
  return layer;
}
