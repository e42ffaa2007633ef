// Drives the console's "Regions & offices" page in headless Debian Chromium (playwright-core),
// for test_places_console.py.
//
// Input: the JSON in DRIVE_CONFIG: url, chromium, node_modules, artifacts, admin {username,
// password}, supervisor (the same), region, centre [lon, lat]. Output: one line
// {"result": {...}}; every step is screenshotted into config.artifacts as places-*.png.
//
// The admin centres the map on the region, draws a bow-tie as its boundary (refused: the
// geofence core's reason is shown), then a square (saved); clicks the map inside it to place an
// office, types a 5 km service radius, saves, adds a tracing unit; places a second office that
// serves a drawn polygon (a bow-tie refused first); reloads the page and reads what the map and
// the list show.

import path from "node:path";

import { config, launchBrowser, say } from "./browser.mjs";

const T = 10000;
const result = { screenshots: [], page_errors: [], console_errors: [], steps: {} };
const browser = await launchBrowser(result);

try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => result.page_errors.push(String(error)));
  page.on("console", (message) => {
    // a 4xx the page shows on purpose is logged by the browser as a failed resource load
    if (message.type() === "error" && !/Failed to load resource/.test(message.text())) result.console_errors.push(message.text());
  });
  const shot = async (name) => {
    const file = path.join(config.artifacts, `places-${name}.png`);
    await page.screenshot({ path: file });
    result.screenshots.push(file);
  };
  const started = Date.now();

  await page.goto(`${config.url}/`);
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await page.fill("#login-username", config.admin.username);
  await page.fill("#login-password", config.admin.password);
  await page.click("#login-submit");
  await page.waitForSelector("body[data-logged-in='true']", { timeout: T });
  result.places_tab_visible = await page.isVisible("a[data-tab='places']");
  await page.click("a[data-tab='places']");
  await page.waitForSelector("#places #region-list", { timeout: T });

  // centre the map on the region (offline there are no tiles to find it by)
  await page.fill("#places-goto", `${config.centre[0]}, ${config.centre[1]}`);
  await page.click("#places-goto-go");
  const box = await page.locator("#map").boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const click = (dx, dy) => page.mouse.click(cx + dx, cy + dy);

  // the region's boundary: a bow-tie first
  await page.click(`#region-list li[data-region-id='${config.region}'] > div > a`);
  await page.waitForSelector(`#region-form[data-region-id='${config.region}']`, { timeout: T });
  for (const [dx, dy] of [[-120, -90], [120, 90], [120, -90], [-120, 90]]) await click(dx, dy);
  result.bowtie_corners = await page.$$eval(".tw-vertex", (v) => v.length);
  await page.click("#region-save");
  await page.waitForSelector("#region-status.error", { timeout: T });
  result.bowtie_refusal = await page.textContent("#region-status");
  result.bowtie_reasons = await page.$$eval("#region-status ul.reasons li", (items) => items.map((li) => li.textContent));
  await shot("01-boundary-refused");

  // ... then a square
  await page.click("#region-clear");
  for (const [dx, dy] of [[-160, -120], [160, -120], [160, 120], [-160, 120]]) await click(dx, dy);
  result.region_hint = await page.textContent("#region-hint");
  await shot("02-boundary-drawn");
  await page.click("#region-save");
  await page.waitForSelector("#places-status.ok", { timeout: T });
  result.region_saved = await page.textContent("#places-status");
  await page.waitForSelector(`path.tw-region-id-${config.region}`, { timeout: T });

  // an office: a click inside the region places it; a typed radius is its service area
  await click(20, 10);
  await page.waitForSelector("#office-form[data-office-id='new']", { timeout: T });
  result.office_region_proposed = await page.inputValue("#office-region");
  await page.fill("#office-name", "Kimberley community corrections");
  await page.fill("#office-radius", "5000");
  await page.waitForSelector("path.tw-service-draft", { timeout: T });
  await shot("03-office-drawn");
  await page.click("#office-save");
  await page.waitForSelector("#office-status.ok", { timeout: T });
  result.office_saved = await page.textContent("#office-status");
  result.office_hash = await page.evaluate(() => location.hash);

  // a tracing unit works from it
  await page.fill("#unit-name", "Tracing team North");
  await page.click("#unit-add");
  await page.waitForSelector("#unit-list li", { timeout: T });
  result.units_listed = await page.$$eval("#unit-list li .unit-name", (items) => items.map((li) => li.textContent));
  await shot("04-unit-attached");

  // a second office serves a drawn polygon: a bow-tie is refused with the core's reason, a
  // square around the office is saved
  await page.click("#office-form a[href='#/places']");
  await page.waitForSelector("#office-new", { timeout: T });
  await click(-110, -70);
  await page.waitForSelector("#office-form[data-office-id='new']", { timeout: T });
  await page.fill("#office-name", "Satellite office");
  await page.check("#office-mode-polygon");
  result.radius_hidden_in_polygon_mode = await page.isHidden("#office-radius");
  for (const [dx, dy] of [[-140, -100], [-80, -40], [-80, -100], [-140, -40]]) await click(dx, dy);
  await page.click("#office-save");
  await page.waitForSelector("#office-status.error", { timeout: T });
  result.office_refusal = await page.textContent("#office-status");
  await shot("05-service-area-refused");
  await page.click("#office-clear");
  for (const [dx, dy] of [[-140, -100], [-80, -100], [-80, -40], [-140, -40]]) await click(dx, dy);
  await page.click("#office-save");
  await page.waitForSelector("#office-status.ok", { timeout: T });
  result.polygon_office_hash = await page.evaluate(() => location.hash);

  // reload: everything comes back from the API
  await page.goto(`${config.url}/${result.office_hash}`);
  await page.reload();
  await page.waitForSelector("#office-form #unit-list li", { timeout: T });
  result.reloaded_office = {
    name: await page.inputValue("#office-name"),
    radius: await page.inputValue("#office-radius"),
    radius_mode: await page.isChecked("#office-mode-radius"),
    lon: Number(await page.inputValue("#office-lon")),
    lat: Number(await page.inputValue("#office-lat")),
  };
  // ... and the overview, opened afresh, frames the region
  await page.click("#office-form a[href='#/places']");
  await page.waitForSelector("#office-new", { timeout: T });
  await page.reload();
  await page.waitForSelector("#office-new", { timeout: T });
  await page.waitForSelector(".tw-office", { timeout: T });
  result.map = await page.evaluate(() => ({
    regions: document.querySelectorAll(".leaflet-overlay-pane path.tw-region").length,
    offices: document.querySelectorAll(".leaflet-overlay-pane path.tw-office").length,
    service_areas: document.querySelectorAll(".leaflet-overlay-pane path.tw-service").length,
    drafts: document.querySelectorAll(".leaflet-overlay-pane path.tw-draft").length,
  }));
  result.list_text = await page.textContent("#region-list");
  await page.hover(".leaflet-overlay-pane path.tw-office");
  await page.waitForSelector(".leaflet-tooltip .tw-tip", { timeout: T });
  result.office_tooltip = await page.textContent(".leaflet-tooltip .tw-tip");
  await shot("06-reloaded");
  result.steps.admin_ms = Date.now() - started;
  // a supervisor has no such tab: the API shows geography to admins only
  await page.click("#logout");
  await page.waitForSelector("#login-form", { state: "visible", timeout: T });
  await page.fill("#login-username", config.supervisor.username);
  await page.fill("#login-password", config.supervisor.password);
  await page.click("#login-submit");
  await page.waitForSelector("body[data-logged-in='true']", { timeout: T });
  result.supervisor_tab_hidden = await page.isHidden("a[data-tab='places']");
  await page.evaluate(() => (location.hash = "#/places"));
  await page.waitForSelector("#places #places-status", { timeout: T });
  result.supervisor_message = await page.textContent("#places-status");
  result.steps.total_ms = Date.now() - started;
  say({ result });
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) {
      const file = path.join(config.artifacts, "places-99-failure.png");
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
