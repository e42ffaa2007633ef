// What every console driver shares: its configuration (the JSON in DRIVE_CONFIG), the one-line
// JSON messages it writes to the test, and headless Debian Chromium started the same way
// (playwright-core from config.node_modules; a fresh, empty profile of playwright's own; no
// background networking, which this machine's closed network refuses).

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import path from "node:path";

export const config = JSON.parse(process.env.DRIVE_CONFIG);
export const say = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

// `result` is what the driver has so far: if Chromium does not start, it is reported with the
// reason and the driver exits.
export async function launchBrowser(result) {
  const require = createRequire(path.join(config.node_modules, "noop.js"));
  const { chromium } = require("playwright-core");
  mkdirSync(config.artifacts, { recursive: true });
  return chromium
    .launch({
      executablePath: config.chromium,
      headless: true,
      args: [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
      ],
    })
    .catch((error) => {
      say({ result: { ...result, error: `chromium did not start: ${error.message}` } });
      process.exit(1);
    });
}
