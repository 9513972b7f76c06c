// The group page's policy form edits the group's COOP, in headless
// Chromium against a key server of scripts/e2e-coop: the form shows the
// configuration, a priority out of 1-255 comes back next to its field
// and saves nothing, a valid one is saved and the key server's COOP view
// (the engine's) shows it.
// Usage: node coop-form.mjs BASE_URL ADMIN_PASSWORD ARTIFACT_DIR NEW_PRIORITY PEER_ADDRESS...
// Last line: browser coop form ok: <N> checks
import { mkdirSync } from "node:fs";
import { check, run, signInAsAdmin } from "./harness.mjs";

const [base, adminPassword, out, priority, ...peers] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

await run("browser coop form", async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await signInAsAdmin(page, base, adminPassword);
  await page.goto(`${base}/groups/COOP`);
  check(await page.isChecked("#coop-enabled"), "the form shows COOP on");
  const lines = (await page.inputValue("#coop_peers")).split("\n");
  check(peers.every((p) => lines.includes(p)), `the form lists the peers ${peers} (${JSON.stringify(lines)})`);
  check((await page.inputValue("#coop_psk")) === "", "no pair PSK is shown");
  const before = await page.inputValue("#coop_priority");
  await page.fill("#coop_priority", "0");
  await Promise.all([page.waitForNavigation(), page.click("#save-policy")]);
  check((await page.textContent("#coop_priority-error")).includes("1-255"), "priority 0 is refused next to its field");
  await page.screenshot({ path: `${out}/coop-form-error.png`, fullPage: true });
  await page.goto(`${base}/groups/COOP`);
  check((await page.inputValue("#coop_priority")) === before, `nothing was saved (priority ${before})`);
  await page.fill("#coop_priority", priority);
  await Promise.all([page.waitForNavigation(), page.click("#save-policy")]);
  check((await page.textContent("#saved")).includes("Saved"), "a valid priority is saved");
  await page.goto(`${base}/key-servers`);
  const dl = (await page.locator("#coop-COOP dl").textContent()).replace(/\s+/g, "");
  check(dl.includes(`LocalPriority${priority}`), `the key server's COOP runs with priority ${priority}`);
  await page.screenshot({ path: `${out}/coop-form-saved.png`, fullPage: true });
  await context.close();
});
