// Drives the console in headless Debian Chromium (playwright-core) through every view that shows
// what an attacker named, for tests/adversarial/test_console_injection.py.
//
// Input: the JSON in DRIVE_CONFIG: url, chromium, node_modules, artifacts, user {username,
// password}, subject_id, zone_id, alert_id, expect {view: [strings shown literally]}, modes.
// Output: one line {"result": {...}}. Each mode is a browser context: "csp" as a browser
// enforces the server's policy, "no-csp" with the policy bypassed (playwright's bypassCSP), to
// show that the page builds text nodes and does not rely on the policy alone.
//
// The payloads' handlers set window.__pwned and fetch /pwned/...; the driver records that flag,
// any request to /pwned, dialogs (alert/confirm), policy violations, page errors and console
// errors, and elements a payload would create, after every view.

import path from "node:path";

import { config, launchBrowser, say } from "./browser.mjs";

const T = 15000;
const result = { screenshots: [], modes: {} };
const browser = await launchBrowser(result);

// Before any script of the page: policy violations are recorded where the driver can read them.
function recordViolations() {
  window.__violations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__violations.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample });
  });
}

async function run(mode) {
  const out = {
    views: {}, pwned_requests: [], dialogs: [], page_errors: [], console_errors: [], tooltips: {},
  };
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 }, bypassCSP: mode === "no-csp" });
  const page = await context.newPage();
  await page.addInitScript(recordViolations);
  page.on("request", (r) => {
    if (/\/pwned/.test(r.url())) out.pwned_requests.push(r.url());
  });
  page.on("dialog", async (dialog) => {
    out.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on("pageerror", (error) => out.page_errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error" && !/Failed to load resource/.test(message.text())) out.console_errors.push(message.text());
  });

  async function shot(name) {
    const file = path.join(config.artifacts, `injection-${mode}-${name}.png`);
    await page.screenshot({ path: file });
    result.screenshots.push(file);
  }

  // After each view: did anything run, and is every expected string there as text?
  async function check(view, selector) {
    const found = await page.evaluate(
      ([sel, expected]) => {
        const root = document.querySelector(sel) || document.body;
        const text = root.textContent || "";
        const values = [...root.querySelectorAll("input, select, textarea")].map((el) => el.value);
        return {
          pwned: window.__pwned ?? null,
          violations: window.__violations || [],
          // what a payload parsed as HTML would have created
          injected: document.querySelectorAll("img[src='x'], [onerror], [onload], iframe, script:not([src])").length,
          scripts: document.querySelectorAll("script").length,
          missing: expected.filter((s) => !text.includes(s) && !values.includes(s)),
        };
      },
      [selector, config.expect[view] || []],
    );
    out.views[view] = found;
  }

  async function tooltip(name, hover) {
    await page.mouse.move(2, 2);
    await page.waitForFunction(() => !document.querySelector(".leaflet-tooltip"), null, { timeout: T }).catch(() => {});
    await hover();
    await page.waitForSelector(".leaflet-tooltip .tw-tip", { timeout: T });
    out.tooltips[name] = await page.evaluate(() => {
      const tip = document.querySelector(".leaflet-tooltip");
      return { text: tip.textContent, elements: [...tip.querySelectorAll("*")].map((el) => el.tagName.toLowerCase()) };
    });
  }

  // a real mouse over the upper part of a zone (its centre may hold the subject's dot)
  const hoverZone = async () => {
    const box = await page.locator(`path.tw-zone-id-${config.zone_id}`).boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height * 0.15, { steps: 4 });
  };

  // 1. log in; the queue: the alert's row (subject's name), the zone's and the dot's tooltips
  await page.goto(`${config.url}/`);
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await page.fill("#login-username", config.user.username);
  await page.fill("#login-password", config.user.password);
  await page.click("#login-submit");
  await page.waitForSelector("#live[data-state='live']", { timeout: T });
  const row = `#queue li[data-alert-id='${config.alert_id}']`;
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.textContent.includes("<"),
    row,
    { timeout: T },
  );
  await page.waitForSelector(`path.tw-zone-id-${config.zone_id}`, { timeout: T });
  await tooltip("queue_zone", hoverZone);
  await shot("queue-zone-tooltip");
  const dot = `.leaflet-positions-pane path.tw-pos[data-subject-id='${config.subject_id}']`;
  await page.waitForSelector(dot, { timeout: T });
  await tooltip("position", () => page.hover(dot, { force: true }));
  await check("queue", "body");
  await shot("queue-position-tooltip");

  // 2. the alert: subject link, notes, the zone and the track on the map
  await page.goto(`${config.url}/#/alert/${config.alert_id}`);
  await page.waitForSelector(`#alert-detail[data-alert-id='${config.alert_id}']`, { timeout: T });
  await page.waitForSelector(".leaflet-overlay-pane svg path.tw-track", { timeout: T });
  await page.waitForSelector(`path.tw-zone-id-${config.zone_id}`, { timeout: T });
  await tooltip("alert_zone", hoverZone);
  await check("alert", "#alert-detail");
  await shot("alert");

  // 3. the subjects list: name and case reference
  await page.goto(`${config.url}/#/subjects`);
  await page.waitForSelector(`#subject-list li[data-subject-id='${config.subject_id}']`, { timeout: T });
  await check("subjects", "#subject-list");
  await shot("subjects");

  // 4. the subject's page: name, case, groups, the zone list; the track's tooltip (the name).
  // The track is a thin line under the fixes' dots: the pointer is put on it by an event at a
  // point of the line, as Leaflet reads it (target and position), not by a mouse move.
  await page.goto(`${config.url}/#/subject/${config.subject_id}`);
  await page.waitForSelector("#track-status.ok", { timeout: T });
  await tooltip("track", () =>
    page.evaluate(() => {
      const line = document.querySelector("path.tw-track");
      const point = line.getPointAtLength(line.getTotalLength() / 2);
      const m = line.getScreenCTM();
      const init = { bubbles: true, clientX: point.x * m.a + point.y * m.c + m.e, clientY: point.x * m.b + point.y * m.d + m.f };
      line.dispatchEvent(new MouseEvent("mouseover", init));
      line.dispatchEvent(new MouseEvent("mousemove", init));
    }),
  );
  await check("subject", "#subject-page");
  await shot("subject");

  // 5. the zone's page: the list, the heading, the form's fields
  await page.goto(`${config.url}/#/zones/${config.zone_id}`);
  await page.waitForSelector("#zone-form", { timeout: T });
  await page.waitForSelector(`#zone-list li[data-zone-id='${config.zone_id}']`, { timeout: T });
  await check("zones", "#side");
  await shot("zones");

  // 6. reports: the region's name in the region picker
  await page.goto(`${config.url}/#/reports`);
  await page.waitForSelector("#report-region option", { state: "attached", timeout: T });
  await check("reports", "#reports");
  out.region_options = await page.$$eval("#report-region option", (options) => options.map((o) => o.textContent));
  await shot("reports");

  out.pwned = await page.evaluate(() => window.__pwned ?? null);
  await context.close();
  return out;
}

try {
  for (const mode of config.modes) result.modes[mode] = await run(mode);
  say({ result });
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) {
      const file = path.join(config.artifacts, "injection-99-failure.png");
      await pages[0].screenshot({ path: file });
      result.screenshots.push(file);
    }
  } catch {
    // the screenshot of a failure is a convenience
  }
  say({ result });
  process.exitCode = 1;
} finally {
  await browser.close();
}
