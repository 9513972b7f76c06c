//! Rekeying scenarios with a simulated clock: GROUPKEY-PUSH fan-out, ACKs
//! of both kinds, the seed's Tables 1 and 2, ATD, removal after 3 misses,
//! and refusal of forged, replayed, wrong-KEK and truncated rekeys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use common::*;
use gkm_proto::ack::{seal_rfc8263_ack, seal_unicast_ack};
use gkm_proto::ack_policy::AckOption;
use gkm_proto::crypto::{RekeySigner, RsaSigner};
use gkm_proto::engine::GmClass;
use gkm_proto::gm::{GmEvent, GroupMember};
use gkm_proto::group::GroupKeys;
use gkm_proto::ks::{Authorization, KeyServer, KsConfig, KsEvent, Reject};
use gkm_proto::push::{open_push, seal_push, PushError};
use gkm_proto::rekey::{GroupState, RekeyReason, RekeyTransport};
use gkm_wire::consts::{AckRequested, ExchangeType, PayloadType};
use gkm_wire::payload::{GdoiSa, Sa, SaLayout, Seq};
use gkm_wire::{IsakmpHeader, Payload};

const MCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 1, 1, 1), 848);
/// The first 14 octets of the Cisco Unity Vendor ID hash (engine.rs).
const CISCO_VID: [u8; 16] = [
    0x12, 0xf5, 0xf2, 0x8c, 0x45, 0x71, 0x68, 0xa9, 0x70, 0x2d, 0x9f, 0xe2, 0x74, 0xcc, 0x01, 0x00,
];

/// What a test may do to a datagram in flight.
type Hook = Box<dyn FnMut(Dir, SocketAddr, &[u8]) -> bool>;

/// A KS and its GMs exchanging datagrams in memory with simulated time.
struct World {
    ks: KeyServer,
    gms: Vec<(SocketAddr, GroupMember)>,
    index: HashMap<SocketAddr, usize>,
    now: u64,
    ks_events: Vec<KsEvent>,
    gm_events: Vec<(SocketAddr, GmEvent)>,
    /// Every GROUPKEY-PUSH delivered, by GM.
    pushes: Vec<(SocketAddr, Vec<u8>)>,
    /// ACK exchange types sent, by GM.
    acks: Vec<(SocketAddr, ExchangeType)>,
    /// Group states "persisted" before each rekey was released.
    persisted: Vec<GroupState>,
    hook: Hook,
}

impl World {
    fn new(cfg: KsConfig, gms: Vec<(SocketAddr, GroupMember)>) -> Self {
        let index = gms.iter().enumerate().map(|(i, (a, _))| (*a, i)).collect();
        Self {
            ks: KeyServer::new(cfg, rng(2)),
            gms,
            index,
            now: T0,
            ks_events: vec![],
            gm_events: vec![],
            pushes: vec![],
            acks: vec![],
            persisted: vec![],
            hook: Box::new(|_, _, _| true),
        }
    }

    fn deliver_down(&mut self, to: SocketAddr, payload: &[u8]) {
        let targets: Vec<usize> = if to == SocketAddr::V4(MCAST) {
            (0..self.gms.len()).collect()
        } else {
            self.index.get(&to).copied().into_iter().collect()
        };
        for i in targets {
            let addr = self.gms[i].0;
            if !(self.hook)(Dir::Down, addr, payload) {
                continue;
            }
            if payload.get(18) == Some(&ExchangeType::GROUPKEY_PUSH.0) {
                self.pushes.push((addr, payload.to_vec()));
            }
            self.gms[i].1.handle_datagram(self.now, KS_ADDR, payload);
        }
    }

    /// Moves datagrams and events until nothing is in flight.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.gms.len() {
                let addr = self.gms[i].0;
                while let Some(t) = self.gms[i].1.poll_transmit() {
                    moved = true;
                    if let Some(&x) = t.payload.get(18) {
                        if x == ExchangeType::GROUPKEY_PUSH_ACK.0
                            || x == ExchangeType::GKM_UNICAST_ACK.0
                        {
                            self.acks.push((addr, ExchangeType(x)));
                        }
                    }
                    if t.to == KS_ADDR && (self.hook)(Dir::Up, addr, &t.payload) {
                        self.ks.handle_datagram(self.now, addr, &t.payload);
                    }
                }
                while let Some(e) = self.gms[i].1.poll_event() {
                    self.gm_events.push((addr, e));
                }
            }
            while let Some(t) = self.ks.poll_transmit() {
                moved = true;
                self.deliver_down(t.to, &t.payload);
            }
            while let Some(e) = self.ks.poll_event() {
                if let KsEvent::RekeyPrepared { group_id, seq, .. } = &e {
                    // The driver's job: persist, then release.
                    self.persisted.push(self.ks.group_state(*group_id).unwrap());
                    self.ks.rekey_persisted(self.now, *group_id, *seq).unwrap();
                    moved = true;
                }
                self.ks_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs until simulated time `until`.
    fn run_until(&mut self, until: u64) {
        for (_, g) in self.gms.iter_mut() {
            g.handle_timeout(self.now);
        }
        loop {
            self.settle();
            let next = self
                .gms
                .iter()
                .filter_map(|(_, g)| g.poll_timeout())
                .chain(self.ks.poll_timeout())
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t.max(self.now);
                    self.ks.handle_timeout(self.now);
                    for (_, g) in self.gms.iter_mut() {
                        if g.poll_timeout().is_some_and(|x| x <= self.now) {
                            g.handle_timeout(self.now);
                        }
                    }
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
    }

    fn rekey(&mut self, reason: RekeyReason) {
        self.ks.rekey_now(self.now, GROUP, reason).unwrap();
        self.settle();
    }

    fn closed_rounds(&self) -> Vec<(u32, usize, usize, usize)> {
        self.ks_events
            .iter()
            .filter_map(|e| match e {
                KsEvent::RekeyRoundClosed {
                    seq,
                    acked,
                    missed,
                    removed,
                    ..
                } => Some((*seq, *acked, *missed, *removed)),
                _ => None,
            })
            .collect()
    }

    fn ks_keys(&self) -> GroupKeys {
        self.ks.groups()[0].keys.clone()
    }
}

/// Signs rekeys with ECDSA P-256 instead of RSA (ring verifies it about ten
/// times faster than the `rsa` crate verifies RSA-2048, which keeps the
/// 50,000-push simulation short; RSA pushes are covered by the other tests).
fn use_ecdsa(cfg: &mut KsConfig) {
    let signer =
        RekeySigner::ecdsa_p256_from_pkcs8(&RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
            .unwrap();
    let kek = cfg.groups[0].keys.kek.as_mut().unwrap();
    kek.sig_algorithm = signer.algorithm();
    kek.sig_key_spki = signer.public_spki_der().unwrap();
    kek.sig_key_bits = signer.key_bits();
    cfg.rekey_signer = Some(signer);
}

/// Rekeys to the multicast group `MCAST`.
fn use_multicast(cfg: &mut KsConfig) {
    cfg.groups[0].rekey.transport = RekeyTransport::Multicast {
        address: *MCAST.ip(),
        port: MCAST.port(),
        ttl: 1,
    };
    if let Some(k) = cfg.groups[0].keys.kek.as_mut() {
        k.rekey_dst = *MCAST.ip();
    }
}

fn one_tek_config(option: AckOption) -> KsConfig {
    let mut cfg = ks_config(b"k", Authorization::default());
    cfg.groups[0].keys.teks.truncate(1);
    cfg.groups[0].rekey.ack = option;
    cfg
}

fn gms(n: u32) -> Vec<(SocketAddr, GroupMember)> {
    (0..n).map(|i| (gm_addr(i), gm(i, b"k", GROUP))).collect()
}

/// A GM at 10.9.x.x: the test KS's operator tag marks it ASR 9000.
fn asr9000_gm(i: u32) -> (SocketAddr, GroupMember) {
    let a = SocketAddr::new(Ipv4Addr::new(10, 9, 0, i as u8 + 1).into(), 848);
    (a, gm_at(500 + i, a, b"k", GROUP))
}

/// A GM that sends a Cisco Vendor ID.
fn cisco_gm(i: u32) -> (SocketAddr, GroupMember) {
    let a = gm_addr(700 + i);
    let std::net::IpAddr::V4(ip) = a.ip() else {
        unreachable!()
    };
    let mut cfg = base_config(
        700 + i,
        GROUP,
        gkm_proto::gm::GmIdentity::Ipv4(ip),
        gkm_proto::gm::GmAuth::Psk(zeroize::Zeroizing::new(b"k".to_vec())),
    );
    cfg.extra_vendor_ids = vec![CISCO_VID.to_vec()];
    (a, GroupMember::new(cfg, rng(7000 + u64::from(i))))
}

/// The SA payload of a push, decrypted with the KEK the GM held.
fn push_sa(push: &[u8], kek: &gkm_proto::group::Kek, ks: &KeyServer) -> GdoiSa<'static> {
    let _ = ks;
    let signer = RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap();
    let v = gkm_proto::crypto::RekeyVerifier::new(
        gkm_wire::consts::SigAlgorithm::RSA,
        &signer.public_spki_der().unwrap(),
    )
    .unwrap();
    let opened = open_push(push, kek, &v, 0).unwrap();
    let raw = opened
        .payloads()
        .find(|p| p.payload_type == PayloadType::SA)
        .unwrap();
    let body: &'static [u8] = Box::leak(raw.body.to_vec().into_boxed_slice());
    match Sa::parse(body, SaLayout::Gdoi).unwrap() {
        Sa::Gdoi(g) => g,
        _ => panic!("not a GDOI SA"),
    }
}

#[test]
fn thousand_gms_fifty_rekeys_with_kek_rollovers_all_acknowledged() {
    let mut cfg = ks_config(b"k", Authorization::default());
    use_ecdsa(&mut cfg);
    let mut w = World::new(cfg, gms(1000));
    w.run_until(T0 + 60_000);
    assert!(w.gms.iter().all(|(_, g)| g.is_registered()));
    // 50 rekeys of TEKs living 3600 s, rekeyed 90 s early, take 48 h:
    // the KEK (86,400 s) rolls over on the way.
    let mut sent = 0;
    while sent < 50 {
        let t = w.now + 600_000;
        w.run_until(t);
        sent = w
            .ks_events
            .iter()
            .filter(|e| matches!(e, KsEvent::RekeySent { .. }))
            .count();
    }
    // Let the last round close.
    let t = w.now + 60_000;
    w.run_until(t);
    let reasons: Vec<RekeyReason> = w
        .ks_events
        .iter()
        .filter_map(|e| match e {
            KsEvent::RekeySent { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert!(reasons.len() >= 50);
    let rounds = w.closed_rounds();
    assert_eq!(rounds.len(), reasons.len());
    for (seq, acked, missed, removed) in &rounds {
        assert_eq!(
            (*acked, *missed, *removed),
            (1000, 0, 0),
            "rekey SEQ {seq} not fully acknowledged"
        );
    }
    let fully_acked = w
        .ks_events
        .iter()
        .filter(|e| matches!(e, KsEvent::RekeyAcked { gms: 1000, .. }))
        .count();
    assert_eq!(fully_acked, reasons.len());
    // KEK rollover: the KEK changed and every GM followed.
    let kek_rollovers = w.gm_events[..]
        .iter()
        .filter(|(a, e)| {
            *a == gm_addr(0)
                && matches!(
                    e,
                    GmEvent::Rekeyed {
                        new_kek: true,
                        kek_packet_relabelled: false,
                        ..
                    }
                )
        })
        .count();
    assert!(kek_rollovers >= 1, "{kek_rollovers} KEK rollovers");
    assert!(reasons.contains(&RekeyReason::KekExpiry));
    // SEQs strictly increase, one per rekey, and every state was persisted before release.
    let seqs: Vec<u32> = rounds.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1));
    assert_eq!(
        w.persisted.iter().map(|s| s.keys.seq).collect::<Vec<_>>(),
        seqs
    );
    // Every GM holds exactly the KS's current KEK and TEKs, and sends on them.
    let ks_keys = w.ks_keys();
    for (a, g) in &w.gms {
        let grp = g.group().unwrap();
        assert_eq!(grp.kek, ks_keys.kek, "{a}");
        assert_eq!(grp.last_seq, ks_keys.seq, "{a}");
        for t in &ks_keys.teks {
            assert!(
                g.inbound_teks(w.now).any(|x| x == t),
                "{a} lacks TEK {:#x}",
                t.spi
            );
        }
        assert_eq!(g.rekey_counters().pushes_accepted, reasons.len() as u64);
        assert_eq!(g.rekey_counters().pushes_replayed, 0);
    }
    assert_eq!(w.ks.counters().acks_recorded, 1000 * reasons.len() as u64);
    assert_eq!(
        w.ks.rekey_status(GROUP).unwrap().rekeys_sent,
        reasons.len() as u64
    );
    // Cisco option: every ACK was GKM's encrypted unicast ACK.
    assert!(w
        .acks
        .iter()
        .all(|(_, x)| *x == ExchangeType::GKM_UNICAST_ACK));
}

#[test]
fn a_gm_that_stops_acknowledging_is_removed_after_exactly_three_misses_then_registers_again() {
    let quiet = gm_addr(3);
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(5));
    w.run_until(T0 + 30_000);
    let silenced = std::rc::Rc::new(std::cell::Cell::new(true));
    let s = silenced.clone();
    w.hook = Box::new(move |dir, addr, d| {
        let is_ack = matches!(d.get(18), Some(&35) | Some(&240));
        !(dir == Dir::Up && addr == quiet && is_ack && s.get())
    });
    let id = quiet.ip().to_string();
    for round in 1..=3u32 {
        w.rekey(RekeyReason::Manual);
        let t = w.now + 40_000;
        w.run_until(t);
        let (_, acked, missed, removed) = *w.closed_rounds().last().unwrap();
        if round < 3 {
            assert_eq!((acked, missed, removed), (4, 1, 0));
            assert_eq!(w.ks.member_ack_state(GROUP, &id).unwrap().misses, round);
        } else {
            assert_eq!((acked, missed, removed), (4, 0, 1));
        }
    }
    let removed: Vec<_> = w
        .ks_events
        .iter()
        .filter_map(|e| match e {
            KsEvent::GmRemoved { gm_identity, .. } => Some(gm_identity.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, std::slice::from_ref(&id));
    assert_eq!(w.ks.counters().gms_removed, 1);
    assert!(w.ks.member_ack_state(GROUP, &id).is_none());
    assert_eq!(w.ks.members(GROUP).count(), 4);
    // Each unacknowledged rekey went out 1 + 2 times to the quiet GM.
    let to_quiet = w.pushes.iter().filter(|(a, _)| *a == quiet).count();
    assert_eq!(to_quiet, 9);
    // No further rekeys reach it.
    w.rekey(RekeyReason::Manual);
    let t = w.now + 40_000;
    w.run_until(t);
    assert_eq!(w.pushes.iter().filter(|(a, _)| *a == quiet).count(), 9);
    // It registers again (a restarted agent) and is rekeyed and acknowledged cleanly.
    silenced.set(false);
    let i = w.index[&quiet];
    w.gms[i].1 = gm(3, b"k", GROUP);
    let t = w.now + 30_000;
    w.run_until(t);
    assert!(w.gms[i].1.is_registered());
    w.rekey(RekeyReason::Manual);
    let t = w.now + 40_000;
    w.run_until(t);
    assert_eq!(
        *w.closed_rounds().last().unwrap(),
        (w.ks_keys().seq, 5, 0, 0)
    );
    assert_eq!(
        w.ks.member_ack_state(GROUP, &id).unwrap().last_acked,
        Some(w.ks_keys().seq)
    );
}

/// Seed Table 1, every option x GM class, at registration and in rekeys;
/// and which ACK each GM then sends.
#[test]
fn table_1_kek_ack_requested_per_option_and_class_and_the_ack_each_gm_sends() {
    use AckOption::*;
    let req = Some(AckRequested::REKEY_ACK_KEK_SHA256);
    for (option, want) in [
        (Cisco, [None, None, None]),
        (Interoperable, [req, req, req]),
        (Any, [None, req, req]),
    ] {
        let mut cfg = ks_config(b"k", Authorization::default());
        cfg.groups[0].rekey.ack = option;
        let members = vec![cisco_gm(0), asr9000_gm(0), (gm_addr(0), gm(0, b"k", GROUP))];
        let addrs: Vec<SocketAddr> = members.iter().map(|m| m.0).collect();
        let mut w = World::new(cfg, members);
        w.run_until(T0 + 30_000);
        let classes: HashMap<SocketAddr, GmClass> =
            w.ks.members(GROUP).map(|r| (r.addr, r.class)).collect();
        assert_eq!(
            addrs.iter().map(|a| classes[a]).collect::<Vec<_>>(),
            [GmClass::Cisco, GmClass::Asr9000, GmClass::NonCisco]
        );
        let keks: Vec<_> = w
            .gms
            .iter()
            .map(|(_, g)| g.group().unwrap().kek.clone().unwrap())
            .collect();
        for (k, (_, g)) in w.gms.iter().enumerate() {
            assert_eq!(
                g.group().unwrap().ack_requested,
                want[k],
                "registration, {option} x {:?}",
                classes[&addrs[k]]
            );
        }
        w.rekey(RekeyReason::Manual);
        let t = w.now + 5_000;
        w.run_until(t);
        for (k, a) in addrs.iter().enumerate() {
            let push = &w.pushes.iter().find(|(x, _)| x == a).unwrap().1;
            let sa = push_sa(push, &keks[k], &w.ks);
            assert_eq!(
                sa.kek.unwrap().policy.ack_requested,
                want[k],
                "rekey, {option} x {:?}",
                classes[a]
            );
            let ack = w.acks.iter().find(|(x, _)| x == a).map(|(_, t)| *t);
            let want_ack = if want[k].is_some() {
                ExchangeType::GROUPKEY_PUSH_ACK
            } else {
                ExchangeType::GKM_UNICAST_ACK
            };
            assert_eq!(ack, Some(want_ack), "{option} x {:?}", classes[a]);
        }
        assert_eq!(w.ks.counters().acks_recorded, 3, "{option}");
        assert_eq!(w.ks.counters().rejected(Reject::AckNotAccepted), 0);
    }
}

/// Seed Table 2, every option x ACK kind, including the errors: the KS
/// records an accepted ACK and refuses (and counts) the others.
#[test]
fn table_2_ack_acceptance_per_option_and_kind() {
    use AckOption::*;
    for (option, rfc_ok, cisco_ok) in [
        (Cisco, false, true),
        (Interoperable, true, false),
        (Any, true, true),
    ] {
        for rfc in [true, false] {
            let mut cfg = ks_config(b"k", Authorization::default());
            cfg.groups[0].rekey.ack = option;
            let mut w = World::new(cfg, gms(1));
            w.run_until(T0 + 30_000);
            // The GM's own ACK is dropped: the test sends the kind under test.
            w.hook = Box::new(|dir, _, d| {
                !(dir == Dir::Up && matches!(d.get(18), Some(&35) | Some(&240)))
            });
            let kek = w.ks_keys().kek.unwrap();
            w.rekey(RekeyReason::Manual);
            let seq = w.ks_keys().seq;
            let me = std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0));
            let ack = if rfc {
                seal_rfc8263_ack(&kek, AckRequested::REKEY_ACK_KEK_SHA256, seq, me).unwrap()
            } else {
                seal_unicast_ack(&kek, seq, me).unwrap()
            };
            w.ks.handle_datagram(w.now, gm_addr(0), &ack);
            let ok = if rfc { rfc_ok } else { cisco_ok };
            let c = w.ks.counters();
            assert_eq!(c.acks_recorded, u64::from(ok), "{option} x rfc={rfc}");
            assert_eq!(
                c.rejected(Reject::AckNotAccepted),
                u64::from(!ok),
                "{option} x rfc={rfc}"
            );
            let state = w.ks.member_ack_state(GROUP, "10.0.1.0").unwrap();
            assert_eq!(state.last_acked, ok.then_some(seq));
            // A refusal's log line names the group, the option and the kind.
            let detail = std::iter::from_fn(|| w.ks.poll_event()).find_map(|e| match e {
                KsEvent::Rejected {
                    reason: Reject::AckNotAccepted,
                    detail,
                    ..
                } => detail,
                _ => None,
            });
            let kind = if rfc { "Rfc8263" } else { "CiscoUnicast" };
            let want = format!(
                "group {GROUP}: rekey acknowledgement {option}: a {kind} ACK is not accepted"
            );
            assert_eq!(detail, (!ok).then_some(want), "{option} x rfc={rfc}");
        }
    }
}

#[test]
fn acks_for_other_seqs_tampered_or_unknown_record_nothing() {
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(1));
    w.run_until(T0 + 30_000);
    w.hook = Box::new(|dir, _, d| !(dir == Dir::Up && matches!(d.get(18), Some(&240))));
    let kek = w.ks_keys().kek.unwrap();
    w.rekey(RekeyReason::Manual);
    let seq = w.ks_keys().seq;
    let me = std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0));
    // An ACK for an older SEQ: valid but not recorded.
    w.ks.handle_datagram(
        w.now,
        gm_addr(0),
        &seal_unicast_ack(&kek, seq - 1, me).unwrap(),
    );
    // From an address the KS does not know.
    w.ks.handle_datagram(
        w.now,
        gm_addr(0),
        &seal_unicast_ack(&kek, seq, Ipv4Addr::new(10, 77, 0, 1).into()).unwrap(),
    );
    // Tampered.
    let mut bad = seal_unicast_ack(&kek, seq, me).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    w.ks.handle_datagram(w.now, gm_addr(0), &bad);
    let c = w.ks.counters();
    assert_eq!(c.acks_recorded, 0);
    assert_eq!(c.acks_ignored, 2);
    assert_eq!(c.rejected(Reject::BadAck), 1);
    // The log line names the ACK's kind, group and KEK (issue 18 item 5).
    let details: Vec<String> = std::iter::from_fn(|| w.ks.poll_event())
        .filter_map(|e| match e {
            KsEvent::Rejected {
                reason: Reject::BadAck,
                detail,
                ..
            } => detail,
            _ => None,
        })
        .collect();
    assert_eq!(details.len(), 1);
    assert!(
        details[0].starts_with(&format!(
            "CiscoUnicast ACK for group {GROUP}, KEK {}: ",
            hex::encode(kek.spi)
        )),
        "{details:?}"
    );
    assert_eq!(
        w.ks.member_ack_state(GROUP, "10.0.1.0").unwrap().last_acked,
        None
    );
    // The right one is recorded.
    w.ks.handle_datagram(w.now, gm_addr(0), &seal_unicast_ack(&kek, seq, me).unwrap());
    assert_eq!(w.ks.counters().acks_recorded, 1);
}

#[test]
fn forged_replayed_wrong_kek_stale_and_truncated_rekeys_are_refused_and_change_nothing() {
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(1));
    w.run_until(T0 + 30_000);
    let kek = w.ks_keys().kek.unwrap();
    w.rekey(RekeyReason::Manual);
    let genuine = w.pushes.last().unwrap().1.clone();
    let before = w.gms[0].1.group().unwrap().clone();
    let g = &mut w.gms[0].1;
    let mut feed = |d: &[u8]| {
        g.handle_datagram(T0 + 40_000, KS_ADDR, d);
        let mut last = None;
        while let Some(e) = g.poll_event() {
            last = Some(e);
        }
        assert!(
            g.poll_transmit().is_none(),
            "a refused rekey is not acknowledged"
        );
        last
    };
    // Replayed.
    assert!(matches!(
        feed(&genuine),
        Some(GmEvent::PushRejected(PushError::Replay { .. }))
    ));
    // Under the old KEK after the GM moved on? The manual rekey kept the KEK,
    // so build pushes by hand: forged (another key), wrong KEK, stale SEQ, truncated.
    let keys = w.ks.groups()[0].keys.clone();
    let material = keys.kek_material();
    let payloads = |seq: u32| {
        vec![
            Payload::Seq(Seq(seq)),
            Payload::Sa(Sa::Gdoi(keys.to_sa())),
            Payload::KeyDownload(keys.to_kd(&material, None)),
        ]
    };
    let ks_signer = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap(),
    ));
    let rogue = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/gm.key")).unwrap(),
    ));
    let forged = seal_push(&kek, &rogue, rng(5).as_mut(), &payloads(keys.seq + 1)).unwrap();
    let mut other = kek.clone();
    other.spi[0] ^= 0xff;
    let wrong_kek =
        seal_push(&other, &ks_signer, rng(5).as_mut(), &payloads(keys.seq + 1)).unwrap();
    let stale = seal_push(&kek, &ks_signer, rng(5).as_mut(), &payloads(keys.seq)).unwrap();
    let g = &mut w.gms[0].1;
    let mut feed = |d: &[u8]| {
        g.handle_datagram(T0 + 40_000, KS_ADDR, d);
        let mut last = None;
        while let Some(e) = g.poll_event() {
            last = Some(e);
        }
        assert!(g.poll_transmit().is_none());
        last
    };
    assert_eq!(
        feed(&forged),
        Some(GmEvent::PushRejected(PushError::BadSignature))
    );
    assert_eq!(
        feed(&wrong_kek),
        Some(GmEvent::PushRejected(PushError::WrongKek))
    );
    assert!(matches!(
        feed(&stale),
        Some(GmEvent::PushRejected(PushError::Replay { .. }))
    ));
    for cut in [0, 10, 28, 60, genuine.len() - 1] {
        assert!(matches!(
            feed(&genuine[..cut]),
            None | Some(GmEvent::PushRejected(_))
        ));
    }
    let g = &w.gms[0].1;
    let c = g.rekey_counters();
    assert_eq!(
        (
            c.pushes_bad_signature,
            c.pushes_wrong_kek,
            c.pushes_replayed
        ),
        (1, 1, 2)
    );
    assert!(c.pushes_malformed >= 3);
    let after = g.group().unwrap();
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.teks, before.teks);
    assert_eq!(after.kek, before.kek);
    // A genuine next rekey is still accepted.
    w.rekey(RekeyReason::Manual);
    assert_eq!(w.gms[0].1.group().unwrap().last_seq, w.ks_keys().seq);
}

#[test]
fn atd_delays_sending_on_the_new_tek_for_the_named_classes_only() {
    let members = vec![(gm_addr(0), gm(0, b"k", GROUP)), cisco_gm(0)];
    let mut w = World::new(one_tek_config(AckOption::Cisco), members);
    w.run_until(T0 + 30_000);
    let old = w.ks_keys().teks[0].clone();
    // Rekeyed on schedule: 90 s before the TEK expires, so ATD = 90 - 30 = 60 s.
    w.run_until(T0 + 3_600_000 - 85_000);
    let new = w.ks_keys().teks[0].clone();
    assert_ne!(new.spi, old.spi);
    let (non_cisco, cisco) = (&w.gms[0].1, &w.gms[1].1);
    let kek_before = w.persisted[0].push_kek.clone().unwrap();
    let to_non_cisco = &w.pushes.iter().find(|(a, _)| *a == w.gms[0].0).unwrap().1;
    let sa = push_sa(to_non_cisco, &kek_before, &w.ks);
    let atd = sa.gap.and_then(|g| g.activation_time_delay).unwrap();
    assert!((59..=61).contains(&atd), "ATD {atd}");
    // The non-Cisco GM receives on both and keeps sending on the old TEK until ATD.
    assert!(non_cisco.inbound_teks(w.now).any(|t| t.spi == new.spi));
    assert_eq!(non_cisco.outbound_tek(w.now).unwrap().spi, old.spi);
    // The Cisco GM got no ATD: it sends on the new TEK at once.
    assert_eq!(cisco.outbound_tek(w.now).unwrap().spi, new.spi);
    let cisco_sa = push_sa(
        &w.pushes.iter().find(|(a, _)| *a == w.gms[1].0).unwrap().1,
        &kek_before,
        &w.ks,
    );
    assert!(cisco_sa.gap.is_none());
    let t = w.now + 61_000;
    w.run_until(t);
    assert_eq!(w.gms[0].1.outbound_tek(w.now).unwrap().spi, new.spi);
    // The old TEK is dropped when it expires.
    w.run_until(T0 + 3_600_000 + 1000);
    assert!(!w.gms[0].1.inbound_teks(w.now).any(|t| t.spi == old.spi));
}

#[test]
fn no_atd_with_two_teks_or_multicast() {
    // Two TEKs (the default test group): no GAP in unicast rekeys.
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(1));
    w.run_until(T0 + 30_000);
    let kek = w.ks_keys().kek.unwrap();
    w.rekey(RekeyReason::Manual);
    assert!(push_sa(&w.pushes[0].1, &kek, &w.ks).gap.is_none());
    // Multicast, one TEK: no GAP, no KEK_ACK_REQUESTED even with option any, no ACK.
    let mut cfg = one_tek_config(AckOption::Any);
    use_multicast(&mut cfg);
    let mut w = World::new(cfg, gms(3));
    w.run_until(T0 + 30_000);
    let kek = w.ks_keys().kek.unwrap();
    w.rekey(RekeyReason::Manual);
    let t = w.now + 5_000;
    w.run_until(t);
    assert_eq!(w.pushes.len(), 3, "one multicast datagram reached each GM");
    let sa = push_sa(&w.pushes[0].1, &kek, &w.ks);
    assert!(sa.gap.is_none());
    assert_eq!(sa.kek.unwrap().policy.ack_requested, None);
    assert!(w.acks.is_empty());
    assert_eq!(w.ks.rekey_status(GROUP).unwrap().ack_type_in_use, "None");
    assert!(w
        .gms
        .iter()
        .all(|(_, g)| g.group().unwrap().last_seq == w.ks_keys().seq));
}

#[test]
fn rekey_replace_deletes_the_old_teks_at_once_and_rolls_the_kek() {
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(2));
    w.run_until(T0 + 30_000);
    let old = w.ks_keys();
    w.rekey(RekeyReason::Replace);
    let new = w.ks_keys();
    assert_ne!(new.kek.as_ref().unwrap().spi, old.kek.as_ref().unwrap().spi);
    for (_, g) in &w.gms {
        let spis: Vec<u32> = g.inbound_teks(w.now).map(|t| t.spi).collect();
        assert_eq!(spis, new.teks.iter().map(|t| t.spi).collect::<Vec<_>>());
        assert_eq!(g.group().unwrap().kek, new.kek);
    }
    let deleted = w.gm_events.iter().find_map(|(_, e)| match e {
        GmEvent::Rekeyed { deleted, .. } => Some(deleted.clone()),
        _ => None,
    });
    assert_eq!(
        deleted.unwrap(),
        old.teks.iter().map(|t| t.spi).collect::<Vec<_>>()
    );
    // The next rekey comes under the new KEK and is accepted.
    w.rekey(RekeyReason::Manual);
    assert!(w
        .gms
        .iter()
        .all(|(_, g)| g.group().unwrap().last_seq == w.ks_keys().seq));
}

#[test]
fn multicast_acks_when_asked_are_jittered() {
    // A multicast KEK whose policy asks for RFC 8263 ACKs (another vendor's KS
    // may do so): the GM answers after a random delay of at most 500 ms.
    let mut cfg = ks_config(b"k", Authorization::default());
    use_multicast(&mut cfg);
    let mut w = World::new(cfg, gms(8));
    w.run_until(T0 + 30_000);
    let keys = w.ks_keys();
    let kek = keys.kek.clone().unwrap();
    let material = keys.kek_material();
    let payloads = vec![
        Payload::Seq(Seq(keys.seq + 1)),
        Payload::Sa(Sa::Gdoi(
            keys.to_sa_with(Some(AckRequested::REKEY_ACK_KEK_SHA256)),
        )),
        Payload::KeyDownload(keys.to_kd(&material, None)),
    ];
    let signer = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap(),
    ));
    let push = seal_push(&kek, &signer, rng(3).as_mut(), &payloads).unwrap();
    let start = w.now;
    w.deliver_down(SocketAddr::V4(MCAST), &push);
    let mut times = Vec::new();
    for step in 0..=10u64 {
        let at = start + step * 50;
        for (_, g) in w.gms.iter_mut() {
            g.handle_timeout(at);
            while let Some(t) = g.poll_transmit() {
                let h = IsakmpHeader::parse(&t.payload).unwrap();
                assert_eq!(h.exchange_type, ExchangeType::GROUPKEY_PUSH_ACK);
                times.push(at - start);
            }
        }
    }
    assert_eq!(times.len(), 8, "every GM acknowledged within the jitter");
    assert!(times.iter().any(|t| *t > 0), "not all at once: {times:?}");
    assert!(times.iter().all(|t| *t <= 500));
}

/// The data behind `show crypto gkm ks rekey` and `show crypto gkm ks policy`.
#[test]
fn show_data_for_ks_rekey_and_policy() {
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(2));
    w.run_until(T0 + 30_000);
    let s = w.ks.rekey_status(GROUP).unwrap();
    assert_eq!(
        (s.ack_type_in_use.as_str(), s.rekeys_sent, s.seq, s.gms),
        ("Cisco", 0, 0, 2)
    );
    w.rekey(RekeyReason::Manual);
    let s = w.ks.rekey_status(GROUP).unwrap();
    assert_eq!((s.rekeys_sent, s.seq), (1, 1));
    let p = w.ks.kek_policy_status(GROUP, w.now).unwrap();
    let kek = w.ks_keys().kek.unwrap();
    assert_eq!(p.teks, 2);
    assert_eq!(p.seq, 1);
    assert_eq!(p.transport, "Unicast");
    let spi_hex = hex::encode(kek.spi);
    assert_eq!(p.spi, spi_hex);
    assert_eq!(p.spi.len(), 32);
    assert_eq!(
        (p.encryption_algorithm.as_str(), p.iv_len, p.key_size_bits),
        ("AES", 16, 128)
    );
    assert_eq!(p.original_lifetime_secs, 86_400);
    // Started at T0; now T0 + 30 s.
    assert_eq!(p.remaining_lifetime_secs, 86_400 - 30);
    // The TEKs (3600 s, made at the manual rekey just now) are rekeyed 90 s early.
    assert_eq!(p.time_to_rekey_secs, 3600 - 90);
    assert_eq!(
        (p.sig_algorithm.as_str(), p.sig_hash_algorithm.as_str()),
        ("RSA", "SHA256")
    );
    assert_eq!((p.sig_key_bits, p.sig_size), (2048, 256));
    assert_eq!(p.sig_key_name, "ks-rekey");
    assert_eq!(p.acknowledgement, "cisco");
    for (option, word, in_use) in [
        (AckOption::Interoperable, "interoperable", "Interoperable"),
        (AckOption::Any, "any", "Any"),
    ] {
        let mut cfg = ks_config(b"k", Authorization::default());
        cfg.groups[0].rekey.ack = option;
        let mut w = World::new(cfg, vec![]);
        w.run_until(T0 + 1000);
        assert_eq!(
            w.ks.kek_policy_status(GROUP, w.now)
                .unwrap()
                .acknowledgement,
            word
        );
        assert_eq!(w.ks.rekey_status(GROUP).unwrap().ack_type_in_use, in_use);
    }
}

/// Policy changes reach the engine at run time: a new group is served, an
/// ACK option change is rekeyed, a key-policy change is a rekey replace
/// that GMs accept, eject drops a GM, a deleted group is no longer served.
#[test]
fn groups_change_at_run_time() {
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(2));
    w.run_until(T0 + 30_000);
    let mut g = w.ks.groups()[0].clone();
    g.rekey.ack = AckOption::Interoperable;
    assert_eq!(
        w.ks.set_group(w.now, g.clone(), false),
        Ok(Some(RekeyReason::Manual))
    );
    w.settle();
    assert!(
        w.gms
            .iter()
            .all(|(_, m)| m.group().unwrap().ack_requested
                == Some(AckRequested::REKEY_ACK_KEK_SHA256))
    );
    // New selectors: new keys, sent as a replace that deletes what GMs held.
    let held: Vec<u32> = w.gms[0].1.inbound_teks(w.now).map(|t| t.spi).collect();
    let mut r = rng(77);
    let mut fresh = GroupKeys::generate(
        r.as_mut(),
        GROUP,
        &[(prefix("10.7.0.0/16"), prefix("10.7.0.0/16"))],
        3600,
        Some(&g.keys.kek.as_ref().unwrap().params()),
    );
    fresh.seq = 0;
    g.keys = fresh;
    assert_eq!(
        w.ks.set_group(w.now, g.clone(), false),
        Ok(Some(RekeyReason::Replace))
    );
    w.settle();
    for (_, m) in &w.gms {
        let spis: Vec<u32> = m.inbound_teks(w.now).map(|t| t.spi).collect();
        assert_eq!(
            spis,
            w.ks_keys().teks.iter().map(|t| t.spi).collect::<Vec<_>>()
        );
        assert!(held.iter().all(|h| !spis.contains(h)));
        assert_eq!(
            m.inbound_teks(w.now).next().unwrap().src,
            prefix("10.7.0.0/16").into()
        );
        assert_eq!(m.group().unwrap().last_seq, w.ks_keys().seq);
    }
    // Eject.
    let id = gm_addr(1).ip().to_string();
    assert!(w.ks.eject(GROUP, &id));
    assert!(!w.ks.eject(GROUP, &id));
    assert_eq!(w.ks.members(GROUP).count(), 1);
    // Deleted: registrations are refused.
    assert!(w.ks.disable_group(GROUP));
    let mut late = World::new(ks_config(b"k", Authorization::default()), vec![]);
    std::mem::swap(&mut late.ks, &mut w.ks);
    late.gms = vec![(gm_addr(9), gm(9, b"k", GROUP))];
    late.index = late
        .gms
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (*a, i))
        .collect();
    late.now = w.now;
    let t = late.now + 5_000;
    late.run_until(t);
    assert!(!late.gms[0].1.is_registered());
    assert!(late.ks.counters().rejected(Reject::UnknownGroup) >= 1);
}

/// IP-D3P reaches GMs in the GAP (seed section 1): at registration, and a
/// window change or IP-D3P turned off reaches them with the rekey it
/// starts; with ATD both ride in the same GAP.
#[test]
fn d3p_window_reaches_gms_at_registration_and_with_each_change() {
    let mut cfg = ks_config(b"k", Authorization::default());
    cfg.groups[0].d3p_window_ms = Some(5000);
    let mut w = World::new(cfg, gms(2));
    w.run_until(T0 + 30_000);
    for (_, m) in &w.gms {
        assert_eq!(m.group().unwrap().d3p_window_ms, Some(5000));
    }
    let mut g = w.ks.groups()[0].clone();
    g.d3p_window_ms = Some(1000);
    assert_eq!(
        w.ks.set_group(w.now, g.clone(), false),
        Ok(Some(RekeyReason::Manual)),
        "GMs must see the new window"
    );
    w.settle();
    for (_, m) in &w.gms {
        assert_eq!(m.group().unwrap().d3p_window_ms, Some(1000));
    }
    // A scheduled TEK rekey (with ATD for these non-Cisco GMs) keeps it.
    w.run_until(T0 + 3_600_000);
    for (_, m) in &w.gms {
        assert!(m.group().unwrap().last_seq >= 2);
        assert_eq!(m.group().unwrap().d3p_window_ms, Some(1000));
    }
    g.d3p_window_ms = None;
    assert_eq!(
        w.ks.set_group(w.now, g, false),
        Ok(Some(RekeyReason::Manual))
    );
    w.settle();
    for (_, m) in &w.gms {
        assert_eq!(m.group().unwrap().d3p_window_ms, None, "IP-D3P off");
    }
}

#[test]
fn a_rekey_is_in_flight_until_every_gm_acknowledged_or_its_round_closed() {
    // What the API's "one rekey in flight" refusal (409) asks the engine.
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(2));
    w.run_until(T0 + 30_000);
    assert!(!w.ks.rekey_in_flight(GROUP));
    let silent = gm_addr(1);
    w.hook = Box::new(move |dir, addr, payload| {
        let ack = payload.get(18).is_some_and(|x| {
            *x == ExchangeType::GROUPKEY_PUSH_ACK.0 || *x == ExchangeType::GKM_UNICAST_ACK.0
        });
        !(dir == Dir::Up && addr == silent && ack)
    });
    w.ks.rekey_now(w.now, GROUP, RekeyReason::Manual).unwrap();
    assert!(w.ks.rekey_in_flight(GROUP), "prepared, not yet persisted");
    w.settle();
    assert!(w.ks.rekey_in_flight(GROUP), "a GM has yet to acknowledge");
    w.run_until(w.now + 120_000);
    assert!(!w.closed_rounds().is_empty());
    assert!(!w.ks.rekey_in_flight(GROUP), "the round closed");
    w.hook = Box::new(|_, _, _| true);
    w.rekey(RekeyReason::Manual);
    assert!(
        !w.ks.rekey_in_flight(GROUP),
        "every GM acknowledged at once"
    );
    assert!(!w.ks.rekey_in_flight(999), "an unknown group has none");
}

#[test]
fn a_deleted_group_asks_for_no_timeouts() {
    // A deleted group keeps its key state (its index stays), but it is
    // never rekeyed: its schedule must not wake the driver, or a deadline
    // in the past would make it spin once the group's TEKs came due.
    let mut w = World::new(ks_config(b"k", Authorization::default()), gms(2));
    w.run_until(T0 + 30_000);
    assert!(w.ks.disable_group(GROUP));
    let later = T0 + 3_700_000;
    w.ks.handle_timeout(later);
    while w.ks.poll_event().is_some() {}
    assert!(
        w.ks.poll_timeout().is_none_or(|t| t > later),
        "a deadline in the past: {:?}",
        w.ks.poll_timeout()
    );
    assert!(w.ks.members(GROUP).next().is_none());
}
