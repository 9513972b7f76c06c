// A real OpenID Connect provider on loopback for the dashboard's browser
// test (npm oidc-provider, development interactions: any password).
// Users: alice (admin), olivia (operator), bob (viewer), carol (no GKM role).
// Usage: node oidc.mjs PORT REDIRECT_URI CLIENT_SECRET
import Provider from "oidc-provider";

const [port, redirect, secret] = process.argv.slice(2);
const roles = { alice: "admin", olivia: "operator", bob: "viewer" };
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: "gkm-dashboard",
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  // The ID token carries the profile claims (GKM reads its role there).
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], profile: ["preferred_username", "gkm_role"], email: ["email"] },
  pkce: { required: () => true },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const c = { sub, preferred_username: sub, email: `${sub}@example.test` };
        if (roles[sub]) { c.gkm_role = roles[sub]; }
        return c;
      },
    };
  },
});
provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
