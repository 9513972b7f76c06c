//! Cooperative key servers, the server's part (docs/COOP.md): what it reads
//! from the store for a group with `coop` (the peers' pair PSKs, the epoch
//! persisted last), the engine configuration and PSK entries it makes of
//! them, the secret the epoch is kept in, the GDOI loop's COOP state
//! ([`CoopDriver`]: restarts on a changed configuration, the log lines of
//! COOP events) and the API's view of the engine's status.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Result};
use gkm_model::clock::unix_ms;
use gkm_proto::ks::{
    CoopGroupConfig, CoopPeerAuth, CoopPeerConfig, Credential, KeyServer, PskEntry,
};
use tracing::{error, info, warn};

use crate::logthrottle::Throttle;
use crate::syslog::{Severity, Syslog};
use gkm_store::model::{Authentication, CoopPolicy, Group};
use gkm_store::Store;
use zeroize::Zeroizing;

/// The secret a group's COOP epoch is persisted in (8 octets, big-endian);
/// deleted with the group.
pub fn epoch_secret(group_id: u32) -> String {
    gkm_store::coop_epoch_secret(group_id)
}

/// A group's COOP as the store holds it.
#[derive(Clone)]
pub struct CoopLoaded {
    /// The configuration.
    pub policy: CoopPolicy,
    /// Each PSK peer's pair PSK, by address (peers without one are not
    /// reached).
    pub psks: Vec<(IpAddr, Zeroizing<String>)>,
    /// The epoch persisted last (0: none).
    pub epoch: u64,
}

impl PartialEq for CoopLoaded {
    /// Whether the engine must restart the group's COOP: the
    /// configuration or a key changed (the epoch is the engine's own).
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy
            && self.psks.len() == other.psks.len()
            && self
                .psks
                .iter()
                .zip(&other.psks)
                .all(|((a, k), (b, l))| a == b && k.as_str() == l.as_str())
    }
}

/// Reads a group's COOP from the store (None: the group has none).
pub async fn load(store: &dyn Store, g: &Group) -> Result<Option<CoopLoaded>> {
    let Some(policy) = g.policy.coop.clone() else {
        return Ok(None);
    };
    let mut psks = Vec::new();
    for p in &policy.peers {
        let ip = p
            .ip("")
            .map_err(|e| anyhow!("group {:?}: coop: {e}", g.name))?;
        if let Some(k) = store.coop_peer_psk(&g.name, &p.address).await? {
            psks.push((ip, k));
        }
    }
    let epoch = match store.secret(&epoch_secret(g.group_id)).await? {
        None => 0,
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| {
            anyhow!(
                "group {:?}: the persisted COOP epoch is not 8 octets",
                g.name
            )
        })?),
    };
    Ok(Some(CoopLoaded {
        policy,
        psks,
        epoch,
    }))
}

/// The engine's configuration of a group's COOP and the PSK entries that
/// let its PSK peers in (`Credential::CoopPeer`, each on its peer's
/// address alone). A peer on certificates is known by its `identity`
/// (its certificate's subject) and needs this key server's `[pki]`
/// (`pki`: configured). Peers without a pair PSK, or on certificates
/// without those, are left out, each with a reason for the log.
pub fn engine_config(
    group_id: u32,
    l: &CoopLoaded,
    own: (Ipv4Addr, Option<Ipv6Addr>),
    pki: bool,
    now_ms: u64,
    skipped: &mut Vec<String>,
) -> Result<(CoopGroupConfig, Vec<PskEntry>)> {
    let mut peers = Vec::new();
    let mut entries = Vec::new();
    let mut v6 = false;
    for p in &l.policy.peers {
        let ip = p.ip("").map_err(|e| anyhow!("coop: {e}"))?;
        v6 = ip.is_ipv6();
        if matches!(p.authentication, Authentication::Pki) {
            let Some(subject) = p.identity.clone() else {
                skipped.push(format!(
                    "{ip}: a peer on certificates needs `identity`, its certificate's subject (CN=...,O=...)"
                ));
                continue;
            };
            if !pki {
                skipped.push(format!(
                    "{ip}: certificates between key servers need [pki] (ca, cert, key) on this key server"
                ));
                continue;
            }
            peers.push(CoopPeerConfig {
                addr: SocketAddr::new(ip, p.port),
                auth: CoopPeerAuth::Certificate { subject },
            });
            continue;
        }
        let Some((_, k)) = l.psks.iter().find(|(a, _)| *a == ip) else {
            skipped.push(format!("{ip}: no pair PSK set"));
            continue;
        };
        let key = Zeroizing::new(k.as_bytes().to_vec());
        peers.push(CoopPeerConfig {
            addr: SocketAddr::new(ip, p.port),
            auth: CoopPeerAuth::Psk(key.clone()),
        });
        entries.push(PskEntry {
            credential: Credential::CoopPeer(group_id),
            ranges: vec![
                gkm_model::IpPrefix::new(ip, if ip.is_ipv6() { 128 } else { 32 })
                    .ok_or_else(|| anyhow!("coop: {ip} as a host prefix"))?,
            ],
            key,
        });
    }
    let local_addr = if v6 {
        IpAddr::V6(
            own.1
                .ok_or_else(|| anyhow!("coop: the peers are IPv6 and ks_address_v6 is not set"))?,
        )
    } else {
        IpAddr::V4(own.0)
    };
    let p = &l.policy;
    let narrow = |v: u32, what: &str| {
        u8::try_from(v).map_err(|_| anyhow!("coop: {what} {v} is out of range"))
    };
    Ok((
        CoopGroupConfig {
            group_id,
            priority: narrow(p.priority, "priority")?,
            local_addr,
            peers,
            refresh_ms: u64::from(p.refresh_secs) * 1000,
            check_ms: u64::from(p.check_secs) * 1000,
            dead_periods: narrow(p.dead_periods, "dead_periods")?,
            persisted_epoch: l.epoch,
            // Above any number used before a restart, as long as the clock
            // did not step back (docs/COOP.md, "Election").
            seq_start: now_ms.saturating_mul(1000),
        },
        entries,
    ))
}

/// The GDOI loop's COOP state: each group's configuration as started, its
/// pair PSK entries, and the epochs the engine waits to see persisted.
pub struct CoopDriver {
    loaded: HashMap<u32, CoopLoaded>,
    psks: HashMap<u32, Vec<PskEntry>>,
    epochs: Vec<(u32, u64)>,
    own: (Ipv4Addr, Option<Ipv6Addr>),
    /// Rate limit of the "COOP message dropped" log line.
    drops: Throttle,
    /// The syslog collector of the `%GDOI-...` messages, if configured.
    syslog: Option<Syslog>,
}

impl CoopDriver {
    /// The driver of a key server at `own` with the pair PSKs built at start.
    pub fn new(
        own: (Ipv4Addr, Option<Ipv6Addr>),
        psks: HashMap<u32, Vec<PskEntry>>,
        syslog: Option<Syslog>,
    ) -> Self {
        Self {
            loaded: HashMap::new(),
            psks,
            epochs: Vec::new(),
            own,
            drops: Throttle::new(Duration::from_secs(10)),
            syslog,
        }
    }

    /// Starts a group's COOP in the engine at start-up.
    pub fn start(&mut self, ks: &mut KeyServer, loaded: CoopLoaded, cfg: CoopGroupConfig) {
        info!(
            group = cfg.group_id,
            peers = cfg.peers.len(),
            priority = cfg.priority,
            epoch = cfg.persisted_epoch,
            "cooperative key servers: starting as secondary"
        );
        self.loaded.insert(cfg.group_id, loaded);
        ks.set_coop_group(unix_ms(), cfg);
    }

    /// Every COOP group's pair PSK entries (for the engine's PSK table).
    pub fn psks(&self) -> &HashMap<u32, Vec<PskEntry>> {
        &self.psks
    }

    /// Whether epochs wait to be persisted.
    pub fn has_epochs(&self) -> bool {
        !self.epochs.is_empty()
    }

    /// The epochs to persist now.
    pub fn take_epochs(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.epochs)
    }

    /// An epoch the store did not take: tried again later.
    pub fn retry_epoch(&mut self, group_id: u32, epoch: u64) {
        self.epochs.push((group_id, epoch));
    }

    /// A group's COOP configuration as now stored: the engine restarts the
    /// group's COOP only when it changed (a restart begins as secondary).
    pub fn changed(
        &mut self,
        ks: &mut KeyServer,
        group_id: u32,
        name: Option<&str>,
        coop: Option<CoopLoaded>,
    ) {
        let Some(mut l) = coop else {
            if self.loaded.remove(&group_id).is_some() {
                ks.remove_coop_group(group_id);
                self.psks.remove(&group_id);
                info!(group = group_id, "cooperative key servers: stopped");
            }
            return;
        };
        if self.loaded.get(&group_id) == Some(&l) {
            return;
        }
        // The engine's epoch is the newest (the store may lag by one write).
        if let Some(s) = ks.coop_status(group_id, unix_ms()) {
            l.epoch = l.epoch.max(s.epoch);
        }
        let mut skipped = Vec::new();
        match engine_config(
            group_id,
            &l,
            self.own,
            ks.has_certificate(),
            unix_ms(),
            &mut skipped,
        ) {
            Ok((cfg, entries)) => {
                for why in skipped {
                    warn!(group = ?name, peer = %why, "COOP peer not reached");
                }
                info!(group = ?name, peers = cfg.peers.len(), priority = cfg.priority, "cooperative key servers: (re)started as secondary");
                ks.set_coop_group(unix_ms(), cfg);
                self.psks.insert(group_id, entries);
                self.loaded.insert(group_id, l);
            }
            Err(e) => {
                error!(group = ?name, error = %format!("{e:#}"), "COOP not started");
                ks.remove_coop_group(group_id);
                self.psks.remove(&group_id);
                self.loaded.remove(&group_id);
            }
        }
    }

    pub fn event(&mut self, ev: gkm_proto::ks::CoopEvent) {
        use gkm_proto::ks::CoopEvent;
        match ev {
            CoopEvent::PersistEpoch { group_id, epoch } => self.epochs.push((group_id, epoch)),
            CoopEvent::RoleChanged {
                group_id,
                role,
                epoch,
                primary,
            } => info!(
                group = group_id, role = ?role, epoch,
                primary = %primary.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                "COOP role changed"
            ),
            CoopEvent::Merged { group_id, with } => warn!(
                group = group_id, with = %with,
                "COOP: another primary stepped down (a partition healed)"
            ),
            CoopEvent::PeerSa {
                group_id,
                peer,
                failed: None,
            } => info!(group = group_id, %peer, "COOP: phase 1 SA to the peer established"),
            CoopEvent::PeerSa {
                group_id,
                peer,
                failed: Some(why),
            } => warn!(group = group_id, %peer, reason = why, "COOP: phase 1 to the peer failed"),
            CoopEvent::Mismatch {
                group_id,
                kind,
                raised,
            } => {
                let (severity, msgid, text) = if raised {
                    error!(group = group_id, "{}", kind.text());
                    (
                        Severity::Error,
                        "COOP_CONFIG_MISMATCH",
                        kind.text().to_owned(),
                    )
                } else {
                    let text = format!(
                        "COOP configuration matches the primary again: {}",
                        match kind {
                            gkm_proto::ks::CoopMismatch::D3p => "IP-D3P",
                            gkm_proto::ks::CoopMismatch::RekeyAck => "rekey acknowledgement",
                            gkm_proto::ks::CoopMismatch::RekeySigningKey => "rekey signing key",
                        }
                    );
                    info!(group = group_id, "{text}");
                    (Severity::Notice, "COOP_CONFIG_MATCH", text)
                };
                if let Some(s) = &self.syslog {
                    if let Err(e) = s.send(severity, msgid, &text, unix_ms()) {
                        warn!(error = %e, "syslog: message not sent");
                    }
                }
            }
            // Handled by the GDOI driver (it holds the engine's state and
            // the store writer).
            CoopEvent::PersistGroupState { .. } | CoopEvent::GmLearned(_) => {}
            CoopEvent::Dropped { from, reason } => {
                if let Some(suppressed) = self.drops.admit() {
                    warn!(%from, reason = ?reason, suppressed, "COOP message dropped");
                }
            }
        }
    }
}

/// `show crypto gkm ks coop` of the engine's status, for the API.
pub fn view(s: &gkm_proto::ks::CoopStatus, now_ms: u64) -> gkm_model::CoopView {
    use gkm_proto::coop::election::Role;
    let role = |r: Role| match r {
        Role::Primary => "Primary".to_owned(),
        Role::Secondary => "Secondary".to_owned(),
    };
    gkm_model::CoopView {
        local_address: s.local.addr.to_string(),
        local_priority: s.local.priority,
        local_role: role(s.role),
        local_version: gkm_proto::engine::own_vendor_id().version.to_string(),
        epoch: s.epoch,
        primary: s.primary.map(|p| p.to_string()),
        refresh_secs: s.refresh_ms / 1000,
        check_secs: s.check_ms / 1000,
        dead_periods: s.dead_periods,
        remaining_secs: s.next_timer.saturating_sub(now_ms).div_ceil(1000),
        antireplay_seq: s.next_seq,
        invalid_ann_received: s.peers.iter().map(|p| p.election.replayed).sum(),
        new_gm_blocking: s.new_gm_blocking,
        not_a_peer: s.not_a_peer,
        mismatches: s.mismatches.iter().map(|m| m.text().to_owned()).collect(),
        peers: s
            .peers
            .iter()
            .map(|p| gkm_model::CoopPeerView {
                address: p.addr.to_string(),
                version: p
                    .software
                    .map_or_else(|| "-".to_owned(), |(v, _)| v.to_string()),
                priority: p.election.last.map(|h| h.rank.priority),
                role: p.election.last.map(|h| role(h.role)),
                status: if p.alive { "Alive" } else { "Dead" }.to_owned(),
                antireplay_seq: p.election.last.map(|h| h.seq),
                epoch: p.election.last.map(|h| h.epoch),
                ike_status: if p.sa_up {
                    "Established"
                } else {
                    "Not established"
                }
                .to_owned(),
                counters: p.counters,
                gm_sync_held: p.gm_sync.0,
                gm_sync_acked: p.gm_sync.1,
            })
            .collect(),
        gm_journal: s.gm_journal.0 as u64,
        gm_sync_gaps: s.gm_sync_gaps,
        refused: s
            .refused
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(peers: &str) -> CoopLoaded {
        CoopLoaded {
            policy: serde_json::from_str(&format!(r#"{{"priority":7,"peers":[{peers}]}}"#))
                .unwrap(),
            psks: vec![("10.0.0.2".parse().unwrap(), Zeroizing::new("pair".into()))],
            epoch: 4,
        }
    }

    #[test]
    fn psk_peers_become_sessions_and_host_psk_entries() {
        let l = loaded(
            r#"{"address":"10.0.0.2","port":1848},{"address":"10.0.0.3"},{"address":"10.0.0.4","authentication":{"method":"pki"}}"#,
        );
        let mut skipped = Vec::new();
        let (cfg, psks) = engine_config(
            9,
            &l,
            (Ipv4Addr::new(10, 0, 0, 1), None),
            true,
            5,
            &mut skipped,
        )
        .unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].addr, "10.0.0.2:1848".parse().unwrap());
        assert_eq!(
            (cfg.priority, cfg.persisted_epoch, cfg.seq_start),
            (7, 4, 5000)
        );
        assert_eq!(
            (cfg.refresh_ms, cfg.check_ms, cfg.dead_periods),
            (20_000, 30_000, 3)
        );
        assert_eq!(cfg.local_addr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(psks.len(), 1);
        assert_eq!(psks[0].credential, Credential::CoopPeer(9));
        assert!(psks[0].ranges[0].contains("10.0.0.2".parse().unwrap()));
        assert!(!psks[0].ranges[0].contains("10.0.0.3".parse().unwrap()));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[1].contains("needs `identity`"), "{skipped:?}");
    }

    #[test]
    fn certificate_peers_are_known_by_their_subject_and_need_pki_here() {
        let l = loaded(
            r#"{"address":"10.0.0.4","identity":"CN=ks4,O=GKM","authentication":{"method":"pki"}}"#,
        );
        let own = (Ipv4Addr::new(10, 0, 0, 1), None);
        let mut skipped = Vec::new();
        let (cfg, psks) = engine_config(9, &l, own, true, 5, &mut skipped).unwrap();
        assert!(skipped.is_empty() && psks.is_empty(), "{skipped:?}");
        assert!(matches!(
            &cfg.peers[0].auth,
            CoopPeerAuth::Certificate { subject } if subject == "CN=ks4,O=GKM"
        ));
        let (cfg, _) = engine_config(9, &l, own, false, 5, &mut skipped).unwrap();
        assert!(cfg.peers.is_empty());
        assert!(skipped[0].contains("need [pki]"), "{skipped:?}");
    }

    #[test]
    fn ipv6_peers_need_the_ipv6_address_and_the_default_port_is_gdois() {
        let l = loaded(r#"{"address":"fd00::2"}"#);
        let e = engine_config(
            9,
            &l,
            (Ipv4Addr::new(10, 0, 0, 1), None),
            false,
            0,
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("ks_address_v6"), "{e}");
        assert_eq!(
            gkm_store::model::coop::DEFAULT_PEER_PORT,
            gkm_wire::consts::GDOI_PORT
        );
    }
}
