// The API client: the bearer token (kept in this tab's sessionStorage only), JSON calls that
// turn 4xx bodies into readable reasons, and a shared progress bar for loads in flight.

const TOKEN_KEY = "tagwatch.token";
const USER_KEY = "tagwatch.user";
export const API = "/api/v1";

let inFlight = 0;
let currentUser = null; // GET /auth/me: {username, role, regions}, when the server has it

export function setMe(me) {
  currentUser = me;
  return me;
}

// May the logged-in user do what needs one of `roles`? Unknown (no /auth/me): yes, the API
// decides and its refusal is shown.
export function may(...roles) {
  return !currentUser || roles.includes(currentUser.role);
}
let onUnauthorized = () => {};

export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function session() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const claims = decodeClaims(token);
  if (claims && claims.exp && claims.exp * 1000 < Date.now()) {
    clearSession();
    return null;
  }
  return { token, username: sessionStorage.getItem(USER_KEY) || "", claims };
}

export function clearSession() {
  currentUser = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
}

function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(describeDetail(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

// FastAPI's error bodies: a string, {reason, message, reasons}, or a list of {loc, msg}.
export function describeDetail(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = (e.loc || []).filter((p) => p !== "body").join(".");
        return where ? `${where}: ${e.msg}` : e.msg || JSON.stringify(e);
      })
      .join("; ");
  }
  if (typeof detail === "object") {
    if (Array.isArray(detail.reasons) && detail.reasons.length) return detail.reasons.join("; ");
    if (detail.message) return detail.reason ? `${detail.message} (${detail.reason})` : detail.message;
    if (detail.detail) return describeDetail(detail.detail);
    return JSON.stringify(detail);
  }
  return String(detail);
}

function progress(delta) {
  inFlight = Math.max(0, inFlight + delta);
  const bar = document.getElementById("progress");
  if (bar) bar.hidden = inFlight === 0;
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password });
  progress(1);
  try {
    const response = await fetch(`${API}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, data.detail, "/auth/token");
    sessionStorage.setItem(TOKEN_KEY, data.access_token);
    sessionStorage.setItem(USER_KEY, username);
    return data;
  } finally {
    progress(-1);
  }
}

// One authenticated call. `onProgress(bytes)` streams the body for long loads; `quiet` keeps
// the progress bar still (a background refresh every few seconds); `binary` gives a successful
// answer's body as a Blob (a PDF), never decoded as text.
export async function request(method, path, { body, query, onProgress, accept, quiet, binary } = {}) {
  const current = session();
  if (!current) {
    onUnauthorized("Your session has ended; log in again.");
    throw new ApiError(401, "not logged in", path);
  }
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(key, item);
  }
  const headers = { Authorization: `Bearer ${current.token}`, Accept: accept || "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const step = quiet ? 0 : 1;
  progress(step);
  try {
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const type = response.headers.get("content-type") || "";
    if (binary && response.ok) return { data: await response.blob(), type, response };
    const text = await readText(response, onProgress);
    const data = type.includes("json") && text ? safeJson(text) : text;
    if (response.status === 401) {
      clearSession();
      onUnauthorized("Your session has ended; log in again.");
    }
    if (!response.ok) {
      throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : data, path);
    }
    return { data, type, response };
  } finally {
    progress(-step);
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function readText(response, onProgress) {
  if (!onProgress || !response.body) return response.text();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let received = 0;
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.length;
    text += decoder.decode(value, { stream: true });
    onProgress(received);
  }
  return text + decoder.decode();
}

export const get = async (path, options) => (await request("GET", path, options)).data;
export const post = async (path, body, options) => (await request("POST", path, { ...options, body })).data;
export const put = async (path, body, options) => (await request("PUT", path, { ...options, body })).data;
export const patch = async (path, body, options) => (await request("PATCH", path, { ...options, body })).data;
export const del = async (path, options) => (await request("DELETE", path, options)).data;
