// Subjects: the list, and one subject's page: its zones, its track over a chosen range and its
// last known position on the map, and its alerts.

import { get, ApiError } from "./api.js";
import { h, clear, when, age, humanType, spinner, status, localInput, kb } from "./ui.js";
import * as maps from "./map.js";
import { rememberSubjects } from "./queue.js";
import { showCommands } from "./commands.js";

export async function showList(side) {
  clear(side).append(spinner("Loading subjects…"));
  maps.clearMap();
  let subjects;
  try {
    subjects = await get("/subjects", { query: { limit: 1000 } });
  } catch (error) {
    clear(side).append(h("p", { class: "status error" }, error.message));
    return;
  }
  rememberSubjects(subjects);
  const filter = h("input", { type: "search", placeholder: "filter by name, case or region", id: "subject-filter" });
  const list = h(
    "ul",
    { class: "subject-list", id: "subject-list" },
    subjects.map((s) =>
      h(
        "li",
        { dataset: { subjectId: s.id, text: `${s.name} ${s.case_ref || ""} ${s.region_id}`.toLowerCase() } },
        h("a", { href: `#/subject/${s.id}` }, s.name),
        h("span", { class: "muted small" }, ` ${s.case_ref || ""} · ${s.region_id}`),
      ),
    ),
  );
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    for (const li of list.children) li.hidden = q && !li.dataset.text.includes(q);
  });
  clear(side).append(h("div", { class: "panel" }, h("h2", {}, `Subjects (${subjects.length})`), filter, list));
}

export async function show(side, subjectId, { from, to } = {}) {
  clear(side).append(spinner(`Loading subject ${subjectId}…`));
  maps.clearMap();
  let subject;
  try {
    subject = await get(`/subjects/${subjectId}`);
  } catch (error) {
    clear(side).append(h("p", { class: "status error" }, error.message));
    return;
  }
  rememberSubjects([subject]);
  const end = to ? new Date(to) : new Date();
  const start = from ? new Date(from) : new Date(end.getTime() - 24 * 3600 * 1000);
  const fromInput = h("input", { type: "datetime-local", id: "track-from", value: localInput(start) });
  const toInput = h("input", { type: "datetime-local", id: "track-to", value: localInput(end) });
  const message = h("p", { class: "status", id: "track-status", hidden: true });
  const zoneList = h("ul", { class: "zone-list", id: "subject-zones" });
  const alertList = h("ul", { class: "alert-list", id: "subject-alerts" });
  const commandPanel = h("div", { id: "subject-commands" });

  function preset(hours) {
    const now = new Date();
    toInput.value = localInput(now);
    fromInput.value = localInput(new Date(now.getTime() - hours * 3600 * 1000));
    load();
  }

  async function load() {
    const a = new Date(fromInput.value);
    // the inputs hold minutes: "to 14:05" includes 14:05:59, so the latest fixes are not cut off
    const b = new Date(new Date(toInput.value).getTime() + 60 * 1000);
    if (!(a < b)) {
      status(message, "'from' must be before 'to'", "error");
      return;
    }
    maps.clearMap();
    status(message, "loading zones and track…", "info");
    try {
      const [zones, track, position] = await Promise.all([
        get("/zones", { query: { subject_id: subject.id, limit: 1000 } }),
        get(`/subjects/${subject.id}/track`, {
          query: { from: a.toISOString(), to: b.toISOString(), reason: "operator console: subject page" },
          onProgress: (bytes) => status(message, `loading track… ${kb(bytes)}`, "info"),
        }),
        get(`/subjects/${subject.id}/position`, { query: { reason: "operator console: subject page" } }).catch((error) => {
          if (error instanceof ApiError && error.status === 404) return null;
          throw error;
        }),
      ]);
      maps.addZones(zones, { onClick: (zone) => (location.hash = `#/zones/${zone.id}`) });
      const fixes = track.features.filter((f) => f.geometry.type === "Point");
      maps.addTrack(fixes, { label: `${subject.name}: ${when(a.toISOString())} – ${when(b.toISOString())}` });
      maps.addLastPosition(position);
      maps.invalidate();
      maps.fit();
      clear(zoneList).append(
        ...(zones.length
          ? zones.map((z) => h("li", {}, h("i", { class: `sw ${z.kind}` }), h("a", { href: `#/zones/${z.id}` }, z.name || `zone ${z.id}`), h("span", { class: "muted small" }, ` ${z.kind}${z.schedule ? " · scheduled" : ""}${z.redacted ? " · protects a victim (details withheld)" : z.geometry ? "" : " · follows the victim's phone"}`)))
          : [h("li", { class: "muted small" }, "No zones of this subject.")]),
      );
      const truncated = track.properties && track.properties.truncated ? " (truncated)" : "";
      status(
        message,
        `${fixes.length} fixes${truncated}; ${zones.length} zone(s); ${position ? `last position ${when(position.ts)} (${age(position.ts)} ago)` : "no last position"}`,
        "ok",
      );
    } catch (error) {
      status(message, error.message, "error");
    }
  }

  const loadButton = h("button", { type: "button", class: "primary", id: "track-load" }, "Show track");
  loadButton.addEventListener("click", load);
  clear(side).append(
    h(
      "div",
      { class: "panel", id: "subject-page", dataset: { subjectId: subject.id } },
      h("h2", {}, subject.name),
      h(
        "div",
        { class: "kvs" },
        h("div", { class: "kv" }, h("span", { class: "k" }, "case"), h("span", { class: "v" }, subject.case_ref || "—")),
        h("div", { class: "kv" }, h("span", { class: "k" }, "region"), h("span", { class: "v" }, subject.region_id)),
        h("div", { class: "kv" }, h("span", { class: "k" }, "time zone"), h("span", { class: "v" }, subject.timezone)),
        subject.groups && subject.groups.length ? h("div", { class: "kv" }, h("span", { class: "k" }, "groups"), h("span", { class: "v" }, subject.groups.join(", "))) : null,
      ),
      h("h3", {}, "Track"),
      h("div", { class: "row" }, h("label", {}, "from ", fromInput), h("label", {}, "to ", toInput)),
      h(
        "div",
        { class: "row" },
        loadButton,
        [6, 24, 24 * 7].map((hours) => h("button", { type: "button", class: "link", onclick: () => preset(hours) }, hours < 48 ? `${hours} h` : `${hours / 24} d`)),
      ),
      message,
      h("h3", {}, "Zones ", h("a", { class: "small", href: `#/zones/new/${subject.id}` }, "draw a zone")),
      zoneList,
      h("h3", {}, "Recent alerts"),
      alertList,
      h("h3", {}, "Device commands"),
      commandPanel,
    ),
  );
  await load();
  showCommands(commandPanel, subject);
  try {
    const alerts = await get("/alerts", { query: { subject_id: subject.id, limit: 20, status: ["open", "acknowledged", "resolved"] } });
    clear(alertList).append(
      ...(alerts.items.length
        ? alerts.items.map((a) => h("li", { class: `sev-${a.severity}` }, h("a", { href: `#/alert/${a.id}` }, humanType(a.type)), h("span", { class: "muted small" }, ` ${a.status} · ${when(a.opened_at)}`)))
        : [h("li", { class: "muted small" }, "No alerts.")]),
    );
  } catch (error) {
    clear(alertList).append(h("li", { class: "status error" }, error.message));
  }
}
