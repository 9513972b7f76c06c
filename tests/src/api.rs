//! A small REST client for scenario tests: any status comes back (4xx
//! and 5xx are answers to check, not errors), with the body as JSON.

use serde_json::Value;

/// The API of one running server, with one bearer token.
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bearer token.
    pub token: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client for `base` with `token` (trimmed).
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.trim().to_owned(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// The bootstrap admin of the server whose data directory is `data`
    /// (its `admin-token` file).
    pub fn bootstrap_admin(base: &str, data: &std::path::Path) -> Self {
        Self::new(
            base,
            &std::fs::read_to_string(data.join("admin-token")).expect("the admin-token file"),
        )
    }

    /// Creates group `name` (`group_id`) on its PSK `psk`, one TEK for
    /// 10.1.0.0/16 both ways, unicast rekeys retransmitted every second;
    /// `rekey` adds to (or overrides) those rekey settings.
    pub fn create_unicast_group(&self, name: &str, group_id: u32, psk: &str, rekey: Value) {
        let mut r = serde_json::json!({"transport": "unicast", "retransmit_interval": 1});
        if let (Some(r), Value::Object(more)) = (r.as_object_mut(), rekey) {
            r.extend(more);
        }
        self.expect(
            201,
            "POST",
            "/api/v1/groups",
            Some(
                &serde_json::json!({"name": name, "group_id": group_id, "policy": {
                "teks": [{"src": "10.1.0.0/16", "dst": "10.1.0.0/16"}],
                "rekey": r,
                "authentication": {"method": "psk", "psk": psk}}}),
            ),
        );
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self::new(&self.base, token)
    }

    /// `method path` with an optional JSON body: (status, body as JSON or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("authorization", &auth)
                .send_json(b),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .send_empty(),
            (m, _) => panic!("unsupported method {m}"),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let bytes = r.body_mut().read_to_vec().unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `call` that must answer `want`; returns the body.
    pub fn expect(&self, want: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        v
    }
}

/// `GET url` with an optional bearer token: (status, body as text). For
/// what is not the JSON API (`/metrics`, `/readyz`, another server's API).
pub fn get_text(url: &str, token: Option<&str>) -> (u16, String) {
    try_get_text(url, token).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// As [`get_text`], a connection error returned (a server not up yet).
pub fn try_get_text(url: &str, token: Option<&str>) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call()?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string().unwrap_or_default()))
}

/// `GET path` on the dashboard at `base`, signed in with the local
/// `user` and `password` (the sign-in form, its CSRF token and cookies, as
/// a browser does): the page's HTML.
pub fn dashboard_get(base: &str, user: &str, password: &str, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let cookies = |r: &ureq::http::Response<ureq::Body>| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
            .collect()
    };
    let mut login = agent.get(&format!("{base}/login")).call().unwrap();
    let mut jar = cookies(&login);
    let body = login.body_mut().read_to_string().unwrap();
    let at = body.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    let csrf = &body[at..at + 64];
    let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let r = agent
        .post(&format!("{base}/login"))
        .header("cookie", &jar.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!(
            "csrf={csrf}&user={}&password={}",
            enc(user),
            enc(password)
        ))
        .unwrap();
    assert!(r.status().is_redirection(), "sign-in: {}", r.status());
    jar.extend(cookies(&r));
    let mut page = agent
        .get(&format!("{base}{path}"))
        .header("cookie", &jar.join("; "))
        .call()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200, "GET {path}");
    page.body_mut().read_to_string().unwrap()
}
