//! The COOP announcement header, options, SEQ, GM records and group state
//! (docs/COOP.md, "Wire"): never panic; a header, options, SEQ or GMs payload
//! that parses emits back to exactly the same octets (the codec refuses
//! whatever it would not write: flags, reserved octets, a stepped-down
//! epoch without its flag); a group state that decodes encodes to one
//! that decodes to the same state.
#![no_main]

use gkm_wire::coop::{CoopAnnouncement, CoopOptions, CoopSeq};
use gkm_wire::coop_gms::CoopGms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = CoopAnnouncement::parse(data) {
        assert_eq!(a.to_bytes(), data);
    }
    if let Ok(o) = CoopOptions::parse(data) {
        assert_eq!(o.to_bytes(), data);
    }
    if let Ok(s) = CoopSeq::parse(data) {
        assert_eq!(s.to_bytes(), data);
    }
    if let Ok(g) = CoopGms::parse(data) {
        assert_eq!(g.to_bytes().ok().as_deref(), Some(data));
    }
    if let Ok((_, state)) = gkm_proto::group_state::decode(1234, data) {
        let again = gkm_proto::group_state::encode("", &state);
        assert_eq!(gkm_proto::group_state::decode(1234, &again).map(|(_, s)| s), Ok(state));
    }
});
