//! Simulated clock: one key server and many group members in one process,
//! deterministic from seeds (model: quinn-proto's pair harness).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::*;
use gkm_proto::gm::GmEvent;
use gkm_proto::gm::GroupMember;
use gkm_proto::ks::{Authorization, KsEvent, Reject};
use std::net::SocketAddr;

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
    assert!(gm_events.iter().any(|(_, e)| matches!(e, GmEvent::AttemptFailed { reason: gkm_proto::gm::GmFailure::Notified(n), .. } if *n == gkm_wire::consts::NotifyType::AUTHENTICATION_FAILED)));
    assert!(ks.counters().rejected(Reject::AuthenticationFailed) >= 1);
    assert_eq!(ks.counters().registrations, 0);
    assert_eq!(ks.half_open_count(), 0, "nothing left behind");
}

#[test]
fn unknown_group_and_unauthorized_gm_get_invalid_id_information() {
    let mut ks1 = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", 999))];
    let (got, ks_events, gm_events) = run(&mut ks1, &mut gms, T0 + 5_000);
    assert!(got.is_empty());
    assert!(ks1.counters().rejected(Reject::UnknownGroup) >= 1);
    // The KS's log line names the group asked for (the GM gets only the
    // notification, as before).
    let detail = |events: &[KsEvent], why: Reject| {
        events.iter().find_map(|e| match e {
            KsEvent::Rejected { reason, detail, .. } if *reason == why => detail.clone(),
            _ => None,
        })
    };
    assert_eq!(
        detail(&ks_events, Reject::UnknownGroup).as_deref(),
        Some("PULL 1 asks for group 999, which this KS does not serve")
    );
    assert!(gm_events.iter().any(|(_, e)| matches!(e, GmEvent::AttemptFailed { reason: gkm_proto::gm::GmFailure::Notified(n), .. } if *n == gkm_wire::consts::NotifyType::INVALID_ID_INFORMATION)));

    let auth = Authorization {
        addresses: vec![prefix("10.0.1.0/30").into()],
        identities: vec![],
    };
    let mut ks2 = ks(b"k", auth);
    // 10.0.1.1 is inside the /30, 10.0.1.9 is not.
    let mut gms = vec![
        (gm_addr(1), gm(1, b"k", GROUP)),
        (gm_addr(9), gm(9, b"k", GROUP)),
    ];
    let (got, ks_events, _) = run(&mut ks2, &mut gms, T0 + 5_000);
    assert_eq!(got.len(), 1);
    assert!(got.contains_key(&gm_addr(1)));
    assert!(ks2.counters().rejected(Reject::Unauthorized) >= 1);
    assert_eq!(
        detail(&ks_events, Reject::Unauthorized).as_deref(),
        Some(format!("GM \"10.0.1.9\" from 10.0.1.9 is not authorised for group {GROUP}").as_str())
    );
    assert_eq!(ks2.counters().registrations, 1);
}

#[test]
fn lost_answers_are_retransmitted_with_backoff_then_the_attempt_times_out() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let mut sent = Vec::new();
    // Drop every answer from the KS: the GM resends MM1 at 1 s, 2 s, 4 s, then gives up.
    let (got, _, gm_ev) = common::run_with(&mut ks, &mut gms, T0, T0 + 20_000, |dir, d| {
        if dir == common::Dir::Up {
            sent.push(d.clone());
        }
        dir == common::Dir::Up
    });
    assert!(got.is_empty());
    assert!(gm_ev.iter().any(|(_, e)| matches!(
        e,
        GmEvent::AttemptFailed {
            reason: gkm_proto::gm::GmFailure::Timeout,
            ..
        }
    )));
    // 4 transmissions of the first MM1 (same cookie), answered from the KS's cache.
    let first_cookie = &sent[0][..8];
    assert_eq!(sent.iter().filter(|d| &d[..8] == first_cookie).count(), 4);
    assert!(ks.counters().rejected(Reject::Retransmit) >= 3);
}

#[test]
fn gm_reregisters_before_its_teks_expire() {
    let mut ks = ks(b"k", Authorization::default());
    let mut g = gm(1, b"k", GROUP);
    let mut gms = vec![(gm_addr(1), g)];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 5_000);
    assert_eq!(got.len(), 1);
    g = gms.pop().unwrap().1;
    // TEK lifetime 3600 s, re-register 60 s before: at T0 + 3540 s (plus the exchange time).
    let renew = g.poll_timeout().unwrap();
    assert!(
        (T0 + 3_540_000..=T0 + 3_541_000).contains(&renew),
        "renew at {}",
        renew - T0
    );
    g.handle_timeout(renew);
    assert!(!g.is_registered());
    assert!(g.poll_transmit().is_some(), "a new main mode starts");
}

#[test]
fn asr9000_tag_sets_the_gm_class() {
    let mut ks = ks(b"k", Authorization::default());
    let tagged: SocketAddr = "10.9.0.5:848".parse().unwrap();
    let mut gms = vec![
        (tagged, common::gm_at(5, tagged, b"k", GROUP)),
        (gm_addr(1), gm(1, b"k", GROUP)),
    ];
    let (_, events, _) = run(&mut ks, &mut gms, T0 + 5_000);
    let class = |a: SocketAddr| {
        events
            .iter()
            .find_map(|e| match e {
                KsEvent::Registered(r) if r.addr == a => Some(r.class),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(class(tagged), gkm_proto::engine::GmClass::Asr9000);
    assert_eq!(class(gm_addr(1)), gkm_proto::engine::GmClass::NonCisco);
}

#[test]
fn initial_contact_from_a_restarted_gm_drops_its_old_phase1_sa() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    run(&mut ks, &mut gms, T0 + 5_000);
    assert_eq!(ks.phase1_sa_count(), 1);
    // The same GM restarts: a fresh engine (new cookies) sends INITIAL-CONTACT.
    let mut restarted = vec![(gm_addr(1), common::gm_at(77, gm_addr(1), b"k", GROUP))];
    let (got, _, _) = run(&mut ks, &mut restarted, T0 + 10_000);
    assert_eq!(got.len(), 1);
    assert_eq!(ks.phase1_sa_count(), 1, "the old SA is gone");
    assert_eq!(ks.counters().registrations, 2);
}

#[test]
fn gm_fails_over_to_the_next_key_server_in_order() {
    use gkm_proto::gm::{GmAuth, GmIdentity};
    let mut ks = ks(b"k", Authorization::default());
    let dead: SocketAddr = "10.0.0.99:848".parse().unwrap();
    let std::net::IpAddr::V4(a) = gm_addr(1).ip() else {
        panic!()
    };
    let mut cfg = common::base_config(
        1,
        GROUP,
        GmIdentity::Ipv4(a),
        GmAuth::Psk(zeroize::Zeroizing::new(b"k".to_vec())),
    );
    cfg.key_servers = vec![dead, common::KS_ADDR];
    let mut gms = vec![(gm_addr(1), GroupMember::new(cfg, common::rng(5)))];
    let (got, _, gm_ev) = run(&mut ks, &mut gms, T0 + 60_000);
    assert_eq!(got.len(), 1, "registered with the second key server");
    assert!(gm_ev.iter().any(|(_, e)| matches!(e, GmEvent::AttemptFailed { ks, reason: gkm_proto::gm::GmFailure::Timeout } if *ks == dead)));
    assert!(gm_ev
        .iter()
        .any(|(_, e)| matches!(e, GmEvent::Registered { ks, .. } if *ks == common::KS_ADDR)));
}
