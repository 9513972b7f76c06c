//! The key server's Prometheus metrics (docs/METRICS.md): counters and
//! histograms the GDOI loop moves as its engine's events happen, gauges it
//! sets from the engine's state when a scrape asks (`Command::Metrics`).
//! Labels are bounded: group name, reason, role, state, kind. Never a GM
//! identity or address.

use gkm_proto::coop::election::Role;
use gkm_proto::ks::{KeyServer, KsEvent, Reject};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the key server, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// The names registered, in order (docs/METRICS.md lists the same).
    #[cfg(test)]
    names: Vec<String>,
    registrations: IntCounterVec,
    refusals: IntCounterVec,
    phase1_established: IntCounter,
    phase1_duration: Histogram,
    pull_duration: HistogramVec,
    rekeys: IntCounterVec,
    rekey_ack_duration: HistogramVec,
    rekey_ack_ratio: GaugeVec,
    low_ack_streak: IntGaugeVec,
    acks_missed: IntCounterVec,
    removals: IntCounterVec,
    gms: IntGaugeVec,
    gms_one_miss: IntGaugeVec,
    kek_remaining: GaugeVec,
    tek_remaining: GaugeVec,
    coop_role: IntGaugeVec,
    coop_epoch: IntGaugeVec,
    coop_peers_alive: IntGaugeVec,
    coop_mismatch: IntGaugeVec,
    phase1_sas: IntGauge,
    phase1_half_open: IntGauge,
    store_errors: IntCounter,
}

/// Why a metric could not be registered (a name taken twice: a bug).
type MetricsError = prometheus::Error;

struct Builder {
    registry: Registry,
    names: Vec<String>,
}

impl Builder {
    fn add<C: prometheus::core::Collector + Clone + 'static>(
        &mut self,
        name: &str,
        c: C,
    ) -> Result<C, MetricsError> {
        self.registry.register(Box::new(c.clone()))?;
        self.names.push(name.to_owned());
        Ok(c)
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.add(name, c)
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.add(name, g)
    }

    fn float(&mut self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        self.add(name, g)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?;
        self.add(name, h)
    }
}

/// Below this share of ACKs a closed rekey round counts as low
/// (`gkm_rekey_low_ack_rounds`; the alert fires at 2 in a row).
const LOW_ACK_RATIO: f64 = 0.99;

/// Registration steps take milliseconds on a LAN and seconds behind
/// retransmissions or a loaded key server.
const REGISTRATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Rekey durations until every GM acknowledged: 50 ms to 10 min.
const REKEY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

impl Metrics {
    /// Every metric, registered; `version` for `gkm_build_info`.
    pub fn new(version: &str) -> Result<Self, MetricsError> {
        let mut b = Builder {
            registry: Registry::new(),
            names: Vec::new(),
        };
        let build_info = b.gauge(
            "gkm_build_info",
            "Always 1; the gkm-server version in its label.",
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        let registrations = b.counter(
            "gkm_registrations_total",
            "GMs registered (GROUPKEY-PULL completed), by group.",
            &["group"],
        )?;
        let refusals = b.counter(
            "gkm_gdoi_refusals_total",
            "GDOI and IKE messages refused or dropped, by reason (phase 1 failures, refused PULLs, half-open limits, bad ACKs).",
            &["reason"],
        )?;
        let phase1_established = IntCounter::new(
            "gkm_phase1_established_total",
            "Phase 1 (IKEv1 main mode) SAs established.",
        )?;
        let phase1_established = b.add("gkm_phase1_established_total", phase1_established)?;
        let phase1_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gkm_phase1_duration_seconds",
                "Time from a peer's main mode message 1 to message 6 sent (phase 1 established).",
            )
            .buckets(REGISTRATION_BUCKETS.to_vec()),
        )?;
        let phase1_duration = b.add("gkm_phase1_duration_seconds", phase1_duration)?;
        let pull_duration = b.histogram(
            "gkm_registration_duration_seconds",
            "Registration latency: time from a GM's GROUPKEY-PULL message 1 to message 4 sent, by group (phase 1 before it: gkm_phase1_duration_seconds).",
            &["group"],
            REGISTRATION_BUCKETS,
        )?;
        let rekeys = b.counter(
            "gkm_rekeys_total",
            "Rekeys sent (GROUPKEY-PUSH rounds), by group and reason.",
            &["group", "reason"],
        )?;
        let rekey_ack_duration = b.histogram(
            "gkm_rekey_ack_duration_seconds",
            "Time from a rekey's preparation until every GM acknowledged it, by group.",
            &["group"],
            REKEY_BUCKETS,
        )?;
        let rekey_ack_ratio = b.float(
            "gkm_rekey_ack_ratio",
            "Share of the GMs that acknowledged the last closed rekey round (0-1), by group.",
            &["group"],
        )?;
        let low_ack_streak = b.gauge(
            "gkm_rekey_low_ack_rounds",
            "Consecutive closed rekey rounds, up to the last, in which under 99 % of the GMs acknowledged, by group.",
            &["group"],
        )?;
        let acks_missed = b.counter(
            "gkm_rekey_acks_missed_total",
            "GMs that did not acknowledge a rekey before its round closed, by group.",
            &["group"],
        )?;
        let removals = b.counter(
            "gkm_gm_removals_total",
            "GMs removed from the GM database after 3 consecutive unacknowledged rekeys, by group.",
            &["group"],
        )?;
        let gms = b.gauge(
            "gkm_gms",
            "GMs in the GM database, by group and state (registered: no missed ACK; lagging: at least one).",
            &["group", "state"],
        )?;
        let gms_one_miss = b.gauge(
            "gkm_gms_one_miss_from_removal",
            "GMs with 2 consecutive missed ACKs: the next miss removes them, by group.",
            &["group"],
        )?;
        let kek_remaining = b.float(
            "gkm_kek_remaining_seconds",
            "Remaining lifetime of the group's KEK.",
            &["group"],
        )?;
        let tek_remaining = b.float(
            "gkm_tek_remaining_seconds",
            "Remaining lifetime of the group's current TEKs.",
            &["group"],
        )?;
        let coop_role = b.gauge(
            "gkm_coop_role",
            "1 for this key server's COOP role in the group (primary or secondary), 0 for the other.",
            &["group", "role"],
        )?;
        let coop_epoch = b.gauge(
            "gkm_coop_epoch",
            "This key server's COOP epoch in the group.",
            &["group"],
        )?;
        let coop_peers_alive = b.gauge(
            "gkm_coop_peers_alive",
            "Peer key servers of the group heard within the dead-peer window.",
            &["group"],
        )?;
        let coop_mismatch = b.gauge(
            "gkm_coop_mismatch",
            "1 while this secondary's configuration differs from its primary's, by kind (d3p, rekey_ack, rekey_signing_key).",
            &["group", "kind"],
        )?;
        let phase1_sas = IntGauge::new(
            "gkm_phase1_sas",
            "Phase 1 SAs held (established and half-open).",
        )?;
        let phase1_sas = b.add("gkm_phase1_sas", phase1_sas)?;
        let phase1_half_open = IntGauge::new(
            "gkm_phase1_half_open",
            "Half-open phase 1 exchanges (waiting for main mode message 3 or 5).",
        )?;
        let phase1_half_open = b.add("gkm_phase1_half_open", phase1_half_open)?;
        let store_errors = IntCounter::new(
            "gkm_store_errors_total",
            "Writes to the store that failed (each is retried or logged).",
        )?;
        let store_errors = b.add("gkm_store_errors_total", store_errors)?;
        Ok(Self {
            registry: b.registry,
            #[cfg(test)]
            names: b.names,
            registrations,
            refusals,
            phase1_established,
            phase1_duration,
            pull_duration,
            rekeys,
            rekey_ack_duration,
            rekey_ack_ratio,
            low_ack_streak,
            acks_missed,
            removals,
            gms,
            gms_one_miss,
            kek_remaining,
            tek_remaining,
            coop_role,
            coop_epoch,
            coop_peers_alive,
            coop_mismatch,
            phase1_sas,
            phase1_half_open,
            store_errors,
        })
    }

    /// The names of every metric, as registered.
    #[cfg(test)]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A store write failed.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Counts what an engine event says.
    pub fn on_event(&self, ks: &KeyServer, e: &KsEvent) {
        let name = |g: u32| group_name(ks, g);
        match e {
            KsEvent::Registered(r) => self
                .registrations
                .with_label_values(&[&name(r.group_id)])
                .inc(),
            KsEvent::Phase1Established { elapsed_ms, .. } => {
                self.phase1_established.inc();
                self.phase1_duration.observe(*elapsed_ms as f64 / 1000.0);
            }
            KsEvent::PullCompleted {
                group_id,
                elapsed_ms,
            } => self
                .pull_duration
                .with_label_values(&[&name(*group_id)])
                .observe(*elapsed_ms as f64 / 1000.0),
            KsEvent::Rejected { reason, .. } => self
                .refusals
                .with_label_values(&[reject_label(*reason)])
                .inc(),
            KsEvent::RekeySent {
                group_id, reason, ..
            } => self
                .rekeys
                .with_label_values(&[name(*group_id).as_ref(), reason.to_string().as_str()])
                .inc(),
            KsEvent::RekeyAcked {
                group_id,
                elapsed_ms,
                ..
            } => self
                .rekey_ack_duration
                .with_label_values(&[&name(*group_id)])
                .observe(*elapsed_ms as f64 / 1000.0),
            KsEvent::RekeyRoundClosed {
                group_id,
                acked,
                missed,
                removed,
                ..
            } => {
                let g = name(*group_id);
                let all = acked + missed + removed;
                if all > 0 {
                    let ratio = *acked as f64 / all as f64;
                    self.rekey_ack_ratio.with_label_values(&[&g]).set(ratio);
                    let streak = self.low_ack_streak.with_label_values(&[&g]);
                    if ratio < LOW_ACK_RATIO {
                        streak.inc();
                    } else {
                        streak.set(0);
                    }
                }
                self.acks_missed
                    .with_label_values(&[&g])
                    .inc_by((missed + removed) as u64);
                self.removals
                    .with_label_values(&[&g])
                    .inc_by(*removed as u64);
            }
            _ => {}
        }
    }

    /// Sets the gauges from the engine's state now (at a scrape). Walks
    /// the GM database once (one ACK-state lookup per GM), on the GDOI loop.
    pub fn refresh(&self, ks: &KeyServer, now: u64) {
        self.phase1_sas.set(ks.phase1_sa_count() as i64);
        self.phase1_half_open.set(ks.half_open_count() as i64);
        for group in ks.groups() {
            let id = group.keys.group_id;
            let g = group.name.as_str();
            let (mut ok, mut lagging, mut one_miss) = (0i64, 0i64, 0i64);
            for m in ks.members(id) {
                let misses = ks
                    .member_ack_state(id, &m.gm_identity)
                    .map_or(0, |a| a.misses);
                if misses == 0 {
                    ok += 1;
                } else {
                    lagging += 1;
                }
                if misses == 2 {
                    one_miss += 1;
                }
            }
            self.gms.with_label_values(&[g, "registered"]).set(ok);
            self.gms.with_label_values(&[g, "lagging"]).set(lagging);
            self.gms_one_miss.with_label_values(&[g]).set(one_miss);
            if let Some(k) = ks.kek_policy_status(id, now) {
                self.kek_remaining
                    .with_label_values(&[g])
                    .set(k.remaining_lifetime_secs as f64);
            }
            if let Some(st) = ks.group_state(id) {
                self.tek_remaining
                    .with_label_values(&[g])
                    .set(st.tek_expires_at.saturating_sub(now) as f64 / 1000.0);
            }
            if let Some(c) = ks.coop_status(id, now) {
                let primary = i64::from(c.role == Role::Primary);
                self.coop_role
                    .with_label_values(&[g, "primary"])
                    .set(primary);
                self.coop_role
                    .with_label_values(&[g, "secondary"])
                    .set(1 - primary);
                self.coop_epoch
                    .with_label_values(&[g])
                    .set(i64::try_from(c.epoch).unwrap_or(i64::MAX));
                self.coop_peers_alive
                    .with_label_values(&[g])
                    .set(c.peers.iter().filter(|p| p.alive).count() as i64);
                for (kind, m) in MISMATCH_KINDS {
                    self.coop_mismatch
                        .with_label_values(&[g, kind])
                        .set(i64::from(c.mismatches.contains(m)));
                }
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on a metric without a name, which
        // registration refused already.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// What keeps the key server from serving: groups with cooperative key
/// servers whose role is not known yet (a secondary that has heard no
/// primary blocks new GMs until it does, or takes over). Counted, not
/// named: `/readyz` answers without a token, and group names are for
/// authenticated readers (`gkmctl show crypto gkm ks coop` says which).
pub fn not_ready(ks: &KeyServer, now: u64) -> Vec<String> {
    let waiting = ks
        .groups()
        .iter()
        .filter_map(|g| ks.coop_status(g.keys.group_id, now))
        .filter(|c| c.role == Role::Secondary && c.primary.is_none())
        .count();
    if waiting == 0 {
        return Vec::new();
    }
    vec![format!(
        "COOP role not known yet (no primary heard) in {waiting} group(s)"
    )]
}

const MISMATCH_KINDS: [(&str, &gkm_proto::ks::CoopMismatch); 3] = [
    ("d3p", &gkm_proto::ks::CoopMismatch::D3p),
    ("rekey_ack", &gkm_proto::ks::CoopMismatch::RekeyAck),
    (
        "rekey_signing_key",
        &gkm_proto::ks::CoopMismatch::RekeySigningKey,
    ),
];

/// The group's name, the label (its number if the engine no longer has it).
fn group_name(ks: &KeyServer, group_id: u32) -> std::borrow::Cow<'_, str> {
    ks.groups()
        .iter()
        .find(|g| g.keys.group_id == group_id)
        .map_or_else(|| group_id.to_string().into(), |g| g.name.as_str().into())
}

/// A refusal reason as a label. Spelled out (no allocation per refusal
/// under a flood), and exhaustive: a new reason needs its label here, and
/// renaming a variant does not rename the label the alerts use.
fn reject_label(r: Reject) -> &'static str {
    match r {
        Reject::Malformed => "malformed",
        Reject::NoProposal => "no_proposal",
        Reject::UnsupportedExchange => "unsupported_exchange",
        Reject::AuthenticationFailed => "authentication_failed",
        Reject::InvalidCertificate => "invalid_certificate",
        Reject::InvalidHash => "invalid_hash",
        Reject::UnknownGroup => "unknown_group",
        Reject::Unauthorized => "unauthorized",
        Reject::CredentialNotAccepted => "credential_not_accepted",
        Reject::LegacyPhase1 => "legacy_phase1",
        Reject::UnknownExchange => "unknown_exchange",
        Reject::Retransmit => "retransmit",
        Reject::HalfOpenLimit => "half_open_limit",
        Reject::HalfOpenEvicted => "half_open_evicted",
        Reject::AckNotAccepted => "ack_not_accepted",
        Reject::BadAck => "bad_ack",
        Reject::CoopBlocking => "coop_blocking",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_snake_case_labels() {
        assert_eq!(reject_label(Reject::HalfOpenLimit), "half_open_limit");
        assert_eq!(reject_label(Reject::Malformed), "malformed");
    }

    /// docs/METRICS.md lists exactly the metrics the server and its HTTP
    /// layer export, each once, in a table row starting `| \`gkm_...`.
    #[test]
    fn the_document_lists_every_exported_metric_and_no_other() {
        // The key server's part: the agent's own metrics follow it.
        let doc = include_str!("../../docs/METRICS.md");
        let doc = doc
            .split("## The agent's metrics")
            .next()
            .unwrap_or_default();
        let mut documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("gkm_"))
            .collect();
        let m = Metrics::new("test").unwrap();
        let http = gkm_web::metrics::HttpMetrics::new().unwrap();
        let mut exported: Vec<&str> = m
            .names()
            .iter()
            .chain(http.names())
            .map(String::as_str)
            .collect();
        let n = documented.len();
        documented.sort_unstable();
        documented.dedup();
        assert_eq!(documented.len(), n, "a metric documented twice");
        exported.sort_unstable();
        assert_eq!(documented, exported);
    }
}
