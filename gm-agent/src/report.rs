//! Health reports to the controller (DESIGN.md data flow 5): every
//! interval the agent posts its group's anti-replay counters, IP-D3P error
//! history, window in force and registration state to `/api/v1/gm-health`
//! with a bearer token of role `agent`. The controller keeps the latest
//! report per GM and the D3P errors over time for the dashboard. A report
//! that fails is logged and the next one goes at the next interval; it
//! never holds up registration, rekeys or the dataplane (its own thread).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gkm_model::GmHealth;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// Seconds between reports unless configured (1-3600).
pub const DEFAULT_INTERVAL_SECS: u64 = 30;

/// Where and how to report.
pub struct Settings {
    /// `https://host:port` of the controller's API (plain `http://` only
    /// to loopback, or with `insecure_http`).
    pub url: String,
    /// Bearer token (role `agent`).
    pub token: Zeroizing<String>,
    /// Between reports.
    pub interval: Duration,
    /// Extra trust anchors (PEM) for a controller with a private CA;
    /// without it, the public web PKI roots.
    pub ca: Option<PathBuf>,
}

impl Settings {
    /// Checks the URL, interval and token before anything starts.
    pub fn new(
        url: &str,
        token: Zeroizing<String>,
        interval_secs: u64,
        ca: Option<PathBuf>,
        insecure_http: bool,
    ) -> Result<Self> {
        let url = url.trim_end_matches('/');
        let rest = if let Some(r) = url.strip_prefix("https://") {
            r
        } else if let Some(r) = url.strip_prefix("http://") {
            if !is_loopback_http(url) && !insecure_http {
                bail!("report.url {url:?}: plain HTTP would send the token in clear; use https:// (or set report.insecure_http behind a TLS proxy)");
            }
            r
        } else {
            bail!("report.url {url:?}: must start with https:// or http://");
        };
        if rest.is_empty() {
            bail!("report.url {url:?}: no host");
        }
        if !(1..=3600).contains(&interval_secs) {
            bail!("report.interval: {interval_secs} is out of range: 1-3600 seconds");
        }
        if !token.starts_with("gkm_") {
            bail!("report token: not a GKM API token (gkm_...)");
        }
        Ok(Self {
            url: url.to_owned(),
            token,
            interval: Duration::from_secs(interval_secs),
            ca,
        })
    }
}

/// An HTTP client trusting `ca` (PEM, a private CA; the system's roots
/// without), each call bounded by `timeout`; `field` names the setting in
/// errors.
pub fn http_agent(field: &str, ca: Option<&Path>, timeout: Duration) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::default();
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        tls = gkm_model::api_client::private_ca_tls(&pem)
            .map_err(|e| anyhow!("{field} {}: {e}", path.display()))?;
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into())
}

/// Whether `url` is plain HTTP to this host (`localhost` or a loopback
/// address), where no secret crosses a network.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(r) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = r.split('/').next().unwrap_or_default();
    // The host is after any `user:password@`.
    let host = authority.rsplit('@').next().unwrap_or_default();
    // `[v6]` or `[v6]:port`, else `host` or `host:port`.
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// What a report (and the agent's metrics) is made of.
#[derive(Clone)]
pub struct Sources {
    /// The GM's phase 1 identity.
    pub identity: String,
    /// The replay status (`show crypto gkm gm replay`).
    pub status: crate::status::Shared,
    /// The dataplane, when it runs.
    pub tunnel: Option<crate::dataplane::SharedTunnel>,
    /// Whether the GM holds the group's keys.
    pub registered: Arc<AtomicBool>,
    /// Membership and ACK health.
    pub membership: crate::membership::Shared,
    /// The clock.
    pub now_ms: fn() -> u64,
}

/// Starts the reporting thread.
pub fn spawn(settings: Settings, src: Sources) -> Result<()> {
    let Sources {
        identity,
        status,
        tunnel,
        registered,
        membership,
        now_ms,
    } = src;
    let agent = http_agent("report.ca", settings.ca.as_deref(), Duration::from_secs(10))?;
    let endpoint = format!("{}/api/v1/gm-health", settings.url);
    let auth = Zeroizing::new(format!("Bearer {}", settings.token.as_str()));
    info!(url = %settings.url, every_s = settings.interval.as_secs(), "reporting health to the controller");
    std::thread::Builder::new()
        .name("gkm-report".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(settings.interval);
                let s = crate::status::snapshot(&status, tunnel.as_ref(), now_ms);
                // As `POST /api/v1/gm-health` takes it (the controller
                // stamps `received_at`).
                let report = GmHealth {
                    group: s.group,
                    gm_identity: identity.clone(),
                    received_at: 0,
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    registered: registered.load(Ordering::Relaxed),
                    d3p_window_ms: s.d3p_window_ms,
                    d3p_window_source: s.d3p_window_source,
                    agent_time_ms: s.posix_time_ms,
                    counters: s.counters,
                    membership: Some(crate::membership::snapshot(&membership)),
                    traffic: tunnel.as_ref().map(|t| crate::dataplane::lock(t).traffic),
                    ack_lost: false,
                };
                let outcome = agent
                    .post(&endpoint)
                    .header("authorization", auth.as_str())
                    .send_json(&report)
                    .map_err(|e| e.to_string())
                    .and_then(|mut r| match r.status().as_u16() {
                        204 => Ok(()),
                        code => Err(format!(
                            "{code}: {}",
                            r.body_mut()
                                .read_to_string()
                                .unwrap_or_default()
                                .chars()
                                .take(300)
                                .collect::<String>()
                        )),
                    });
                match outcome {
                    Ok(()) if failing => {
                        info!("health report accepted again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        // Once per outage at warn, then quietly (a 404 before
                        // the first registration is expected).
                        if failing {
                            tracing::debug!(error = %e, "health report refused");
                        } else {
                            warn!(error = %e, "health report refused");
                        }
                        failing = true;
                    }
                }
            }
        })
        .context("cannot start the health report thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Zeroizing<String> {
        Zeroizing::new("gkm_00".into())
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::new("https://ks.example:8443/", token(), 30, None, false).is_ok());
        assert!(Settings::new("http://127.0.0.1:8080", token(), 30, None, false).is_ok());
        assert!(Settings::new("http://[::1]:8080", token(), 30, None, false).is_ok());
        assert!(Settings::new("http://[::1]", token(), 30, None, false).is_ok());
        assert!(Settings::new("http://localhost/", token(), 30, None, false).is_ok());
        assert!(Settings::new("http://[2001:db8::1]", token(), 30, None, false).is_err());
        // Credentials before the host do not make it loopback.
        for bad in ["http://[::1]@ks.example/", "http://localhost:x@ks.example"] {
            assert!(
                Settings::new(bad, token(), 30, None, false).is_err(),
                "{bad}"
            );
        }
        let e = Settings::new("http://10.0.0.1:8080", token(), 30, None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("in clear"), "{e}");
        assert!(Settings::new("http://10.0.0.1:8080", token(), 30, None, true).is_ok());
        for bad in ["ftp://x", "https://", "ks:8080"] {
            assert!(
                Settings::new(bad, token(), 30, None, false).is_err(),
                "{bad}"
            );
        }
        for (secs, ok) in [(0, false), (1, true), (3600, true), (3601, false)] {
            let r = Settings::new("https://ks", token(), secs, None, false);
            assert_eq!(r.is_ok(), ok, "{secs}");
            if !ok {
                assert!(r.err().unwrap().to_string().contains("1-3600"));
            }
        }
        assert!(Settings::new(
            "https://ks",
            Zeroizing::new("secret".into()),
            30,
            None,
            false
        )
        .is_err());
    }
}
