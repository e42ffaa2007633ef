// Drives the console in headless Debian Chromium with playwright-core, for test_console_e2e.py.
//
// Input: the JSON in DRIVE_CONFIG. Talks with the test over lines of JSON: it writes
// {"wait": "<what>"} when the test must act ("approach": the tag publishes its first fixes over
// MQTT; "alert": it walks into the exclusion zone) and reads the answer from stdin;
// it writes {"result": {...}} at the end, or {"error": "..."} (and exits 1). Every page is
// screenshotted into config.artifacts.

import { createInterface } from "node:readline";
import path from "node:path";

import { config, launchBrowser, say } from "./browser.mjs";

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what, payload = {}) {
  say({ wait: what, ...payload });
  const { value, done } = await lines.next();
  if (done) throw new Error(`the test closed stdin while we waited for ${what}`);
  return JSON.parse(value);
}

const result = { screenshots: [], page_errors: [], console_errors: [], steps: {} };
const T = 15000;
const browser = await launchBrowser(result);

async function shot(page, name) {
  const file = path.join(config.artifacts, `${name}.png`);
  await page.screenshot({ path: file });
  result.screenshots.push(file);
}

async function timed(name, work) {
  const started = Date.now();
  const value = await work();
  result.steps[name] = Date.now() - started;
  return value;
}

async function logIn(page, user) {
  await page.goto(`${config.url}/`);
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await page.fill("#login-username", user.username);
  await page.fill("#login-password", user.password);
  await page.click("#login-submit");
  await page.waitForSelector("#live[data-state='live']", { timeout: T });
  // the login form is gone, the token is in sessionStorage only
  result.token_in_session_storage = await page.evaluate(() => Boolean(sessionStorage.getItem("tagwatch.token")));
  result.token_in_local_storage = await page.evaluate(() => Object.keys(localStorage).length > 0);
}

// Every frame the console's WebSocket receives: proof that an alert came over the feed.
const wsFrames = [];

function watch(page) {
  page.on("websocket", (ws) => {
    if (!/\/alerts\/stream/.test(ws.url())) return;
    ws.on("framereceived", (frame) => {
      try {
        wsFrames.push({ at: Date.now(), data: JSON.parse(String(frame.payload)) });
      } catch {
        // not JSON: not ours
      }
    });
  });
  page.on("pageerror", (error) => result.page_errors.push(String(error)));
  page.on("console", (message) => {
    // a 4xx the page shows on purpose is logged by the browser as a failed resource load
    if (message.type() === "error" && !/Failed to load resource/.test(message.text())) {
      result.console_errors.push(message.text());
    }
  });
}

try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 }, acceptDownloads: true });
  const page = await context.newPage();
  watch(page);

  // 1. a wrong password is refused on the form
  await page.goto(`${config.url}/`);
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await shot(page, "01-login");
  await page.fill("#login-username", config.operator.username);
  await page.fill("#login-password", "not-the-password");
  await page.click("#login-submit");
  await page.waitForSelector("#login-error:not([hidden])", { timeout: T });
  result.wrong_password_message = await page.textContent("#login-error");

  // 2. log in as the operator; the queue goes live, the positions layer reads (no fix yet)
  await timed("login", () => logIn(page, config.operator));
  result.whoami = await page.textContent("#whoami");
  result.reports_tab_hidden = await page.isHidden("a[data-tab='reports']");
  await page.waitForSelector("#positions-count[data-state='live']", { timeout: T });
  result.positions_count_before = await page.textContent("#positions-count");
  result.positions_layer_switch = await page.textContent(".leaflet-control-layers");
  await shot(page, "02-queue");

  // 3. the tag publishes its first fixes over MQTT: its subject appears on the map within a
  // refresh, coloured fresh, with a tooltip; the header counts it
  const marker = `.leaflet-positions-pane path.tw-pos[data-subject-id='${config.subject_id}']`;
  const approach = await ask("approach");
  await timed("position_shown", () => page.waitForSelector(marker, { timeout: T }));
  await page.waitForFunction(
    (n) => document.querySelector("#positions-count")?.dataset.count === String(n),
    approach.subjects,
    { timeout: T },
  );
  const readMarker = () =>
    page.$eval(marker, (el) => ({
      lat: Number(el.dataset.lat),
      lon: Number(el.dataset.lon),
      age_s: Number(el.dataset.age),
      class: el.getAttribute("class"),
      fill: el.getAttribute("fill"),
    }));
  result.position_before = await readMarker();
  result.positions_count = await page.textContent("#positions-count");
  result.positions_markers = await page.$$eval(".leaflet-positions-pane path.tw-pos", (p) => p.length);
  await page.hover(marker);
  await page.waitForSelector(".leaflet-tooltip .pos-tip", { timeout: T });
  result.position_tooltip = await page.textContent(".leaflet-tooltip .pos-tip");
  await shot(page, "03-positions");
  await page.mouse.move(5, 400);

  // 4. the tag walks into the exclusion zone: ingest stores the fixes, the engine raises the
  // alert, and it arrives in the queue over the WebSocket (nothing reads the list meanwhile)
  const listReads = [];
  page.on("request", (r) => {
    if (/\/api\/v1\/alerts(\?|$)/.test(r.url())) listReads.push(r.url());
  });
  const framesBefore = wsFrames.length;
  const { alert_id: alertId } = await ask("alert");
  const row = `#queue li[data-alert-id='${alertId}']`;
  await timed("alert_arrived", () => page.waitForSelector(row, { timeout: T }));
  result.list_reads_while_waiting = listReads.length; // 0: it came over the WebSocket
  result.ws_alert_events = wsFrames
    .slice(framesBefore)
    .filter((f) => f.data.type === "alert")
    .map((f) => ({ alert_id: f.data.alert_id, event: f.data.event, type: f.data.alert && f.data.alert.type }));
  result.queue_order = await page.$$eval("#queue li", (items) => items.map((li) => Number(li.dataset.alertId)));
  result.row_text = await page.textContent(row);
  result.row_severity = await page.getAttribute(row, "data-severity");
  // the positions layer follows the tag into the zone (within a refresh)
  await timed("position_moved", () =>
    page.waitForFunction(
      ([selector, lon]) => Number(document.querySelector(selector)?.dataset.lon) > lon + 1e-4,
      [marker, result.position_before.lon],
      { timeout: T },
    ),
  );
  result.position_after = await readMarker();
  await shot(page, "04-queue-live");

  // 5. open it: the map shows the zone, the track, the accuracy circles and the last position
  await page.click(row);
  await page.waitForSelector(`#alert-detail[data-alert-id='${alertId}']`, { timeout: T });
  await page.waitForSelector(".leaflet-overlay-pane svg path.tw-track", { timeout: T });
  result.map = await page.evaluate(() => ({
    zones: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-zone").length,
    exclusion_zones: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-zone-exclusion").length,
    tracks: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-track").length,
    accuracy_circles: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-acc").length,
    fixes: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-fix").length,
    last_position: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-last").length,
    alert_marker: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-alert").length,
    track_d: (document.querySelector("path.tw-track") || {}).getAttribute?.("d") || "",
    tiles: document.querySelectorAll("img.leaflet-tile").length,
  }));
  result.detail_text = await page.textContent("#alert-detail");
  await shot(page, "05-alert-detail");

  // 6. acknowledge: the detail and the queue row change
  await page.click("#btn-acknowledge");
  // the feed may turn the pill before the action's answer is in: wait for the detail read
  // after the answer
  await page.waitForSelector(`#alert-detail[data-alert-id='${alertId}'][data-status='acknowledged']`, { timeout: T });
  await page.waitForSelector("#alert-status.acknowledged", { timeout: T });
  await page.waitForSelector(`${row}[data-status='acknowledged']`, { timeout: T });
  result.after_ack_status = await page.textContent("#alert-status");
  // the WebSocket can turn the status before the action's own answer is shown: wait for it
  await page.waitForFunction(
    () => {
      const text = (document.querySelector("#alert-action-status")?.textContent || "").trim();
      return text.length > 0 && !text.startsWith("working");
    },
    null,
    { timeout: T },
  );
  result.after_ack_message = await page.textContent("#alert-action-status");
  await shot(page, "06-acknowledged");

  // 7. resolving without an outcome is refused; the reason is shown
  await page.click("#btn-resolve");
  await page.waitForSelector("#alert-action-status.error", { timeout: T });
  result.resolve_refusal = await page.textContent("#alert-action-status");
  // with an outcome and a note it resolves; a note is added after
  await page.selectOption("#resolve-outcome", "false_alarm");
  await page.fill("#resolve-note", "drift near the boundary, checked with the subject");
  await page.click("#btn-resolve");
  await page.waitForSelector(`#alert-detail[data-alert-id='${alertId}'][data-status='resolved']`, { timeout: T });
  await page.waitForSelector("#alert-status.resolved", { timeout: T });
  await page.fill("#note-body", "closed from the console test");
  await page.click("#btn-note");
  await page.waitForFunction(() => (document.querySelector("#alert-notes") || {}).textContent?.includes("closed from the console test"), null, { timeout: T });
  result.notes_text = await page.textContent("#alert-notes");
  result.history_text = await page.textContent("#alert-history");
  result.resolved_row_in_queue = await page.$$eval(row, (items) => items.length);
  await shot(page, "07-resolved");

  // 8. back on the queue, a click on the subject's dot opens its page: zones and track over a
  // chosen range
  await page.goto(`${config.url}/#/queue`);
  await page.waitForSelector(marker, { timeout: T });
  await page.click(marker);
  await page.waitForFunction((id) => location.hash === `#/subject/${id}`, config.subject_id, { timeout: T });
  result.positions_layer_left_with_the_queue = await page.$$eval(marker, (p) => p.length) === 0;
  await page.waitForSelector("#subject-page", { timeout: T });
  await page.waitForSelector("#track-status.ok", { timeout: T });
  result.subject_map = await page.evaluate(() => ({
    zones: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-zone").length,
    tracks: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-track").length,
    last_position: document.querySelectorAll(".leaflet-overlay-pane svg path.tw-last").length,
  }));
  result.subject_status = await page.textContent("#track-status");
  // a range with nothing in it: the track disappears
  await page.fill("#track-from", "2020-01-01T00:00");
  await page.fill("#track-to", "2020-01-02T00:00");
  await page.click("#track-load");
  await page.waitForFunction(() => /^0 fixes/.test(document.querySelector("#track-status")?.textContent || ""), null, { timeout: T });
  result.empty_range_tracks = await page.$$eval(".leaflet-overlay-pane svg path.tw-track", (p) => p.length);
  await page.click("button.link >> text='24 h'");
  await page.waitForSelector(".leaflet-overlay-pane svg path.tw-track", { timeout: T });
  await shot(page, "08-subject");
  // the subject's device and its commands: an operator asks it to report now; the command is
  // listed with its state (text, no markup)
  await page.waitForSelector("#subject-commands ul.command-list", { timeout: T });
  await page.click("#subject-commands button.link >> text='locate now'");
  await page.waitForSelector("#subject-commands li.command", { timeout: T });
  result.subject_commands = await page.$$eval("#subject-commands li.command", (items) =>
    items.map((li) => ({ state: li.dataset.state, text: li.textContent })),
  );

  // 9. an operator may not draw zones
  await page.goto(`${config.url}/#/zones/new/${config.subject_id}`);
  await page.waitForSelector("#zone-form", { timeout: T });
  result.operator_zone_save_disabled = await page.isDisabled("#zone-save");

  // 10. a supervisor draws a zone: a bow-tie is refused with the geofence core's reason, a square is stored
  await page.click("#logout");
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await logIn(page, config.supervisor);
  await page.goto(`${config.url}/#/zones/new/${config.subject_id}`);
  await page.waitForSelector("#zone-form", { timeout: T });
  await page.waitForSelector("#zone-hint", { timeout: T });
  const box = await page.locator("#map").boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const click = (dx, dy) => page.mouse.click(cx + dx, cy + dy);
  await page.fill("#zone-name", "console test bow-tie");
  for (const [dx, dy] of [[-60, -60], [60, 60], [60, -60], [-60, 60]]) await click(dx, dy);
  result.draft_vertices = await page.$$eval(".tw-vertex", (v) => v.length);
  await page.click("#zone-save");
  await page.waitForSelector("#zone-status.error", { timeout: T });
  result.bowtie_refusal = await page.textContent("#zone-status");
  await shot(page, "09-zone-refused");
  await page.click("#zone-clear");
  for (const [dx, dy] of [[-80, -50], [80, -50], [80, 50], [-80, 50]]) await click(dx, dy);
  await page.fill("#zone-name", "console test square");
  await page.selectOption("#zone-kind", "curfew");
  await page.click("#zone-save");
  await page.waitForFunction(() => /^#\/zones\/\d+$/.test(location.hash), null, { timeout: T });
  result.saved_zone_hash = await page.evaluate(() => location.hash);
  await page.waitForSelector("#zone-list", { timeout: T });
  await shot(page, "10-zone-saved");

  // 11. reports: the compliance figures, the chart and the CSV download
  await page.goto(`${config.url}/#/reports`);
  await page.waitForSelector("#reports", { timeout: T });
  await page.waitForFunction(
    () => document.querySelector("#violations-chart") || document.querySelector("#report-status.error"),
    null,
    { timeout: T },
  );
  result.report_status = (await page.$("#report-status.error")) ? await page.textContent("#report-status") : null;
  result.chart_bars = await page.$$eval("#violations-chart rect.chart-bar", (r) => r.length);
  result.chart_labels = await page.$$eval("#violations-chart text.chart-label", (t) => t.map((x) => x.textContent));
  if (await page.$("#report-csv")) {
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: T }), page.click("#report-csv")]);
    result.csv_filename = download.suggestedFilename();
    const file = path.join(config.artifacts, result.csv_filename);
    await download.saveAs(file);
    result.csv_path = file;
  }
  await shot(page, "11-reports");

  // 12. the absconder template of last month: the table per region and national, the chart,
  // and the PDF download (fetched with the token, saved through a Blob)
  await page.waitForSelector("#absconder-template", { timeout: T });
  await page.waitForSelector("#absconder-chart", { timeout: T });
  const template = await page.evaluate(() => {
    const table = document.querySelector("#absconder-template");
    const row = (key) => [...table.querySelectorAll(`tr[data-figure='${key}'] td.num`)].map((td) => td.textContent);
    return {
      columns: [...table.querySelectorAll("thead th.num")].map((th) => th.textContent),
      new: row("new"),
      traced: row("traced"),
      chart_bars: document.querySelectorAll("#absconder-chart rect.tmpl-new, #absconder-chart rect.tmpl-traced").length,
    };
  });
  const [pdf] = await Promise.all([page.waitForEvent("download", { timeout: T }), page.click("#tmpl-pdf")]);
  template.pdf_filename = pdf.suggestedFilename();
  template.pdf_path = path.join(config.artifacts, template.pdf_filename);
  await pdf.saveAs(template.pdf_path);
  result.template = template;
  await page.$eval("#absconder-template", (el) => el.scrollIntoView());
  await shot(page, "12-absconder-template");
  say({ result });
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await shot(pages[0], "99-failure");
  } catch {
    // the screenshot of a failure is a convenience
  }
  say({ result });
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
