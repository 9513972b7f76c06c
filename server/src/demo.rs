//! `--demo`: a living dashboard seconds after the quick start. The server
//! creates a group `DEMO` (if absent) and runs simulated GMs inside its own
//! process: each is the real GM engine (`gkm_proto::gm`) on its own UDP
//! socket on 127.0.66.x, registering over loopback to this server's GDOI
//! port and acknowledging rekeys. Every eighth GM ignores the network for two
//! minutes in four, so it misses rekeys, lags, is removed after three and
//! registers again: the GM-state chart and the ACK ratios move. A rekey is
//! sent every 30 s so the ACK timeline fills. Every 10 s each registered
//! GM files a health report the way an agent does (through the store, as
//! the API's handler would, with agent version `demo`): packet counters
//! that grow and, for every eighth GM counting from the fifth (a "skewed
//! clock"), IP-D3P input errors with history, so the D3P chart, the GM
//! pages and the D3P spike alert have something to show. The simulated
//! GMs run no dataplane: those counters are the one made-up thing here.
//!
//! Demo traffic is real GDOI; nothing here is a mock. Do not use it on a
//! production key server: the DEMO group's PSK is public.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use gkm_model::clock::unix_ms as now_ms;
use gkm_proto::gm::{GmAuth, GmConfig, GmIdentity, GroupMember};
use gkm_store::model::{D3pError, GmHealth, GroupPolicy, ReplayCounters, WindowSource};
use gkm_store::{Actor, Store};
use rand_core::OsRng;
use tokio::net::UdpSocket;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// The demo group's name.
pub const GROUP: &str = "DEMO";
/// Its identity number.
pub const IDENTITY: u32 = 4242;
/// Its pre-shared key (public: demo only).
pub const PSK: &str = "gkm-demo-psk";
/// Seconds between the demo's forced rekeys.
pub const REKEY_EVERY_SECS: u64 = 30;

/// Creates the demo group unless it exists; refuses if its identity
/// number belongs to another group.
pub async fn prepare(store: &dyn Store) -> Result<()> {
    if store.group(GROUP).await?.is_some() {
        return Ok(());
    }
    if let Some(g) = store.group_by_group_id(IDENTITY).await? {
        anyhow::bail!(
            "--demo needs group identity {IDENTITY}, which group {:?} has",
            g.name
        );
    }
    let policy: GroupPolicy = serde_json::from_value(serde_json::json!({
        "teks": [{"src": "10.42.0.0/16", "dst": "10.42.0.0/16", "lifetime": 300}],
        "tek_rekey_before": 60,
        "rekey": {"transport": "unicast", "retransmit_interval": 2, "retransmit_number": 1},
        "d3p_window": {"sec": 5},
        "authentication": {"method": "psk", "psk": PSK},
        "authorization": {"addresses": ["127.0.0.0/8"]}
    }))
    .context("demo policy")?;
    policy.validate().context("demo policy")?;
    store
        .create_group(&Actor("demo".into()), GROUP, IDENTITY, &policy)
        .await?;
    info!(group = GROUP, group_id = IDENTITY, "demo: group created");
    Ok(())
}

/// Whether a flaky GM ignores the network now (two minutes in four).
fn ignores_the_network(now_ms: u64) -> bool {
    (now_ms / 120_000) % 2 == 1
}

/// Seconds between a simulated GM's health reports.
const REPORT_EVERY_MS: u64 = 10_000;

/// What a simulated GM reports after `n` reports; `skewed` GMs see D3P
/// errors from a peer whose stamps are 6.5 s old (beyond the 5 s window):
/// every third report brings 12 more.
fn simulated_health(addr: Ipv4Addr, n: u64, skewed: bool, now: u64) -> GmHealth {
    let errors = if skewed { (n / 3) * 12 } else { 0 };
    let history = if errors > 0 {
        (0..errors.min(10))
            .map(|i| D3pError {
                src: Ipv4Addr::new(10, 42, 0, 99).into(),
                my_time_ms: now - 1000 * i,
                peer_time_ms: now - 1000 * i - 6500,
                window_ms: 5000,
            })
            .collect()
    } else {
        Default::default()
    };
    GmHealth {
        group: IDENTITY,
        gm_identity: addr.to_string(),
        received_at: i64::try_from(now).unwrap_or(i64::MAX),
        agent_version: "demo".into(),
        registered: true,
        d3p_window_ms: Some(5000),
        d3p_window_source: Some(WindowSource::Ks),
        agent_time_ms: now,
        counters: ReplayCounters {
            input_packets: n * 970,
            output_packets: n * 1010,
            input_errors: errors,
            output_errors: 0,
            history,
        },
        membership: None,
        traffic: None,
        ack_lost: false,
    }
}

async fn run_gm(
    ks: SocketAddr,
    addr: Ipv4Addr,
    flaky: bool,
    skewed: bool,
    store: Arc<dyn Store>,
) -> Result<()> {
    let socket = UdpSocket::bind(SocketAddr::from((addr, 0)))
        .await
        .with_context(|| format!("demo GM {addr}: bind"))?;
    let cfg = GmConfig {
        key_servers: vec![ks],
        ipsec_doi_key_servers: Vec::new(),
        legacy_phase1_key_servers: Vec::new(),
        phase1_suites: None,
        group_id: IDENTITY,
        identity: GmIdentity::Ipv4(addr),
        auth: GmAuth::Psk(Zeroizing::new(PSK.as_bytes().to_vec())),
        phase1_life_secs: 86_400,
        sender_ids: 1,
        reregister_before_ms: 60_000,
        retransmit_initial_ms: 1000,
        max_transmissions: 4,
        initial_contact: true,
        ack_address: Some(addr.into()),
        multicast_ack_jitter_ms: 500,
        extra_vendor_ids: Vec::new(),
        dh_backend: gkm_proto::crypto::DhBackend::Ring,
    };
    let mut gm = GroupMember::new(cfg, Box::new(OsRng));
    let mut buf = vec![0u8; 65_536];
    gm.handle_timeout(now_ms());
    let (mut reports, mut next_report) = (0u64, now_ms() + REPORT_EVERY_MS);
    loop {
        let now = now_ms();
        if now >= next_report {
            next_report = now + REPORT_EVERY_MS;
            if gm.group().is_some() && !(flaky && ignores_the_network(now)) {
                reports += 1;
                let h = simulated_health(addr, reports, skewed, now);
                if let Err(e) = store.put_gm_health(&h).await {
                    tracing::debug!(gm = %addr, error = %e, "demo GM: health report");
                }
            }
        }
        while let Some(t) = gm.poll_transmit() {
            if let Err(e) = socket.send_to(&t.payload, t.to).await {
                warn!(gm = %addr, error = %e, "demo GM: send");
            }
        }
        while gm.poll_event().is_some() {}
        let wait = gm.poll_timeout().unwrap_or(u64::MAX).min(next_report);
        let wait = Duration::from_millis(wait.saturating_sub(now_ms()));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                if !(flaky && ignores_the_network(now_ms())) {
                    gm.handle_datagram(now_ms(), from, buf.get(..n).unwrap_or_default());
                }
            }
            _ = tokio::time::sleep(wait) => gm.handle_timeout(now_ms()),
        }
    }
}

/// Starts `n` simulated GMs against the GDOI socket at `ks` and the
/// periodic rekey; runs until the server stops.
pub async fn run(ks: SocketAddr, n: u8, control: Arc<dyn gkm_web::Control>, store: Arc<dyn Store>) {
    let ks = if ks.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, ks.port()))
    } else {
        ks
    };
    info!(gms = n, group = GROUP, key_server = %ks, "demo: simulated GMs registering");
    for i in 0..n {
        let addr = Ipv4Addr::new(127, 0, 66, i.saturating_add(1));
        let flaky = i % 8 == 7;
        let skewed = i % 8 == 4;
        let store = store.clone();
        tokio::spawn(async move {
            // Spread the registrations over a second or two.
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 60)).await;
            if let Err(e) = run_gm(ks, addr, flaky, skewed, store).await {
                warn!(gm = %addr, error = %format!("{e:#}"), "demo GM stopped");
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(REKEY_EVERY_SECS));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = control.rekey(IDENTITY, false).await {
            warn!(error = %e, "demo: rekey");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaky_gms_are_deaf_half_the_time() {
        assert!(!ignores_the_network(0));
        assert!(!ignores_the_network(119_999));
        assert!(ignores_the_network(120_000));
        assert!(ignores_the_network(239_999));
        assert!(!ignores_the_network(240_000));
    }

    #[test]
    fn simulated_reports_are_valid_and_grow() {
        let a = Ipv4Addr::new(127, 0, 66, 5);
        let now = 1_700_000_000_000;
        for n in 0..10 {
            for skewed in [false, true] {
                assert_eq!(simulated_health(a, n, skewed, now).validate(), Ok(()));
            }
        }
        assert_eq!(simulated_health(a, 2, true, now).counters.input_errors, 0);
        let h = simulated_health(a, 3, true, now);
        assert_eq!(
            (h.counters.input_errors, h.counters.history.len()),
            (12, 10)
        );
        assert!(h
            .counters
            .history
            .iter()
            .all(|e| e.my_time_ms - e.peer_time_ms > 5000));
        assert_eq!(simulated_health(a, 9, false, now).counters.input_errors, 0);
    }
}
