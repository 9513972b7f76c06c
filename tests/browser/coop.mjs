// The dashboard's COOP views in headless Chromium, against a secondary key
// server of scripts/e2e-coop while its IP-D3P configuration differs from
// its primary's: the overview shows the mismatch alert, the key-servers
// page shows the group's COOP view with both peers.
// Usage: node coop.mjs BASE_URL ADMIN_PASSWORD ARTIFACT_DIR PRIMARY_ADDRESS
// Last line: browser coop ok: <N> checks
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, adminPassword, out, primary] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
let checks = 0;
function check(ok, what) {
  if (!ok) { throw new Error(`check failed: ${what}`); }
  checks += 1;
  console.log(`ok ${checks} - ${what}`);
}
const D3P = "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.fill('input[name="password"]', adminPassword);
  await Promise.all([page.waitForNavigation(), page.click('form.card button[type="submit"]')]);
  check((await page.textContent("#who")).includes("admin (admin)"), "the local admin signs in");
  await page.goto(`${base}/`);
  const alerts = await page.locator("#alerts li.alert").allTextContents();
  check(alerts.some((a) => a === `COOP: ${D3P}`), `the overview alerts the IP-D3P mismatch (alerts: ${JSON.stringify(alerts)})`);
  await page.screenshot({ path: `${out}/coop-overview.png`, fullPage: true });
  await page.goto(`${base}/key-servers`);
  const view = page.locator("#coop-COOP");
  check(await view.count() === 1, "the key-servers page has the COOP group's view");
  check((await view.locator(".coop-role").textContent()).trim() === "Secondary", "this key server is a secondary");
  check((await view.locator("p.alert").allTextContents()).includes(D3P), "the view shows the mismatch");
  const rows = await view.locator(".coop-peers tbody tr").allTextContents();
  check(rows.length === 2, `two peers listed (${rows.length})`);
  check(rows.some((r) => r.includes(primary) && r.includes("Primary") && r.includes("Alive") && r.includes("Established")),
    `the primary ${primary} is listed Alive with IKE Established (${JSON.stringify(rows)})`);
  check(rows.some((r) => r.includes("Dead")), "the killed key server is listed Dead");
  await page.screenshot({ path: `${out}/coop-key-servers.png`, fullPage: true });
  await context.close();
} catch (e) {
  console.error(e);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(`browser coop ok: ${checks} checks`);
