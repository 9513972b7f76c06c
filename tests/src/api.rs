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
