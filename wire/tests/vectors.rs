//! Hand-built byte vectors for every payload: parse, emit, reject-short,
//! reject-lying-length. Octets are written out by hand from the RFC
//! layouts (see the comments), not produced by the code under test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod fixtures;

use std::net::Ipv4Addr;

use gkm_wire::consts::*;
use gkm_wire::d3p::D3pHeader;
use gkm_wire::esp::{emit_header, emit_trailer, parse_trailer, EspFraming, EspPacket};
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion, GkmVendorId};
use gkm_wire::payload::*;
use gkm_wire::{Body, ErrorKind, Identity, IsakmpHeader, Message, Payload};

/// Hex with spaces, newlines and `#` comments.
fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "odd hex: {digits}");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// Wraps a body in a generic payload header.
fn framed(next: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![next, 0];
    v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The four checks every payload vector gets.
fn check(t: PayloadType, layout: SaLayout, body: &[u8], expected: &Payload<'_>) {
    // parse
    let parsed = Payload::parse(t, body, layout).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    assert_eq!(&parsed, expected, "{t:?} parse");
    // emit
    let mut out = Vec::new();
    expected.emit_body(&mut out).unwrap();
    assert_eq!(out, body, "{t:?} emit");
    // framed in a chain, whole
    let chain = framed(0, body);
    let payloads = parse_chain(t, &chain, layout).unwrap();
    assert_eq!(payloads.as_slice(), std::slice::from_ref(expected));
    // reject short: every truncation of the framed payload fails
    for k in 0..chain.len() {
        assert!(
            parse_chain(t, &chain[..k], layout).is_err(),
            "{t:?}: truncated to {k} of {} parsed",
            chain.len()
        );
    }
    // reject lying length: generic length one too long, one too short, below the header
    let mut long = chain.clone();
    long[2..4].copy_from_slice(&((chain.len() + 1) as u16).to_be_bytes());
    assert_eq!(
        parse_chain(t, &long, layout).unwrap_err().kind,
        ErrorKind::BadLength,
        "{t:?}"
    );
    let mut short = chain.clone();
    short[2..4].copy_from_slice(&((chain.len() - 1) as u16).to_be_bytes());
    assert!(
        parse_chain(t, &short, layout).is_err(),
        "{t:?}: short length accepted"
    );
    let mut tiny = chain.clone();
    tiny[2..4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        parse_chain(t, &tiny, layout).unwrap_err().kind,
        ErrorKind::BadLength
    );
}

/// Sets a 1- or 2-octet big-endian length field at `at` and expects `kind`.
fn lie(
    t: PayloadType,
    layout: SaLayout,
    body: &[u8],
    at: usize,
    width: usize,
    value: usize,
    kind: ErrorKind,
) {
    let mut b = body.to_vec();
    match width {
        1 => b[at] = value as u8,
        2 => b[at..at + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        _ => panic!("width {width}"),
    }
    let e = Payload::parse(t, &b, layout).expect_err("lying length accepted");
    assert_eq!(e.kind, kind, "{t:?} lie at {at}: {e}");
}

const P1: SaLayout = SaLayout::Phase1;
const G: SaLayout = SaLayout::Gdoi;

fn sak_body() -> Vec<u8> {
    hex("
        11                          # protocol UDP
        01 0350 04 0a000001         # src: ID_IPV4_ADDR, port 848, len 4, 10.0.0.1
        01 0350 04 ef010101         # dst: ID_IPV4_ADDR, port 848, len 4, 239.1.1.1
        a0a1a2a3a4a5a6a7 a8a9aaabacadaeaf  # KEK SPI
        00000000                    # RESERVED2
        8002 0003                   # KEK_ALGORITHM AES
        8003 0080                   # KEK_KEY_LENGTH 128
        0004 0004 00015180          # KEK_KEY_LIFETIME 86400 (V)
        8005 0003                   # SIG_HASH_ALGORITHM SHA256
        8006 0001                   # SIG_ALGORITHM RSA
        8007 0800                   # SIG_KEY_LENGTH 2048
        8009 0001                   # KEK_ACK_REQUESTED REKEY_ACK_KEK_SHA256
    ")
}

fn sak_expected() -> SaKek<'static> {
    fixtures::sa_kek(
        Ipv4Addr::new(10, 0, 0, 1),
        [
            0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad,
            0xae, 0xaf,
        ],
    )
}

fn sat_body() -> Vec<u8> {
    hex("
        01                          # Protocol-ID GDOI_PROTO_IPSEC_ESP
        00                          # protocol: any
        04 0000 0008 0a000000 ff000000   # src: IPV4_ADDR_SUBNET, port 0, len(2) 8, 10.0.0.0/8
        04 0000 0008 0a000000 ff000000   # dst: same
        14                          # transform ESP_AES-GCM_16 (20)
        12345678                    # SPI
        8001 0001                   # SA Life Type seconds
        8002 0e10                   # SA Life Duration 3600 (TV)
        8004 0001                   # Encapsulation Mode tunnel
        8006 0100                   # Key Length 256
        800e 0004                   # Address Preservation source-and-destination
        800f 0003                   # SA Direction symmetric
    ")
}

fn sat_expected() -> SaTek<'static> {
    let net = Identity::Ipv4Subnet(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(255, 0, 0, 0));
    SaTek {
        protocol_id: GdoiProtocol::IPSEC_ESP,
        body: TekBody::Ipsec(IpsecTek {
            protocol: 0,
            src: TrafficSelector {
                identity: net,
                port: 0,
            },
            dst: TrafficSelector {
                identity: net,
                port: 0,
            },
            transform_id: EspTransformId::AES_GCM_16,
            spi: 0x1234_5678,
            attributes: IpsecSaAttributes {
                life_seconds: Some(3600),
                encapsulation_mode: Some(EncapsulationMode::TUNNEL),
                key_length_bits: Some(256),
                address_preservation: Some(AddressPreservation::SOURCE_AND_DESTINATION),
                sa_direction: Some(SaDirection::SYMMETRIC),
                ..IpsecSaAttributes::default()
            },
        }),
    }
}

fn gap_body() -> Vec<u8> {
    hex("
        8001 001e                   # ACTIVATION_TIME_DELAY 30
        8002 003c                   # DEACTIVATION_TIME_DELAY 60
        c000 0001                   # GKM D3P_TYPE (16384) POSIX-TIME-MSEC
        4001 0004 00001388          # GKM D3P_WINDOW_MSEC (16385) 5000
    ")
}

fn gap_expected() -> Gap<'static> {
    Gap {
        activation_time_delay: Some(30),
        deactivation_time_delay: Some(60),
        d3p_type: Some(D3pType::POSIX_TIME_MSEC),
        d3p_window_msec: Some(5000),
        ..Gap::default()
    }
}

#[test]
fn sa_kek() {
    let body = sak_body();
    check(
        PayloadType::SA_KEK,
        G,
        &body,
        &Payload::SaKek(sak_expected()),
    );
    // src ID data length says 5 where 4 octets of address follow: the
    // address type pins the length, so 5 lies.
    lie(PayloadType::SA_KEK, G, &body, 4, 1, 5, ErrorKind::BadLength);
    // dst ID data length overruns the payload
    lie(
        PayloadType::SA_KEK,
        G,
        &body,
        12,
        1,
        200,
        ErrorKind::BadLength,
    );
    // KEK_KEY_LIFETIME TLV length overruns the payload
    lie(
        PayloadType::SA_KEK,
        G,
        &body,
        47,
        2,
        40,
        ErrorKind::BadLength,
    );
    // a duplicated attribute
    let mut dup = body.clone();
    dup.extend_from_slice(&hex("8002 0003"));
    assert_eq!(
        Payload::parse(PayloadType::SA_KEK, &dup, G)
            .unwrap_err()
            .kind,
        ErrorKind::Duplicate
    );
    // an unknown attribute is kept and emitted back
    let mut unk = body.clone();
    unk.extend_from_slice(&hex("8064 0007"));
    let p = Payload::parse(PayloadType::SA_KEK, &unk, G).unwrap();
    let Payload::SaKek(k) = &p else { panic!() };
    assert_eq!(k.policy.unknown.len(), 1);
    let mut out = Vec::new();
    p.emit_body(&mut out).unwrap();
    assert_eq!(out, unk);
}

#[test]
fn sa_tek() {
    let body = sat_body();
    check(
        PayloadType::SA_TEK,
        G,
        &body,
        &Payload::SaTek(sat_expected()),
    );
    // src ID data length (2 octets at offset 5) lies
    lie(PayloadType::SA_TEK, G, &body, 5, 2, 9, ErrorKind::BadLength);
    lie(
        PayloadType::SA_TEK,
        G,
        &body,
        5,
        2,
        0x0100,
        ErrorKind::BadLength,
    );
    // SA Life Duration without SA Life Type
    let mut b = hex("01 00 01 0000 0004 0a000001 01 0000 0004 0a000002 14 00000001");
    b.extend_from_slice(&hex("8002 0e10"));
    assert_eq!(
        Payload::parse(PayloadType::SA_TEK, &b, G).unwrap_err().kind,
        ErrorKind::Missing
    );
    // an IEC 61850 TEK is kept as octets
    let other = hex("03 010203");
    check(
        PayloadType::SA_TEK,
        G,
        &other,
        &Payload::SaTek(SaTek {
            protocol_id: GdoiProtocol::IEC_61850,
            body: TekBody::Other(&[1, 2, 3]),
        }),
    );
}

#[test]
fn gap() {
    let body = gap_body();
    check(PayloadType::GAP, G, &body, &Payload::Gap(gap_expected()));
    lie(PayloadType::GAP, G, &body, 14, 2, 5, ErrorKind::BadLength);
    // GM's GAP in PULL message 3
    let req = hex("8003 0004");
    check(
        PayloadType::GAP,
        G,
        &req,
        &Payload::Gap(Gap {
            sender_id_request: Some(4),
            ..Gap::default()
        }),
    );
    // ATD beyond 16 bits in a TLV is a bad value
    let big = hex("0001 0004 00010000");
    assert_eq!(
        Payload::parse(PayloadType::GAP, &big, G).unwrap_err().kind,
        ErrorKind::BadValue
    );
}

#[test]
fn key_download() {
    let mut tek_key = vec![0x11u8; 32];
    tek_key.extend_from_slice(&[0x22; 4]);
    let mut kek_key = vec![0x33u8; 16];
    kek_key.extend_from_slice(&[0x44; 16]);
    let body = hex(&format!(
        "0003 0000
         01 00 0031 04 12345678 0001 0024 {tek}
         02 00 0042 10 a0a1a2a3a4a5a6a7a8a9aaabacadaeaf 0001 0020 {kek} 0002 0005 3003020100
         04 00 0011 00 8001 0008 0002 0004 00000005",
        tek = tek_key
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        kek = kek_key
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ));
    let expected = Payload::KeyDownload(KeyDownload {
        packets: vec![
            KeyPacket::Tek(TekKeyPacket {
                spi: 0x1234_5678,
                algorithm_key: Some(&tek_key),
                ..TekKeyPacket::default()
            }),
            KeyPacket::Kek(KekKeyPacket {
                spi: sak_expected().spi,
                algorithm_key: Some(&kek_key),
                sig_algorithm_key: Some(&[0x30, 0x03, 0x02, 0x01, 0x00]),
                ..KekKeyPacket::default()
            }),
            KeyPacket::Sid(SidKeyPacket {
                number_of_sid_bits: Some(8),
                sid_values: vec![5],
                ..SidKeyPacket::default()
            }),
        ],
    });
    check(PayloadType::KEY_DOWNLOAD, G, &body, &expected);
    let kd = PayloadType::KEY_DOWNLOAD;
    // count says 4: the fourth packet is missing
    lie(kd, G, &body, 0, 2, 4, ErrorKind::Truncated);
    // count says 2: octets of a third packet are left over
    lie(kd, G, &body, 0, 2, 2, ErrorKind::BadLength);
    // first packet's KD Length overruns the payload
    lie(kd, G, &body, 6, 2, 0x0400, ErrorKind::BadLength);
    // KD Length smaller than its own header
    lie(kd, G, &body, 6, 2, 3, ErrorKind::BadLength);
    // TEK SPI size must be 4
    lie(kd, G, &body, 8, 1, 3, ErrorKind::BadValue);
    // too many key packets
    lie(kd, G, &body, 0, 2, 65, ErrorKind::TooMany);
}

#[test]
fn sa_gdoi_with_nested_chain() {
    let sak = sak_body();
    let gap = gap_body();
    let sat = sat_body();
    let mut body = hex("00000002 00000000 000f 0000"); // DOI GDOI, situation 0, first nested SAK
    body.extend_from_slice(&framed(22, &sak));
    body.extend_from_slice(&framed(16, &gap));
    body.extend_from_slice(&framed(0, &sat));
    let expected = Payload::Sa(Sa::Gdoi(GdoiSa {
        situation: 0,
        kek: Some(sak_expected()),
        gap: Some(gap_expected()),
        teks: vec![sat_expected()],
        unknown: vec![],
    }));
    check(PayloadType::SA, G, &body, &expected);
    // the nested SAK's length overruns the SA
    lie(
        PayloadType::SA,
        G,
        &body,
        14,
        2,
        0x0400,
        ErrorKind::BadLength,
    );
    // SA Attribute Next Payload above one octet
    lie(PayloadType::SA, G, &body, 8, 2, 0x010f, ErrorKind::BadValue);
    // GAP before SAK is out of order
    let mut swapped = hex("00000002 00000000 0016 0000");
    swapped.extend_from_slice(&framed(15, &gap));
    swapped.extend_from_slice(&framed(0, &sak));
    assert_eq!(
        Payload::parse(PayloadType::SA, &swapped, G)
            .unwrap_err()
            .kind,
        ErrorKind::OutOfOrder
    );
    // no SAK and no SAT
    let mut only_gap = hex("00000002 00000000 0016 0000");
    only_gap.extend_from_slice(&framed(0, &gap));
    assert_eq!(
        Payload::parse(PayloadType::SA, &only_gap, G)
            .unwrap_err()
            .kind,
        ErrorKind::Missing
    );
    // unknown DOI cannot be framed
    let mut doi9 = body.clone();
    doi9[3] = 9;
    assert_eq!(
        Payload::parse(PayloadType::SA, &doi9, G).unwrap_err().kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn sa_phase1() {
    let body = hex("
        00000001 00000001           # DOI IPsec, SIT_IDENTITY_ONLY
        00 00 0030                  # Proposal, last, length 48
        01 01 00 01                 # #1, PROTO_ISAKMP, SPI size 0, 1 transform
        00 00 0028                  # Transform, last, length 40
        01 01 0000                  # #1, KEY_IKE, reserved
        8001 0007                   # Encryption AES-CBC
        800e 0100                   # Key Length 256
        8002 0004                   # Hash SHA2-256
        8003 0001                   # Auth pre-shared key
        8004 0013                   # Group 19 (ECP-256)
        800b 0001                   # Life Type seconds
        000c 0004 00015180          # Life Duration 86400
    ");
    let expected = Payload::Sa(Sa::Phase1(Phase1Sa {
        doi: Doi::IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol_id: ProtocolId::ISAKMP,
            spi: &[],
            transforms: vec![Transform {
                number: 1,
                transform_id: IsakmpTransformId::KEY_IKE,
                attributes: OakleyAttributes {
                    encryption: Some(OakleyEncryption::AES_CBC),
                    key_length_bits: Some(256),
                    hash: Some(OakleyHash::SHA2_256),
                    auth_method: Some(AuthMethod::PRE_SHARED_KEY),
                    group: Some(OakleyGroup::ECP_256),
                    life_seconds: Some(86_400),
                    ..OakleyAttributes::default()
                },
            }],
        }],
    }));
    check(PayloadType::SA, P1, &body, &expected);
    // transform count says 2
    lie(PayloadType::SA, P1, &body, 15, 1, 2, ErrorKind::BadLength);
    // proposal length overruns
    lie(
        PayloadType::SA,
        P1,
        &body,
        10,
        2,
        0x0100,
        ErrorKind::BadLength,
    );
    // the same octets with DOI 2 in phase 1 (RFC 6407 section 2.1) parse too
    let mut gdoi_p1 = body.clone();
    gdoi_p1[3] = 2;
    assert!(matches!(
        Payload::parse(PayloadType::SA, &gdoi_p1, P1).unwrap(),
        Payload::Sa(Sa::Phase1(Phase1Sa { doi: Doi::GDOI, .. }))
    ));
    // a proposal for ESP (quick mode) is not something GKM frames
    let mut esp = body.clone();
    esp[13] = 3;
    assert_eq!(
        Payload::parse(PayloadType::SA, &esp, P1).unwrap_err().kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn id_payloads() {
    let group = hex("0b 00 0000 000004d2"); // ID_KEY_ID, group 1234
    let p = Payload::parse(PayloadType::ID, &group, G).unwrap();
    let Payload::Id(id) = &p else { panic!() };
    assert_eq!(id.identity.group_id(), Some(1234));
    check(PayloadType::ID, G, &group, &p);
    let subnet = hex("04 11 01f4 0a000000 ffffff00");
    check(
        PayloadType::ID,
        G,
        &subnet,
        &Payload::Id(IdPayload {
            protocol: 17,
            port: 500,
            identity: Identity::Ipv4Subnet(
                Ipv4Addr::new(10, 0, 0, 0),
                Ipv4Addr::new(255, 255, 255, 0),
            ),
        }),
    );
    // an IPv4 address with 5 octets
    let bad = hex("01 00 0000 0a00000101");
    assert_eq!(
        Payload::parse(PayloadType::ID, &bad, G).unwrap_err().kind,
        ErrorKind::BadLength
    );
    let v6 = hex("05 00 0000 20010db8000000000000000000000001");
    check(
        PayloadType::ID,
        G,
        &v6,
        &Payload::Id(IdPayload {
            protocol: 0,
            port: 0,
            identity: Identity::Ipv6Addr("2001:db8::1".parse().unwrap()),
        }),
    );
}

#[test]
fn flat_payloads() {
    let seq = hex("0000002a");
    check(PayloadType::SEQ, G, &seq, &Payload::Seq(Seq(42)));
    assert_eq!(
        Payload::parse(PayloadType::SEQ, &seq[..3], G)
            .unwrap_err()
            .kind,
        ErrorKind::Truncated
    );
    assert_eq!(
        Payload::parse(PayloadType::SEQ, &hex("0000002a00"), G)
            .unwrap_err()
            .kind,
        ErrorKind::BadLength
    );

    let h = [0x5a; 32];
    check(PayloadType::HASH, G, &h, &Payload::Hash(Hash(&h)));
    let s = [0x6b; 64];
    check(PayloadType::SIG, G, &s, &Payload::Signature(Signature(&s)));
    let n = [0x7c; 16];
    check(PayloadType::NONCE, G, &n, &Payload::Nonce(Nonce(&n)));
    let ke = [0x8d; 64];
    check(
        PayloadType::KE,
        P1,
        &ke,
        &Payload::KeyExchange(KeyExchange(&ke)),
    );
    for t in [
        PayloadType::HASH,
        PayloadType::SIG,
        PayloadType::NONCE,
        PayloadType::KE,
        PayloadType::VENDOR_ID,
    ] {
        assert_eq!(
            Payload::parse(t, &[], G).unwrap_err().kind,
            ErrorKind::BadLength,
            "{t:?} empty"
        );
    }

    let cert = hex("04 308201000102");
    check(
        PayloadType::CERT,
        P1,
        &cert,
        &Payload::Cert(Cert {
            encoding: CertEncoding::X509_SIGNATURE,
            data: &cert[1..],
        }),
    );
    assert_eq!(
        Payload::parse(PayloadType::CERT, &hex("04"), G)
            .unwrap_err()
            .kind,
        ErrorKind::BadLength
    );
    let certreq = hex("04");
    check(
        PayloadType::CERTREQ,
        P1,
        &certreq,
        &Payload::CertReq(CertReq {
            encoding: CertEncoding::X509_SIGNATURE,
            authority: &[],
        }),
    );
    let certreq_ca = hex("04 3005310330010203");
    check(
        PayloadType::CERTREQ,
        P1,
        &certreq_ca,
        &Payload::CertReq(CertReq {
            encoding: CertEncoding::X509_SIGNATURE,
            authority: &certreq_ca[1..],
        }),
    );
}

#[test]
fn vendor_id_gkm() {
    let body = hex("
        474b4d2f47444f492f564944    # \"GKM/GDOI/VID\"
        01 00 0b 00                 # version 1.0.11, reserved
        00000007                    # features: ip-d3p, gdoi-interop-ack, atd
    ");
    check(
        PayloadType::VENDOR_ID,
        P1,
        &body,
        &Payload::VendorId(VendorId(&body)),
    );
    let vid = GkmVendorId::parse(&body).unwrap().unwrap();
    assert_eq!(
        vid.version,
        GdoiVersion {
            major: 1,
            minor: 0,
            mini: 11
        }
    );
    assert_eq!(vid.version.to_string(), "1.0.11");
    assert!(vid.features.contains(
        FeatureBits::IP_D3P
            .with(FeatureBits::GDOI_INTEROP_ACK)
            .with(FeatureBits::ATD)
    ));
    assert_eq!(vid.to_bytes().as_slice(), body.as_slice());
    assert_eq!(
        GkmVendorId::parse(&body[..19]).unwrap_err().kind,
        ErrorKind::BadLength
    );
    assert_eq!(GkmVendorId::parse(b"some other vendor").unwrap(), None);
}

#[test]
fn notification_and_delete() {
    let body = hex("
        00000001 01 10 6002         # DOI IPsec, PROTO_ISAKMP, SPI size 16, INITIAL-CONTACT
        0102030405060708 1112131415161718
    ");
    check(
        PayloadType::NOTIFICATION,
        P1,
        &body,
        &Payload::Notification(Notification {
            doi: Doi::IPSEC,
            protocol_id: 1,
            notify_type: NotifyType::INITIAL_CONTACT,
            spi: &body[8..24],
            data: &[],
        }),
    );
    lie(
        PayloadType::NOTIFICATION,
        P1,
        &body,
        5,
        1,
        17,
        ErrorKind::BadLength,
    );
    let with_data = hex("00000002 01 00 0017 cafe");
    check(
        PayloadType::NOTIFICATION,
        G,
        &with_data,
        &Payload::Notification(Notification {
            doi: Doi::GDOI,
            protocol_id: 1,
            notify_type: NotifyType::INVALID_HASH_INFORMATION,
            spi: &[],
            data: &[0xca, 0xfe],
        }),
    );

    let del = hex("00000002 01 04 0002 11111111 22222222"); // GDOI, ESP TEKs, two SPIs
    let d = Delete {
        doi: Doi::GDOI,
        protocol_id: 1,
        spi_size: 4,
        spis: &del[8..],
    };
    assert_eq!(d.iter_spis().count(), 2);
    check(PayloadType::DELETE, G, &del, &Payload::Delete(d));
    lie(PayloadType::DELETE, G, &del, 6, 2, 3, ErrorKind::Truncated);
    lie(
        PayloadType::DELETE,
        G,
        &del,
        6,
        2,
        1,
        ErrorKind::TrailingBytes,
    );
    lie(PayloadType::DELETE, G, &del, 5, 1, 0, ErrorKind::BadValue);
}

#[test]
fn unknown_payload_is_kept() {
    let body = hex("deadbeef");
    check(
        PayloadType(200),
        G,
        &body,
        &Payload::Unknown(UnknownPayload {
            payload_type: PayloadType(200),
            body: &body,
        }),
    );
}

#[test]
fn whole_message_and_header() {
    let mut datagram = hex("
        0102030405060708 0000000000000000   # cookies
        08 10 20 00                 # next HASH, version 1.0, GROUPKEY-PULL, no flags
        00000001                    # message ID
        00000000                    # length, patched below
    ");
    let mut chain = framed(10, &[0x5a; 32]); // HASH, next NONCE
    chain.extend_from_slice(&framed(5, &[0x7c; 16])); // NONCE, next ID
    chain.extend_from_slice(&framed(0, &hex("0b 00 0000 000004d2"))); // ID
    datagram.extend_from_slice(&chain);
    let len = datagram.len() as u32;
    datagram[24..28].copy_from_slice(&len.to_be_bytes());

    let msg = Message::parse(&datagram).unwrap();
    assert_eq!(msg.header.exchange_type, ExchangeType::GROUPKEY_PULL);
    assert_eq!(msg.payloads().unwrap().len(), 3);
    assert_eq!(msg.to_vec().unwrap(), datagram);

    for k in 0..datagram.len() {
        assert!(
            Message::parse(&datagram[..k]).is_err(),
            "truncated to {k} parsed"
        );
    }
    let mut long = datagram.clone();
    long[24..28].copy_from_slice(&(len + 1).to_be_bytes());
    assert_eq!(
        Message::parse(&long).unwrap_err().kind,
        ErrorKind::Truncated
    );
    let mut short = datagram.clone();
    short[24..28].copy_from_slice(&(len - 1).to_be_bytes());
    assert_eq!(
        Message::parse(&short).unwrap_err().kind,
        ErrorKind::TrailingBytes
    );
    let mut tiny = datagram.clone();
    tiny[24..28].copy_from_slice(&27u32.to_be_bytes());
    assert_eq!(
        Message::parse(&tiny).unwrap_err().kind,
        ErrorKind::BadLength
    );
    let mut huge = datagram.clone();
    huge[24..28].copy_from_slice(&70_000u32.to_be_bytes());
    assert_eq!(Message::parse(&huge).unwrap_err().kind, ErrorKind::TooLarge);
    let mut v2 = datagram.clone();
    v2[17] = 0x20;
    assert_eq!(
        Message::parse(&v2).unwrap_err().kind,
        ErrorKind::Unsupported
    );
    let mut trailing = datagram.clone();
    trailing.push(0);
    assert_eq!(
        Message::parse(&trailing).unwrap_err().kind,
        ErrorKind::TrailingBytes
    );

    // encrypted body is kept as ciphertext, header cookies give the KEK SPI
    let mut enc = datagram.clone();
    enc[19] = Flags::ENCRYPTION.0;
    let m = Message::parse(&enc).unwrap();
    assert!(matches!(m.body, Body::Encrypted(ct) if ct == &datagram[28..]));
    assert_eq!(&m.header.kek_spi()[..8], &datagram[..8]);
    let (i, r) = IsakmpHeader::cookies_from_kek_spi(&m.header.kek_spi());
    assert_eq!(
        (i, r),
        (m.header.initiator_cookie, m.header.responder_cookie)
    );
    assert_eq!(m.to_vec().unwrap(), enc);
}

#[test]
fn too_many_payloads() {
    let mut chain = Vec::new();
    for i in 0..=64 {
        chain.extend_from_slice(&framed(if i == 64 { 0 } else { 8 }, &[1]));
    }
    assert_eq!(
        parse_chain(PayloadType::HASH, &chain, G).unwrap_err().kind,
        ErrorKind::TooMany
    );
}

#[test]
fn decrypted_chain_allows_padding_only_up_to_the_bound() {
    let mut chain = framed(0, &hex("0000002a"));
    chain.extend_from_slice(&[0; 8]);
    assert!(parse_padded_chain(PayloadType::SEQ, &chain, 16, G).is_ok());
    assert_eq!(
        parse_padded_chain(PayloadType::SEQ, &chain, 7, G)
            .unwrap_err()
            .kind,
        ErrorKind::TrailingBytes
    );
}

#[test]
fn esp_framing_gcm() {
    let f = EspFraming::for_transform(EspTransformId::AES_GCM_16, None).unwrap();
    assert_eq!((f.iv_len, f.icv_len, f.align), (8, 16, 4));
    // SPI 0x01020304, seq 7, IV 8 octets, ciphertext 8 octets, ICV 16
    let pkt =
        hex("01020304 00000007 a0a1a2a3a4a5a6a7 c0c1c2c3c4c5c6c7 e0e1e2e3e4e5e6e7e8e9eaebecedeeef");
    let p = EspPacket::parse(&pkt, f).unwrap();
    assert_eq!((p.spi, p.seq), (0x0102_0304, 7));
    assert_eq!(p.iv, &pkt[8..16]);
    assert_eq!(p.ciphertext, &pkt[16..24]);
    assert_eq!(p.icv, &pkt[24..]);
    assert_eq!(p.aad(), [1, 2, 3, 4, 0, 0, 0, 7]);
    let mut out = Vec::new();
    emit_header(&mut out, p.spi, p.seq, p.iv).unwrap();
    out.extend_from_slice(p.ciphertext);
    out.extend_from_slice(p.icv);
    assert_eq!(out, pkt);
    // shorter than header + IV + one 4-octet block + ICV, or off the
    // 4-octet alignment: rejected
    for k in 0..pkt.len() {
        let fits = k >= 8 + 8 + 4 + 16 && (k - 8 - 8 - 16) % 4 == 0;
        assert_eq!(
            EspPacket::parse(&pkt[..k], f).is_ok(),
            fits,
            "ESP truncated to {k}"
        );
    }
    // ciphertext not a multiple of 4
    assert_eq!(
        EspPacket::parse(&pkt[..pkt.len() - 1], f).unwrap_err().kind,
        ErrorKind::BadLength
    );
    let mut spi0 = pkt.clone();
    spi0[..4].copy_from_slice(&[0; 4]);
    assert_eq!(
        EspPacket::parse(&spi0, f).unwrap_err().kind,
        ErrorKind::BadValue
    );
    // CBC + HMAC-SHA-256-128
    let c = EspFraming::for_transform(EspTransformId::AES_CBC, Some(AuthAlgorithm::HMAC_SHA2_256))
        .unwrap();
    assert_eq!((c.iv_len, c.icv_len, c.align), (16, 16, 16));
    assert_eq!(
        EspFraming::for_transform(
            EspTransformId::AES_GCM_16,
            Some(AuthAlgorithm::HMAC_SHA2_256)
        )
        .unwrap_err()
        .kind,
        ErrorKind::Unsupported
    );
    assert_eq!(
        EspFraming::for_transform(EspTransformId::TRIPLE_DES, None)
            .unwrap_err()
            .kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn esp_trailer() {
    let f = EspFraming::for_transform(EspTransformId::AES_GCM_16, None).unwrap();
    // 5-octet payload: 5 + 2 = 7, so 1 octet of padding to reach 8
    let mut pt = hex("4500000000");
    emit_trailer(&mut pt, 5, f, IpProtocol::IPV4);
    assert_eq!(pt, hex("4500000000 01 01 04"));
    let (payload, nh) = parse_trailer(&pt).unwrap();
    assert_eq!((payload, nh), (&pt[..5], IpProtocol::IPV4));
    assert_eq!(f.packet_len(5), 8 + 8 + 8 + 16);
    // wrong padding byte
    assert_eq!(
        parse_trailer(&hex("4500000000 02 01 04")).unwrap_err().kind,
        ErrorKind::BadValue
    );
    // pad length longer than the plaintext
    assert_eq!(
        parse_trailer(&hex("45 09 04")).unwrap_err().kind,
        ErrorKind::BadLength
    );
    assert_eq!(
        parse_trailer(&hex("04")).unwrap_err().kind,
        ErrorKind::Truncated
    );
    assert_eq!(parse_trailer(&[]).unwrap_err().kind, ErrorKind::Truncated);
}

#[test]
fn d3p_header() {
    let pkt = hex("
        04 0c 0001                  # next header IPv4, length 12, POSIX-TIME-MSEC
        0000018bcfe56800            # 1700000000000 ms
        4500                        # inner packet (start)
    ");
    let (h, inner) = D3pHeader::parse(&pkt).unwrap();
    assert_eq!(
        h,
        D3pHeader {
            next_header: IpProtocol::IPV4,
            d3p_type: D3pType::POSIX_TIME_MSEC,
            timestamp_ms: 1_700_000_000_000
        }
    );
    assert_eq!(inner, &[0x45, 0x00]);
    let mut out = Vec::new();
    h.emit(&mut out);
    out.extend_from_slice(inner);
    assert_eq!(out, pkt);
    // the header and at least one octet of inner packet must be there
    for k in 0..=12 {
        assert!(
            D3pHeader::parse(&pkt[..k]).is_err(),
            "D3P truncated to {k} parsed"
        );
    }
    let mut bad_len = pkt.clone();
    bad_len[1] = 13;
    assert_eq!(
        D3pHeader::parse(&bad_len).unwrap_err().kind,
        ErrorKind::BadLength
    );
    let mut bad_type = pkt.clone();
    bad_type[3] = 2;
    assert_eq!(
        D3pHeader::parse(&bad_type).unwrap_err().kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn errors_name_fields_and_map_to_notifications() {
    let e = Payload::parse(PayloadType::SEQ, &[0, 0], G).unwrap_err();
    assert_eq!(e.field, "seq.number");
    assert_eq!(e.kind.notify(), NotifyType::PAYLOAD_MALFORMED);
    assert_eq!(e.to_string(), "truncated in seq.number");
    assert_eq!(std::mem::size_of::<gkm_wire::Error>(), 24);
}

#[test]
fn doubtful_numbers_are_listed() {
    let src = include_str!("../src/consts.rs");
    let marked = src.matches("**DOUBTFUL**").count();
    assert_eq!(
        marked,
        doubtful_numbers().len(),
        "DOUBTFUL markers and doubtful_numbers() disagree"
    );
}
