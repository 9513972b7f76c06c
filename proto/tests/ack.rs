//! RFC 8263 GROUPKEY-PUSH ACKs: built by a GM, checked by the KS; tampered,
//! wrong-KEK and malformed ones refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use gkm_proto::ack::{
    ack_key, open_rfc8263_ack, open_unicast_ack, seal_rfc8263_ack, seal_unicast_ack, AckError,
    Rfc8263Ack,
};
use gkm_wire::consts::{AckRequested, ExchangeType, PayloadType};

const GM: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 7));

#[test]
fn ack_round_trip_and_layout() {
    let keys = ks_config(b"k", Default::default()).groups.remove(0).keys;
    let kek = keys.kek.as_ref().unwrap();
    for ack in [
        AckRequested::REKEY_ACK_KEK_SHA256,
        AckRequested::REKEY_ACK_KEK_SHA512,
    ] {
        let d = seal_rfc8263_ack(kek, ack, 42, GM).unwrap();
        assert_eq!(
            open_rfc8263_ack(&d, kek, ack),
            Ok(Rfc8263Ack { seq: 42, gm: GM })
        );
        let m = gkm_wire::Message::parse(&d).unwrap();
        assert_eq!(m.header.exchange_type, ExchangeType::GROUPKEY_PUSH_ACK);
        assert_eq!(m.header.kek_spi(), kek.spi);
        assert_eq!(m.header.message_id, 0);
        let types: Vec<PayloadType> = m
            .payloads()
            .unwrap()
            .iter()
            .map(|p| p.payload_type())
            .collect();
        assert_eq!(
            types,
            [PayloadType::HASH, PayloadType::SEQ, PayloadType::ID]
        );
    }
    // A GM over IPv6 names itself with ID_IPV6_ADDR, in both kinds.
    let gm6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5));
    let d = seal_rfc8263_ack(kek, AckRequested::REKEY_ACK_KEK_SHA256, 9, gm6).unwrap();
    assert_eq!(
        open_rfc8263_ack(&d, kek, AckRequested::REKEY_ACK_KEK_SHA256),
        Ok(Rfc8263Ack { seq: 9, gm: gm6 })
    );
    let d = seal_unicast_ack(kek, 10, gm6).unwrap();
    assert_eq!(
        open_unicast_ack(&d, kek),
        Ok(Rfc8263Ack { seq: 10, gm: gm6 })
    );
    // The two hashes differ, and so do their keys.
    let k256 = ack_key(AckRequested::REKEY_ACK_KEK_SHA256, kek).unwrap();
    let k512 = ack_key(AckRequested::REKEY_ACK_KEK_SHA512, kek).unwrap();
    assert_eq!((k256.len(), k512.len()), (32, 64));
    assert_eq!(
        ack_key(AckRequested::REKEY_ACK_LKH_SHA256, kek),
        Err(AckError::Unsupported)
    );
}

#[test]
fn tampered_wrong_kek_and_malformed_acks_are_refused() {
    let keys = ks_config(b"k", Default::default()).groups.remove(0).keys;
    let kek = keys.kek.as_ref().unwrap();
    let ack = AckRequested::REKEY_ACK_KEK_SHA256;
    let d = seal_rfc8263_ack(kek, ack, 42, GM).unwrap();
    // SEQ changed (last octet of the SEQ payload) or GM address changed: HASH fails.
    let seq_at = 28 + 4 + 32 + 4 + 3;
    let mut t = d.clone();
    t[seq_at] ^= 1;
    assert_eq!(open_rfc8263_ack(&t, kek, ack), Err(AckError::BadHash));
    let mut t = d.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert_eq!(open_rfc8263_ack(&t, kek, ack), Err(AckError::BadHash));
    // Same SPI, another key: HASH fails; another SPI: wrong KEK.
    let mut other = kek.clone();
    other.key[0] ^= 1;
    assert_eq!(open_rfc8263_ack(&d, &other, ack), Err(AckError::BadHash));
    other = kek.clone();
    other.spi[0] ^= 1;
    assert_eq!(open_rfc8263_ack(&d, &other, ack), Err(AckError::WrongKek));
    // Hash algorithm mismatch.
    assert_eq!(
        open_rfc8263_ack(&d, kek, AckRequested::REKEY_ACK_KEK_SHA512),
        Err(AckError::BadHash)
    );
    // Encrypted flag, other exchange, non-zero message ID: malformed.
    for (at, v) in [(19, 1u8), (18, ExchangeType::GROUPKEY_PUSH.0), (23, 1)] {
        let mut t = d.clone();
        t[at] = v;
        assert_eq!(
            open_rfc8263_ack(&t, kek, ack),
            Err(AckError::Malformed),
            "octet {at}"
        );
    }
    for k in 0..d.len() {
        assert!(open_rfc8263_ack(&d[..k], kek, ack).is_err());
    }
}

#[test]
fn unicast_ack_is_encrypted_opens_under_its_kek_only() {
    let keys = ks_config(b"k", Default::default()).groups.remove(0).keys;
    let kek = keys.kek.as_ref().unwrap();
    let d = seal_unicast_ack(kek, 7, GM).unwrap();
    assert_eq!(open_unicast_ack(&d, kek), Ok(Rfc8263Ack { seq: 7, gm: GM }));
    let h = gkm_wire::IsakmpHeader::parse(&d).unwrap();
    assert_eq!(h.exchange_type, ExchangeType::GKM_UNICAST_ACK);
    assert_eq!(h.kek_spi(), kek.spi);
    assert!(h.flags.contains(gkm_wire::consts::Flags::ENCRYPTION));
    assert_eq!((d.len() - 28) % 16, 0, "whole AES blocks");
    // Encrypted: neither the SEQ nor the GM address is visible.
    assert!(!d.windows(4).any(|w| w == [10, 0, 1, 7]));
    // The two kinds are not interchangeable (Table 2 keeps them apart).
    let plain = seal_rfc8263_ack(kek, AckRequested::REKEY_ACK_KEK_SHA256, 7, GM).unwrap();
    assert_eq!(open_unicast_ack(&plain, kek), Err(AckError::Malformed));
    assert_eq!(
        open_rfc8263_ack(&d, kek, AckRequested::REKEY_ACK_KEK_SHA256),
        Err(AckError::Malformed)
    );
    let mut other = kek.clone();
    other.key[3] ^= 1;
    assert!(open_unicast_ack(&d, &other).is_err());
    other = kek.clone();
    other.spi[2] ^= 1;
    assert_eq!(open_unicast_ack(&d, &other), Err(AckError::WrongKek));
    for i in 28..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x04;
        assert!(open_unicast_ack(&t, kek).is_err(), "flip at {i} accepted");
    }
    for k in 0..d.len() {
        assert!(open_unicast_ack(&d[..k], kek).is_err());
    }
}
