//! A small blocking REST client for `/api/v1` with errors that say what to
//! do: the controller is not reachable, the token was refused, or the
//! request failed validation (with the field).

use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection.
    #[error("cannot reach the controller at {url}: {reason} (is gkm-server running? set --url or GKM_URL)")]
    Connect {
        /// Base URL.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// 401.
    #[error("the controller refused the token: {0} (set --token, GKM_TOKEN or --token-file)")]
    Unauthorized(String),
    /// 403.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// 422 with the failing field.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// JSON pointer of the field.
        field: String,
        /// Message.
        detail: String,
    },
    /// Any other problem answer.
    #[error("{status}: {detail}")]
    Problem {
        /// HTTP status.
        status: u16,
        /// Detail.
        detail: String,
    },
    /// Not JSON where JSON was expected.
    #[error("the controller's answer is not JSON: {0}")]
    Decode(String),
}

/// The controller at a base URL with a bearer token.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self::build(base, token, ureq::tls::TlsConfig::default())
    }

    /// A client that trusts the certificates in `pem` (a private CA)
    /// instead of the public web PKI roots.
    pub fn with_ca(base: &str, token: Option<String>, pem: &[u8]) -> Result<Self, String> {
        let tls = gkm_model::api_client::private_ca_tls(pem)?;
        Ok(Self::build(base, token, tls))
    }

    fn build(base: &str, token: Option<String>, tls: ureq::tls::TlsConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer
    /// (Null for 204).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.send_json(b.cloned().unwrap_or(Value::Null))
            }
        };
        let mut resp = result.map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()))?
        };
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let detail = v["detail"].as_str().unwrap_or(&text).to_owned();
        Err(match status {
            401 => ClientError::Unauthorized(detail),
            403 => ClientError::Forbidden(detail),
            422 => ClientError::Invalid {
                field: v["field"].as_str().unwrap_or("?").to_owned(),
                detail,
            },
            _ => ClientError::Problem { status, detail },
        })
    }
}
