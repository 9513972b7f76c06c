//! ESP framing, the ESP trailer and the D3P header: never panic; D3P
//! headers that parse emit back to the same octets.
#![no_main]

use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
use gkm_wire::d3p::D3pHeader;
use gkm_wire::esp::{parse_trailer, EspFraming, EspPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (t, a) in [
        (EspTransformId::AES_GCM_16, None),
        (EspTransformId::AES_GCM_8, None),
        (EspTransformId::AES_CBC, Some(AuthAlgorithm::HMAC_SHA2_256)),
        (EspTransformId::NULL, Some(AuthAlgorithm::HMAC_SHA1)),
    ] {
        let framing = EspFraming::for_transform(t, a).expect("known transform");
        if let Ok(p) = EspPacket::parse(data, framing) {
            assert_eq!(
                8 + p.iv.len() + p.ciphertext.len() + p.icv.len(),
                data.len()
            );
            let _ = parse_trailer(p.ciphertext);
        }
    }
    let _ = parse_trailer(data);
    if let Ok((h, inner)) = D3pHeader::parse(data) {
        let mut out = Vec::new();
        h.emit(&mut out);
        out.extend_from_slice(inner);
        assert_eq!(out, data);
    }
});
