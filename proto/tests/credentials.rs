//! Phase 1 credentials bound to their group (issue 16, items 1 and 2):
//! each attack a holder of one group's key could try is tried, and
//! refused with nothing stored or sent; every legitimate GM keeps
//! registering, also when groups share source ranges.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;
use gkm_proto::gm::{GmAuth, GmEvent, GmFailure, GmIdentity, GroupMember};
use gkm_proto::ks::{
    Authorization, Credential, GroupAuth, KeyServer, KsConfig, KsEvent, PskEntry, Reject,
    MAX_PSK_CANDIDATES,
};
use gkm_wire::consts::NotifyType;
use zeroize::Zeroizing;

const A: u32 = GROUP;
const B: u32 = 5678;

fn entry(credential: Credential, ranges: &[&str], key: &[u8]) -> PskEntry {
    PskEntry {
        credential,
        ranges: ranges.iter().map(|r| prefix(r).into()).collect(),
        key: Zeroizing::new(key.to_vec()),
    }
}

/// Group A (1234) and group B (5678), each with its own PSK on `ranges_a`
/// and `ranges_b`; no keyring.
fn two_groups(ranges_a: &[&str], ranges_b: &[&str]) -> KsConfig {
    let mut cfg = ks_config(b"unused", Authorization::default());
    cfg.groups
        .push(ks_group("B", B, 77, Authorization::default()));
    cfg.psks = vec![
        entry(Credential::GroupPsk(A), ranges_a, b"key-of-group-a"),
        entry(Credential::GroupPsk(B), ranges_b, b"key-of-group-b"),
    ];
    cfg
}

fn refused_credential(events: &[KsEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            KsEvent::Rejected {
                reason: Reject::CredentialNotAccepted,
                notify: Some(NotifyType::INVALID_ID_INFORMATION),
                ..
            }
        )
    })
}

fn notified(events: &[(SocketAddr, GmEvent)], n: NotifyType) -> bool {
    events.iter().any(
        |(_, e)| matches!(e, GmEvent::AttemptFailed { reason: GmFailure::Notified(x), .. } if *x == n),
    )
}

fn registered_to(events: &[KsEvent], group: u32) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, KsEvent::Registered(r) if r.group_id == group))
        .count()
}

#[test]
fn a_gm_holding_group_bs_psk_cannot_register_to_group_a() {
    // Equal ranges: the old table let the last group's PSK win for both.
    let mut ks = KeyServer::new(two_groups(&["10.0.0.0/8"], &["10.0.0.0/8"]), rng(2));
    let mut attacker = vec![(gm_addr(1), gm(1, b"key-of-group-b", A))];
    let (got, ev, gm_ev) = run(&mut ks, &mut attacker, T0 + 3_000);
    assert!(
        got.is_empty(),
        "no keys of group A reach the holder of B's PSK"
    );
    assert!(refused_credential(&ev), "{ev:?}");
    assert!(notified(&gm_ev, NotifyType::INVALID_ID_INFORMATION));
    assert_eq!(registered_to(&ev, A), 0);
    assert_eq!(ks.members(A).count(), 0, "nothing stored");
    assert!(ks.counters().rejected(Reject::CredentialNotAccepted) >= 1);
    // The same PSK still opens its own group.
    let mut own = vec![(gm_addr(2), gm(2, b"key-of-group-b", B))];
    let (got, _, _) = run(&mut ks, &mut own, T0 + 3_000);
    assert_eq!(got.len(), 1);
    assert_eq!(got.values().next().unwrap().group_id, B);
}

#[test]
fn a_group_without_ranges_does_not_open_others_either() {
    // B has no address ranges: its PSK applies to every source, and must
    // still open only B.
    let mut ks = KeyServer::new(two_groups(&["10.0.0.0/8"], &[]), rng(2));
    let mut attacker = vec![(gm_addr(1), gm(1, b"key-of-group-b", A))];
    let (got, ev, _) = run(&mut ks, &mut attacker, T0 + 3_000);
    assert!(got.is_empty());
    assert!(refused_credential(&ev), "{ev:?}");
}

#[test]
fn overlapping_ranges_with_different_psks_serve_both_groups() {
    for (ra, rb) in [
        (&["10.0.0.0/8"][..], &["10.0.0.0/8"][..]),
        (&["10.0.0.0/8"][..], &["10.0.1.0/24"][..]),
        (&["10.0.1.0/24"][..], &["10.0.0.0/8"][..]),
        (&[][..], &["10.0.0.0/16"][..]),
    ] {
        let mut ks = KeyServer::new(two_groups(ra, rb), rng(2));
        // GMs of both groups from the same /24, interleaved.
        let mut gms: Vec<(SocketAddr, GroupMember)> = (0..6)
            .map(|i| {
                let (key, group): (&[u8], u32) = if i % 2 == 0 {
                    (b"key-of-group-a", A)
                } else {
                    (b"key-of-group-b", B)
                };
                (gm_addr(i), gm(i, key, group))
            })
            .collect();
        let (got, ev, _) = run(&mut ks, &mut gms, T0 + 5_000);
        assert_eq!(got.len(), 6, "{ra:?} / {rb:?}: {ev:?}");
        for (i, (addr, _)) in gms.iter().enumerate() {
            let want = if i % 2 == 0 { A } else { B };
            assert_eq!(got[addr].group_id, want, "{ra:?} / {rb:?}");
            assert_eq!(got[addr], ks.groups()[usize::from(want == B)].keys);
        }
        assert_eq!(registered_to(&ev, A), 3);
        assert_eq!(registered_to(&ev, B), 3);
        assert_eq!(ks.counters().rejected(Reject::AuthenticationFailed), 0);
    }
}

#[test]
fn the_keyring_opens_only_groups_without_a_psk_of_their_own() {
    // Group A has its own PSK; group B has none and takes the keyring.
    let mut cfg = two_groups(&["10.0.0.0/8"], &[]);
    cfg.psks = vec![
        entry(Credential::Keyring(0), &["0.0.0.0/0"], b"keyring-key"),
        entry(Credential::GroupPsk(A), &["10.0.0.0/8"], b"key-of-group-a"),
    ];
    let mut ks = KeyServer::new(cfg, rng(2));
    let mut to_a = vec![(gm_addr(1), gm(1, b"keyring-key", A))];
    let (got, ev, _) = run(&mut ks, &mut to_a, T0 + 3_000);
    assert!(
        got.is_empty(),
        "the keyring does not open a group with its own PSK"
    );
    assert!(refused_credential(&ev));
    let mut to_b = vec![(gm_addr(2), gm(2, b"keyring-key", B))];
    let (got, _, _) = run(&mut ks, &mut to_b, T0 + 3_000);
    assert_eq!(
        got.len(),
        1,
        "a group without its own PSK takes the keyring"
    );
    // And group A's PSK does not open B (B accepts the keyring only).
    let mut a_to_b = vec![(gm_addr(3), gm(3, b"key-of-group-a", B))];
    let (got, ev, _) = run(&mut ks, &mut a_to_b, T0 + 3_000);
    assert!(got.is_empty());
    assert!(refused_credential(&ev));
}

#[test]
fn a_certificate_opens_only_certificate_groups_and_a_psk_only_psk_groups() {
    let mut cfg = ks_config(b"unused", Authorization::default());
    let ca = gkm_proto::crypto::certificates_from_pem(include_str!("data/ca.pem")).unwrap();
    cfg.ca = Some(gkm_proto::crypto::CertificateAuthority::new(&ca).unwrap());
    let cert = gkm_proto::crypto::certificates_from_pem(include_str!("data/ks.pem"))
        .unwrap()
        .remove(0);
    cfg.certificates = vec![(
        cert,
        gkm_proto::crypto::Phase1Signer::from_pkcs8_pem(include_str!("data/ks.key")).unwrap(),
    )];
    // Group A (PSK, own key), group B (certificates).
    let mut b = ks_group("B", B, 77, Authorization::default());
    b.authentication = GroupAuth::Certificate;
    cfg.groups.push(b);
    cfg.psks = vec![entry(Credential::GroupPsk(A), &[], b"key-of-group-a")];
    let mut ks = KeyServer::new(cfg, rng(2));
    // A certificate GM asks for the PSK group A.
    let mut gms = vec![(gm_addr(1), gm_with_cert_to(1, "gm", A))];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty(), "a certificate does not open a PSK group");
    assert!(refused_credential(&ev), "{ev:?}");
    // A PSK GM asks for the certificate group B.
    let mut gms = vec![(gm_addr(2), gm(2, b"key-of-group-a", B))];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty(), "a PSK does not open a certificate group");
    assert!(refused_credential(&ev), "{ev:?}");
    // Each in its own group registers.
    let mut gms = vec![(gm_addr(1), gm_with_cert_to(3, "gm", B))];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.len(), 1, "{ev:?}");
    let mut gms = vec![(gm_addr(4), gm(4, b"key-of-group-a", A))];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.len(), 1);
}

#[test]
fn a_rotated_psk_takes_effect_for_new_exchanges_at_once() {
    let mut ks = KeyServer::new(two_groups(&["10.0.0.0/8"], &["10.0.0.0/8"]), rng(2));
    let mut old = vec![(gm_addr(1), gm(1, b"key-of-group-a", A))];
    let (got, _, _) = run(&mut ks, &mut old, T0 + 3_000);
    assert_eq!(got.len(), 1);
    let mut of_b = vec![(gm_addr(9), gm(9, b"key-of-group-b", B))];
    run(&mut ks, &mut of_b, T0 + 3_000);
    assert_eq!(ks.phase1_sa_count(), 2);
    // Rotate A's PSK (what the server does on PUT /groups/A/psk): the SA
    // the old key made ends with it, B's stays.
    ks.set_psks(vec![
        entry(Credential::GroupPsk(A), &["10.0.0.0/8"], b"rotated-key-a"),
        entry(Credential::GroupPsk(B), &["10.0.0.0/8"], b"key-of-group-b"),
    ]);
    assert_eq!(ks.phase1_sa_count(), 1, "the old key's phase 1 SA is gone");
    let mut stale = vec![(gm_addr(2), gm(2, b"key-of-group-a", A))];
    let (got, ev, gm_ev) = run(&mut ks, &mut stale, T0 + 3_000);
    assert!(got.is_empty(), "the old PSK authenticates nothing");
    assert!(
        ev.iter().any(|e| matches!(
            e,
            KsEvent::Rejected {
                reason: Reject::AuthenticationFailed,
                ..
            }
        )),
        "{ev:?}"
    );
    assert!(notified(&gm_ev, NotifyType::AUTHENTICATION_FAILED));
    let mut fresh = vec![(gm_addr(3), gm(3, b"rotated-key-a", A))];
    let (got, _, _) = run(&mut ks, &mut fresh, T0 + 3_000);
    assert_eq!(got.len(), 1);
    // Retired (a switch to certificates): the key is gone from the table.
    ks.set_psks(vec![entry(
        Credential::GroupPsk(B),
        &["10.0.0.0/8"],
        b"key-of-group-b",
    )]);
    let mut retired = vec![(gm_addr(4), gm(4, b"rotated-key-a", A))];
    let (got, _, _) = run(&mut ks, &mut retired, T0 + 3_000);
    assert!(got.is_empty());
}

#[test]
fn candidates_are_bounded_most_specific_first() {
    // MAX + 4 groups share the GMs' source; each has its own PSK. The
    // MAX most specific are tried; the 4 least specific are not.
    let n = MAX_PSK_CANDIDATES + 4;
    let mut cfg = ks_config(b"unused", Authorization::default());
    cfg.groups.clear();
    cfg.psks.clear();
    for i in 0..n {
        let id = 100 + u32::try_from(i).unwrap();
        cfg.groups.push(ks_group(
            &format!("G{i}"),
            id,
            500 + i as u64,
            Authorization::default(),
        ));
        // Groups 0..MAX have /24s; the rest have /8s (less specific).
        let range = if i < MAX_PSK_CANDIDATES {
            "10.0.1.0/24"
        } else {
            "10.0.0.0/8"
        };
        cfg.psks.push(entry(
            Credential::GroupPsk(id),
            &[range],
            format!("key-{i}").as_bytes(),
        ));
    }
    let mut ks = KeyServer::new(cfg, rng(2));
    let tried = gm(
        1,
        format!("key-{}", MAX_PSK_CANDIDATES - 1).as_bytes(),
        100 + u32::try_from(MAX_PSK_CANDIDATES - 1).unwrap(),
    );
    let mut gms = vec![(gm_addr(1), tried)];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.len(), 1, "the last of the most specific is tried");
    let beyond = gm(
        2,
        format!("key-{}", n - 1).as_bytes(),
        100 + u32::try_from(n - 1).unwrap(),
    );
    let mut gms = vec![(gm_addr(2), beyond)];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty(), "a candidate past the bound is not tried");
    assert!(ev.iter().any(|e| matches!(
        e,
        KsEvent::Rejected {
            reason: Reject::AuthenticationFailed,
            ..
        }
    )));
}

#[test]
fn initial_contact_under_another_credential_leaves_a_gms_sas_alone() {
    let mut ks = KeyServer::new(two_groups(&["10.0.0.0/8"], &["10.0.0.0/8"]), rng(2));
    let victim_addr = gm_addr(1);
    let mut victim = vec![(victim_addr, gm(1, b"key-of-group-a", A))];
    let (got, _, _) = run(&mut ks, &mut victim, T0 + 3_000);
    assert_eq!(got.len(), 1);
    let before = ks.phase1_sa_count();
    // Group B's GM, elsewhere, claims the victim's identity with INITIAL-CONTACT.
    let IpAddr::V4(victim_ip) = victim_addr.ip() else {
        unreachable!()
    };
    let cfg = base_config(
        9,
        B,
        GmIdentity::Ipv4(victim_ip),
        GmAuth::Psk(Zeroizing::new(b"key-of-group-b".to_vec())),
    );
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)), 848);
    let mut gms = vec![(other, GroupMember::new(cfg, rng(99)))];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.len(), 1, "it registers to its own group");
    assert_eq!(
        ks.phase1_sa_count(),
        before + 1,
        "the victim's phase 1 SA is still there"
    );
}
