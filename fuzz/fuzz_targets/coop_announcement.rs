//! The COOP announcement header and options (docs/COOP.md, "Wire"): never
//! panic, and a payload that parses emits back to exactly the same octets (the codec
//! refuses whatever it would not write: flags, reserved octets, a
//! stepped-down epoch without its flag).
#![no_main]

use gkm_wire::coop::{CoopAnnouncement, CoopOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = CoopAnnouncement::parse(data) {
        assert_eq!(a.to_bytes(), data);
    }
    if let Ok(o) = CoopOptions::parse(data) {
        assert_eq!(o.to_bytes(), data);
    }
});
