//! Registration under attack and misconfiguration: each case is refused
//! with the right notification and counter, and leaves no state behind.
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
use gkm_proto::gm::{GmEvent, GmFailure};
use gkm_proto::ks::{Authorization, KeyServer, KsEvent, KsLimits, Reject};
use gkm_wire::consts::{ExchangeType, NotifyType};
use gkm_wire::IsakmpHeader;

fn notified(events: &[(SocketAddr, GmEvent)], n: NotifyType) -> bool {
    events.iter().any(
        |(_, e)| matches!(e, GmEvent::AttemptFailed { reason: GmFailure::Notified(x), .. } if *x == n),
    )
}

fn ks_rejected(events: &[KsEvent], r: Reject, n: Option<NotifyType>) -> bool {
    events.iter().any(
        |e| matches!(e, KsEvent::Rejected { reason, notify, .. } if *reason == r && *notify == n),
    )
}

/// A real GM's main-mode message 1 to `ks` (not delivered), to replay.
fn first_message_1(ks: &mut KeyServer) -> Vec<u8> {
    let mut probe = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let mut mm1 = None;
    run_with(ks, &mut probe, T0, T0, |dir, d| {
        if dir == Dir::Up && mm1.is_none() {
            mm1 = Some(d.clone());
        }
        false
    });
    mm1.expect("a message 1")
}

fn exchange(d: &[u8]) -> ExchangeType {
    IsakmpHeader::parse(d).unwrap().exchange_type
}

/// Flips one bit of an encrypted PULL message from the GM so that, after
/// CBC decryption, only HASH data changes: the bit is in ciphertext block 1
/// (all HASH octets in both PULL messages 1 and 3), so block 1 decrypts to
/// garbage HASH octets and block 2 gets one flipped HASH octet.
fn tamper_pull(nth: usize) -> impl FnMut(Dir, &mut Vec<u8>) -> bool {
    let mut seen = 0;
    move |dir, d| {
        if dir == Dir::Up && exchange(d) == ExchangeType::GROUPKEY_PULL {
            seen += 1;
            if seen == nth {
                d[28 + 16] ^= 0x01;
            }
        }
        true
    }
}

#[test]
fn tampered_hash1_gets_invalid_hash_information() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let (got, ev, gm_ev) = run_with(&mut ks, &mut gms, T0, T0 + 500, tamper_pull(1));
    assert!(got.is_empty());
    assert!(
        ks_rejected(
            &ev,
            Reject::InvalidHash,
            Some(NotifyType::INVALID_HASH_INFORMATION)
        ),
        "{ev:?}"
    );
    assert!(
        notified(&gm_ev, NotifyType::INVALID_HASH_INFORMATION),
        "{gm_ev:?}"
    );
    assert_eq!(ks.counters().rejected(Reject::InvalidHash), 1);
    assert_eq!(ks.counters().registrations, 0);
}

#[test]
fn tampered_hash3_gets_invalid_hash_information() {
    let mut ks = ks(b"k", Authorization::default());
    // GM 1 requests no sender IDs, so PULL message 3 is HASH(3) alone.
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let (got, ev, gm_ev) = run_with(&mut ks, &mut gms, T0, T0 + 500, tamper_pull(2));
    assert!(got.is_empty());
    assert!(
        ks_rejected(
            &ev,
            Reject::InvalidHash,
            Some(NotifyType::INVALID_HASH_INFORMATION)
        ),
        "{ev:?}"
    );
    assert!(notified(&gm_ev, NotifyType::INVALID_HASH_INFORMATION));
    assert_eq!(ks.counters().registrations, 0);
}

#[test]
fn replayed_message3_does_not_register_twice() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let mut msg3 = None;
    let mut pulls = 0;
    let (got, _, _) = run_with(&mut ks, &mut gms, T0, T0 + 3_000, |dir, d| {
        if dir == Dir::Up && exchange(d) == ExchangeType::GROUPKEY_PULL {
            pulls += 1;
            if pulls == 2 {
                msg3 = Some(d.clone());
            }
        }
        true
    });
    assert_eq!(got.len(), 1);
    let msg3 = msg3.unwrap();
    let before = ks.counters().registrations;
    // The same octets again: answered from the cache as a retransmission, no second registration.
    ks.handle_datagram(T0 + 4_000, gm_addr(1), &msg3);
    assert!(
        ks.poll_transmit().is_some(),
        "the cached message 4 is resent"
    );
    assert_eq!(ks.counters().rejected(Reject::Retransmit), 1);
    // A modified replay of the finished exchange is refused outright.
    let mut changed = msg3.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0x80;
    ks.handle_datagram(T0 + 4_100, gm_addr(1), &changed);
    assert!(ks.poll_transmit().is_none());
    assert_eq!(ks.counters().rejected(Reject::UnknownExchange), 1);
    let mut registered = 0;
    while let Some(e) = ks.poll_event() {
        registered += usize::from(matches!(e, KsEvent::Registered(_)));
    }
    assert_eq!(registered, 0);
    assert_eq!(ks.counters().registrations, before);
}

#[test]
fn truncated_and_garbage_datagrams_are_counted_and_leave_nothing() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let mut first = None;
    run_with(&mut ks, &mut gms, T0, T0 + 3_000, |dir, d| {
        if dir == Dir::Up && first.is_none() {
            first = Some(d.clone());
        }
        true
    });
    let sas = ks.phase1_sa_count();
    let mm1 = first.unwrap();
    let from: SocketAddr = "10.0.7.7:848".parse().unwrap();
    for k in 0..mm1.len() {
        ks.handle_datagram(T0 + 5_000, from, &mm1[..k]);
    }
    let mut x: u32 = 0x1234_5678;
    for n in 0..500usize {
        let garbage: Vec<u8> = (0..(n % 200))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        ks.handle_datagram(T0 + 5_000, from, &garbage);
    }
    assert_eq!(
        ks.phase1_sa_count(),
        sas,
        "no state from truncated or garbage input"
    );
    assert!(ks.counters().rejected(Reject::Malformed) >= mm1.len() as u64);
    assert_eq!(ks.half_open_count(), 0);
}

#[test]
fn half_open_flood_stays_bounded_and_expires() {
    let mut cfg = ks_config(b"k", Authorization::default());
    cfg.limits = KsLimits {
        max_half_open: 100,
        max_half_open_per_source: 8,
        half_open_timeout_ms: 10_000,
        pull_timeout_ms: 10_000,
    };
    let mut ks = KeyServer::new(cfg, rng(3));
    // A real MM1 to replay with fresh cookies.
    let mm1 = first_message_1(&mut ks);
    let base = ks.half_open_count();
    for i in 0..5000u32 {
        let mut d = mm1.clone();
        d[..4].copy_from_slice(&i.to_be_bytes());
        // 50 sources, 100 attempts each
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i % 50)), 500);
        ks.handle_datagram(T0 + 1, src, &d);
        while ks.poll_transmit().is_some() {}
    }
    assert!(
        ks.half_open_count() <= 100,
        "global cap: {}",
        ks.half_open_count()
    );
    assert!(ks.phase1_sa_count() <= 100 + base);
    // Each forged message 1 past the caps is refused (its source is at
    // its share) or takes the place of the oldest unanswered one.
    assert!(
        ks.counters().rejected(Reject::HalfOpenLimit)
            + ks.counters().rejected(Reject::HalfOpenEvicted)
            >= 4900
    );
    assert!(ks.counters().rejected(Reject::HalfOpenEvicted) > 0);
    // One source alone cannot take more than its share.
    let mut cfg = ks_config(b"k", Authorization::default());
    cfg.limits.max_half_open_per_source = 8;
    let mut ks2 = KeyServer::new(cfg, rng(4));
    for i in 0..100u32 {
        let mut d = mm1.clone();
        d[..4].copy_from_slice(&i.to_be_bytes());
        ks2.handle_datagram(T0 + 1, "192.0.2.9:500".parse().unwrap(), &d);
    }
    assert_eq!(ks2.half_open_count(), 8);
    // Expiry: after the half-open timeout everything is gone.
    ks.handle_timeout(T0 + 10_002);
    assert_eq!(ks.half_open_count(), 0);
    assert_eq!(ks.phase1_sa_count(), 0);
}

#[test]
fn certificates_from_the_configured_ca_register() {
    let mut ks = ks_with_pki();
    let mut gms = vec![(gm_addr(1), gm_with_cert(1, "gm"))];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 5_000);
    assert_eq!(got.len(), 1, "certificate registration");
    assert_eq!(got.values().next().unwrap(), &ks.groups()[0].keys);
}

#[test]
fn untrusted_certificate_is_refused() {
    let mut ks = ks_with_pki();
    let mut gms = vec![(gm_addr(1), gm_with_cert(1, "rogue-gm"))];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty());
    assert!(
        ks_rejected(
            &ev,
            Reject::InvalidCertificate,
            Some(NotifyType::INVALID_CERTIFICATE)
        ),
        "{ev:?}"
    );
    assert!(notified(&gm_ev, NotifyType::INVALID_CERTIFICATE));
    assert_eq!(ks.half_open_count(), 0);
    // The log line says why (issue 18 item 5): another CA issued it.
    let detail = cert_detail(&ev);
    assert!(
        detail.starts_with("main mode 5 CERT: the certificate is not trusted: "),
        "{detail}"
    );
}

/// The detail of the first InvalidCertificate refusal.
fn cert_detail(ev: &[KsEvent]) -> String {
    ev.iter()
        .find_map(|e| match e {
            KsEvent::Rejected {
                reason: Reject::InvalidCertificate,
                detail,
                ..
            } => detail.clone(),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn expired_certificate_is_refused() {
    // The test certificates expire in November 2036; run the exchange in 2040.
    let year_2040 = 2_208_988_800_000;
    let mut ks = ks_with_pki();
    let mut gms = vec![(gm_addr(1), gm_with_cert(1, "gm"))];
    let (got, ev, _) = run_with(&mut ks, &mut gms, year_2040, year_2040 + 3_000, |_, _| true);
    assert!(got.is_empty());
    assert!(
        ks_rejected(
            &ev,
            Reject::InvalidCertificate,
            Some(NotifyType::INVALID_CERTIFICATE)
        ),
        "{ev:?}"
    );
    let detail = cert_detail(&ev);
    assert!(
        detail.starts_with("main mode 5 CERT: ") && detail.to_lowercase().contains("expired"),
        "{detail}"
    );
}

#[test]
fn aggressive_mode_is_refused() {
    let mut ks = ks(b"k", Authorization::default());
    let mut am = first_message_1(&mut ks);
    am[18] = ExchangeType::AGGRESSIVE.0;
    ks.handle_datagram(T0, gm_addr(2), &am);
    assert_eq!(ks.counters().rejected(Reject::UnsupportedExchange), 1);
    let t = ks.poll_transmit().expect("a notification");
    let m = gkm_wire::Message::parse(&t.payload).unwrap();
    assert!(
        matches!(m.payloads().unwrap()[0], gkm_wire::Payload::Notification(n) if n.notify_type == NotifyType::UNSUPPORTED_EXCHANGE_TYPE)
    );
    assert_eq!(ks.phase1_sa_count(), 0);
}

#[test]
fn no_acceptable_proposal_gets_no_proposal_chosen() {
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm_with_cert(1, "gm"))];
    // This KS has no PKI, and the GM offers only certificate transforms.
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 2_000);
    assert!(got.is_empty());
    assert!(ks_rejected(
        &ev,
        Reject::NoProposal,
        Some(NotifyType::NO_PROPOSAL_CHOSEN)
    ));
    assert!(notified(&gm_ev, NotifyType::NO_PROPOSAL_CHOSEN));
    assert_eq!(ks.phase1_sa_count(), 0);
}

#[test]
fn after_a_refusal_the_gm_retries_and_registers() {
    // The tampering hits one message only; the GM's retry one second later succeeds.
    let mut ks = ks(b"k", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"k", GROUP))];
    let (got, _, gm_ev) = run_with(&mut ks, &mut gms, T0, T0 + 5_000, tamper_pull(1));
    assert!(notified(&gm_ev, NotifyType::INVALID_HASH_INFORMATION));
    assert_eq!(got.len(), 1);
    assert_eq!(ks.counters().registrations, 1);
}

#[test]
fn a_gm_registers_through_a_forged_message_1_flood() {
    // Issue 16 item 4: 20,000 forged main-mode first messages from 400
    // sources fill the default global half-open cap; a real GM sending
    // in between still registers, because the oldest unanswered exchange
    // makes room for each new one.
    let mut ks = ks(b"k", Authorization::default());
    let mm1 = first_message_1(&mut ks);
    let mut forged = 0u32;
    let mut flood = |ks: &mut KeyServer, n: u32| {
        for _ in 0..n {
            let mut d = mm1.clone();
            d[..4].copy_from_slice(&forged.to_be_bytes());
            let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc633_6400 + forged % 400)), 500);
            ks.handle_datagram(T0 + 1, src, &d);
            forged += 1;
        }
    };
    flood(&mut ks, 20_000);
    assert_eq!(
        ks.half_open_count(),
        KsLimits::default().max_half_open,
        "the cap is full"
    );
    let addr = gm_addr(7);
    let mut g = gm(7, b"k", GROUP);
    g.handle_timeout(T0 + 1);
    let mut registered = false;
    for _ in 0..50 {
        while let Some(t) = g.poll_transmit() {
            // Before each message of the real GM, 4,000 more forged ones.
            flood(&mut ks, 4_000);
            ks.handle_datagram(T0 + 1, addr, &t.payload);
        }
        while let Some(t) = ks.poll_transmit() {
            if t.to == addr {
                g.handle_datagram(T0 + 1, KS_ADDR, &t.payload);
            }
        }
        while let Some(e) = g.poll_event() {
            registered |= matches!(e, GmEvent::Registered { .. });
        }
        if registered {
            break;
        }
    }
    assert!(registered, "the real GM did not register during the flood");
    assert!(ks.half_open_count() <= KsLimits::default().max_half_open);
    assert!(ks.counters().rejected(Reject::HalfOpenEvicted) >= 16_000);
    assert_eq!(ks.counters().registrations, 1);
}
