// The console's entry: login, the views (#/queue, #/alert/<id>, #/subjects, #/subject/<id>,
// #/zones, #/zones/<id>, #/zones/new/<subject id>, #/reports, #/places, #/places/region/<id>,
// #/places/office/<id | new>, #/cases, #/cases/<id>), and the live queue beside them. A tracer
// starts on his cases.

import { login, session, clearSession, setUnauthorizedHandler, ApiError, get, post, setMe, may } from "./api.js";
import { h, clear, showBanner } from "./ui.js";
import * as maps from "./map.js";
import * as queue from "./queue.js";
import * as alertView from "./alert.js";
import * as subjectView from "./subject.js";
import * as zonesView from "./zones.js";
import * as reportsView from "./reports.js";
import * as placesView from "./places.js";
import * as positions from "./positions.js";
import * as casesView from "./cases.js";

let config = { tile_url: null, vendor: {} };
let started = false;

async function loadConfig() {
  try {
    const response = await fetch("/console/config.json");
    if (response.ok) config = await response.json();
  } catch {
    // defaults: no tiles
  }
}

function showLogin(message) {
  if (started) {
    queue.stop();
    positions.reset();
    started = false;
  }
  document.getElementById("app").hidden = true;
  document.getElementById("login-view").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("login-username").focus();
}

async function startApp() {
  const current = session();
  document.getElementById("login-view").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("whoami").textContent = current ? current.username : "";
  try {
    const me = setMe(await get("/auth/me"));
    document.getElementById("whoami").textContent = `${me.username} · ${me.role} · ${me.regions.join(", ")}`;
    document.body.dataset.role = me.role;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    setMe(null); // an older server without /auth/me: every control shows, the API decides
  }
  document.body.dataset.loggedIn = "true";
  // operators get the reports page for the absconder template (compliance is not theirs)
  document.querySelector('.tabs a[data-tab="reports"]').hidden = !may("admin", "supervisor", "operator");
  document.querySelector('.tabs a[data-tab="places"]').hidden = !may("admin");
  await maps.initMap(config);
  if (!config.vendor || config.vendor.leaflet === false || maps.leafletMissing()) {
    showBanner("Leaflet is not installed on this server (node_modules is missing): run scripts/setup.sh. The map is unavailable; alerts still work.");
  }
  if (!started) {
    started = true;
    queue.start();
  }
  route();
}

function setTab(name) {
  document.body.dataset.view = name;
  for (const a of document.querySelectorAll(".tabs a")) a.classList.toggle("active", a.dataset.tab === name);
}

let leaving = () => {};

async function route() {
  if (!session()) {
    showLogin();
    return;
  }
  leaving();
  leaving = () => {};
  const side = document.getElementById("side");
  const start = document.body.dataset.role === "tracer" ? "#/cases" : "#/queue";
  const parts = (location.hash || start).replace(/^#\/?/, "").split("/");
  const [view, id, extra] = parts;
  try {
    if (view === "alert" && id) {
      setTab("queue");
      leaving = alertView.leave;
      await alertView.show(side, id);
    } else if (view === "subject" && id) {
      setTab("subjects");
      await subjectView.show(side, id);
    } else if (view === "subjects") {
      setTab("subjects");
      await subjectView.showList(side);
    } else if (view === "zones") {
      setTab("zones");
      leaving = zonesView.leave;
      if (id === "new") await zonesView.showZones(side, { subjectId: extra ? Number(extra) : null });
      else await zonesView.showZones(side, { zoneId: id ? Number(id) : null });
    } else if (view === "places") {
      const fresh = document.body.dataset.view !== "places";
      setTab("places");
      leaving = placesView.leave;
      await placesView.show(side, { kind: id || null, id: extra == null ? null : decodeURIComponent(extra), fresh });
    } else if (view === "cases") {
      setTab("cases");
      if (id) await casesView.show(side, id);
      else await casesView.showList(side);
    } else if (view === "reports") {
      setTab("reports");
      await reportsView.show(side);
    } else {
      setTab("queue");
      maps.clearMap();
      leaving = positions.stop;
      showContext();
      positions.start();
      clear(side).append(
        h(
          "div",
          { class: "panel" },
          h("h2", {}, "Alert queue"),
          h("p", { class: "muted" }, "Most severe first, then the longest waiting. New alerts arrive live. Select an alert to see it on the map and act on it."),
          h(
            "p",
            { class: "muted" },
            "The map shows where every subject of your regions was last seen, refreshed every 5 s: ",
            h("span", { class: "pos-key fresh" }, "reporting"),
            ", ",
            h("span", { class: "pos-key stale" }, "missed reports"),
            ", ",
            h("span", { class: "pos-key old" }, "silent over an hour"),
            ". Point at a dot for the name, age and accuracy; click it for the subject's page.",
          ),
          h("ul", { class: "key" }, h("li", { class: "sev-critical" }, "critical"), h("li", { class: "sev-warning" }, "warning"), h("li", { class: "sev-info" }, "info")),
        ),
      );
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    showBanner(error.message || String(error));
  } finally {
    maps.invalidate();
  }
}

// The queue's map: the zones the user can see, for orientation, under the live positions
// layer (positions.js; alert summaries carry no positions, and every positions read is
// audited).
async function showContext() {
  try {
    const zones = await get("/zones", { query: { limit: 1000 } });
    if (!document.body.dataset.view || document.body.dataset.view !== "queue" || location.hash.startsWith("#/alert/")) return;
    maps.clearMap();
    maps.addZones(zones);
    maps.fit();
  } catch {
    // orientation only
  }
}

async function main() {
  await loadConfig();
  setUnauthorizedHandler((message) => showLogin(message));
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("login-submit");
    button.disabled = true;
    try {
      await login(document.getElementById("login-username").value.trim(), document.getElementById("login-password").value);
      document.getElementById("login-password").value = "";
      await startApp();
    } catch (error) {
      const error_ = document.getElementById("login-error");
      error_.hidden = false;
      error_.textContent = error instanceof ApiError && error.status === 401 ? "Wrong username or password." : error.message;
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    if (session()) await post("/auth/logout", {}).catch(() => {}); // revoke the token
    clearSession();
    document.body.dataset.loggedIn = "false";
    location.hash = "";
    showLogin("Logged out.");
  });
  window.addEventListener("hashchange", route);
  if (session()) await startApp();
  else showLogin();
  document.body.dataset.ready = "true";
}

main();
