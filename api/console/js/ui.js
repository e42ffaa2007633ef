// DOM helpers. Data from the API is only ever set as text, never parsed as HTML: the console
// builds every node with h() (or svg() in reports.js) and writes text with textContent. No
// innerHTML, outerHTML, insertAdjacentHTML or document.write anywhere in it (a test reads the
// modules to keep it so); Leaflet tooltips get a node from map.js's tip(), never a string.

// URLs that would run script when followed or loaded
const SCRIPT_URL = /^\s*(javascript|vbscript|data):/i;
const URL_ATTRIBUTES = new Set(["href", "src", "action", "formaction", "xlink:href"]);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    const name = key.toLowerCase();
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) {
      // a handler is a function of this code; a string would be an inline script
      if (typeof value !== "function") throw new TypeError(`h(): ${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (name === "style" || name === "srcdoc") throw new TypeError(`h(): no ${key} attribute (CSP)`);
    else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else if (URL_ATTRIBUTES.has(name) && SCRIPT_URL.test(String(value))) throw new TypeError(`h(): refused ${key} ${String(value).slice(0, 40)}`);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const SEVERITY_RANK = { critical: 2, warning: 1, info: 0 };
export const STATUS_RANK = { open: 0, acknowledged: 1, resolved: 2 };
export const OUTCOMES = ["confirmed", "false_alarm", "equipment_fault", "authorised_absence", "traced", "other"];
export const ZONE_KINDS = ["exclusion", "inclusion", "curfew", "victim"];

export function humanType(type) {
  return String(type || "").replace(/_/g, " ");
}

// "3 min", "2 h 05", "4 d": how long an alert has been waiting, at a glance
export function age(iso, now = Date.now()) {
  if (!iso) return "";
  return duration((now - Date.parse(iso)) / 1000);
}

// The same for a number of seconds (the server's age of a fix: no clock of this PC involved)
export function duration(totalSeconds) {
  const seconds = Math.max(0, Math.round(Number(totalSeconds) || 0));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")}`;
  return `${Math.floor(hours / 24)} d`;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

// <input type="datetime-local"> value for a Date (local wall clock)
export function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function showBanner(message, kind = "error") {
  const banner = document.getElementById("banner");
  if (!banner) return;
  clear(banner);
  if (!message) {
    banner.hidden = true;
    return;
  }
  banner.dataset.kind = kind;
  banner.append(h("span", {}, message), h("button", { type: "button", class: "link", onclick: () => showBanner(null) }, "dismiss"));
  banner.hidden = false;
}

// A message line inside a panel: errors stay until replaced.
export function status(el, message, kind = "info") {
  clear(el);
  if (!message) {
    el.hidden = true;
    return;
  }
  el.hidden = false;
  el.dataset.kind = kind;
  el.className = `status ${kind}`;
  el.textContent = message;
}

export function spinner(text) {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spin", "aria-hidden": "true" }), h("span", { class: "loading-text" }, text));
}

export function kb(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} kB`;
}

// Go to a view; going to the one shown renders it again.
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}
