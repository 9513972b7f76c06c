// The dashboard's COOP views in headless Chromium, against a secondary key
// server of scripts/e2e-coop while its IP-D3P configuration differs from
// its primary's: the overview shows the mismatch alert, the key-servers
// page shows the group's COOP view with both peers.
// Usage: node coop.mjs BASE_URL ADMIN_PASSWORD ARTIFACT_DIR PRIMARY_ADDRESS
// Last line: browser coop ok: <N> checks
import { mkdirSync } from "node:fs";
import { check, run, signInAsAdmin } from "./harness.mjs";

const [base, adminPassword, out, primary] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const D3P = "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched";

await run("browser coop", async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await signInAsAdmin(page, base, adminPassword);
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
});
