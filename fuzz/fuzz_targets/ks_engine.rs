//! The key-server engine under arbitrary datagrams in each state of an
//! exchange: fresh; after a real main-mode message 1; after message 3;
//! after phase 1; during a GROUPKEY-PULL; after registration; after a
//! rekey went out (ACKs and retransmissions). The first input byte picks
//! the state, reached by replaying the real GM's messages (both engines
//! are seeded, so the replay is the same every run). Then each chunk is a
//! datagram: raw, a real message of the exchange with fuzzed octets laid
//! over it, or a real header with a fuzzed body.
//!
//! Checks: no panic; half-open state within its caps; the SA table within
//! the caps plus the one real peer; every datagram counted.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use common::*;
use gkm_proto::ks::KeyServer;
use gkm_proto::rekey::RekeyReason;
use libfuzzer_sys::fuzz_target;

/// The real GM's datagrams, stage by stage, and where a rekey went out.
struct Transcript {
    /// GM → KS datagrams in order: MM1, MM3, MM5, PULL 1, PULL 3, then the ACK.
    sent: Vec<Vec<u8>>,
    /// How many of `sent` come before the rekey.
    before_rekey: usize,
}

fn transcript() -> &'static Transcript {
    static T: OnceLock<Transcript> = OnceLock::new();
    T.get_or_init(|| {
        let mut ks = ks();
        let mut gm = gm();
        gm.handle_timeout(T0);
        let mut sent = exchange(&mut ks, &mut gm, T0);
        assert!(gm.is_registered(), "the seeded GM registers");
        let before_rekey = sent.len();
        ks.rekey_now(T0, GROUP, RekeyReason::Manual).unwrap();
        release(&mut ks, T0);
        sent.extend(exchange(&mut ks, &mut gm, T0));
        Transcript { sent, before_rekey }
    })
}

/// A fresh KS brought to `stage`: the first `stage` real messages fed
/// (the rekey is asked for before the ACK, as it was recorded).
fn at_stage(stage: usize) -> KeyServer {
    let t = transcript();
    let mut ks = ks();
    for (i, d) in t.sent.iter().take(stage).enumerate() {
        if i == t.before_rekey {
            let _ = ks.rekey_now(T0, GROUP, RekeyReason::Manual);
            release(&mut ks, T0);
        }
        ks.handle_datagram(T0, GM, d);
        release(&mut ks, T0);
        while ks.poll_transmit().is_some() {}
    }
    if stage == t.before_rekey {
        let _ = ks.rekey_now(T0, GROUP, RekeyReason::Manual);
        release(&mut ks, T0);
        while ks.poll_transmit().is_some() {}
    }
    ks
}

fuzz_target!(|data: &[u8]| {
    let t = transcript();
    let Some((&stage, mut rest)) = data.split_first() else {
        return;
    };
    let stage = usize::from(stage) % (t.sent.len() + 1);
    let mut ks = at_stage(stage);
    let base = ks.counters().datagrams;
    let mut fed = 0u64;
    let mut now = T0;
    // Chunks: [mode][source][len][octets...]
    while let [mode, src, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let from = match src % 4 {
            0 => GM,
            1 => SocketAddr::new(GM.ip(), 4500),
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, *src)), 848),
        };
        let real = &t.sent[usize::from(*mode >> 2) % t.sent.len()];
        let datagram = match mode % 4 {
            // Raw octets.
            0 => chunk.to_vec(),
            // A real message with fuzzed octets laid over it from an offset.
            1 | 2 => {
                let mut d = real.clone();
                if let Some((&at, over)) = chunk.split_first() {
                    let at = usize::from(at) * d.len() / 256;
                    for (i, b) in over.iter().enumerate() {
                        if let Some(x) = d.get_mut(at + i) {
                            *x ^= b;
                        }
                    }
                }
                d
            }
            // A real header, a fuzzed body (the length field made to fit).
            _ => {
                let mut d = real.get(..28).unwrap_or_default().to_vec();
                d.extend_from_slice(chunk);
                if d.len() >= 28 {
                    let l = u32::try_from(d.len()).unwrap_or(0).to_be_bytes();
                    d[24..28].copy_from_slice(&l);
                }
                d
            }
        };
        ks.handle_datagram(now, from, &datagram);
        fed += 1;
        release(&mut ks, now);
        while ks.poll_transmit().is_some() {}
        if *mode == 0xff {
            // Let time pass: sweeps, retransmissions, round ends.
            now += 10_000;
            ks.handle_timeout(now);
            release(&mut ks, now);
            while ks.poll_transmit().is_some() {}
        }
        let caps = limits();
        assert!(ks.half_open_count() <= caps.max_half_open, "half-open cap");
        // Only the real GM can finish phase 1 (only it knows the PSK).
        assert!(ks.phase1_sa_count() <= caps.max_half_open + 1, "SA table");
    }
    assert_eq!(ks.counters().datagrams, base + fed, "every datagram counted");
});
