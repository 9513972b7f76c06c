//! Simulated clock: one key server and many group members in one process,
//! deterministic from seeds (model: quinn-proto's pair harness).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use gkm_proto::crypto::RsaSigner;
use gkm_proto::gm::{GmAuth, GmConfig, GmEvent, GmIdentity, GroupMember};
use gkm_proto::group::{GroupKeys, Ipv4Prefix};
use gkm_proto::ks::{Authorization, KeyServer, KsConfig, KsEvent, KsGroup, KsLimits, Reject};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

const KS_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 848);
const GROUP: u32 = 1234;
const T0: u64 = 1_800_000_000_000;

fn rng(seed: u64) -> Box<ChaCha20Rng> {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

fn prefix(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

fn ks(psk: &[u8], auth: Authorization) -> KeyServer {
    let signer = RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap();
    let spki = signer.public_spki_der().unwrap();
    let mut r = rng(1);
    let keys = GroupKeys::generate(
        r.as_mut(),
        GROUP,
        &[
            (prefix("10.1.0.0/16"), prefix("10.1.0.0/16")),
            (prefix("10.2.0.0/16"), prefix("10.2.0.0/16")),
        ],
        3600,
        Some((
            KS_ADDR.ip().to_string().parse().unwrap(),
            Ipv4Addr::UNSPECIFIED,
            86_400,
            spki,
            2048,
        )),
    );
    KeyServer::new(
        KsConfig {
            identity: Ipv4Addr::new(10, 0, 0, 1),
            groups: vec![KsGroup {
                name: "GET".into(),
                keys,
                authorization: auth,
            }],
            psks: vec![(prefix("10.0.0.0/8"), Zeroizing::new(psk.to_vec()))],
            ca: None,
            certificate: None,
            asr9000: vec![prefix("10.9.0.0/16")],
            limits: KsLimits::default(),
            max_phase1_life_secs: 86_400,
            export_keys: false,
        },
        r,
    )
}

fn gm_addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 0x100 + i)),
        848,
    )
}

fn gm(i: u32, psk: &[u8], group: u32) -> GroupMember {
    let IpAddrV4(a) = ip4(gm_addr(i));
    GroupMember::new(
        GmConfig {
            key_servers: vec![KS_ADDR],
            group_id: group,
            identity: GmIdentity::Ipv4(a),
            auth: GmAuth::Psk(Zeroizing::new(psk.to_vec())),
            phase1_life_secs: 86_400,
            sender_ids: if i % 2 == 0 { 1 } else { 0 },
            reregister_before_ms: 60_000,
            retransmit_initial_ms: 1000,
            max_transmissions: 4,
        },
        rng(1000 + u64::from(i)),
    )
}

struct IpAddrV4(Ipv4Addr);
fn ip4(a: SocketAddr) -> IpAddrV4 {
    match a.ip() {
        std::net::IpAddr::V4(v) => IpAddrV4(v),
        std::net::IpAddr::V6(_) => panic!(),
    }
}

/// Keys each GM got, the KS's events, the GMs' events.
type Outcome = (
    HashMap<SocketAddr, GroupKeys>,
    Vec<KsEvent>,
    Vec<(SocketAddr, GmEvent)>,
);

/// Runs until quiet; returns (registered keys per GM, KS events).
fn run(ks: &mut KeyServer, gms: &mut [(SocketAddr, GroupMember)], until: u64) -> Outcome {
    let mut now = T0;
    let mut got = HashMap::new();
    let mut ks_events = Vec::new();
    let mut gm_events = Vec::new();
    let index: HashMap<SocketAddr, usize> =
        gms.iter().enumerate().map(|(i, (a, _))| (*a, i)).collect();
    for (_, g) in gms.iter_mut() {
        g.handle_timeout(now);
    }
    loop {
        let mut moved = false;
        for (addr, g) in gms.iter_mut() {
            while let Some(t) = g.poll_transmit() {
                assert_eq!(t.to, KS_ADDR);
                ks.handle_datagram(now, *addr, &t.payload);
                moved = true;
            }
        }
        while let Some(t) = ks.poll_transmit() {
            if let Some(i) = index.get(&t.to) {
                gms[*i].1.handle_datagram(now, KS_ADDR, &t.payload);
                moved = true;
            }
        }
        for (addr, g) in gms.iter_mut() {
            while let Some(e) = g.poll_event() {
                if let GmEvent::Registered { keys, .. } = &e {
                    got.insert(*addr, keys.clone());
                }
                gm_events.push((*addr, e));
            }
        }
        while let Some(e) = ks.poll_event() {
            ks_events.push(e);
        }
        if moved {
            continue;
        }
        let next = gms
            .iter()
            .filter(|(_, g)| !g.is_registered())
            .filter_map(|(_, g)| g.poll_timeout())
            .chain(ks.poll_timeout())
            .min();
        match next {
            Some(t) if t <= until => {
                now = t.max(now);
                ks.handle_timeout(now);
                for (_, g) in gms.iter_mut() {
                    if !g.is_registered() {
                        g.handle_timeout(now);
                    }
                }
            }
            _ => break,
        }
    }
    (got, ks_events, gm_events)
}

#[test]
fn thousand_gms_register_and_hold_exactly_the_ks_keys() {
    let mut ks = ks(b"group-psk", Authorization::default());
    let mut gms: Vec<(SocketAddr, GroupMember)> = (0..1000)
        .map(|i| (gm_addr(i), gm(i, b"group-psk", GROUP)))
        .collect();
    let (got, events, _) = run(&mut ks, &mut gms, T0 + 60_000);
    assert_eq!(got.len(), 1000, "every GM registered");
    let want = &ks.groups()[0].keys;
    for keys in got.values() {
        assert_eq!(keys, want, "GM keys equal the KS's");
    }
    assert_eq!(ks.counters().registrations, 1000);
    assert_eq!(ks.counters().phase1_established, 1000);
    let regs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            KsEvent::Registered(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(regs.len(), 1000);
    // GKM agents report their version and features, and are non-Cisco GMs.
    assert!(regs
        .iter()
        .all(|r| r.version.is_some() && r.class == gkm_proto::engine::GmClass::NonCisco));
    // Sender IDs: requested by even GMs, unique.
    let mut sids: Vec<u32> = regs.iter().flat_map(|r| r.sids.clone()).collect();
    assert_eq!(sids.len(), 500);
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), 500);
    assert_eq!(ks.half_open_count(), 0);
}

#[test]
fn deterministic_from_seeds() {
    let once = || {
        let mut ks = ks(b"k", Authorization::default());
        let mut gms: Vec<_> = (0..5).map(|i| (gm_addr(i), gm(i, b"k", GROUP))).collect();
        let (got, _, _) = run(&mut ks, &mut gms, T0 + 60_000);
        let mut v: Vec<_> = got.into_iter().collect();
        v.sort_by_key(|(a, _)| *a);
        v
    };
    assert_eq!(once(), once());
}

#[test]
fn wrong_psk_is_refused_with_authentication_failed() {
    let mut ks = ks(b"right", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"wrong", GROUP))];
    let (got, events, gm_events) = run(&mut ks, &mut gms, T0 + 5_000);
    assert!(got.is_empty());
    assert!(events.iter().any(|e| matches!(e, KsEvent::Rejected { reason: Reject::AuthenticationFailed, notify: Some(n), .. } if *n == gkm_wire::consts::NotifyType::AUTHENTICATION_FAILED)));
    assert!(gm_events.iter().any(|(_, e)| matches!(e, GmEvent::Failed { reason: gkm_proto::gm::GmFailure::Notified(n), .. } if *n == gkm_wire::consts::NotifyType::AUTHENTICATION_FAILED)));
    assert!(ks.counters().rejected(Reject::AuthenticationFailed) >= 1);
    assert_eq!(ks.counters().registrations, 0);
    assert_eq!(ks.half_open_count(), 0, "nothing left behind");
}

#[test]
fn unknown_group_and_unauthorized_gm_get_invalid_id_information() {
    let mut ks1 = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", 999))];
    let (got, _, gm_events) = run(&mut ks1, &mut gms, T0 + 5_000);
    assert!(got.is_empty());
    assert!(ks1.counters().rejected(Reject::UnknownGroup) >= 1);
    assert!(gm_events.iter().any(|(_, e)| matches!(e, GmEvent::Failed { reason: gkm_proto::gm::GmFailure::Notified(n), .. } if *n == gkm_wire::consts::NotifyType::INVALID_ID_INFORMATION)));

    let auth = Authorization {
        addresses: vec![prefix("10.0.1.0/30")],
        identities: vec![],
    };
    let mut ks2 = ks(b"k", auth);
    // 10.0.1.1 is inside the /30, 10.0.1.9 is not.
    let mut gms = vec![
        (gm_addr(1), gm(1, b"k", GROUP)),
        (gm_addr(9), gm(9, b"k", GROUP)),
    ];
    let (got, _, _) = run(&mut ks2, &mut gms, T0 + 5_000);
    assert_eq!(got.len(), 1);
    assert!(got.contains_key(&gm_addr(1)));
    assert!(ks2.counters().rejected(Reject::Unauthorized) >= 1);
    assert_eq!(ks2.counters().registrations, 1);
}
