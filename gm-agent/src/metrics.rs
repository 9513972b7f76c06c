//! The agent's own Prometheus metrics (`--metrics ADDR`, off by default):
//! its registration, rekeys, ACKs and refusals, and its dataplane's
//! packets, bytes, D3P errors and receive-queue drops, read at each scrape
//! from what the health report reads. Plain HTTP without a token: bind it
//! to loopback or a management address. docs/METRICS.md ("The agent's
//! metrics") lists them; a test keeps the two equal.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tracing::{info, warn};

use crate::report::Sources;

/// The agent's metrics, in their own registry.
pub struct AgentMetrics {
    registry: Registry,
    /// One scrape at a time brings the counters up (two at once could
    /// both add the same rise).
    scrape: std::sync::Mutex<()>,
    #[cfg(test)]
    names: Vec<String>,
    registered: IntGaugeVec,
    seq: IntGaugeVec,
    registrations: IntCounterVec,
    failovers: IntCounterVec,
    pushes_accepted: IntCounterVec,
    pushes_refused: IntCounterVec,
    acks_sent: IntCounterVec,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    d3p_errors: IntCounterVec,
    rx_queue_drops: IntCounterVec,
}

/// Registers metrics and remembers their names.
struct Builder {
    registry: Registry,
    names: Vec<String>,
}

impl Builder {
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        self.names.push(name.to_owned());
        Ok(c)
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        self.names.push(name.to_owned());
        Ok(g)
    }
}

/// A counter brought up to `v`, a total the agent keeps itself (they only
/// grow while the process lives).
fn advance(c: &IntCounterVec, labels: &[&str], v: u64) {
    let m = c.with_label_values(labels);
    let now = m.get();
    if v > now {
        m.inc_by(v - now);
    }
}

impl AgentMetrics {
    /// Every metric, registered; `version` for `gkm_gm_build_info`.
    pub fn new(version: &str) -> Result<Self, prometheus::Error> {
        let mut b = Builder {
            registry: Registry::new(),
            names: Vec::new(),
        };
        let g = &["group"];
        let build = b.gauge(
            "gkm_gm_build_info",
            "Always 1; the gkm-agent version in its label.",
            &["version"],
        )?;
        build.with_label_values(&[version]).set(1);
        Ok(Self {
            registered: b.gauge(
                "gkm_gm_registered",
                "1 while the GM holds the group's keys, else 0.",
                g,
            )?,
            seq: b.gauge(
                "gkm_gm_seq",
                "The group's SEQ in force (registration, then each accepted rekey).",
                g,
            )?,
            registrations: b.counter(
                "gkm_gm_registrations_total",
                "Registrations since the agent started.",
                g,
            )?,
            failovers: b.counter(
                "gkm_gm_failovers_total",
                "Registrations with another key server than the one before.",
                g,
            )?,
            pushes_accepted: b.counter(
                "gkm_gm_pushes_accepted_total",
                "GROUPKEY-PUSH messages accepted.",
                g,
            )?,
            pushes_refused: b.counter(
                "gkm_gm_pushes_refused_total",
                "GROUPKEY-PUSH messages refused, by reason.",
                &["group", "reason"],
            )?,
            acks_sent: b.counter("gkm_gm_acks_sent_total", "Rekey acknowledgements sent.", g)?,
            packets: b.counter(
                "gkm_gm_packets_total",
                "Dataplane packets, by direction (in: decrypted, out: encrypted).",
                &["group", "direction"],
            )?,
            bytes: b.counter(
                "gkm_gm_bytes_total",
                "Dataplane inner bytes, by direction.",
                &["group", "direction"],
            )?,
            d3p_errors: b.counter(
                "gkm_gm_d3p_errors_total",
                "IP-D3P errors, by direction (in: outside the window; out: not stamped).",
                &["group", "direction"],
            )?,
            rx_queue_drops: b.counter(
                "gkm_gm_esp_rx_queue_drops_total",
                "ESP packets the kernel dropped from the agent's full receive queue.",
                g,
            )?,
            registry: b.registry,
            scrape: std::sync::Mutex::new(()),
            #[cfg(test)]
            names: b.names,
        })
    }

    /// The names of every metric, as registered.
    #[cfg(test)]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sets every metric from the agent's state now.
    fn refresh(&self, src: &Sources) {
        let s = crate::status::snapshot(&src.status, src.tunnel.as_ref(), src.now_ms);
        let (m, engine) = crate::membership::snapshot_with_counters(&src.membership);
        let g = s.name.as_str();
        let one = [g];
        let registered = src.registered.load(Ordering::Relaxed);
        self.registered
            .with_label_values(&one)
            .set(i64::from(registered));
        self.seq
            .with_label_values(&one)
            .set(m.last_seq_accepted.map_or(0, i64::from));
        advance(&self.registrations, &one, m.registrations);
        advance(&self.failovers, &one, m.failovers);
        advance(&self.pushes_accepted, &one, engine.pushes_accepted);
        advance(&self.acks_sent, &one, engine.acks_sent);
        let r = &m.pushes_refused;
        for (reason, v) in [
            ("malformed", r.malformed),
            ("wrong_kek", r.wrong_kek),
            ("bad_signature", r.bad_signature),
            ("replayed", r.replayed),
            ("unregistered", r.unregistered),
        ] {
            advance(&self.pushes_refused, &[g, reason], v);
        }
        let c = &s.counters;
        advance(&self.packets, &[g, "in"], c.input_packets);
        advance(&self.packets, &[g, "out"], c.output_packets);
        advance(&self.d3p_errors, &[g, "in"], c.input_errors);
        advance(&self.d3p_errors, &[g, "out"], c.output_errors);
        if let Some(t) = &src.tunnel {
            let t = crate::dataplane::lock(t).traffic;
            advance(&self.bytes, &[g, "in"], t.bytes_in);
            advance(&self.bytes, &[g, "out"], t.bytes_out);
            advance(&self.rx_queue_drops, &one, t.esp_rx_queue_drops);
        }
    }

    /// The text exposition, refreshed from `src`.
    fn encode(&self, src: &Sources) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refresh(src);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn scrape(State((m, src)): State<(Arc<AgentMetrics>, Sources)>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        m.encode(&src),
    )
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, src: Sources) -> Result<()> {
    let m = Arc::new(AgentMetrics::new(env!("CARGO_PKG_VERSION"))?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!(metrics = %bound, "agent metrics on a non-loopback address: anyone who reaches it reads them (no token)");
    }
    info!(metrics = %bound, "serving the agent's /metrics");
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state((m, src));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the agent's metrics listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/METRICS.md's agent table lists exactly what is exported.
    #[test]
    fn the_document_lists_every_agent_metric_and_no_other() {
        let doc = include_str!("../../docs/METRICS.md");
        let agent = doc
            .split_once("## The agent's metrics")
            .map(|(_, a)| a)
            .expect("docs/METRICS.md has the agent's section");
        let agent = agent.split("\n## ").next().unwrap_or_default();
        let mut documented: Vec<&str> = agent
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("gkm_"))
            .collect();
        documented.sort_unstable();
        let m = AgentMetrics::new("test").unwrap();
        let mut exported: Vec<&str> = m.names().iter().map(String::as_str).collect();
        exported.sort_unstable();
        assert_eq!(documented, exported);
    }
}
