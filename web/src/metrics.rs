//! `/metrics` (Prometheus text format) and the HTTP layer's own metrics:
//! requests by route (the route's pattern, never its parameters), method
//! and status, with latency; agent health reports by result, the D3P
//! errors they report and the agents gone silent (from the store at each
//! scrape). The key server's metrics come from [`crate::Control::metrics`];
//! docs/METRICS.md lists both.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::Caller;
use crate::problem::Problem;
use crate::{ApiState, Role};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The HTTP layer's metrics, in their own registry.
pub struct HttpMetrics {
    registry: Registry,
    names: Vec<String>,
    requests: IntCounterVec,
    duration: HistogramVec,
    agent_reports: IntCounterVec,
    d3p_errors: IntCounterVec,
    agents_silent: IntGaugeVec,
    ack_lost: IntGaugeVec,
    /// An agent is silent after this long without a report, ms.
    silent_after_ms: i64,
    /// One scrape at a time refreshes the store's gauges and encodes (a
    /// scrape between another's reset and set would miss their series).
    scrape: tokio::sync::Mutex<()>,
}

/// An agent silent this long (four of its default 30 s report intervals)
/// counts in `gkm_agents_silent`, unless the operator says otherwise.
pub const AGENT_SILENT_SECS: u32 = 120;

impl HttpMetrics {
    /// Every HTTP metric, registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gkm_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gkm_http_request_duration_seconds",
                "Time to answer an HTTP request, by route pattern.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )?;
        let agent_reports = IntCounterVec::new(
            Opts::new(
                "gkm_agent_reports_total",
                "Agent health reports received, by result (accepted, refused).",
            ),
            &["result"],
        )?;
        let d3p_errors = IntCounterVec::new(
            Opts::new(
                "gkm_agent_d3p_errors_total",
                "IP-D3P errors (input packets outside the window) the agents reported, by group.",
            ),
            &["group"],
        )?;
        let agents_silent = IntGaugeVec::new(
            Opts::new(
                "gkm_agents_silent",
                "GMs in the GM database whose agent has not reported for the silent time, by group.",
            ),
            &["group"],
        )?;
        let ack_lost = IntGaugeVec::new(
            Opts::new(
                "gkm_gms_ack_lost",
                "GMs whose agent acknowledged a rekey the key server counts as missed (ACK lost on the way), by group.",
            ),
            &["group"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(ack_lost.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(agent_reports.clone()))?;
        registry.register(Box::new(d3p_errors.clone()))?;
        registry.register(Box::new(agents_silent.clone()))?;
        Ok(Self {
            registry,
            names: [
                "gkm_http_requests_total",
                "gkm_http_request_duration_seconds",
                "gkm_agent_reports_total",
                "gkm_agent_d3p_errors_total",
                "gkm_agents_silent",
                "gkm_gms_ack_lost",
            ]
            .map(String::from)
            .to_vec(),
            requests,
            duration,
            agent_reports,
            d3p_errors,
            agents_silent,
            ack_lost,
            silent_after_ms: i64::from(AGENT_SILENT_SECS) * 1000,
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// The same, an agent silent after `secs` without a report.
    pub fn with_agent_silent_secs(secs: u32) -> Result<Self, prometheus::Error> {
        Ok(Self {
            silent_after_ms: i64::from(secs) * 1000,
            ..Self::new()?
        })
    }

    /// The names of every metric, as registered.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// An agent's health report was accepted (`true`) or refused.
    pub fn agent_report(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.agent_reports.with_label_values(&[result]).inc();
    }

    /// An accepted report's new D3P errors.
    pub fn d3p_errors(&self, group: &str, n: u64) {
        self.d3p_errors.with_label_values(&[group]).inc_by(n);
    }

    /// Sets `gkm_agents_silent` and `gkm_gms_ack_lost` from the store, as
    /// of `now_ms`.
    async fn refresh_agents(&self, store: &dyn gkm_store::Store, now_ms: i64) {
        match store.agent_findings(now_ms - self.silent_after_ms).await {
            Ok(groups) => {
                // A deleted group's series go.
                self.agents_silent.reset();
                self.ack_lost.reset();
                let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                for f in groups {
                    let g = [f.group.as_str()];
                    self.agents_silent
                        .with_label_values(&g)
                        .set(gauge(f.silent));
                    self.ack_lost.with_label_values(&g).set(gauge(f.ack_lost));
                }
            }
            // The last values stay; the scrape still answers.
            Err(e) => tracing::warn!(error = %e, "metrics: agents' findings not counted"),
        }
    }

    /// The text exposition of these metrics.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Middleware counting every request by its route pattern.
pub async fn track(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    s.metrics
        .requests
        .with_label_values(&[&route, method, &status])
        .inc();
    s.metrics
        .duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A method as a label: the standard ones by name, any other (a client
/// may send any token) as `other`, so no client grows the label set.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every metric: the key server's, then the HTTP layer's.
pub async fn exposition(s: &ApiState) -> Response {
    let mut text = s.control.metrics().await;
    {
        let _one = s.metrics.scrape.lock().await;
        s.metrics
            .refresh_agents(s.store.as_ref(), crate::ops::now_ms())
            .await;
        text.push_str(&s.metrics.encode());
    }
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// `GET /metrics` on the API listener: a token of role viewer or above
/// (an agent token reads nothing, this included).
async fn metrics(State(s): State<ApiState>, c: Caller) -> Result<Response, Problem> {
    c.require(Role::Viewer)?;
    Ok(exposition(&s).await)
}

/// `/metrics` for the API listener (bearer token).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `/metrics` without a token, for `--metrics ADDR` (a listener the
/// operator puts where only the scraper reaches).
pub fn open_router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<ApiState>| async move { exposition(&s).await }),
        )
        .with_state(state)
}
