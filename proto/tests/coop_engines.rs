//! Cooperative key servers, engine to engine (issue 19): three real
//! `KeyServer` engines exchanging real datagrams in memory on a simulated
//! clock. Each reaches its peers over a phase 1 SA it initiates with the
//! pair PSK and announces itself in GKM-COOP messages; the election runs
//! on what arrives. Checked: one primary (the highest priority) with every
//! SA up; its death makes the next best the primary within the dead window
//! plus a check period, in a new epoch; and announcements that are
//! replayed, altered, cut short, sent over a GM's SA or from a key server
//! that is no configured peer are dropped, counted, and change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::coop::{
    addr, coop_config, coop_ks_config, coop_psks, CHECK_MS, DEAD_PERIODS, GROUP_PSK, PAIR_PSK,
    REFRESH_MS,
};
use common::{base_config, gm_addr, ks_config, ks_group, prefix, rng, GROUP, T0};
use gkm_proto::coop::election::Role;
use gkm_proto::gm::{GmAuth, GmEvent, GmIdentity, GroupMember};
use gkm_proto::ks::{
    Authorization, CoopDrop, CoopEvent, CoopMismatch, CoopPeerAuth, Credential, KeyServer, KsEvent,
    PskEntry,
};
use zeroize::Zeroizing;

/// Key server `i` (10.0.0.i) with priority `priority`, peers `peers`.
fn key_server(i: u8, priority: u8, peers: &[u8]) -> KeyServer {
    key_server_seeded(i, priority, peers, u64::from(i))
}

/// As [`key_server`], its generator seeded with `seed` (a restarted key
/// server draws other cookies than before).
fn key_server_seeded(i: u8, priority: u8, peers: &[u8], seed: u64) -> KeyServer {
    let mut cfg = coop_ks_config(i);
    cfg.psks = coop_psks(peers);
    let mut ks = KeyServer::new(cfg, rng(seed));
    ks.set_coop_group(T0, coop_config(i, priority, peers, PAIR_PSK));
    ks
}

/// Three key servers and the wire between them.
struct Net {
    now: u64,
    /// Ordered maps, and datagrams delivered in destination order: a
    /// seed's run does not depend on hash iteration order (replays are
    /// exact).
    ks: BTreeMap<SocketAddr, KeyServer>,
    /// Key servers whose datagrams are lost both ways (dead).
    down: Vec<SocketAddr>,
    /// Pairs that cannot reach each other (a partition), both ways.
    cut: Vec<(SocketAddr, SocketAddr)>,
    /// Every COOP datagram delivered, by (from, to), for the attacks.
    captured: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// COOP events seen, by key server.
    events: Vec<(SocketAddr, CoopEvent)>,
    /// Group members, by address.
    gms: BTreeMap<SocketAddr, GroupMember>,
    /// Their events.
    gm_events: Vec<(SocketAddr, GmEvent)>,
    /// Rekeys each key server prepared (SEQ); the harness persists them at once.
    rekeys: Vec<(SocketAddr, u32)>,
}

impl Net {
    fn new() -> Self {
        let ks = [(1, 100, [2, 3]), (2, 200, [1, 3]), (3, 150, [1, 2])]
            .into_iter()
            .map(|(i, p, peers)| (addr(i), key_server(i, p, &peers)))
            .collect();
        Self {
            now: T0,
            ks,
            down: Vec::new(),
            cut: Vec::new(),
            captured: Vec::new(),
            events: Vec::new(),
            gms: BTreeMap::new(),
            gm_events: Vec::new(),
            rekeys: Vec::new(),
        }
    }

    /// Key server `ks` rekeys the group now; everything in flight is delivered.
    fn rekey(&mut self, ks: u8, reason: gkm_proto::rekey::RekeyReason) {
        let now = self.now;
        self.ks
            .get_mut(&addr(ks))
            .unwrap()
            .rekey_now(now, GROUP, reason)
            .unwrap();
        self.settle();
    }

    /// GM `i` (10.0.1.i) registering with key server `ks`.
    fn add_gm(&mut self, i: u32, ks: u8) -> SocketAddr {
        let a = gm_addr(i);
        let IpAddr::V4(v4) = a.ip() else {
            unreachable!()
        };
        let mut cfg = base_config(
            i,
            GROUP,
            GmIdentity::Ipv4(v4),
            GmAuth::Psk(Zeroizing::new(GROUP_PSK.to_vec())),
        );
        cfg.key_servers = vec![addr(ks)];
        let mut gm = GroupMember::new(cfg, rng(1000 + u64::from(i)));
        gm.handle_timeout(self.now);
        self.gms.insert(a, gm);
        a
    }

    /// Delivers everything in flight, persisting epochs as asked.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            let addrs: Vec<SocketAddr> = self.ks.keys().copied().collect();
            for a in addrs {
                let mut sends = Vec::new();
                let mut persist = Vec::new();
                {
                    let ks = self.ks.get_mut(&a).unwrap();
                    while let Some(t) = ks.poll_transmit() {
                        sends.push(t);
                    }
                    // The engine's own maps order its fan-out at random.
                    sends.sort_by_key(|t| t.to);
                    while let Some(e) = ks.poll_event() {
                        match e {
                            KsEvent::Coop(c) => {
                                if let CoopEvent::PersistEpoch { group_id, epoch } = &c {
                                    persist.push((*group_id, *epoch));
                                }
                                self.events.push((a, c));
                            }
                            KsEvent::RekeyPrepared { group_id, seq, .. } => {
                                self.rekeys.push((a, seq));
                                let _ = ks.rekey_persisted(self.now, group_id, seq);
                                moved = true;
                            }
                            _ => {}
                        }
                    }
                }
                for (g, e) in persist {
                    self.ks
                        .get_mut(&a)
                        .unwrap()
                        .coop_epoch_persisted(self.now, g, e);
                    moved = true;
                }
                for t in sends {
                    moved = true;
                    if self.down.contains(&a)
                        || self.down.contains(&t.to)
                        || self.cut.contains(&(a, t.to))
                        || self.cut.contains(&(t.to, a))
                    {
                        continue;
                    }
                    if t.payload.get(18) == Some(&241) {
                        self.captured.push((a, t.to, t.payload.clone()));
                    }
                    if let Some(peer) = self.ks.get_mut(&t.to) {
                        peer.handle_datagram(self.now, a, &t.payload);
                    } else if let Some(gm) = self.gms.get_mut(&t.to) {
                        gm.handle_datagram(self.now, a, &t.payload);
                    }
                }
            }
            let mut gm_sends = Vec::new();
            for (&a, gm) in self.gms.iter_mut() {
                while let Some(t) = gm.poll_transmit() {
                    gm_sends.push((a, t));
                }
                while let Some(e) = gm.poll_event() {
                    self.gm_events.push((a, e));
                }
            }
            for (a, t) in gm_sends {
                moved = true;
                // ACKs (RFC 8263's 35, GKM's unicast 240), for the attacks.
                if matches!(t.payload.get(18), Some(&35 | &240)) {
                    self.captured.push((a, t.to, t.payload.clone()));
                }
                let cut = self.cut.contains(&(a, t.to)) || self.cut.contains(&(t.to, a));
                if self.down.contains(&t.to) || cut {
                    continue;
                }
                if let Some(k) = self.ks.get_mut(&t.to) {
                    k.handle_datagram(self.now, a, &t.payload);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock to `until`, waking each engine at its deadlines.
    fn run_until(&mut self, until: u64) {
        self.settle();
        while self.now < until {
            let next = self
                .ks
                .iter()
                .filter(|(a, _)| !self.down.contains(a))
                .filter_map(|(_, k)| k.poll_timeout())
                .chain(self.gms.values().filter_map(GroupMember::poll_timeout))
                .min()
                .unwrap_or(until)
                .clamp(self.now + 1, until);
            self.now = next;
            let now = self.now;
            for (a, k) in self.ks.iter_mut() {
                if !self.down.contains(a) {
                    k.handle_timeout(now);
                }
            }
            for gm in self.gms.values_mut() {
                gm.handle_timeout(now);
            }
            self.settle();
        }
    }

    fn role(&self, i: u8) -> Role {
        self.ks[&addr(i)].coop_role(GROUP).unwrap()
    }

    fn drops(&self, at: u8) -> Vec<CoopDrop> {
        self.events
            .iter()
            .filter(|(a, _)| *a == addr(at))
            .filter_map(|(_, e)| match e {
                CoopEvent::Dropped { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn three_key_servers_elect_one_primary_over_their_sas_and_fail_over() {
    let mut net = Net::new();
    // Dead window (3 x 10 s) plus a check period: an election is over.
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary, "the highest priority");
    assert_eq!(
        (net.role(1), net.role(3)),
        (Role::Secondary, Role::Secondary)
    );
    for i in [1, 3] {
        let s = net.ks[&addr(i)].coop_status(GROUP, net.now).unwrap();
        assert_eq!(s.primary, Some(addr(2).ip()), "KS {i} follows KS 2");
    }
    let primary = net.ks[&addr(2)].coop_status(GROUP, net.now).unwrap();
    let epoch = primary.epoch;
    assert!(epoch >= 1);
    for p in &primary.peers {
        assert!(p.sa_up, "{p:?}");
        assert!(
            p.alive && p.counters.ann_received > 0 && p.counters.ann_sent > 0,
            "{p:?}"
        );
        assert_eq!(p.counters.sas_established, 1, "one SA per direction");
    }
    assert!((1..=3).all(|i| net.drops(i).is_empty()), "{:?}", net.events);

    // The primary dies: KS 3 (next priority) takes over within the dead
    // window plus a check period, in a later epoch; KS 1 follows it.
    let died = net.now;
    net.down.push(addr(2));
    net.run_until(died + 45_000);
    assert_eq!(net.role(3), Role::Primary);
    assert_eq!(net.role(1), Role::Secondary);
    let s3 = net.ks[&addr(3)].coop_status(GROUP, net.now).unwrap();
    assert!(s3.epoch > epoch, "{} after {epoch}", s3.epoch);
    let took_over = net
        .events
        .iter()
        .filter(|(a, e)| {
            *a == addr(3)
                && matches!(
                    e,
                    CoopEvent::RoleChanged {
                        role: Role::Primary,
                        ..
                    }
                )
        })
        .count();
    assert_eq!(took_over, 1);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.primary, Some(addr(3).ip()));
    assert!(!s1.peers.iter().find(|p| p.addr == addr(2)).unwrap().alive);
}

#[test]
fn forged_replayed_cut_and_foreign_announcements_change_nothing() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    let before: Vec<_> = (1..=3)
        .map(|i| {
            let s = net.ks[&addr(i)].coop_status(GROUP, net.now).unwrap();
            (s.role, s.epoch, s.primary)
        })
        .collect();
    let (from, to, msg) = net
        .captured
        .iter()
        .rev()
        .find(|(f, t, _)| *f == addr(2) && *t == addr(1))
        .cloned()
        .unwrap();
    let target = net.ks.get_mut(&to).unwrap();
    // Replayed as is: the anti-replay number is not newer.
    target.handle_datagram(net.now, from, &msg);
    // One octet of the ciphertext changed.
    let mut flipped = msg.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    target.handle_datagram(net.now, from, &flipped);
    // Cut short (the header's length no longer matches).
    target.handle_datagram(net.now, from, &msg[..msg.len() - 16]);
    // The same bytes from an address that holds no SA with these cookies.
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 848);
    target.handle_datagram(net.now, stranger, &msg);
    net.settle();
    let drops = net.drops(1);
    assert!(
        drops.contains(&CoopDrop::Election(
            gkm_proto::coop::election::Dropped::Replayed
        )),
        "{drops:?}"
    );
    assert!(drops.contains(&CoopDrop::NoSa), "{drops:?}");
    assert!(
        drops.iter().any(|d| matches!(
            d,
            CoopDrop::BadHash | CoopDrop::Undecryptable | CoopDrop::Malformed(_)
        )),
        "{drops:?}"
    );
    assert_eq!(drops.len(), 4, "each attempt counted once: {drops:?}");
    let after: Vec<_> = (1..=3)
        .map(|i| {
            let s = net.ks[&addr(i)].coop_status(GROUP, net.now).unwrap();
            (s.role, s.epoch, s.primary)
        })
        .collect();
    assert_eq!(before, after);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    let from2 = s1.peers.iter().find(|p| p.addr == addr(2)).unwrap();
    assert_eq!(from2.election.replayed, 1, "\"Invalid ANN PST recvd\"");
    // The status counts each refusal by its reason, as the drops say.
    let mut kinds: Vec<(&str, u64)> = Vec::new();
    for d in &drops {
        match kinds.iter_mut().find(|(k, _)| *k == d.kind()) {
            Some((_, n)) => *n += 1,
            None => kinds.push((d.kind(), 1)),
        }
    }
    kinds.sort_unstable();
    assert_eq!(s1.refused, kinds);
    assert_eq!(s1.refused.iter().map(|(_, n)| n).sum::<u64>(), 4);
}

#[test]
fn a_gm_with_the_group_psk_or_a_stranger_key_server_cannot_announce() {
    // A fourth key server, 10.0.0.4, configured with the pair PSK and
    // KS 1 as its peer, but not among KS 1's peers; and, at KS 3's own
    // address, a host that holds only the group's PSK (a GM's credential)
    // and runs the same COOP code with it, at priority 255. KS 1 takes
    // neither's announcements.
    let mut net = Net::new();
    let intruder = addr(4);
    net.ks.insert(intruder, key_server(4, 255, &[1]));
    let mut fake = key_server(3, 255, &[1, 2]);
    fake.set_coop_group(T0, coop_config(3, 255, &[1, 2], GROUP_PSK));
    net.ks.insert(addr(3), fake);
    net.run_until(T0 + 45_000);
    // The intruder's main mode finds no PSK for its address at KS 1. The
    // fake's SA opens (the group PSK covers 10/8) but its credential is
    // not the pair PSK: every announcement it sends is dropped.
    for at in [1, 2] {
        let drops = net.drops(at);
        assert!(drops.contains(&CoopDrop::NotAPeer), "KS {at}: {drops:?}");
        let s = net.ks[&addr(at)].coop_status(GROUP, net.now).unwrap();
        let three = s.peers.iter().find(|p| p.addr == addr(3)).unwrap();
        assert_eq!(three.counters.ann_received, 0, "KS {at}");
        assert!(!three.alive);
    }
    assert_eq!(net.role(2), Role::Primary, "priority 255 did not win");
    assert_eq!(net.role(1), Role::Secondary);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.primary, Some(addr(2).ip()));
    assert_eq!(s1.peers.len(), 2, "no peer added");
    let not_a_peer = net
        .drops(1)
        .iter()
        .filter(|d| **d == CoopDrop::NotAPeer)
        .count() as u64;
    assert!(s1.not_a_peer >= not_a_peer && not_a_peer > 0, "{s1:?}");
    assert!(s1.refused.contains(&("not_a_peer", not_a_peer)), "{s1:?}");
    assert!(!net.events.iter().any(|(at, e)| {
        *at == addr(1)
            && matches!(e, CoopEvent::RoleChanged { primary: Some(p), .. } if *p != addr(2).ip())
    }));
}

#[test]
fn the_pair_psk_opens_no_groupkey_pull() {
    // A GM at a peer key server's address with the pair PSK: phase 1
    // opens (the pair PSK is that address's credential), the PULL of the
    // group is refused, nothing is stored.
    let mut ks = key_server(1, 100, &[2, 3]);
    let mut gms = [(addr(3), common::gm_at(7, addr(3), PAIR_PSK, GROUP))];
    let (keys, events, _) = common::run(&mut ks, &mut gms, T0 + 20_000);
    assert!(keys.is_empty(), "the pair PSK registered a GM");
    assert!(
        events.iter().any(|e| matches!(
            e,
            KsEvent::Rejected {
                reason: gkm_proto::ks::Reject::CredentialNotAccepted,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(ks.members(GROUP).count(), 0);
}

#[test]
fn a_secondary_raises_each_option_mismatch_once_and_clears_it() {
    let mut net = Net::new();
    // KS 1 (a secondary) runs IP-D3P and interoperable ACKs; the primary
    // (KS 2) neither.
    {
        let ks1 = net.ks.get_mut(&addr(1)).unwrap();
        let mut g = ks1.groups()[0].clone();
        g.d3p_window_ms = Some(5000);
        g.rekey.ack = gkm_model::AckOption::Interoperable;
        ks1.set_group(T0, g, false).unwrap();
    }
    net.run_until(T0 + 45_000 + 2 * REFRESH_MS);
    let raised = |net: &Net, at: u8| -> Vec<(CoopMismatch, bool)> {
        net.events
            .iter()
            .filter(|(a, _)| *a == addr(at))
            .filter_map(|(_, e)| match e {
                CoopEvent::Mismatch { kind, raised, .. } => Some((*kind, *raised)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        raised(&net, 1),
        [(CoopMismatch::D3p, true), (CoopMismatch::RekeyAck, true)],
        "each raised once, however many announcements came"
    );
    assert!(raised(&net, 3).is_empty(), "KS 3 matches the primary");
    assert!(raised(&net, 2).is_empty(), "the primary compares nothing");
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.mismatches, [CoopMismatch::D3p, CoopMismatch::RekeyAck]);
    assert_eq!(
        CoopMismatch::D3p.text(),
        "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched"
    );
    assert_eq!(
        CoopMismatch::RekeyAck.text(),
        "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: Interoperable Rekey ACK configuration between Primary KS and Secondary KS are mismatched"
    );
    // The operator fixes IP-D3P: that alarm clears at once, the ACK one stays.
    let now = net.now;
    {
        let ks1 = net.ks.get_mut(&addr(1)).unwrap();
        let mut g = ks1.groups()[0].clone();
        g.d3p_window_ms = None;
        ks1.set_group(now, g, false).unwrap();
    }
    net.run_until(now + 2 * REFRESH_MS);
    assert_eq!(
        raised(&net, 1),
        [
            (CoopMismatch::D3p, true),
            (CoopMismatch::RekeyAck, true),
            (CoopMismatch::D3p, false)
        ]
    );
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.mismatches, [CoopMismatch::RekeyAck]);
}

#[test]
fn a_restarted_key_server_hears_its_peers_again() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    // KS 1 restarts: a fresh engine, its SAs gone. The others still hold
    // the SAs they initiated to it; their next announcements over them are
    // dropped at KS 1 (no SA), until they see KS 1's new SA and connect
    // again.
    let restart = net.now;
    net.ks.insert(addr(1), {
        let mut k = key_server_seeded(1, 100, &[2, 3], 101);
        // Its anti-replay numbers start above those it used before (the
        // server starts them at its clock).
        let mut cfg = coop_config(1, 100, &[2, 3], PAIR_PSK);
        cfg.seq_start = 1_000_000;
        k.set_coop_group(restart, cfg);
        k
    });
    net.run_until(restart + 3 * REFRESH_MS);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.role, Role::Secondary);
    assert_eq!(
        s1.primary,
        Some(addr(2).ip()),
        "KS 1 follows the primary again"
    );
    for p in &s1.peers {
        assert!(p.alive, "KS 1 hears {}: {p:?}", p.addr);
    }
    assert_eq!(net.role(2), Role::Primary, "no second election");
    let s2 = net.ks[&addr(2)].coop_status(GROUP, net.now).unwrap();
    let to1 = s2.peers.iter().find(|p| p.addr == addr(1)).unwrap();
    assert_eq!(
        to1.counters.sas_established, 2,
        "KS 2 connected to KS 1 again"
    );
}

#[test]
fn a_partition_makes_two_primaries_and_the_heal_leaves_one_that_merges() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    // KS 3 is cut off from both others: it takes over on its side.
    net.cut = vec![(addr(3), addr(1)), (addr(3), addr(2))];
    let split = net.now;
    net.run_until(split + 45_000);
    assert_eq!(
        (net.role(2), net.role(3)),
        (Role::Primary, Role::Primary),
        "one primary per side"
    );
    let e3 = net.ks[&addr(3)].coop_status(GROUP, net.now).unwrap().epoch;
    // The heal: within the dead window plus three check periods one
    // primary remains (the better, KS 2), and it merges (rekeys the whole
    // group) in an epoch above both sides'.
    net.cut.clear();
    let healed = net.now;
    net.run_until(healed + u64::from(DEAD_PERIODS) * CHECK_MS + 3 * CHECK_MS);
    assert_eq!(net.role(2), Role::Primary);
    assert_eq!(
        (net.role(1), net.role(3)),
        (Role::Secondary, Role::Secondary)
    );
    let merged: Vec<_> = net
        .events
        .iter()
        .filter(|(a, e)| *a == addr(2) && matches!(e, CoopEvent::Merged { .. }))
        .collect();
    assert_eq!(merged.len(), 1, "{merged:?}");
    assert!(matches!(merged[0].1, CoopEvent::Merged { with, .. } if with == addr(3).ip()));
    let s2 = net.ks[&addr(2)].coop_status(GROUP, net.now).unwrap();
    assert!(
        s2.epoch > e3,
        "the merge's epoch {} is above KS 3's {e3}",
        s2.epoch
    );
    for i in [1, 3] {
        let s = net.ks[&addr(i)].coop_status(GROUP, net.now).unwrap();
        assert_eq!(
            (s.primary, s.epoch),
            (Some(addr(2).ip()), s2.epoch),
            "KS {i}"
        );
    }
}

/// The TEK SPIs and KEK SPI a key server serves now, and its SEQ.
fn keys_of(net: &Net, i: u8) -> (Vec<u32>, [u8; 16], u32) {
    let s = net.ks[&addr(i)].group_state(GROUP).unwrap();
    (
        s.keys.teks.iter().map(|t| t.spi).collect(),
        s.keys.kek.as_ref().unwrap().spi,
        s.keys.seq,
    )
}

/// The SEQs of the rekeys a GM accepted, in order.
fn accepted(net: &Net, gm: SocketAddr) -> Vec<u32> {
    net.gm_events
        .iter()
        .filter(|(a, _)| *a == gm)
        .filter_map(|(_, e)| match e {
            GmEvent::Rekeyed { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn secondaries_serve_the_primarys_keys_and_only_a_primary_rekeys_with_seq_above_every_peers() {
    let mut net = Net::new();
    // Each key server made its own keys.
    assert_ne!(keys_of(&net, 1).0, keys_of(&net, 2).0);
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    // Both secondaries took the primary's state from its announcements
    // (and asked the caller to persist it).
    let primary = keys_of(&net, 2);
    for i in [1, 3] {
        assert_eq!(keys_of(&net, i), primary, "KS {i} holds KS 2's keys");
        assert!(net.events.iter().any(|(a, e)| *a == addr(i)
            && matches!(e, CoopEvent::PersistGroupState { adopted: true, .. })));
    }
    // A GM registering with a secondary gets the primary's keys.
    let gm_a = net.add_gm(1, 1);
    let gm_c = net.add_gm(3, 3);
    let gm_b = net.add_gm(2, 2);
    net.run_until(net.now + 5_000);
    let registered: Vec<_> = net
        .gm_events
        .iter()
        .filter_map(|(a, e)| match e {
            GmEvent::Registered { keys, .. } => Some((*a, keys.kek.as_ref().unwrap().spi)),
            _ => None,
        })
        .collect();
    assert_eq!(registered.len(), 3, "{:?}", net.gm_events);
    assert!(registered.iter().all(|(_, kek)| *kek == primary.1));

    // A secondary refuses to rekey; the primary's rekey reaches its GMs
    // and, announced at once, is the secondaries' state within the same
    // instant (no refresh interval waited).
    assert_eq!(
        net.ks.get_mut(&addr(1)).unwrap().rekey_now(
            net.now,
            GROUP,
            gkm_proto::rekey::RekeyReason::Manual
        ),
        Err(gkm_proto::rekey::RekeyError::NotPrimary(GROUP))
    );
    let at = net.now;
    net.ks
        .get_mut(&addr(2))
        .unwrap()
        .rekey_now(at, GROUP, gkm_proto::rekey::RekeyReason::Manual)
        .unwrap();
    net.settle();
    assert_eq!(net.now, at);
    let rekeyed = keys_of(&net, 2);
    assert_eq!(rekeyed.2, primary.2 + 1);
    assert_ne!(rekeyed.0, primary.0);
    for i in [1, 3] {
        assert_eq!(keys_of(&net, i), rekeyed, "KS {i} took the rekeyed state");
    }
    assert_eq!(accepted(&net, gm_b), vec![rekeyed.2]);

    // Past the TEK lifetime (3,600 s) with KS 2 alive: only KS 2 rekeys.
    net.run_until(at + 3_700_000);
    assert!(
        net.rekeys.iter().all(|(a, _)| *a == addr(2)),
        "{:?}",
        net.rekeys
    );
    assert!(accepted(&net, gm_b).len() >= 2);
    let last = keys_of(&net, 2);
    assert_eq!(keys_of(&net, 3), last);

    // KS 2 dies; KS 3 takes over with its SEQ TAKEOVER_SEQ_GAP above the
    // highest it heard, and its first rekey is accepted by the GM that
    // registered with it (the KEK it holds, the shared signing key, a SEQ
    // above every one it saw) without registering again.
    net.down.push(addr(2));
    let died = net.now;
    net.run_until(died + 45_000);
    assert_eq!(net.role(3), Role::Primary);
    let taken = keys_of(&net, 3);
    assert_eq!(taken.2, last.2 + gkm_proto::ks::TAKEOVER_SEQ_GAP);
    assert!(net
        .events
        .iter()
        .any(|(a, e)| *a == addr(3)
            && matches!(e, CoopEvent::PersistGroupState { adopted: false, .. })));
    net.rekey(3, gkm_proto::rekey::RekeyReason::Manual);
    assert_eq!(accepted(&net, gm_c).last(), Some(&(taken.2 + 1)));
    // KS 1 follows KS 3 and holds its keys and SEQ.
    assert_eq!(keys_of(&net, 1), keys_of(&net, 3));
    // No rejected push anywhere; GM A (registered with KS 1, which never
    // became primary) took every rekey of both primaries (the GM database
    // sync put it in theirs).
    assert_eq!(accepted(&net, gm_a), accepted(&net, gm_b));
    assert_eq!(accepted(&net, gm_a).last(), Some(&(taken.2 + 1)));
    assert!(
        !net.gm_events
            .iter()
            .any(|(_, e)| matches!(e, GmEvent::PushRejected(_))),
        "{:?}",
        net.gm_events
    );
}

#[test]
fn a_secondary_with_another_rekey_signing_key_raises_the_mismatch() {
    let mut net = Net::new();
    // KS 1 restarts with its own rekey-signing key (ECDSA P-256), not the
    // key the others share.
    let mut cfg = ks_config(GROUP_PSK, Authorization::default());
    let own = gkm_proto::crypto::RekeySigner::generate_ecdsa_p256_pkcs8().unwrap();
    cfg.rekey_signer = Some(gkm_proto::crypto::RekeySigner::ecdsa_p256_from_pkcs8(&own).unwrap());
    cfg.address = Ipv4Addr::new(10, 0, 0, 1);
    // KS 2 and KS 3 (10.0.0.2-3) with the pair PSK.
    cfg.psks = vec![PskEntry {
        credential: Credential::CoopPeer(GROUP),
        ranges: vec![prefix("10.0.0.2/31").into()],
        key: Zeroizing::new(PAIR_PSK.to_vec()),
    }];
    let mut ks1 = KeyServer::new(cfg, rng(41));
    ks1.set_coop_group(T0, coop_config(1, 100, &[2, 3], PAIR_PSK));
    net.ks.insert(addr(1), ks1);
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    let raised = |net: &Net, i: u8| {
        net.events.iter().any(|(a, e)| {
            *a == addr(i)
                && matches!(
                    e,
                    CoopEvent::Mismatch {
                        kind: CoopMismatch::RekeySigningKey,
                        raised: true,
                        ..
                    }
                )
        })
    };
    assert!(raised(&net, 1), "{:?}", net.events);
    assert!(!raised(&net, 3), "KS 3 shares the primary's key");
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert_eq!(s1.mismatches, vec![CoopMismatch::RekeySigningKey]);
    assert!(CoopMismatch::RekeySigningKey
        .text()
        .starts_with("%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: "));
}

#[test]
fn the_gm_database_reaches_every_key_server_and_a_new_primary_rekeys_every_gm() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    // 300 GMs register with KS 1 (a secondary: more records than one
    // message holds), one with KS 2 (the primary), one with KS 3.
    let mut gms: Vec<SocketAddr> = (1..=300).map(|i| net.add_gm(i, 1)).collect();
    gms.push(net.add_gm(301, 2));
    gms.push(net.add_gm(302, 3));
    net.run_until(net.now + 5_000);
    let registered = net
        .gm_events
        .iter()
        .filter(|(_, e)| matches!(e, GmEvent::Registered { .. }))
        .count();
    assert_eq!(registered, 302);
    // Within a refresh interval every key server's GM database holds all
    // 302 (secondary -> primary -> the other secondary), and each learned
    // record was handed to the caller to persist.
    net.run_until(net.now + REFRESH_MS);
    for i in 1..=3 {
        assert_eq!(net.ks[&addr(i)].members(GROUP).count(), 302, "KS {i}");
    }
    let learned_by_3 = net
        .events
        .iter()
        .filter(|(a, e)| *a == addr(3) && matches!(e, CoopEvent::GmLearned(_)))
        .count();
    assert_eq!(learned_by_3, 301, "all but its own");
    // The primary's unicast rekey reaches every GM, wherever it registered.
    net.rekey(2, gkm_proto::rekey::RekeyReason::Manual);
    let seq = keys_of(&net, 2).2;
    for gm in &gms {
        assert_eq!(accepted(&net, *gm).last(), Some(&seq), "{gm}");
    }
    // KS 2 dies: KS 3 takes over, and its first rekey reaches every GM
    // too (the GMs of KS 1 and of the dead KS 2 included), each taking it
    // without registering again.
    net.down.push(addr(2));
    let died = net.now;
    net.run_until(died + 45_000);
    assert_eq!(net.role(3), Role::Primary);
    net.rekey(3, gkm_proto::rekey::RekeyReason::Manual);
    let seq3 = keys_of(&net, 3).2;
    assert!(seq3 > seq + 1000);
    for gm in &gms {
        assert_eq!(accepted(&net, *gm).last(), Some(&seq3), "{gm}");
    }
    let registered_again = net
        .gm_events
        .iter()
        .filter(|(_, e)| matches!(e, GmEvent::Registered { .. }))
        .count();
    assert_eq!(registered_again, 302, "no GM registered again");
    assert!(!net
        .gm_events
        .iter()
        .any(|(_, e)| matches!(e, GmEvent::PushRejected(_))));
}

/// GM database sync time and bytes (docs/BENCHMARKS.md; `scripts/bench-coop`):
/// key server 1 (a secondary) restarts its COOP holding `n` GMs; measured
/// until the primary and the other secondary hold all of them. The
/// network is the harness's (no latency): the time is the engines' CPU.
fn gm_sync_figures(n: u32) {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    let ks1 = net.ks.get_mut(&addr(1)).unwrap();
    for i in 0..n {
        let mut r = gkm_proto::ks::GmRecord {
            gm_identity: format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256),
            addr: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(
                    10,
                    100 + (i / 65_536) as u8,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                )),
                848,
            ),
            group_id: GROUP,
            class: gkm_proto::engine::GmClass::NonCisco,
            version: Some(gkm_wire::gkm_vid::GdoiVersion {
                major: 1,
                minor: 0,
                mini: 27,
            }),
            features: gkm_wire::gkm_vid::FeatureBits(3),
            sids: Vec::new(),
            registered_at: T0,
        };
        if i % 2 == 0 {
            r.sids = vec![i + 1];
        }
        ks1.restore_member(r);
    }
    // Messages and octets every key server sent its peers (KS 1's
    // sessions start again with its COOP).
    let totals = |net: &Net, of: &[u8]| -> (u64, u64) {
        of.iter()
            .flat_map(|&i| net.ks[&addr(i)].coop_status(GROUP, net.now).unwrap().peers)
            .fold((0, 0), |(m, b), p| {
                (m + p.counters.ann_sent, b + p.counters.bytes_sent)
            })
    };
    let (msgs_before, sent_before) = totals(&net, &[2, 3]);
    let started = std::time::Instant::now();
    let sim_start = net.now;
    // Restarted: its anti-replay numbers start above those it used (the
    // server takes them from its clock).
    let mut cfg = coop_config(1, 100, &[2, 3], PAIR_PSK);
    cfg.seq_start = 1_000_000;
    net.ks
        .get_mut(&addr(1))
        .unwrap()
        .set_coop_group(net.now, cfg);
    let n = n as usize;
    while net.ks[&addr(2)].members(GROUP).count() < n || net.ks[&addr(3)].members(GROUP).count() < n
    {
        let next = net.now + 10;
        net.run_until(next);
        assert!(net.now < sim_start + 600_000, "no sync in 10 minutes");
    }
    let took = started.elapsed();
    let (msgs, sent) = totals(&net, &[1, 2, 3]);
    let (msgs, sent) = (msgs - msgs_before, sent - sent_before);
    println!(
        "GM database sync: {n} GMs from a secondary to the primary and on to the other secondary: {:.2} s of CPU (3 engines, one thread), {:.1} s simulated, {msgs} messages, {:.1} MB sent in all ({:.0} B per GM)",
        took.as_secs_f64(),
        (net.now - sim_start) as f64 / 1000.0,
        sent as f64 / 1e6,
        sent as f64 / n as f64,
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-coop"]
fn bench_gm_sync_10000() {
    gm_sync_figures(10_000);
}

#[test]
#[ignore = "benchmark: scripts/bench-coop"]
fn bench_gm_sync_100000() {
    gm_sync_figures(100_000);
}

#[test]
fn after_a_partition_heals_the_remaining_primarys_rekey_brings_every_gm_to_one_kek() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    let x = net.add_gm(1, 2);
    let y = net.add_gm(2, 1);
    net.run_until(net.now + 5_000);
    // KS 3 is cut off from both others, and so are the GMs of each side
    // from the other side's key servers; a GM of KS 3's side registers.
    let z = gm_addr(3);
    net.cut = vec![
        (addr(3), addr(1)),
        (addr(3), addr(2)),
        (z, addr(1)),
        (z, addr(2)),
    ];
    net.cut.extend([x, y].map(|g| (g, addr(3))));
    let z = net.add_gm(3, 3);
    net.run_until(net.now + 45_000);
    assert_eq!((net.role(2), net.role(3)), (Role::Primary, Role::Primary));
    // Each side rekeys on its own: KS 3 with a new KEK (a replace).
    for (ks, reason) in [
        (2, gkm_proto::rekey::RekeyReason::Manual),
        (3, gkm_proto::rekey::RekeyReason::Replace),
    ] {
        net.rekey(ks, reason);
    }
    let kek = |net: &Net, gm: SocketAddr| {
        net.gms[&gm]
            .group()
            .and_then(|g| g.kek.as_ref().map(|k| k.spi))
            .unwrap()
    };
    assert_ne!(kek(&net, x), kek(&net, z), "two KEKs");
    assert_eq!(kek(&net, x), kek(&net, y));
    // The heal: KS 2 remains primary, learns KS 3's KEK and SEQ from its
    // announcements as it steps down, and rekeys the whole group once
    // under both KEKs with a SEQ above both sides'.
    net.cut.clear();
    net.run_until(net.now + u64::from(DEAD_PERIODS) * CHECK_MS + 3 * CHECK_MS);
    assert_eq!(net.role(2), Role::Primary);
    assert_eq!(net.role(3), Role::Secondary);
    let now = net.now;
    let teks = |net: &Net, gm: SocketAddr| net.gms[&gm].outbound_tek(now).map(|t| t.spi);
    for gm in [x, y, z] {
        assert_eq!(
            kek(&net, gm),
            keys_of(&net, 2).1,
            "{gm}: the remaining primary's KEK"
        );
        assert_eq!(teks(&net, gm), teks(&net, x), "{gm}: one TEK set");
        assert_eq!(accepted(&net, gm).last(), Some(&keys_of(&net, 2).2), "{gm}");
    }
    let registrations = net
        .gm_events
        .iter()
        .filter(|(_, e)| matches!(e, GmEvent::Registered { .. }))
        .count();
    assert_eq!(registrations, 3, "no GM registered again");
    // KS 3 (now a secondary) holds the same keys.
    assert_eq!(keys_of(&net, 3).1, keys_of(&net, 2).1);
}

#[test]
fn acks_go_to_the_primary_and_a_secondary_refuses_them() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    let gm = net.add_gm(1, 1);
    net.run_until(net.now + 5_000);
    net.rekey(2, gkm_proto::rekey::RekeyReason::Manual);
    // The GM (registered with KS 1) acknowledged to the primary, which
    // sent the rekey.
    let (_, to, ack) = net
        .captured
        .iter()
        .find(|(from, _, d)| *from == gm && matches!(d.get(18), Some(&35 | &240)))
        .cloned()
        .expect("an ACK");
    assert_eq!(to, addr(2));
    assert_eq!(
        net.ks[&addr(2)]
            .member_ack_state(GROUP, "10.0.1.1")
            .map(|s| s.last_acked),
        Some(Some(keys_of(&net, 2).2))
    );
    // The same ACK at a secondary is refused, naming why.
    let ks1 = net.ks.get_mut(&addr(1)).unwrap();
    ks1.handle_datagram(net.now, gm, &ack);
    let refused = std::iter::from_fn(|| ks1.poll_event()).any(
        |e| matches!(e, KsEvent::Rejected { detail: Some(d), .. } if d.contains("COOP secondary")),
    );
    assert!(refused);
}

/// Failover and GM convergence as functions of the announcement interval
/// (docs/BENCHMARKS.md; `scripts/bench-coop`): refresh = check = the
/// interval, dead after 3 periods (the default). Simulated time: the
/// harness's network has no latency, so the figures are the protocol's.
fn failover_figures(interval_ms: u64, trials: u64) {
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let mut net = Net::new();
        for (i, p, peers) in [(1, 100, [2, 3]), (2, 200, [1, 3]), (3, 150, [1, 2])] {
            let mut cfg = coop_config(i, p, &peers, PAIR_PSK);
            cfg.refresh_ms = interval_ms;
            cfg.check_ms = interval_ms;
            cfg.seq_start = 1_000_000;
            let now = net.now;
            net.ks.get_mut(&addr(i)).unwrap().set_coop_group(now, cfg);
        }
        net.run_until(net.now + 5 * interval_ms);
        assert_eq!(net.role(2), Role::Primary);
        let gms: Vec<SocketAddr> = (1..=20).map(|g| net.add_gm(g, (g % 3) as u8 + 1)).collect();
        net.run_until(net.now + interval_ms);
        // The kill falls at a different point of the announcement cycle
        // each trial.
        net.run_until(net.now + interval_ms * trial / trials);
        let killed = net.now;
        net.down.push(addr(2));
        while net.role(3) != Role::Primary {
            let next = net.now + 100;
            net.run_until(next);
            assert!(net.now < killed + 10 * interval_ms, "no failover");
        }
        let failover = net.now - killed;
        net.rekey(3, gkm_proto::rekey::RekeyReason::Manual);
        let seq = keys_of(&net, 3).2;
        assert!(gms.iter().all(|g| accepted(&net, *g).last() == Some(&seq)));
        failovers.push(failover);
    }
    let mean = failovers.iter().sum::<u64>() as f64 / failovers.len() as f64 / 1000.0;
    println!(
        "interval {} s (dead after 3): failover min {:.1} s, mean {mean:.1} s, max {:.1} s over {trials} kills; every GM (20, registered at all three) took the new primary's first rekey at once after it",
        interval_ms / 1000,
        *failovers.iter().min().unwrap() as f64 / 1000.0,
        *failovers.iter().max().unwrap() as f64 / 1000.0,
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-coop"]
fn bench_failover_by_interval() {
    for interval in [10_000, 20_000, 30_000] {
        failover_figures(interval, 5);
    }
}

#[test]
fn a_secondary_blocks_new_gms_until_it_holds_its_primarys_keys() {
    let mut net = Net::new();
    // KS 1 hears no one yet: a GM trying it is refused, not given KS 1's
    // own keys.
    net.cut = vec![(addr(1), addr(2)), (addr(1), addr(3))];
    let gm = net.add_gm(1, 1);
    net.run_until(T0 + 5_000);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert!(s1.new_gm_blocking);
    assert!(!net
        .gm_events
        .iter()
        .any(|(_, e)| matches!(e, GmEvent::Registered { .. })));
    assert!(net.ks[&addr(1)].counters().registrations == 0);
    // Once KS 1 hears the primary and takes its keys, the GM registers
    // with them.
    net.cut.clear();
    net.run_until(T0 + 90_000);
    assert_eq!(net.role(2), Role::Primary);
    let s1 = net.ks[&addr(1)].coop_status(GROUP, net.now).unwrap();
    assert!(!s1.new_gm_blocking);
    let kek = net.gm_events.iter().find_map(|(a, e)| match e {
        GmEvent::Registered { keys, .. } if *a == gm => keys.kek.as_ref().map(|k| k.spi),
        _ => None,
    });
    assert_eq!(kek, Some(keys_of(&net, 2).1), "the primary's KEK");
}

#[test]
fn a_policy_change_on_a_secondary_keeps_its_primarys_keys() {
    let mut net = Net::new();
    net.run_until(T0 + 45_000);
    let primary = keys_of(&net, 2);
    assert_eq!(keys_of(&net, 1), primary);
    // KS 1's own group configuration changes (IP-D3P on): it keeps
    // serving the primary's keys, not keys of its own configuration.
    let mut g = ks_group("GET", GROUP, 11, Authorization::default());
    g.d3p_window_ms = Some(5_000);
    // As each server's configuration does, the KEK names this key server
    // as the rekey source: for the group table, a change of key policy.
    if let Some(k) = g.keys.kek.as_mut() {
        k.rekey_src = Ipv4Addr::new(10, 0, 0, 9);
    }
    let now = net.now;
    let started = net.ks.get_mut(&addr(1)).unwrap().set_group(now, g, false);
    assert_eq!(started, Ok(None), "a secondary starts no rekey");
    assert_eq!(keys_of(&net, 1), primary);
    let gm = net.add_gm(1, 1);
    net.run_until(net.now + 5_000);
    let kek = net.gm_events.iter().find_map(|(a, e)| match e {
        GmEvent::Registered { keys, .. } if *a == gm => keys.kek.as_ref().map(|k| k.spi),
        _ => None,
    });
    assert_eq!(kek, Some(primary.1));
}

/// Key server `i` on certificates: `pem`/`key` its own (from the test
/// CA), each peer `(j, subject)` reached on certificates and known by
/// that subject; no pair PSK anywhere.
fn pki_key_server(i: u8, pem: &str, key: &str, peers: &[(u8, &str)]) -> KeyServer {
    pki_key_server_of(i, include_str!("data/ca.pem"), pem, key, peers)
}

/// [`pki_key_server`] trusting the CA `ca_pem`.
fn pki_key_server_of(i: u8, ca_pem: &str, pem: &str, key: &str, peers: &[(u8, &str)]) -> KeyServer {
    use gkm_proto::crypto::{certificates_from_pem, CertificateAuthority, Phase1Signer};
    let mut cfg = coop_ks_config(i);
    cfg.psks = vec![PskEntry {
        credential: Credential::GroupPsk(GROUP),
        ranges: vec![prefix("10.0.0.0/8").into()],
        key: Zeroizing::new(GROUP_PSK.to_vec()),
    }];
    let ca = certificates_from_pem(ca_pem).unwrap();
    cfg.ca = Some(CertificateAuthority::new(&ca).unwrap());
    cfg.certificates = vec![(
        certificates_from_pem(pem).unwrap().remove(0),
        Phase1Signer::from_pkcs8_pem(key).unwrap(),
    )];
    let mut ks = KeyServer::new(cfg, rng(u64::from(i)));
    let ids: Vec<u8> = peers.iter().map(|(j, _)| *j).collect();
    let mut c = coop_config(i, 100 + i, &ids, b"");
    for (p, (_, subject)) in c.peers.iter_mut().zip(peers) {
        p.auth = CoopPeerAuth::Certificate {
            subject: (*subject).to_owned(),
        };
    }
    ks.set_coop_group(T0, c);
    ks
}

const KS1_PEM: &str = include_str!("data/ks.pem");
const KS1_KEY: &str = include_str!("data/ks.key");
/// The second key server's certificate: the test CA's other end-entity
/// certificate (its subject is what counts).
const KS2_PEM: &str = include_str!("data/gm.pem");
const KS2_KEY: &str = include_str!("data/gm.key");
const KS1_DN: &str = "CN=ks1.gkm.test, O=GKM test";
const KS2_DN: &str = "O=GKM test,CN=gm1.gkm.test";

#[test]
fn key_servers_on_ecdsa_certificates_elect_over_their_sas() {
    // Two key servers with P-256 certificates from one P-256 CA (as the
    // internal CA they share through `[enrollment] ca_cert`/`ca_key`):
    // their KS-to-KS SAs run ECDSA-256 and the election goes through them.
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "shared EC CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = p.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(p, ca_key);
    let issue = |cn: &str| {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let ((p1, k1), (p2, k2)) = (issue("ks1.ec.test"), issue("ks2.ec.test"));
    let mut net = Net::new();
    net.ks.remove(&addr(3));
    net.ks.insert(
        addr(1),
        pki_key_server_of(1, &ca_pem, &p1, &k1, &[(2, "CN=ks2.ec.test")]),
    );
    net.ks.insert(
        addr(2),
        pki_key_server_of(2, &ca_pem, &p2, &k2, &[(1, "CN=ks1.ec.test")]),
    );
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    assert_eq!(net.role(1), Role::Secondary);
    for (at, peer) in [(1, 2), (2, 1)] {
        let s = net.ks[&addr(at)].coop_status(GROUP, net.now).unwrap();
        let p = s.peers.iter().find(|p| p.addr == addr(peer)).unwrap();
        assert!(
            p.alive && p.sa_up && p.counters.ann_received > 0,
            "KS {at}: {p:?}"
        );
    }
}

#[test]
fn key_servers_on_certificates_elect_over_their_sas_and_refuse_another_subject() {
    // Both on certificates, each knowing the other's subject: one primary,
    // announcements taken both ways.
    let mut net = Net::new();
    net.ks.remove(&addr(3));
    net.ks
        .insert(addr(1), pki_key_server(1, KS1_PEM, KS1_KEY, &[(2, KS2_DN)]));
    net.ks
        .insert(addr(2), pki_key_server(2, KS2_PEM, KS2_KEY, &[(1, KS1_DN)]));
    net.run_until(T0 + 45_000);
    assert_eq!(net.role(2), Role::Primary);
    assert_eq!(net.role(1), Role::Secondary);
    for (at, peer) in [(1, 2), (2, 1)] {
        let s = net.ks[&addr(at)].coop_status(GROUP, net.now).unwrap();
        let p = s.peers.iter().find(|p| p.addr == addr(peer)).unwrap();
        assert!(p.alive && p.sa_up, "KS {at}: {p:?}");
        assert!(p.counters.ann_received > 0, "KS {at}: {p:?}");
        assert!(s.refused.is_empty(), "KS {at}: {s:?}");
    }
    // KS 2 expects another subject for KS 1 (a certificate from the same
    // CA, as a GM's would be): KS 1's announcements are refused as not a
    // peer's, and KS 2's own main mode to KS 1 fails on the subject.
    let mut net = Net::new();
    net.ks.remove(&addr(3));
    net.ks
        .insert(addr(1), pki_key_server(1, KS1_PEM, KS1_KEY, &[(2, KS2_DN)]));
    net.ks.insert(
        addr(2),
        pki_key_server(2, KS2_PEM, KS2_KEY, &[(1, "CN=ks9.gkm.test,O=GKM test")]),
    );
    net.run_until(T0 + 45_000);
    let drops = net.drops(2);
    assert!(drops.contains(&CoopDrop::NotAPeer), "{drops:?}");
    let s2 = net.ks[&addr(2)].coop_status(GROUP, net.now).unwrap();
    let one = s2.peers.iter().find(|p| p.addr == addr(1)).unwrap();
    assert_eq!(one.counters.ann_received, 0);
    assert!(!one.alive && !one.sa_up, "{one:?}");
    assert!(net.events.iter().any(|(at, e)| *at == addr(2)
        && matches!(e, CoopEvent::PeerSa { failed: Some(w), .. } if w.contains("configured subject"))),
        "{:?}", net.events.iter().filter(|(a, _)| *a == addr(2)).collect::<Vec<_>>());
    // Both take themselves for primary: neither hears the other.
    assert_eq!((net.role(1), net.role(2)), (Role::Primary, Role::Primary));
}
