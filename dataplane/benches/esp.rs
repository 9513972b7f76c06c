//! Per-packet cost of the dataplane next to the AEAD alone (issue 7): for
//! inner packets of 64, 512 and 1400 octets, `Tunnel::encapsulate` (outer
//! header, D3P stamp, ESP framing, AES-256-GCM; in place, as the agent
//! does it) and `decapsulate`, and
//! ring's AES-256-GCM sealing the same number of octets in place (the
//! limit: everything above it is the dataplane's own overhead). Then the
//! same two with AES-256-CBC and HMAC-SHA-256-128 or HMAC-SHA1-96 (issue
//! 18: TEKs for peers without GCM), named `cbc_sha256_*` and `cbc_sha1_*`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gkm_dataplane::esp::{EspKeys, IvSource};
use gkm_dataplane::tunnel::{Tunnel, HEADROOM, TAILROOM};
use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const T0: u64 = 1_700_000_000_000;

fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 1, 0, 2]);
    p
}

const GCM: EspKeys<'static> = EspKeys {
    transform: EspTransformId::AES_GCM_16,
    auth: None,
    algorithm_key: &[0x42; 36],
    integrity_key: &[],
};

const CBC_SHA256: EspKeys<'static> = EspKeys {
    transform: EspTransformId::AES_CBC,
    auth: Some(AuthAlgorithm::HMAC_SHA2_256),
    algorithm_key: &[0x42; 32],
    integrity_key: &[0x43; 32],
};

const CBC_SHA1: EspKeys<'static> = EspKeys {
    transform: EspTransformId::AES_CBC,
    auth: Some(AuthAlgorithm::HMAC_SHA1),
    algorithm_key: &[0x42; 32],
    integrity_key: &[0x43; 20],
};

fn tunnel(sid: u32, keys: &EspKeys<'_>) -> Tunnel {
    let mut t = Tunnel::default();
    t.set_d3p_window(Some(1000));
    t.install(
        0x1234_5678,
        keys,
        T0,
        u64::MAX,
        IvSource::from_sid(sid, 16).unwrap(),
    )
    .unwrap();
    t
}

fn bench(c: &mut Criterion) {
    for len in [64usize, 512, 1400] {
        let mut g = c.benchmark_group(format!("{len}B"));
        g.throughput(Throughput::Bytes(len as u64));
        let pkt = inner(len);
        for (name, keys) in [
            ("", GCM),
            ("cbc_sha256_", CBC_SHA256),
            ("cbc_sha1_", CBC_SHA1),
        ] {
            let mut tx = tunnel(1, &keys);
            // In place, as the agent does it: the inner packet sits in a
            // buffer with headroom and tailroom (the TUN read buffer), reused
            // for every packet; only its IPv4 header is put back each time
            // (sealing leaves ciphertext there).
            let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
            buf[HEADROOM..HEADROOM + len].copy_from_slice(&pkt);
            g.bench_function(format!("{name}encapsulate"), |b| {
                b.iter(|| {
                    buf[HEADROOM..HEADROOM + 20].copy_from_slice(&pkt[..20]);
                    tx.encapsulate_in_place(T0, black_box(&mut buf), HEADROOM..HEADROOM + len)
                        .unwrap()
                })
            });
            let mut rx = tunnel(2, &keys);
            let mut sealed = Vec::with_capacity(2048);
            tx.encapsulate(T0, &pkt, &mut sealed).unwrap();
            // Opening destroys the ciphertext: each packet is a fresh copy,
            // made outside the timing.
            g.bench_function(format!("{name}decapsulate"), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| rx.decapsulate(T0, black_box(buf)).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
        let mut raw = pkt.clone();
        g.bench_function("ring_aes256gcm_seal", |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([7; 12]),
                    Aad::from([0u8; 8]),
                    black_box(&mut raw),
                )
                .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
