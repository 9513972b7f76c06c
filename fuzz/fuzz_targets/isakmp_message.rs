//! Whole ISAKMP messages: parsing never panics, and whatever parses emits
//! and re-parses to the same value. Also drives every payload parser in
//! both SA layouts on the raw input.
#![no_main]

use gkm_wire::payload::{parse_padded_chain, Payload, SaLayout};
use gkm_wire::{consts::PayloadType, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let bytes = msg.to_vec().expect("a parsed message emits");
        let again = Message::parse(&bytes).expect("an emitted message parses");
        assert_eq!(msg, again);
    }
    if let Some((first, rest)) = data.split_first() {
        let _ = parse_padded_chain(PayloadType(*first), rest, 16, SaLayout::Gdoi);
        for layout in [SaLayout::Phase1, SaLayout::Gdoi] {
            if let Ok(p) = Payload::parse(PayloadType(*first), rest, layout) {
                let mut out = Vec::new();
                if p.emit_body(&mut out).is_ok() {
                    let again = Payload::parse(PayloadType(*first), &out, layout)
                        .expect("an emitted payload parses");
                    assert_eq!(p, again);
                }
            }
        }
    }
});
