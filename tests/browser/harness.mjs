// What the browser checks share: numbered checks, and a headless Chromium
// (Debian's, driven by playwright-core) that a failure closes with exit 1.
import { chromium } from "playwright-core";

let checks = 0;

/** Counts a check; a failed one stops the run. */
export function check(ok, what) {
  if (!ok) { throw new Error(`check failed: ${what}`); }
  checks += 1;
  console.log(`ok ${checks} - ${what}`);
}

/** Runs `body(browser)`; the last line says `<name> ok: <N> checks`. */
export async function run(name, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox"],
  });
  try {
    await body(browser);
  } catch (e) {
    console.error(e);
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log(`${name} ok: ${checks} checks`);
}

/** Signs `page` in at `base` as the local admin; checks it. */
export async function signInAsAdmin(page, base, password) {
  await page.goto(`${base}/login`);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation(), page.click('form.card button[type="submit"]')]);
  check((await page.textContent("#who")).includes("admin (admin)"), "the local admin signs in");
}
