// Reports: monthly compliance (figures, a bar chart of violations by type, CSV download),
// absconders, and the absconder reporting template (a table per region and national, a chart
// of the month day by day, CSV and PDF downloads). The report routes may be missing on a
// server: a 404 says "not available". Operators see the template only.

import { get, request, ApiError, may } from "./api.js";
import { h, clear, status, spinner, humanType, kb } from "./ui.js";
import * as maps from "./map.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// {type: n} | {type: {count: n, ...}} | [{type, count}] -> Map(type -> n)
function byType(value) {
  const out = new Map();
  if (!value || typeof value !== "object") return out;
  const count = (v) => (typeof v === "number" ? v : v && typeof v === "object" ? Number(v.count ?? v.violations ?? v.alerts ?? v.total ?? 0) : 0);
  const pairs = Array.isArray(value) ? value.map((v) => [v.type ?? v.name ?? "?", count(v)]) : Object.entries(value).map(([k, v]) => [k, count(v)]);
  for (const [k, n] of pairs) if (Number.isFinite(n)) out.set(k, n);
  return out;
}

// Rows [type, violations, alerts] of the types that had any, most violations first.
export function violationRows(report) {
  const violations = byType(report.violations_by_type);
  const alerts = byType(report.alerts_by_type);
  const types = new Set([...violations.keys(), ...alerts.keys()]);
  return [...types]
    .map((t) => [t, violations.get(t) || 0, alerts.get(t) || 0])
    .filter(([, v, a]) => v > 0 || a > 0)
    .sort((x, y) => y[1] - x[1] || y[2] - x[2] || x[0].localeCompare(y[0]));
}

// Horizontal bars: violations (solid, the type's colour) over alerts raised (pale).
export function barChart(rows, { title = "", width = 500 } = {}) {
  const bar = 12;
  const group = 2 * bar + 10;
  const labelWidth = 170;
  const height = Math.max(1, rows.length) * group + 34;
  const max = Math.max(1, ...rows.map(([, v, a]) => Math.max(v, a)));
  const scale = (n) => ((width - labelWidth - 50) * n) / max;
  const chart = svg("svg", { class: "chart", id: "violations-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
  chart.append(svg("title", {}, title));
  if (!rows.length) {
    chart.append(svg("text", { x: 10, y: 20, class: "chart-empty" }, "no alerts in this month"));
    return chart;
  }
  rows.forEach(([type, violations, alerts], i) => {
    const y = 6 + i * group;
    chart.append(
      svg("text", { x: labelWidth - 8, y: y + bar + 4, "text-anchor": "end", class: "chart-label" }, humanType(type)),
      svg("rect", { x: labelWidth, y, width: Math.max(1, scale(violations)), height: bar, class: `chart-bar violations bar-${type}`, rx: 2 }),
      svg("text", { x: labelWidth + scale(violations) + 5, y: y + bar - 2, class: "chart-value" }, String(violations)),
      svg("rect", { x: labelWidth, y: y + bar + 2, width: Math.max(1, scale(alerts)), height: bar, class: `chart-bar alerts bar-${type}`, rx: 2 }),
      svg("text", { x: labelWidth + scale(alerts) + 5, y: y + 2 * bar, class: "chart-value muted-value" }, String(alerts)),
    );
  });
  const ly = height - 14;
  chart.append(
    svg("rect", { x: labelWidth, y: ly, width: 12, height: 10, class: "chart-bar violations" }),
    svg("text", { x: labelWidth + 16, y: ly + 9, class: "chart-value" }, "violations"),
    svg("rect", { x: labelWidth + 100, y: ly, width: 12, height: 10, class: "chart-bar alerts" }),
    svg("text", { x: labelWidth + 116, y: ly + 9, class: "chart-value" }, "alerts raised (false alarms included)"),
  );
  return chart;
}

// FastAPI's answer for a route that does not exist (a report route may not be deployed yet)
function unavailable(error) {
  return error instanceof ApiError && error.status === 404 && error.message === "Not Found";
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function figure(label, value) {
  let shown = value;
  if (label.endsWith("_s")) {
    shown = duration(value);
    label = label.slice(0, -2);
  } else if (label.endsWith("_share")) shown = `${(value * 100).toFixed(1)} %`;
  else if (typeof value === "number" && !Number.isInteger(value)) shown = value.toFixed(value < 1 ? 3 : 1);
  return h("div", { class: "figure" }, h("div", { class: "figure-value" }, String(shown)), h("div", { class: "figure-label" }, humanType(label)));
}

function toCsv(rows) {
  if (!rows.length) return "";
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v) => {
    const text = v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [columns.join(","), ...rows.map((r) => columns.map((c) => cell(r[c])).join(","))].join("\n") + "\n";
}

// The server's CSV when it has one; otherwise the JSON flattened into CSV here.
async function downloadCsv(path, query, filename, fallbackRows, message) {
  try {
    status(message, "preparing CSV…", "info");
    const { data, type } = await request("GET", path, {
      query: { ...query, format: "csv" },
      accept: "text/csv",
      onProgress: (bytes) => status(message, `downloading CSV… ${kb(bytes)}`, "info"),
    });
    const text = type.includes("csv") ? data : toCsv(fallbackRows());
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const link = h("a", { href: url, download: filename, id: "csv-link" }, `download ${filename}`);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status(message, `${filename} downloaded`, "ok");
  } catch (error) {
    status(message, error.message, "error");
  }
}

// The template's rows, as the server's PDF prints them (alerts/absconder_template.py ROWS).
const CAUSES = ["strap_tamper", "silence", "inclusion_exit", "declared"];
const OUTCOMES = ["returned_to_supervision", "arrested", "deceased", "other"];
export const TEMPLATE_ROWS = [
  ["opening_balance", "Opening balance (outstanding at month start)"],
  ["new", "New absconders"],
  ...CAUSES.map((k) => [`new_by_cause.${k}`, `new: ${k.replace(/_/g, " ")}`, true]),
  ["traced", "Traced"],
  ...OUTCOMES.map((k) => [`traced_by_outcome.${k}`, `traced: ${k.replace(/_/g, " ")}`, true]),
  ["closed", "Cases closed"],
  ["closing_balance", "Closing balance (outstanding at month end)"],
  ["days_at_large_median", "Days at large, median (traced in month)"],
  ["days_at_large_mean", "Days at large, mean (traced in month)"],
  ["days_outstanding_median", "Days outstanding, median (closing balance)"],
  ["days_outstanding_mean", "Days outstanding, mean (closing balance)"],
  ["monitored_subjects", "Monitored subjects"],
  ["absconding_rate_per_1000", "Absconding rate per 1,000 monitored"],
];

function templateValue(column, key) {
  const [outer, inner] = key.split(".");
  const found = column[outer];
  const value = inner ? found && found[inner] : found;
  if (value == null) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? String(Math.round(value * 1000) / 1000) : value.toLocaleString("en");
}

// The template as a table: a row per figure, a column per region, then National.
export function templateTable(template) {
  const columns = [...template.regions, template.national];
  const heading = (c) => (c.region == null ? "National" : c.name && c.name !== c.region ? `${c.name} (${c.region})` : c.region);
  return h(
    "table",
    { class: "table template-table", id: "absconder-template" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), columns.map((c) => h("th", { class: "num" }, heading(c))))),
    h(
      "tbody",
      {},
      TEMPLATE_ROWS.map(([key, label, sub]) =>
        h("tr", { class: sub ? "sub" : null, dataset: { figure: key } }, h("td", {}, label), columns.map((c) => h("td", { class: "num" }, String(templateValue(c, key))))),
      ),
    ),
  );
}

// Day by day: new (orange) and traced (green) bars, the outstanding balance as a step line.
export function templateChart(column, { title = "", width = 560, height = 260 } = {}) {
  const daily = column.daily || [];
  const left = 34;
  const bottom = height - 26;
  const top = 26;
  const plotWidth = width - left - 10;
  const max = Math.max(1, ...daily.map((d) => Math.max(d.new, d.traced, d.outstanding)));
  const y = (n) => bottom - ((bottom - top) * n) / (max * 1.1);
  const step = plotWidth / Math.max(1, daily.length);
  const chart = svg("svg", { class: "chart", id: "absconder-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
  chart.append(svg("title", {}, title));
  for (const tick of [0, Math.round(max / 2), max]) {
    chart.append(svg("line", { x1: left, x2: width - 10, y1: y(tick), y2: y(tick), class: "chart-grid" }), svg("text", { x: left - 4, y: y(tick) + 4, "text-anchor": "end", class: "chart-value" }, String(tick)));
  }
  daily.forEach((d, i) => {
    const x = left + i * step;
    const bar = Math.max(1, step * 0.38);
    if (d.new) chart.append(svg("rect", { x: x + step * 0.1, y: y(d.new), width: bar, height: bottom - y(d.new), class: "tmpl-bar tmpl-new" }));
    if (d.traced) chart.append(svg("rect", { x: x + step * 0.1 + bar, y: y(d.traced), width: bar, height: bottom - y(d.traced), class: "tmpl-bar tmpl-traced" }));
    if ((i + 1) % 5 === 0) chart.append(svg("text", { x: x + step / 2, y: bottom + 14, "text-anchor": "middle", class: "chart-value" }, String(i + 1)));
  });
  if (daily.length) {
    const points = daily.flatMap((d, i) => [`${left + i * step},${y(d.outstanding)}`, `${left + (i + 1) * step},${y(d.outstanding)}`]);
    chart.append(svg("polyline", { points: points.join(" "), class: "tmpl-outstanding" }));
  } else {
    chart.append(svg("text", { x: left + 10, y: top + 20, class: "chart-empty" }, "the month has not begun"));
  }
  chart.append(svg("line", { x1: left, x2: width - 10, y1: bottom, y2: bottom, class: "chart-axis" }));
  const legend = [["tmpl-new", "new"], ["tmpl-traced", "traced"], ["tmpl-outstanding-key", "outstanding (end of day)"]];
  legend.forEach(([cls, label], i) => {
    chart.append(svg("rect", { x: left + i * 120, y: 6, width: 12, height: 10, class: `tmpl-bar ${cls}` }), svg("text", { x: left + i * 120 + 16, y: 15, class: "chart-value" }, label));
  });
  return chart;
}

// A binary answer (the PDF) saved through a link to a Blob: the API wants the bearer token,
// which a plain link would not carry.
async function downloadBinary(path, query, accept, filename, message) {
  try {
    status(message, "preparing the PDF…", "info");
    const { data } = await request("GET", path, { query, accept, binary: true });
    const url = URL.createObjectURL(data);
    const link = h("a", { href: url, download: filename, id: "pdf-link" }, `download ${filename}`);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status(message, `${filename} downloaded`, "ok");
  } catch (error) {
    status(message, error.message, "error");
  }
}

function lastMonth() {
  const now = new Date();
  const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  return `${month.getUTCFullYear()}-${String(month.getUTCMonth() + 1).padStart(2, "0")}`;
}

export async function show(side) {
  maps.clearMap();
  let regions = [];
  try {
    regions = await get("/regions");
  } catch {
    // the report works without the list: the user types nothing and gets all their regions
  }
  const now = new Date();
  const region = h("select", { id: "report-region" }, regions.map((r) => h("option", { value: r.id }, r.name && r.name !== r.id ? `${r.name} (${r.id})` : r.id)));
  const month = h("input", { type: "month", id: "report-month", value: `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}` });
  const output = h("div", { id: "report-output" });
  const message = h("p", { class: "status", id: "report-status", hidden: true });
  const loadButton = h("button", { type: "button", class: "primary", id: "report-load" }, "Show compliance");
  const absFrom = h("input", { type: "date", id: "abs-from", value: `${month.value}-01` });
  const absTo = h("input", { type: "date", id: "abs-to", value: now.toISOString().slice(0, 10) });
  const absButton = h("button", { type: "button", id: "abs-load" }, "Show absconders");
  const absOutput = h("div", { id: "abs-output" });
  const absMessage = h("p", { class: "status", id: "abs-status", hidden: true });

  async function loadCompliance() {
    const query = { region: region.value || undefined, month: month.value };
    if (!region.value) {
      status(message, "Choose a region: you have none to report on.", "error");
      return;
    }
    clear(output).append(spinner("Computing the compliance report…"));
    status(message, null);
    let report;
    try {
      report = await get("/reports/compliance", { query, onProgress: (bytes) => status(message, `receiving… ${kb(bytes)}`, "info") });
    } catch (error) {
      clear(output);
      status(message, unavailable(error) ? "Reports are not available on this server." : error.message, "error");
      return;
    }
    status(message, null);
    const figures = Object.entries(report).filter(([, v]) => typeof v === "number");
    const rows = violationRows(report);
    const csvButton = h("button", { type: "button", id: "report-csv" }, "Download CSV");
    csvButton.addEventListener("click", () =>
      downloadCsv("/reports/compliance", query, `compliance-${region.value || "all"}-${month.value}.csv`, () => [Object.fromEntries(Object.entries(report).map(([k, v]) => [k, v]))], message),
    );
    clear(output).append(
      h("div", { class: "figures" }, figures.map(([k, v]) => figure(k, v))),
      h("h3", {}, "Violations by type"),
      barChart(rows, { title: `violations by type, ${month.value}` }),
      report.complete === false ? h("p", { class: "muted small" }, "The month is not over: figures so far.") : null,
      h("div", { class: "row" }, csvButton),
    );
  }

  async function loadAbsconders() {
    const query = { region: region.value || undefined, from: new Date(absFrom.value).toISOString(), to: new Date(absTo.value).toISOString() };
    clear(absOutput).append(spinner("Loading absconders…"));
    let report;
    try {
      report = await get("/reports/absconders", { query });
    } catch (error) {
      clear(absOutput);
      status(absMessage, unavailable(error) ? "Reports are not available on this server." : error.message, "error");
      return;
    }
    status(absMessage, null);
    const rows = Array.isArray(report) ? report : report.items || report.rows || report.absconders || [];
    const columns = rows.length ? Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object" || rows[0][k] === null) : [];
    const csvButton = h("button", { type: "button", id: "abs-csv" }, "Download CSV");
    csvButton.addEventListener("click", () => downloadCsv("/reports/absconders", query, `absconders-${region.value || "all"}.csv`, () => rows, absMessage));
    clear(absOutput).append(
      rows.length
        ? h("table", { class: "table" }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, humanType(c))))), h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, r[c] == null ? "" : String(r[c])))))))
        : h("p", { class: "muted" }, "No absconders in this period."),
      h("div", { class: "row" }, csvButton),
    );
  }

  const tmplMonth = h("input", { type: "month", id: "tmpl-month", value: lastMonth() });
  const tmplRegion = h("select", { id: "tmpl-region" }, h("option", { value: "" }, "all my regions"), regions.map((r) => h("option", { value: r.id }, r.name && r.name !== r.id ? `${r.name} (${r.id})` : r.id)));
  const tmplButton = h("button", { type: "button", id: "tmpl-load" }, "Show template");
  const tmplOutput = h("div", { id: "tmpl-output" });
  const tmplMessage = h("p", { class: "status", id: "tmpl-status", hidden: true });

  async function loadTemplate() {
    const path = "/reports/absconders/monthly";
    const query = { month: tmplMonth.value, region: tmplRegion.value || undefined };
    clear(tmplOutput).append(spinner("Computing the absconder template…"));
    status(tmplMessage, null);
    let template;
    try {
      template = await get(path, { query });
    } catch (error) {
      clear(tmplOutput);
      status(tmplMessage, unavailable(error) ? "The absconder template is not available on this server." : error.message, "error");
      return;
    }
    const columns = [...template.regions, template.national];
    const chartOf = h("select", { id: "tmpl-chart-of" }, columns.map((c, i) => h("option", { value: String(i), selected: c.region == null }, c.region == null ? "National" : c.name || c.region)));
    const chartBox = h("div", { id: "tmpl-chart" }, templateChart(template.national, { title: `new, traced and outstanding, ${template.month}` }));
    chartOf.addEventListener("change", () => {
      const column = columns[Number(chartOf.value)];
      clear(chartBox).append(templateChart(column, { title: `new, traced and outstanding, ${template.month}` }));
    });
    const name = `absconders-monthly-${template.month}${query.region ? `-${query.region}` : ""}`;
    const csvButton = h("button", { type: "button", id: "tmpl-csv" }, "Download CSV");
    csvButton.addEventListener("click", () => downloadCsv(path, query, `${name}.csv`, () => columns, tmplMessage));
    const pdfButton = h("button", { type: "button", id: "tmpl-pdf" }, "Download PDF");
    pdfButton.addEventListener("click", () => downloadBinary(path, { ...query, format: "pdf" }, "application/pdf", `${name}.pdf`, tmplMessage));
    clear(tmplOutput).append(
      h("p", { class: "muted small" }, `${template.month}, months in ${template.timezone}; national: ${template.national.scope} (${template.national.regions_included.length} regions).`),
      template.complete === false ? h("p", { class: "muted small" }, "The month is not over: figures so far.") : null,
      h("div", { class: "template-scroll" }, templateTable(template)),
      h("div", { class: "row" }, h("label", {}, "Chart of ", chartOf)),
      chartBox,
      h("div", { class: "row" }, csvButton, pdfButton),
    );
  }

  loadButton.addEventListener("click", loadCompliance);
  absButton.addEventListener("click", loadAbsconders);
  tmplButton.addEventListener("click", loadTemplate);
  const supervising = may("admin", "supervisor");
  const template = [
    h("h2", {}, "Absconder template"),
    h("div", { class: "row" }, h("label", {}, "Month ", tmplMonth), h("label", {}, "Region ", tmplRegion), tmplButton),
    tmplMessage,
    tmplOutput,
  ];
  if (!supervising) {
    clear(side).append(h("div", { class: "panel", id: "reports" }, ...template));
    await loadTemplate();
    return;
  }
  clear(side).append(
    h(
      "div",
      { class: "panel", id: "reports" },
      ...template,
      h("h2", {}, "Compliance"),
      h("div", { class: "row" }, h("label", {}, "Region ", region), h("label", {}, "Month ", month), loadButton),
      message,
      output,
      h("h2", {}, "Absconders"),
      h("div", { class: "row" }, h("label", {}, "from ", absFrom), h("label", {}, "to ", absTo), absButton),
      absMessage,
      absOutput,
    ),
  );
  await Promise.all([loadTemplate(), loadCompliance()]);
}
