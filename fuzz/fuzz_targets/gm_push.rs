//! The group-member engine, registered to a group, under arbitrary
//! GROUPKEY-PUSH messages: raw datagrams; the KS's real push with fuzzed
//! octets laid over it; and pushes correctly encrypted under the GM's KEK
//! and signed with the KS's key whose payload chain is fuzzed (so the
//! SA, KD, Delete and GAP parsers and their application are reached
//! behind the signature check).
//!
//! The registered GM is kept between runs (a registration costs two
//! Diffie-Hellman operations) and made again when a signed push changed
//! its KEK policy away from the KS's key, every 4,096 runs, or when its
//! state grew past the bounds below.
//!
//! Checks: no panic; forged or damaged pushes change nothing (SEQ, KEK,
//! TEKs) and are counted; an accepted push raises the SEQ.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::cell::RefCell;

use common::*;
use gkm_proto::gm::GroupMember;
use gkm_proto::push::seal_push;
use gkm_proto::rekey::RekeyReason;
use gkm_wire::consts::PayloadType;
use gkm_wire::payload::{Seq, UnknownPayload};
use gkm_wire::Payload;
use libfuzzer_sys::fuzz_target;

struct Registered {
    gm: GroupMember,
    /// The KS's real first push, encrypted under the GM's first KEK.
    real_push: Vec<u8>,
    runs: u32,
}

fn register() -> Registered {
    let mut ks = ks();
    let mut gm = gm();
    gm.handle_timeout(T0);
    exchange(&mut ks, &mut gm, T0);
    assert!(gm.is_registered());
    // One real push, captured (not delivered).
    ks.rekey_now(T0, GROUP, RekeyReason::Manual).unwrap();
    release(&mut ks, T0);
    let real_push = std::iter::from_fn(|| ks.poll_transmit())
        .find(|t| t.to == GM)
        .map(|t| t.payload)
        .unwrap_or_default();
    Registered {
        gm,
        real_push,
        runs: 0,
    }
}

thread_local! {
    static STATE: RefCell<Option<Registered>> = const { RefCell::new(None) };
}

/// Most TEKs a GM holding only signed pushes of the fuzzer is let reach
/// before it is made again (each push may add TEKs with long lifetimes).
const TEK_BOUND: usize = 256;

fuzz_target!(|data: &[u8]| {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let st = slot.get_or_insert_with(register);
        st.runs += 1;
        let spki = signer().public_spki_der().unwrap();
        let stale = st
            .gm
            .group()
            .and_then(|g| g.kek.as_ref())
            .is_none_or(|k| k.sig_key_spki != spki);
        if stale || st.runs % 4096 == 0 || st.gm.inbound_teks(T0).count() > TEK_BOUND {
            *st = register();
        }
        let Some((&mode, body)) = data.split_first() else {
            return;
        };
        let group = st.gm.group().cloned();
        let Some(before) = group else { return };
        let datagram = match mode % 3 {
            0 => body.to_vec(),
            1 => {
                let mut d = st.real_push.clone();
                if let Some((&at, over)) = body.split_first() {
                    let at = usize::from(at) * d.len() / 256;
                    for (i, b) in over.iter().enumerate() {
                        if let Some(x) = d.get_mut(at + i) {
                            *x ^= b;
                        }
                    }
                }
                d
            }
            _ => {
                // [seq step][(type, len, body)...], sealed under the GM's KEK.
                let Some(kek) = before.kek.as_ref() else { return };
                let Some((&step, mut rest)) = body.split_first() else {
                    return;
                };
                let mut parts: Vec<(PayloadType, &[u8])> = Vec::new();
                while let [t, l, tail @ ..] = rest {
                    let n = usize::from(*l).min(tail.len());
                    let (b, next) = tail.split_at(n);
                    parts.push((PayloadType(*t), b));
                    rest = next;
                }
                let seq = before.last_seq.wrapping_add(u32::from(step) % 4);
                let mut payloads = vec![Payload::Seq(Seq(seq))];
                payloads.extend(parts.iter().map(|(t, b)| {
                    Payload::Unknown(UnknownPayload {
                        payload_type: *t,
                        body: b,
                    })
                }));
                match seal_push(kek, &signer(), rng(9).as_mut(), &payloads) {
                    Ok(d) => d,
                    Err(_) => return,
                }
            }
        };
        let counters_before = st.gm.rekey_counters();
        st.gm.handle_datagram(T0 + 1, KS, &datagram);
        while st.gm.poll_transmit().is_some() {}
        while st.gm.poll_event().is_some() {}
        let after = st.gm.group().cloned();
        let counters_after = st.gm.rekey_counters();
        let accepted = counters_after.pushes_accepted > counters_before.pushes_accepted;
        match after {
            Some(a) if accepted => assert!(a.last_seq > before.last_seq, "SEQ raised"),
            Some(a) => {
                assert_eq!(a.last_seq, before.last_seq, "a refused push moved the SEQ");
                assert_eq!(a.kek, before.kek, "a refused push changed the KEK");
                assert_eq!(a.teks, before.teks, "a refused push changed the TEKs");
            }
            None => assert!(accepted, "the group went away without an accepted push"),
        }
        if mode % 3 != 2 && datagram != st.real_push {
            // Unsigned input: nothing but refusal counters may change.
            assert!(!accepted || datagram == st.real_push, "a forged push was accepted");
        }
    });
});
