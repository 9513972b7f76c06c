//! Property tests: for every payload and for whole messages, emit then
//! parse gives back the same value; and parsing arbitrary octets never
//! panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{Ipv4Addr, Ipv6Addr};

use gkm_wire::consts::*;
use gkm_wire::d3p::D3pHeader;
use gkm_wire::payload::*;
use gkm_wire::{AttrValue, Body, DataAttribute, Identity, IsakmpHeader, Message, Payload};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Borrowed byte strings for the `'a` reprs: leaked per case, which is
/// fine in a test process.
fn bytes(min: usize, max: usize) -> impl Strategy<Value = &'static [u8]> {
    vec(any::<u8>(), min..=max).prop_map(|v| &*Vec::leak(v))
}

fn identity(allow_empty_other: bool) -> impl Strategy<Value = Identity<'static>> {
    let v4 = any::<[u8; 4]>().prop_map(Ipv4Addr::from);
    let v6 = any::<[u8; 16]>().prop_map(Ipv6Addr::from);
    // types that parse as Other: not 1..=11
    let other_type = prop_oneof![Just(0u8), 12u8..=255];
    let min = usize::from(!allow_empty_other);
    prop_oneof![
        v4.clone().prop_map(Identity::Ipv4Addr),
        (v4.clone(), v4.clone()).prop_map(|(a, b)| Identity::Ipv4Subnet(a, b)),
        (v4.clone(), v4).prop_map(|(a, b)| Identity::Ipv4Range(a, b)),
        v6.clone().prop_map(Identity::Ipv6Addr),
        (v6.clone(), v6.clone()).prop_map(|(a, b)| Identity::Ipv6Subnet(a, b)),
        (v6.clone(), v6).prop_map(|(a, b)| Identity::Ipv6Range(a, b)),
        bytes(1, 40).prop_map(Identity::Fqdn),
        bytes(1, 40).prop_map(Identity::UserFqdn),
        bytes(1, 40).prop_map(Identity::DerAsn1Dn),
        bytes(1, 40).prop_map(Identity::DerAsn1Gn),
        bytes(1, 16).prop_map(Identity::KeyId),
        (other_type, bytes(min, 16)).prop_map(|(t, d)| Identity::Other(IdType(t), d)),
    ]
}

fn selector() -> impl Strategy<Value = TrafficSelector<'static>> {
    (identity(true), any::<u16>()).prop_map(|(identity, port)| TrafficSelector { identity, port })
}

/// Attributes of a type no typed list knows (100..16000), in either form.
fn unknown_attrs() -> impl Strategy<Value = Vec<DataAttribute<'static>>> {
    vec(
        (
            100u16..16_000,
            prop_oneof![
                any::<u16>().prop_map(AttrValue::Basic),
                bytes(0, 12).prop_map(AttrValue::Variable)
            ],
        )
            .prop_map(|(attr_type, value)| DataAttribute { attr_type, value }),
        0..3,
    )
}

fn kek_policy() -> impl Strategy<Value = KekPolicy<'static>> {
    (
        (
            option::of(any::<u16>().prop_map(KekManagementAlgorithm)),
            option::of(any::<u16>().prop_map(KekAlgorithm)),
            option::of(any::<u16>()),
            option::of(any::<u32>()),
        ),
        (
            option::of(any::<u16>().prop_map(SigHashAlgorithm)),
            option::of(any::<u16>().prop_map(SigAlgorithm)),
            option::of(any::<u16>()),
            option::of(any::<u16>().prop_map(AckRequested)),
        ),
        unknown_attrs(),
    )
        .prop_map(|((m, a, kl, lt), (sh, sa, skl, ack), unknown)| KekPolicy {
            management_algorithm: m,
            algorithm: a,
            key_length_bits: kl,
            key_lifetime_secs: lt,
            sig_hash_algorithm: sh,
            sig_algorithm: sa,
            sig_key_length_bits: skl,
            ack_requested: ack,
            unknown,
        })
}

fn sa_kek() -> impl Strategy<Value = SaKek<'static>> {
    (
        any::<u8>(),
        selector(),
        selector(),
        any::<[u8; 16]>(),
        kek_policy(),
    )
        .prop_map(|(protocol, src, dst, spi, policy)| SaKek {
            protocol,
            src,
            dst,
            spi,
            policy,
        })
}

fn ipsec_attrs() -> impl Strategy<Value = IpsecSaAttributes<'static>> {
    (
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u16>()),
            option::of(any::<u16>()),
        ),
        (
            option::of(any::<u16>()),
            option::of(any::<u16>()),
            option::of(any::<u16>()),
            option::of(any::<u16>()),
        ),
        unknown_attrs(),
    )
        .prop_map(
            |((ls, lk, em, aa), (kl, esn, ap, dir), unknown)| IpsecSaAttributes {
                life_seconds: ls,
                life_kilobytes: lk,
                encapsulation_mode: em.map(EncapsulationMode),
                auth_algorithm: aa.map(AuthAlgorithm),
                key_length_bits: kl,
                extended_sequence_number: esn,
                address_preservation: ap.map(AddressPreservation),
                sa_direction: dir.map(SaDirection),
                unknown,
            },
        )
}

fn sa_tek() -> impl Strategy<Value = SaTek<'static>> {
    let ipsec = (
        prop_oneof![Just(GdoiProtocol::IPSEC_ESP), Just(GdoiProtocol::IPSEC_AH)],
        any::<u8>(),
        selector(),
        selector(),
        any::<u8>(),
        any::<u32>(),
        ipsec_attrs(),
    )
        .prop_map(
            |(protocol_id, protocol, src, dst, t, spi, attributes)| SaTek {
                protocol_id,
                body: TekBody::Ipsec(IpsecTek {
                    protocol,
                    src,
                    dst,
                    transform_id: EspTransformId(t),
                    spi,
                    attributes,
                }),
            },
        );
    let other = (3u8..=255, bytes(0, 24)).prop_map(|(p, b)| SaTek {
        protocol_id: GdoiProtocol(p),
        body: TekBody::Other(b),
    });
    prop_oneof![4 => ipsec, 1 => other]
}

fn gap() -> impl Strategy<Value = Gap<'static>> {
    (
        option::of(any::<u16>()),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
        option::of(any::<u16>().prop_map(D3pType)),
        option::of(any::<u32>()),
        unknown_attrs(),
    )
        .prop_map(|(atd, dtd, sid, t, w, unknown)| Gap {
            activation_time_delay: atd,
            deactivation_time_delay: dtd,
            sender_id_request: sid,
            d3p_type: t,
            d3p_window_msec: w,
            unknown,
        })
}

fn opt_bytes() -> impl Strategy<Value = Option<&'static [u8]>> {
    option::of(bytes(0, 40))
}

fn key_packet() -> impl Strategy<Value = KeyPacket<'static>> {
    prop_oneof![
        (
            any::<u32>(),
            opt_bytes(),
            opt_bytes(),
            opt_bytes(),
            unknown_attrs()
        )
            .prop_map(|(spi, a, i, s, unknown)| {
                KeyPacket::Tek(TekKeyPacket {
                    spi,
                    algorithm_key: a,
                    integrity_key: i,
                    source_auth_key: s,
                    unknown,
                })
            }),
        (any::<[u8; 16]>(), opt_bytes(), opt_bytes(), unknown_attrs()).prop_map(
            |(spi, a, s, unknown)| {
                KeyPacket::Kek(KekKeyPacket {
                    spi,
                    algorithm_key: a,
                    sig_algorithm_key: s,
                    unknown,
                })
            }
        ),
        (
            option::of(any::<u16>()),
            vec(any::<u32>(), 0..4),
            unknown_attrs()
        )
            .prop_map(|(bits, sid_values, unknown)| {
                KeyPacket::Sid(SidKeyPacket {
                    number_of_sid_bits: bits,
                    sid_values,
                    unknown,
                })
            }),
        (
            prop_oneof![Just(3u8), 5u8..=255],
            bytes(0, 16),
            bytes(0, 24)
        )
            .prop_map(|(t, spi, attributes)| {
                KeyPacket::Other(OtherKeyPacket {
                    kd_type: KdType(t),
                    spi,
                    attributes,
                })
            }),
    ]
}

fn unknown_payload() -> impl Strategy<Value = UnknownPayload<'static>> {
    // types Payload::parse does not interpret
    let known: &[u8] = &[0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 22];
    (any::<u8>(), bytes(0, 16))
        .prop_filter("a type the codec interprets", |(t, _)| !known.contains(t))
        .prop_map(|(t, body)| UnknownPayload {
            payload_type: PayloadType(t),
            body,
        })
}

fn gdoi_sa() -> impl Strategy<Value = Sa<'static>> {
    (
        any::<u32>(),
        option::of(sa_kek()),
        option::of(gap()),
        vec(sa_tek(), 0..3),
        vec(unknown_payload(), 0..2),
    )
        .prop_filter("an SA KEK or an SA TEK", |(_, k, _, t, _)| {
            k.is_some() || !t.is_empty()
        })
        .prop_map(|(situation, kek, gap, teks, unknown)| {
            Sa::Gdoi(GdoiSa {
                situation,
                kek,
                gap,
                teks,
                unknown,
            })
        })
}

fn oakley() -> impl Strategy<Value = OakleyAttributes<'static>> {
    (
        (
            option::of(any::<u16>()),
            option::of(any::<u16>()),
            option::of(any::<u16>()),
            option::of(any::<u16>()),
        ),
        (
            option::of(any::<u16>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
        ),
        unknown_attrs(),
    )
        .prop_map(|((e, kl, h, a), (g, ls, lk), unknown)| OakleyAttributes {
            encryption: e.map(OakleyEncryption),
            key_length_bits: kl,
            hash: h.map(OakleyHash),
            auth_method: a.map(AuthMethod),
            group: g.map(OakleyGroup),
            life_seconds: ls,
            life_kilobytes: lk,
            unknown,
        })
}

fn phase1_sa() -> impl Strategy<Value = Sa<'static>> {
    let transform =
        (any::<u8>(), any::<u8>(), oakley()).prop_map(|(number, t, attributes)| Transform {
            number,
            transform_id: IsakmpTransformId(t),
            attributes,
        });
    let proposal =
        (any::<u8>(), bytes(0, 8), vec(transform, 1..3)).prop_map(|(number, spi, transforms)| {
            Proposal {
                number,
                protocol_id: ProtocolId::ISAKMP,
                spi,
                transforms,
            }
        });
    (
        prop_oneof![Just(Doi::IPSEC), Just(Doi::GDOI)],
        any::<u32>(),
        vec(proposal, 1..3),
    )
        .prop_map(|(doi, situation, proposals)| {
            let situation = if doi == Doi::IPSEC {
                SIT_IDENTITY_ONLY
            } else {
                situation
            };
            Sa::Phase1(Phase1Sa {
                doi,
                situation,
                proposals,
            })
        })
}

/// Every payload except SA (whose layout depends on the exchange).
fn common_payload() -> impl Strategy<Value = Payload<'static>> {
    prop_oneof![
        bytes(1, 64).prop_map(|b| Payload::KeyExchange(KeyExchange(b))),
        (any::<u8>(), any::<u16>(), identity(false)).prop_map(|(protocol, port, identity)| {
            Payload::Id(IdPayload {
                protocol,
                port,
                identity,
            })
        }),
        (any::<u8>(), bytes(1, 64)).prop_map(|(e, data)| Payload::Cert(Cert {
            encoding: CertEncoding(e),
            data
        })),
        (any::<u8>(), bytes(0, 32)).prop_map(|(e, authority)| Payload::CertReq(CertReq {
            encoding: CertEncoding(e),
            authority
        })),
        bytes(1, 64).prop_map(|b| Payload::Hash(Hash(b))),
        bytes(1, 300).prop_map(|b| Payload::Signature(Signature(b))),
        bytes(1, 64).prop_map(|b| Payload::Nonce(Nonce(b))),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            bytes(0, 16),
            bytes(0, 16)
        )
            .prop_map(|(d, p, t, spi, data)| {
                Payload::Notification(Notification {
                    doi: Doi(d),
                    protocol_id: p,
                    notify_type: NotifyType(t),
                    spi,
                    data,
                })
            }),
        (any::<u32>(), any::<u8>(), 1u8..=16, 1usize..4)
            .prop_flat_map(|(d, p, size, n)| (
                Just(d),
                Just(p),
                Just(size),
                bytes(usize::from(size) * n, usize::from(size) * n)
            ))
            .prop_map(|(d, p, spi_size, spis)| Payload::Delete(Delete {
                doi: Doi(d),
                protocol_id: p,
                spi_size,
                spis
            })),
        bytes(1, 32).prop_map(|b| Payload::VendorId(VendorId(b))),
        sa_kek().prop_map(Payload::SaKek),
        sa_tek().prop_map(Payload::SaTek),
        vec(key_packet(), 0..4).prop_map(|packets| Payload::KeyDownload(KeyDownload { packets })),
        any::<u32>().prop_map(|s| Payload::Seq(Seq(s))),
        gap().prop_map(Payload::Gap),
        unknown_payload().prop_map(Payload::Unknown),
    ]
}

fn roundtrip_payload(p: &Payload<'_>, layout: SaLayout) {
    let mut body = Vec::new();
    p.emit_body(&mut body).unwrap();
    let back = Payload::parse(p.payload_type(), &body, layout).unwrap();
    assert_eq!(&back, p);
}

fn header(exchange: ExchangeType) -> impl Strategy<Value = IsakmpHeader> {
    (
        any::<[u8; 8]>(),
        any::<[u8; 8]>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(move |(i, r, flags, message_id)| IsakmpHeader {
            initiator_cookie: i,
            responder_cookie: r,
            next_payload: PayloadType::NONE,
            exchange_type: exchange,
            flags: Flags(flags).without(Flags::ENCRYPTION),
            message_id,
            length: 0,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn payload_roundtrip(p in common_payload()) {
        roundtrip_payload(&p, SaLayout::Gdoi);
    }

    #[test]
    fn gdoi_sa_roundtrip(sa in gdoi_sa()) {
        roundtrip_payload(&Payload::Sa(sa), SaLayout::Gdoi);
    }

    #[test]
    fn phase1_sa_roundtrip(sa in phase1_sa()) {
        roundtrip_payload(&Payload::Sa(sa), SaLayout::Phase1);
    }

    #[test]
    fn gdoi_message_roundtrip(
        h in prop_oneof![
            header(ExchangeType::GROUPKEY_PULL),
            header(ExchangeType::GROUPKEY_PUSH),
            header(ExchangeType::GROUPKEY_PUSH_ACK),
            header(ExchangeType::INFORMATIONAL),
        ],
        payloads in vec(prop_oneof![4 => common_payload(), 1 => gdoi_sa().prop_map(Payload::Sa)], 0..6),
    ) {
        let msg = Message { header: h, body: Body::Payloads(payloads) };
        let bytes = msg.to_vec().unwrap();
        let back = Message::parse(&bytes).unwrap();
        prop_assert_eq!(back.payloads(), msg.payloads());
        prop_assert_eq!(back.header.message_id, h.message_id);
        prop_assert_eq!(back.header.length as usize, bytes.len());
        prop_assert_eq!(back.to_vec().unwrap(), bytes);
    }

    #[test]
    fn phase1_message_roundtrip(
        h in header(ExchangeType::IDENTITY_PROTECTION),
        payloads in vec(prop_oneof![4 => common_payload(), 1 => phase1_sa().prop_map(Payload::Sa)], 0..6),
    ) {
        let msg = Message { header: h, body: Body::Payloads(payloads) };
        let bytes = msg.to_vec().unwrap();
        let back = Message::parse(&bytes).unwrap();
        prop_assert_eq!(back.payloads(), msg.payloads());
        prop_assert_eq!(back.to_vec().unwrap(), bytes);
    }

    #[test]
    fn encrypted_message_roundtrip(h in header(ExchangeType::GROUPKEY_PUSH), ct in bytes(1, 200), first in any::<u8>()) {
        let mut h = h;
        h.flags = h.flags.with(Flags::ENCRYPTION);
        h.next_payload = PayloadType(first);
        let msg = Message { header: h, body: Body::Encrypted(ct) };
        let bytes = msg.to_vec().unwrap();
        let back = Message::parse(&bytes).unwrap();
        prop_assert_eq!(back.body, Body::Encrypted(ct));
        prop_assert_eq!(back.header.next_payload, PayloadType(first));
    }

    #[test]
    fn d3p_roundtrip(nh in any::<u8>(), ts in any::<u64>(), inner in bytes(1, 64)) {
        let h = D3pHeader { next_header: IpProtocol(nh), d3p_type: D3pType::POSIX_TIME_MSEC, timestamp_ms: ts };
        let mut out = Vec::new();
        h.emit(&mut out);
        out.extend_from_slice(inner);
        let (back, rest) = D3pHeader::parse(&out).unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(rest, inner);
    }

    #[test]
    fn arbitrary_octets_never_panic(data in vec(any::<u8>(), 0..512), t in any::<u8>()) {
        let _ = Message::parse(&data);
        for layout in [SaLayout::Phase1, SaLayout::Gdoi] {
            if let Ok(p) = Payload::parse(PayloadType(t), &data, layout) {
                // whatever parses emits and parses back to itself
                roundtrip_payload(&p, layout);
            }
            let _ = parse_padded_chain(PayloadType(t), &data, 16, layout);
        }
        let _ = D3pHeader::parse(&data);
    }
}
