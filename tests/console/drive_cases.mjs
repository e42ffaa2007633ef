// Drives the tracer's cases page at a phone's viewport, for test_console_cases.py.
//
// Input: DRIVE_CONFIG (url, chromium, node_modules, artifacts, tracer {username, password},
// case_id, subject_name). A tracer logs in on a 390 x 844 screen, lands on his open cases,
// opens the one routed to his unit, sees the photo, the trail and the last known position,
// logs a trace attempt, marks the case traced, and fills "Case details" (officer, police case
// and warrant numbers): saves, reloads and reads them back; an officer too long for the API
// shows its 422 reason. Writes {"result": {...}}; every step is
// screenshotted into config.artifacts (cases-*.png).

import path from "node:path";

import { config, launchBrowser, say } from "./browser.mjs";

const result = { screenshots: [], page_errors: [], console_errors: [], steps: {} };
const T = 15000;
const browser = await launchBrowser(result);

async function shot(page, name) {
  const file = path.join(config.artifacts, `cases-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
}

const fits = (page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);

try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.on("pageerror", (error) => result.page_errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") result.console_errors.push(message.text());
  });
  await page.goto(`${config.url}/`);
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await page.fill("#login-username", config.tracer.username);
  await page.fill("#login-password", config.tracer.password);
  await page.click("#login-submit");

  // a tracer starts on his cases
  await page.waitForSelector(`#case-list li[data-case-id="${config.case_id}"]`, { timeout: T });
  result.landed_on = await page.evaluate(() => document.body.dataset.view);
  result.list_text = await page.textContent("#case-list");
  result.list_fits = await fits(page);
  result.list_markers = await page.locator(".tw-last").count();
  await shot(page, "1-list");

  await page.tap(`#case-list li[data-case-id="${config.case_id}"] a`);
  await page.waitForSelector("#case-detail", { timeout: T });
  await page.waitForSelector("#case-photo img", { timeout: T });
  await page.waitForFunction(() => {
    const img = document.querySelector("#case-photo img");
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: T });
  result.photo_src_scheme = await page.evaluate(() => document.querySelector("#case-photo img").src.split(":")[0]);
  result.name = await page.textContent("#case-name");
  result.facts = await page.textContent(".case-facts");
  result.track = await page.locator(".tw-track").count();
  result.trail_fixes = await page.locator(".tw-fix").count();
  result.last_known = await page.locator(".tw-last").count();
  result.detail_fits = await fits(page);
  const mapBox = await page.locator("#map").boundingBox();
  result.map_box = mapBox;
  // the map glides to the trail: let it settle before the picture
  await page.waitForFunction(() => !document.querySelector(".leaflet-zoom-anim, .leaflet-pan-anim"), null, { timeout: T });
  await page.waitForTimeout(350);
  await shot(page, "2-case");

  await page.selectOption("#attempt-method", "home visit");
  await page.fill("#attempt-place", "14 Acacia Street, Musina");
  await page.fill("#attempt-outcome", "Not home; his mother says he left for the border on Friday.");
  await page.tap("#attempt-submit");
  await page.waitForFunction(() => document.querySelectorAll("#attempt-list li").length === 1, null, { timeout: T });
  await page.waitForSelector("#case-status.ok", { timeout: T });
  result.attempt_text = await page.textContent("#attempt-list");
  await shot(page, "3-attempt");

  await page.selectOption("#trace-outcome", "arrested");
  await page.tap("#trace-submit");
  await page.waitForSelector('#case-detail[data-status="traced"]', { timeout: T });
  result.traced_facts = await page.textContent(".case-facts");
  result.trace_form_gone = (await page.locator("#trace-form").count()) === 0;
  await shot(page, "4-traced");

  result.unit_select = await page.locator("#details-unit").count();
  await page.fill("#details-officer", "Sgt T. Mokoena");
  await page.fill("#details-police-case", "CAS 118/11/2026");
  await page.fill("#details-warrant", "W-2026-0412");
  await page.tap("#details-submit");
  await page.waitForFunction(() => /saved/.test(document.querySelector("#case-status.ok")?.textContent || ""), null, { timeout: T });
  await page.reload();
  await page.waitForSelector("#details-form", { timeout: T });
  result.details_facts = await page.textContent(".case-facts");
  result.details_values = await page.evaluate(() =>
    ["officer", "police-case", "warrant"].map((k) => document.getElementById(`details-${k}`).value),
  );
  result.details_fits = await fits(page);
  await page.locator("#details-form").scrollIntoViewIfNeeded();
  await shot(page, "5-details");
  // maxlength stops a typist, not a script: the API's 422 reason is shown
  await page.evaluate(() => (document.getElementById("details-officer").value = "x".repeat(201)));
  await page.tap("#details-submit");
  await page.waitForSelector("#case-status.error", { timeout: T });
  result.details_error = await page.textContent("#case-status");
  await context.close();
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
  say({ result });
}
