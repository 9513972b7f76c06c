// The dashboard end to end in headless Chromium against a running
// gkm-server (with OIDC pointed at oidc.mjs) and live GMs.
// Usage: node e2e.mjs BASE_URL GROUP ARTIFACT_DIR ADMIN_PASSWORD EXPECTED_GMS
// Last line: browser e2e ok: <N> checks
import { mkdirSync } from "node:fs";
import { check, run } from "./harness.mjs";

const [base, group, out, adminPassword, expectedGms] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
let browser;

async function oidcLogin(user) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  check(page.url().endsWith("/login"), `${user}: an anonymous visit lands on /login`);
  await page.click("#oidc-login");
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', "any");
  await page.click('button[type="submit"]');
  // The provider asks for consent once per client and user.
  const consent = await page.waitForSelector('button:has-text("Continue"), #who, .error', { timeout: 15000 });
  if ((await consent.textContent()).includes("Continue")) {
    await consent.click();
  }
  await page.waitForLoadState("load");
  return { context, page };
}

async function csrfOf(page) {
  return page.getAttribute('input[name="csrf"]', "value");
}

await run("browser e2e", async (b) => {
  browser = b;
  // --- admin through OIDC ------------------------------------------------
  const { context: alice, page } = await oidcLogin("alice");
  await page.waitForSelector("#who");
  check((await page.textContent("#who")).includes("alice (admin)"), "alice signed in through OIDC with role admin (claim gkm_role)");
  const cookies = await alice.cookies();
  const sc = cookies.find((c) => c.name === "gkm_session");
  check(sc && sc.httpOnly && sc.sameSite === "Lax", "session cookie is HttpOnly and SameSite=Lax");
  const row = page.locator("#groups tr", { hasText: group });
  check(await row.count() === 1, `overview lists group ${group}`);
  const cells = await row.locator("td").allTextContents();
  check(cells[3] === expectedGms, `overview counts ${expectedGms} registered GMs (got ${cells[3]})`);
  check(await page.locator("svg.chart").count() >= 1, "overview draws the GM-state chart");
  await page.screenshot({ path: `${out}/overview.png`, fullPage: true });

  // --- group page: out-of-range D3P window -------------------------------
  await page.click(`#groups a:has-text("${group}")`);
  await page.waitForSelector("#policy-form");
  check(await page.locator("#gms tbody tr").count() === Number(expectedGms), "group page lists the GMs");
  // --- GM page: the agent's health report ---------------------------------
  await page.goto(`${base}/groups/${group}/gms/127.0.9.1`);
  check(await page.locator("#replay").count() === 1, "the GM page shows the agent's reported counters");
  check((await page.textContent("#d3p-window")).includes("IP-D3P off"), "the GM page shows the D3P window the agent reports");
  await page.screenshot({ path: `${out}/gm.png`, fullPage: true });
  await page.goto(`${base}/groups/${group}`);
  await page.waitForSelector("#policy-form");
  await page.selectOption("#d3p", "sec");
  await page.fill("#d3p_value", "101");
  const [bad] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.click("#save-policy"),
  ]);
  check(bad.status() === 422, "an out-of-range window answers 422");
  const err = await page.textContent("#d3p_value-error");
  check(err.includes("101 is out of range: sec must be 1-100"), `inline error next to the field: ${err}`);
  check((await page.inputValue("#d3p_value")) === "101", "the form keeps what the user typed");
  check((await page.textContent("#d3p-shown")).includes("disabled"), "nothing saved on error");
  await page.screenshot({ path: `${out}/group-inline-error.png`, fullPage: true });

  // --- a valid window is applied ------------------------------------------
  await page.selectOption("#d3p", "msec");
  await page.fill("#d3p_value", "2500");
  await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("#save-policy")]);
  await page.waitForSelector("#saved");
  check((await page.textContent("#d3p-shown")).includes("Window-size = 2500 msec"), "a valid window is saved and shown");
  const api = await alice.request.get(`${base}/groups/${group}`);
  check((await api.text()).includes("Window-size = 2500 msec"), "a fresh load shows the saved window");

  // --- rekey now behind a confirmation ------------------------------------
  await page.click("#rekey-now");
  await page.waitForSelector("#confirm");
  check((await page.textContent("main")).includes(`Send group ${group} a rekey now?`), "rekey now asks for confirmation");
  await Promise.all([page.waitForNavigation(), page.click("#confirm")]);
  check(page.url().endsWith(`/groups/${group}`), "after the rekey the group page is back");

  // --- the audit log ---------------------------------------------------------
  await page.goto(`${base}/audit`);
  const audit = await page.textContent("#audit");
  check(/oidc:http\S+\/\S+\s*group\.update\s*GET/.test(audit.replace(/\n/g, " ")), "the policy change is in the audit log, by the OIDC user's issuer and subject");
  check(audit.includes("rekey.now"), "the rekey is in the audit log");
  check(audit.includes("session.login"), "sign-ins are in the audit log");
  await page.screenshot({ path: `${out}/audit.png`, fullPage: true });

  // --- CSRF: a post without the session's token is refused ---------------
  const forged = await alice.request.post(`${base}/groups/${group}`, {
    form: { csrf: "0".repeat(64), version: "1", d3p: "off", acknowledgement: "cisco" },
    maxRedirects: 0,
  });
  check(forged.status() === 403, `a post with a wrong CSRF token is refused (${forged.status()})`);

  // --- feature support ---------------------------------------------------------
  await page.goto(`${base}/features?lacking=1`);
  check((await page.textContent("#feature-ip-d3p")).includes(`Group Name: ${group}`), "feature page shows the seed's table");

  // --- sign out ---------------------------------------------------------------
  await Promise.all([page.waitForNavigation(), page.click('header button[type="submit"]')]);
  check(page.url().endsWith("/login"), "sign out returns to the login page");
  await page.goto(`${base}/`);
  check(page.url().endsWith("/login"), "the old session no longer opens the dashboard");
  await alice.close();

  // --- a viewer sees no edit controls and is refused ----------------------
  const { context: bob, page: bp } = await oidcLogin("bob");
  await bp.waitForSelector("#who");
  check((await bp.textContent("#who")).includes("bob (viewer)"), "bob signed in as viewer");
  await bp.goto(`${base}/groups/${group}`);
  check(await bp.locator("#policy-form").count() === 0, "a viewer sees no policy form");
  check(await bp.locator("#rekey-now").count() === 0, "a viewer sees no rekey button");
  check(await bp.locator('a:has-text("Audit log")').count() === 0, "a viewer sees no admin pages");
  const bobCsrf = await csrfOf(bp);
  const denied = await bob.request.post(`${base}/groups/${group}`, {
    form: { csrf: bobCsrf, version: "2", d3p: "sec", d3p_value: "5", acknowledgement: "cisco",
            retransmit_interval: "1", retransmit_number: "2", tek_lifetime: "3600",
            kek_lifetime: "86400", tek_rekey_before: "90", kek_rekey_before: "90" },
    maxRedirects: 0,
  });
  check(denied.status() === 403, `a viewer's forged post with a valid CSRF token gets 403 (${denied.status()})`);
  const rk = await bob.request.post(`${base}/groups/${group}/rekey`, { form: { csrf: bobCsrf }, maxRedirects: 0 });
  check(rk.status() === 403, "a viewer's forged rekey gets 403");
  const au = await bob.request.get(`${base}/audit`);
  check(au.status() === 403, "a viewer gets 403 on the audit log");
  await bp.screenshot({ path: `${out}/viewer-group.png`, fullPage: true });
  await bob.close();

  // --- no role, no entry -------------------------------------------------
  const { context: carol, page: cp } = await oidcLogin("carol");
  await cp.waitForSelector(".error");
  check((await cp.textContent(".error")).includes("no GKM role for carol"), "a user without a role claim is refused");
  await carol.close();

  // --- the local bootstrap admin -------------------------------------------
  const local = await browser.newContext();
  const lp = await local.newPage();
  await lp.goto(`${base}/login`);
  await lp.fill('input[name="password"]', "wrong password");
  await Promise.all([lp.waitForNavigation(), lp.click('form.card button[type="submit"]')]);
  check((await lp.textContent(".error")).includes("wrong user or password"), "the local admin with a wrong password is refused");
  await lp.fill('input[name="password"]', adminPassword);
  await Promise.all([lp.waitForNavigation(), lp.click('form.card button[type="submit"]')]);
  check((await lp.textContent("#who")).includes("admin (admin)"), "the local bootstrap admin signs in");
  await local.close();
});
