//! Parse and emit of a realistic GROUPKEY-PUSH body (the decrypted payload
//! chain): SEQ; SA with SA KEK, GAP and 2 SA TEKs; KD with 3 key packets
//! (2 TEK, 1 KEK); a 256-octet SIG. Target (issue 2): at most 1 µs each.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gkm_wire::consts::*;
use gkm_wire::payload::*;
use gkm_wire::{Identity, Payload};

fn push_body<'a>(keys: &'a [u8], spki: &'a [u8], sig: &'a [u8]) -> Vec<Payload<'a>> {
    let net =
        |a: u8| Identity::Ipv4Subnet(Ipv4Addr::new(10, a, 0, 0), Ipv4Addr::new(255, 255, 0, 0));
    let tek = |spi: u32, a: u8| SaTek {
        protocol_id: GdoiProtocol::IPSEC_ESP,
        body: TekBody::Ipsec(IpsecTek {
            protocol: 0,
            src: TrafficSelector {
                identity: net(a),
                port: 0,
            },
            dst: TrafficSelector {
                identity: net(a),
                port: 0,
            },
            transform_id: EspTransformId::AES_GCM_16,
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
    };
    vec![
        Payload::Seq(Seq(42)),
        Payload::Sa(Sa::Gdoi(GdoiSa {
            situation: 0,
            kek: Some(fixtures::sa_kek(Ipv4Addr::new(10, 0, 0, 1), [7; 16])),
            gap: Some(Gap {
                activation_time_delay: Some(3570),
                deactivation_time_delay: Some(60),
                d3p_type: Some(D3pType::POSIX_TIME_MSEC),
                d3p_window_msec: Some(5000),
                ..Gap::default()
            }),
            teks: vec![tek(0x1000_0001, 1), tek(0x1000_0002, 2)],
            unknown: vec![],
        })),
        Payload::KeyDownload(KeyDownload {
            packets: vec![
                KeyPacket::Tek(TekKeyPacket {
                    spi: 0x1000_0001,
                    algorithm_key: Some(&keys[..36]),
                    ..TekKeyPacket::default()
                }),
                KeyPacket::Tek(TekKeyPacket {
                    spi: 0x1000_0002,
                    algorithm_key: Some(&keys[36..72]),
                    ..TekKeyPacket::default()
                }),
                KeyPacket::Kek(KekKeyPacket {
                    spi: [7; 16],
                    algorithm_key: Some(&keys[72..104]),
                    sig_algorithm_key: Some(spki),
                    ..KekKeyPacket::default()
                }),
            ],
        }),
        Payload::Signature(Signature(sig)),
    ]
}

fn bench(c: &mut Criterion) {
    let keys = [0x5au8; 104];
    let spki = [0x30u8; 294]; // size of an RSA-2048 SubjectPublicKeyInfo
    let sig = [0x6bu8; 256];
    let payloads = push_body(&keys, &spki, &sig);
    let mut body = Vec::with_capacity(2048);
    emit_chain(&payloads, &mut body).unwrap();

    let mut g = c.benchmark_group("groupkey_push_body");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| parse_chain(PayloadType::SEQ, black_box(&body), SaLayout::Gdoi).unwrap())
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("emit", |b| {
        b.iter(|| {
            out.clear();
            emit_chain(black_box(&payloads), &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
    println!("groupkey_push_body: {} octets", body.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
