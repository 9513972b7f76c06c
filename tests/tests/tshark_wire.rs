//! Independent decoding: GKM emits one message of each shape GDOI uses on
//! UDP 848, writes them to a pcap, and tshark (which we did not write)
//! must read back the same DOI, SPIs, transform IDs, key packets and SEQ,
//! and flag nothing as malformed.
//!
//! tshark quirks this test works with (docs/WIRE.md, "tshark"): messages
//! are sent in cleartext form (E flag clear) so the GDOI payloads can be
//! checked; tshark stops dissecting at a GAP nested in an SA, so the SA
//! here carries SAK and SATs and GAP travels in a message of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../../wire/tests/fixtures/mod.rs"]
mod fixtures;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use gkm_tests::pcap::{self, UdpRecord};
use gkm_tests::tshark;
use gkm_wire::consts::*;
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion, GkmVendorId};
use gkm_wire::payload::*;
use gkm_wire::{Body, Identity, IsakmpHeader, Message, Payload};

const KS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const KEK_SPI: [u8; 16] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];
/// A real self-signed P-256 certificate (test fixture, `openssl req -x509`), so
/// tshark's X.509 dissector has something valid to read.
const CERT_DER: &[u8] = include_bytes!("../data/gm-cert.der");
const ICOOKIE: [u8; 8] = [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18];
const RCOOKIE: [u8; 8] = [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28];

fn header(exchange: ExchangeType, i: [u8; 8], r: [u8; 8], message_id: u32) -> IsakmpHeader {
    IsakmpHeader {
        initiator_cookie: i,
        responder_cookie: r,
        next_payload: PayloadType::NONE,
        exchange_type: exchange,
        flags: Flags::default(),
        message_id,
        length: 0,
    }
}

fn message(h: IsakmpHeader, payloads: Vec<Payload<'_>>) -> Vec<u8> {
    Message {
        header: h,
        body: Body::Payloads(payloads),
    }
    .to_vec()
    .unwrap()
}

fn sak() -> SaKek<'static> {
    fixtures::sa_kek(KS, KEK_SPI)
}

fn sat(spi: u32, transform: EspTransformId, net: u8) -> SaTek<'static> {
    let sel = TrafficSelector {
        identity: Identity::Ipv4Subnet(Ipv4Addr::new(10, net, 0, 0), Ipv4Addr::new(255, 255, 0, 0)),
        port: 0,
    };
    SaTek {
        protocol_id: GdoiProtocol::IPSEC_ESP,
        body: TekBody::Ipsec(IpsecTek {
            protocol: 0,
            src: sel,
            dst: sel,
            transform_id: transform,
            spi,
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

/// What GKM put in each frame, for comparison with tshark's reading.
#[derive(Debug, Default, Clone)]
struct Expect {
    doi: Option<u32>,
    sak_spi: Option<[u8; 16]>,
    sat_spis: Vec<u32>,
    sat_transforms: Vec<u8>,
    kd_num: Option<u16>,
    kd_types: Vec<u8>,
    kd_spis: Vec<Vec<u8>>,
    seq: Option<u32>,
}

fn frames() -> Vec<(UdpRecord, Expect)> {
    let key36 = [0x5au8; 36];
    let kek_key = [0x6bu8; 32];
    let spki = [0x30u8, 0x03, 0x02, 0x01, 0x00];
    let sig = [0x7cu8; 256];
    let vid = GkmVendorId {
        version: GdoiVersion {
            major: 1,
            minor: 0,
            mini: 11,
        },
        features: FeatureBits::IP_D3P
            .with(FeatureBits::GDOI_INTEROP_ACK)
            .with(FeatureBits::ATD),
    }
    .to_bytes();
    let up = |payload: Vec<u8>| UdpRecord {
        src: (GM, 848),
        dst: (KS, 848),
        payload,
    };
    let down = |payload: Vec<u8>| UdpRecord {
        src: (KS, 848),
        dst: (GM, 848),
        payload,
    };
    let mut out = Vec::new();

    // 1. Phase 1 main mode message 1: SA (proposal, 2 transforms) + GKM VID,
    // in GDOI's DOI (2, situation 0: what GKM sends, RFC 6407 section 2.1)
    // and in the IPsec DOI (1, SIT_IDENTITY_ONLY: for peers set to it).
    // Wireshark reads a DOI 2 SA in the GDOI layout only: it shows the DOI
    // and situation and no proposals, and flags nothing (docs/WIRE.md).
    let oakley = |group: OakleyGroup| OakleyAttributes {
        encryption: Some(OakleyEncryption::AES_CBC),
        key_length_bits: Some(256),
        hash: Some(OakleyHash::SHA2_256),
        auth_method: Some(AuthMethod::PRE_SHARED_KEY),
        group: Some(group),
        life_seconds: Some(86_400),
        ..OakleyAttributes::default()
    };
    for (doi, situation) in [
        (Doi::GDOI, GDOI_SITUATION_NONE),
        (Doi::IPSEC, SIT_IDENTITY_ONLY),
    ] {
        out.push((
            up(message(
                header(ExchangeType::IDENTITY_PROTECTION, ICOOKIE, [0; 8], 0),
                vec![
                    Payload::Sa(Sa::Phase1(Phase1Sa {
                        doi,
                        situation,
                        proposals: vec![Proposal {
                            number: 1,
                            protocol_id: ProtocolId::ISAKMP,
                            spi: &[],
                            transforms: vec![
                                Transform {
                                    number: 1,
                                    transform_id: IsakmpTransformId::KEY_IKE,
                                    attributes: oakley(OakleyGroup::ECP_256),
                                },
                                Transform {
                                    number: 2,
                                    transform_id: IsakmpTransformId::KEY_IKE,
                                    attributes: oakley(OakleyGroup::MODP_2048),
                                },
                            ],
                        }],
                    })),
                    Payload::VendorId(VendorId(&vid)),
                ],
            )),
            Expect {
                doi: Some(doi.0),
                ..Expect::default()
            },
        ));
    }
    // 2. Main mode message 3 shape: KE, NONCE, CERTREQ.
    out.push((
        up(message(
            header(ExchangeType::IDENTITY_PROTECTION, ICOOKIE, RCOOKIE, 0),
            vec![
                Payload::KeyExchange(KeyExchange(&[0x04; 64])),
                Payload::Nonce(Nonce(&[0x4e; 32])),
                Payload::CertReq(CertReq {
                    encoding: CertEncoding::X509_SIGNATURE,
                    authority: &[],
                }),
            ],
        )),
        Expect::default(),
    ));
    // 3. Main mode message 5 shape (cleartext form): ID, CERT, SIG, INITIAL-CONTACT.
    let spi: Vec<u8> = ICOOKIE.iter().chain(RCOOKIE.iter()).copied().collect();
    out.push((
        up(message(
            header(ExchangeType::IDENTITY_PROTECTION, ICOOKIE, RCOOKIE, 0),
            vec![
                Payload::Id(IdPayload {
                    protocol: 17,
                    port: 848,
                    identity: Identity::Ipv4Addr(GM),
                }),
                Payload::Cert(Cert {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: CERT_DER,
                }),
                Payload::Signature(Signature(&sig)),
                Payload::Notification(Notification {
                    doi: Doi::IPSEC,
                    protocol_id: ProtocolId::ISAKMP.0,
                    notify_type: NotifyType::INITIAL_CONTACT,
                    spi: &spi,
                    data: &[],
                }),
            ],
        )),
        Expect::default(),
    ));
    // 4. GROUPKEY-PULL message 1: HASH, NONCE, ID(group 1234).
    let group = 1234u32.to_be_bytes();
    out.push((
        up(message(
            header(ExchangeType::GROUPKEY_PULL, ICOOKIE, RCOOKIE, 0x0102_0304),
            vec![
                Payload::Hash(Hash(&[0x48; 32])),
                Payload::Nonce(Nonce(&[0x4e; 16])),
                Payload::Id(IdPayload {
                    protocol: 0,
                    port: 0,
                    identity: Identity::KeyId(&group),
                }),
            ],
        )),
        Expect::default(),
    ));
    // 5. PULL message 2: HASH, NONCE, SA(SAK, 2 SATs).
    out.push((
        down(message(
            header(ExchangeType::GROUPKEY_PULL, ICOOKIE, RCOOKIE, 0x0102_0304),
            vec![
                Payload::Hash(Hash(&[0x48; 32])),
                Payload::Nonce(Nonce(&[0x4f; 16])),
                Payload::Sa(Sa::Gdoi(GdoiSa {
                    situation: 0,
                    kek: Some(sak()),
                    gap: None,
                    teks: vec![
                        sat(0x1000_0001, EspTransformId::AES_GCM_16, 1),
                        sat(0x1000_0002, EspTransformId::AES_CBC, 2),
                    ],
                    unknown: vec![],
                })),
            ],
        )),
        Expect {
            doi: Some(2),
            sak_spi: Some(KEK_SPI),
            sat_spis: vec![0x1000_0001, 0x1000_0002],
            sat_transforms: vec![20, 12],
            ..Expect::default()
        },
    ));
    // 6. PULL message 3: HASH, GAP(SENDER_ID_REQUEST) top level.
    out.push((
        up(message(
            header(ExchangeType::GROUPKEY_PULL, ICOOKIE, RCOOKIE, 0x0102_0304),
            vec![
                Payload::Hash(Hash(&[0x48; 32])),
                Payload::Gap(Gap {
                    sender_id_request: Some(2),
                    ..Gap::default()
                }),
            ],
        )),
        Expect::default(),
    ));
    // 7. PULL message 4: HASH, SEQ, KD(TEK, TEK, KEK, SID).
    let kd = KeyDownload {
        packets: vec![
            KeyPacket::Tek(TekKeyPacket {
                spi: 0x1000_0001,
                algorithm_key: Some(&key36),
                ..TekKeyPacket::default()
            }),
            KeyPacket::Tek(TekKeyPacket {
                spi: 0x1000_0002,
                algorithm_key: Some(&key36[..32]),
                integrity_key: Some(&kek_key),
                ..TekKeyPacket::default()
            }),
            KeyPacket::Kek(KekKeyPacket {
                spi: KEK_SPI,
                algorithm_key: Some(&kek_key),
                sig_algorithm_key: Some(&spki),
                ..KekKeyPacket::default()
            }),
            KeyPacket::Sid(SidKeyPacket {
                number_of_sid_bits: Some(8),
                sid_values: vec![1, 2],
                ..SidKeyPacket::default()
            }),
        ],
    };
    out.push((
        down(message(
            header(ExchangeType::GROUPKEY_PULL, ICOOKIE, RCOOKIE, 0x0102_0304),
            vec![
                Payload::Hash(Hash(&[0x48; 32])),
                Payload::Seq(Seq(7)),
                Payload::KeyDownload(kd.clone()),
            ],
        )),
        Expect {
            kd_num: Some(4),
            kd_types: vec![1, 1, 2, 4],
            kd_spis: vec![
                0x1000_0001u32.to_be_bytes().to_vec(),
                0x1000_0002u32.to_be_bytes().to_vec(),
                KEK_SPI.to_vec(),
                vec![],
            ],
            seq: Some(7),
            ..Expect::default()
        },
    ));
    // 8. GROUPKEY-PUSH body in cleartext form: SEQ, D, SA(SAK, SAT), KD, SIG.
    let (ki, kr) = IsakmpHeader::cookies_from_kek_spi(&KEK_SPI);
    let old_spi = 0x0fff_ffffu32.to_be_bytes();
    out.push((
        down(message(
            header(ExchangeType::GROUPKEY_PUSH, ki, kr, 0),
            vec![
                Payload::Seq(Seq(8)),
                Payload::Delete(Delete {
                    doi: Doi::GDOI,
                    protocol_id: GdoiProtocol::IPSEC_ESP.0,
                    spi_size: 4,
                    spis: &old_spi,
                }),
                Payload::Sa(Sa::Gdoi(GdoiSa {
                    situation: 0,
                    kek: Some(sak()),
                    gap: None,
                    teks: vec![sat(0x1000_0003, EspTransformId::AES_GCM_16, 1)],
                    unknown: vec![],
                })),
                Payload::KeyDownload(KeyDownload {
                    packets: vec![
                        KeyPacket::Tek(TekKeyPacket {
                            spi: 0x1000_0003,
                            algorithm_key: Some(&key36),
                            ..TekKeyPacket::default()
                        }),
                        KeyPacket::Kek(KekKeyPacket {
                            spi: KEK_SPI,
                            algorithm_key: Some(&kek_key),
                            ..KekKeyPacket::default()
                        }),
                    ],
                }),
                Payload::Signature(Signature(&sig)),
            ],
        )),
        Expect {
            doi: Some(2),
            sak_spi: Some(KEK_SPI),
            sat_spis: vec![0x1000_0003],
            sat_transforms: vec![20],
            kd_num: Some(2),
            kd_types: vec![1, 2],
            kd_spis: vec![0x1000_0003u32.to_be_bytes().to_vec(), KEK_SPI.to_vec()],
            seq: Some(8),
        },
    ));
    // 9. GAP with ATD, DTD and GKM's D3P attributes, in a message of its own.
    out.push((
        down(message(
            header(ExchangeType::GROUPKEY_PUSH, ki, kr, 0),
            vec![
                Payload::Seq(Seq(9)),
                Payload::Gap(Gap {
                    activation_time_delay: Some(3570),
                    deactivation_time_delay: Some(60),
                    d3p_type: Some(D3pType::POSIX_TIME_MSEC),
                    d3p_window_msec: Some(5000),
                    ..Gap::default()
                }),
            ],
        )),
        Expect {
            seq: Some(9),
            ..Expect::default()
        },
    ));
    // 10. RFC 8263 ACK: HASH, SEQ, ID (cookies = KEK SPI, message ID 0).
    let mut ack_h = header(ExchangeType::GROUPKEY_PUSH_ACK, ki, kr, 0);
    ack_h.flags = Flags::default();
    out.push((
        up(message(
            ack_h,
            vec![
                Payload::Hash(Hash(&[0x41; 32])),
                Payload::Seq(Seq(8)),
                Payload::Id(IdPayload {
                    protocol: 0,
                    port: 0,
                    identity: Identity::Ipv4Addr(GM),
                }),
            ],
        )),
        Expect {
            seq: Some(8),
            ..Expect::default()
        },
    ));
    out
}

fn list(s: &str) -> Vec<String> {
    if s.is_empty() {
        vec![]
    } else {
        s.split(',').map(str::to_owned).collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")),
    }
}

#[test]
fn tshark_decodes_every_message_shape() {
    let frames = frames();
    // Our own parser agrees with our emitter first.
    for (r, _) in &frames {
        Message::parse(&r.payload).expect("GKM parses what it emits");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tshark-wire");
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("gdoi-shapes.pcap");
    let records: Vec<UdpRecord> = frames.iter().map(|(r, _)| r.clone()).collect();
    std::fs::write(&capture, pcap::write(&records)).unwrap();

    let rows = tshark::fields(
        &capture,
        &[
            "frame.number",
            "isakmp.exchangetype",
            "isakmp.sa.doi",
            "isakmp.sak.spi",
            "isakmp.sat.spi",
            "isakmp.sat.transform_id",
            "isakmp.kd.num_pkt",
            "isakmp.kd.payload.type",
            "isakmp.kd.payload.spi",
            "isakmp.seq.seq",
            "_ws.malformed",
            "_ws.expert.severity",
            "_ws.expert.message",
        ],
        None,
    );
    assert_eq!(rows.len(), frames.len(), "tshark saw every frame: {rows:?}");
    for (row, (_, want)) in rows.iter().zip(&frames) {
        let get = |i: usize| row.get(i).cloned().unwrap_or_default();
        let frame = get(0);
        assert!(
            !get(2).is_empty() || want.doi.is_none(),
            "frame {frame}: no DOI"
        );
        if let Some(doi) = want.doi {
            assert_eq!(parse_num(&get(2)), u64::from(doi), "frame {frame}: DOI");
        }
        match want.sak_spi {
            Some(spi) => assert_eq!(get(3).replace(':', ""), hex(&spi), "frame {frame}: SAK SPI"),
            None => assert!(get(3).is_empty(), "frame {frame}: unexpected SAK"),
        }
        let sat_spis: Vec<String> = list(&get(4))
            .iter()
            .map(|s| s.replace(':', "").trim_start_matches("0x").to_owned())
            .collect();
        let want_sat: Vec<String> = want.sat_spis.iter().map(|s| format!("{s:08x}")).collect();
        assert_eq!(sat_spis, want_sat, "frame {frame}: SAT SPIs");
        let sat_tr: Vec<u64> = list(&get(5)).iter().map(|s| parse_num(s)).collect();
        assert_eq!(
            sat_tr,
            want.sat_transforms
                .iter()
                .map(|t| u64::from(*t))
                .collect::<Vec<_>>(),
            "frame {frame}: SAT transforms"
        );
        match want.kd_num {
            Some(n) => assert_eq!(parse_num(&get(6)), u64::from(n), "frame {frame}: KD count"),
            None => assert!(get(6).is_empty(), "frame {frame}: unexpected KD"),
        }
        let kd_types: Vec<u64> = list(&get(7)).iter().map(|s| parse_num(s)).collect();
        assert_eq!(
            kd_types,
            want.kd_types
                .iter()
                .map(|t| u64::from(*t))
                .collect::<Vec<_>>(),
            "frame {frame}: KD types"
        );
        let kd_spis: Vec<String> = list(&get(8)).iter().map(|s| s.replace(':', "")).collect();
        let want_spis: Vec<String> = want
            .kd_spis
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| hex(s))
            .collect();
        assert_eq!(kd_spis, want_spis, "frame {frame}: KD SPIs");
        match want.seq {
            Some(s) => assert_eq!(parse_num(&get(9)), u64::from(s), "frame {frame}: SEQ"),
            None => assert!(get(9).is_empty(), "frame {frame}: unexpected SEQ"),
        }
        assert!(
            get(10).is_empty(),
            "frame {frame}: tshark flags it malformed: {}",
            get(12)
        );
        assert!(
            get(11).is_empty(),
            "frame {frame}: tshark expert info: {}",
            get(12)
        );
    }
}
