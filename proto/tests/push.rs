//! GROUPKEY-PUSH sealing and opening: a KS-signed, KEK-encrypted rekey is
//! accepted once; forged, replayed, wrong-KEK, tampered and truncated ones
//! are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::*;
use gkm_proto::crypto::{RekeySigner, RekeyVerifier, RsaSigner};
use gkm_proto::group::GroupKeys;
use gkm_proto::push::{open_push, seal_push, PushError};
use gkm_wire::consts::PayloadType;
use gkm_wire::payload::{GdoiSa, KeyDownload, Sa, Seq};
use gkm_wire::Payload;

fn setup() -> (GroupKeys, RekeySigner, RekeyVerifier) {
    let signer = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap(),
    ));
    let verifier =
        RekeyVerifier::new(signer.algorithm(), &signer.public_spki_der().unwrap()).unwrap();
    let keys = ks_config(b"k", Default::default()).groups.remove(0).keys;
    (keys, signer, verifier)
}

fn push(keys: &GroupKeys, signer: &RekeySigner, seq: u32) -> Vec<u8> {
    let material = keys.kek_material();
    let sa: GdoiSa<'_> = keys.to_sa();
    let kd: KeyDownload<'_> = keys.to_kd(&material, None);
    let payloads = [
        Payload::Seq(Seq(seq)),
        Payload::Sa(Sa::Gdoi(sa)),
        Payload::KeyDownload(kd),
    ];
    seal_push(
        keys.kek.as_ref().unwrap(),
        signer,
        rng(9).as_mut(),
        &payloads,
    )
    .unwrap()
}

#[test]
fn a_sealed_push_opens_once() {
    let (keys, signer, verifier) = setup();
    let kek = keys.kek.as_ref().unwrap();
    let d = push(&keys, &signer, 5);
    let opened = open_push(&d, kek, &verifier, 4).unwrap();
    assert_eq!(opened.seq, 5);
    let types: Vec<PayloadType> = opened.payloads().map(|p| p.payload_type).collect();
    assert_eq!(
        types,
        [PayloadType::SEQ, PayloadType::SA, PayloadType::KEY_DOWNLOAD]
    );
    // The header: exchange 33, cookies = KEK SPI, message ID 0, encrypted.
    let h = gkm_wire::IsakmpHeader::parse(&d).unwrap();
    assert_eq!(h.kek_spi(), kek.spi);
    assert_eq!(h.message_id, 0);
    assert_eq!(
        open_push(&d, kek, &verifier, 5),
        Err(PushError::Replay { seq: 5, last: 5 }),
        "a replay is refused"
    );
    assert!(
        matches!(
            open_push(&d, kek, &verifier, 9),
            Err(PushError::Replay { .. })
        ),
        "a stale SEQ is refused"
    );
}

#[test]
fn forged_wrong_kek_tampered_and_truncated_pushes_are_refused() {
    let (keys, signer, verifier) = setup();
    let kek = keys.kek.as_ref().unwrap();
    // Signed by a key that is not the KS's.
    let rogue = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/gm.key")).unwrap(),
    ));
    let forged = push(&keys, &rogue, 6);
    assert_eq!(
        open_push(&forged, kek, &verifier, 0),
        Err(PushError::BadSignature)
    );
    // The right SPI but a different KEK key: garbage after decryption.
    let d = push(&keys, &signer, 6);
    let mut wrong = kek.clone();
    wrong.key[0] ^= 1;
    assert!(open_push(&d, &wrong, &verifier, 0).is_err());
    // Another KEK SPI altogether.
    let mut other = kek.clone();
    other.spi[15] ^= 1;
    assert_eq!(
        open_push(&d, &other, &verifier, 0),
        Err(PushError::WrongKek)
    );
    // Any flipped ciphertext bit.
    for i in (28..d.len()).step_by(7) {
        let mut t = d.clone();
        t[i] ^= 0x10;
        assert!(
            open_push(&t, kek, &verifier, 0).is_err(),
            "tampered at {i} accepted"
        );
    }
    // Any truncation.
    for k in 0..d.len() {
        assert!(open_push(&d[..k], kek, &verifier, 0).is_err());
    }
    assert!(open_push(&d, kek, &verifier, 0).is_ok());
}

#[test]
fn ecdsa_p256_signed_pushes_open_and_forgeries_do_not() {
    let (keys, _, _) = setup();
    let kek = keys.kek.as_ref().unwrap();
    let signer =
        RekeySigner::ecdsa_p256_from_pkcs8(&RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
            .unwrap();
    let verifier =
        RekeyVerifier::new(signer.algorithm(), &signer.public_spki_der().unwrap()).unwrap();
    let d = push(&keys, &signer, 2);
    assert_eq!(open_push(&d, kek, &verifier, 1).unwrap().seq, 2);
    let rogue =
        RekeySigner::ecdsa_p256_from_pkcs8(&RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
            .unwrap();
    assert_eq!(
        open_push(&push(&keys, &rogue, 3), kek, &verifier, 1),
        Err(PushError::BadSignature)
    );
}
