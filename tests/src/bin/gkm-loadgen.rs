//! Registration load generator for `scripts/bench-register`: drives N
//! group-member engines (gkm-proto, the same code as gkm-agent) against a
//! real gkm-server over loopback UDP from one socket, keeping a window of
//! registrations in flight, and measures the crypto primitives one
//! registration costs the key server in the same run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gkm_proto::crypto::{
    certificates_from_pem, CbcCipher, CertificateAuthority, DhBackend, DhGroup, Prf, RsaSigner,
};
use gkm_proto::gm::{CertAuth, GmAuth, GmConfig, GmEvent, GmIdentity, GroupMember};
use rand_core::OsRng;
use zeroize::Zeroizing;

struct Args {
    ks: SocketAddr,
    count: usize,
    window: usize,
    group: u32,
    psk: Option<String>,
    pki: Option<(String, String, String)>,
    server_pid: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        ks: "127.0.0.1:8848".parse().unwrap(),
        count: 1000,
        window: 256,
        group: 1234,
        psk: None,
        pki: None,
        server_pid: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--ks" => a.ks = val.parse().expect("--ks ADDR:PORT"),
            "--count" => a.count = val.parse().expect("--count N"),
            "--window" => a.window = val.parse().expect("--window N"),
            "--group" => a.group = val.parse().expect("--group N"),
            "--psk" => a.psk = Some(val),
            "--pki" => {
                let p: Vec<&str> = val.split(',').collect();
                a.pki = Some((p[0].into(), p[1].into(), p[2].into()));
            }
            "--server-pid" => a.server_pid = Some(val.parse().expect("--server-pid PID")),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    a
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// CPU time (user + system) of a process in seconds, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..(n / 10).max(1) {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Microseconds of crypto the KS spends on one registration, by primitive.
fn primitives(cert: bool) -> Vec<(&'static str, f64, f64)> {
    let mut rng = OsRng;
    let (_, peer) = DhGroup::Ecp256.generate(&mut rng, DhBackend::Ring);
    let ecdh = per_op(2000, || {
        let (k, _) = DhGroup::Ecp256.generate(&mut rng, DhBackend::Ring);
        std::hint::black_box(k.shared(&peer).unwrap());
    });
    let key = [7u8; 32];
    let msg = [1u8; 300];
    let hmac = per_op(20_000, || {
        std::hint::black_box(Prf::HmacSha256.prf(&key, &[&msg]));
    });
    let block = [3u8; 320];
    let aes = per_op(20_000, || {
        std::hint::black_box(CbcCipher::Aes256.encrypt(&key, &[0; 16], &block).unwrap());
    });
    // KS per registration: 1 ECDH key pair + 1 shared secret; SKEYID, _d, _a, _e,
    // key expansion (1), HASH_I, HASH_R, HASH(1)-(4): ~12 HMACs; 8 CBC
    // operations of about 300 octets (MM5, MM6, PULL 1-4 decrypt/encrypt... plus IV hashes).
    let mut v = vec![
        ("ECDH P-256 (keygen + shared)", ecdh, 1.0),
        ("HMAC-SHA-256 (300 B)", hmac, 12.0),
        ("AES-256-CBC (320 B)", aes, 8.0),
    ];
    if cert {
        let signer =
            RsaSigner::from_pkcs8_pem(&std::fs::read_to_string("proto/tests/data/ks.key").unwrap())
                .unwrap();
        let hash = [9u8; 32];
        let sign = per_op(200, || {
            std::hint::black_box(signer.sign(&mut rng, &hash).unwrap());
        });
        let ca = CertificateAuthority::new(
            &certificates_from_pem(&std::fs::read_to_string("proto/tests/data/ca.pem").unwrap())
                .unwrap(),
        )
        .unwrap();
        let gm_cert =
            certificates_from_pem(&std::fs::read_to_string("proto/tests/data/gm.pem").unwrap())
                .unwrap()
                .remove(0);
        let sig = signer.sign(&mut rng, &hash).unwrap();
        let ks_cert =
            certificates_from_pem(&std::fs::read_to_string("proto/tests/data/ks.pem").unwrap())
                .unwrap()
                .remove(0);
        let vk = ca.verify(&ks_cert, now_ms() / 1000).unwrap().key;
        let verify = per_op(2000, || {
            let v = ca.verify(&gm_cert, now_ms() / 1000).unwrap();
            std::hint::black_box(v);
            std::hint::black_box(vk.verify(&hash, &sig).is_ok());
        });
        v.push(("RSA-2048 sign (PKCS#1 v1.5)", sign, 1.0));
        v.push(("X.509 chain check + RSA verify", verify, 1.0));
    }
    v
}

fn main() {
    let a = args();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut gms: HashMap<[u8; 8], usize> = HashMap::new();
    let mut engines: Vec<Option<GroupMember>> = Vec::with_capacity(a.count);
    let mut started = 0usize;
    let mut done = 0usize;
    let mut retries = 0usize;
    let mut in_flight: Vec<usize> = Vec::new();
    let make = |i: usize| -> GroupMember {
        let auth = match (&a.psk, &a.pki) {
            (Some(k), _) => GmAuth::Psk(Zeroizing::new(k.clone().into_bytes())),
            (None, Some((ca, cert, key))) => GmAuth::Certificate(Box::new(CertAuth {
                cert: certificates_from_pem(&std::fs::read_to_string(cert).unwrap())
                    .unwrap()
                    .remove(0),
                key: RsaSigner::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap(),
                ca: CertificateAuthority::new(
                    &certificates_from_pem(&std::fs::read_to_string(ca).unwrap()).unwrap(),
                )
                .unwrap(),
            })),
            _ => panic!("--psk or --pki"),
        };
        let identity = match &a.pki {
            Some((_, cert, _)) => {
                let der = certificates_from_pem(&std::fs::read_to_string(cert).unwrap())
                    .unwrap()
                    .remove(0);
                let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
                GmIdentity::Dn(c.subject().as_raw().to_vec())
            }
            None => GmIdentity::Ipv4(Ipv4Addr::from(0x0a00_0000 + i as u32)),
        };
        GroupMember::new(
            GmConfig {
                key_servers: vec![a.ks],
                group_id: a.group,
                identity,
                auth,
                phase1_life_secs: 86_400,
                sender_ids: 0,
                reregister_before_ms: 60_000,
                retransmit_initial_ms: 2000,
                max_transmissions: 5,
                initial_contact: false,
                dh_backend: gkm_proto::crypto::DhBackend::Ring,
            },
            Box::new(OsRng),
        )
    };
    let cpu0 = a.server_pid.map(cpu_secs);
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut last_tick = Instant::now();
    while done < a.count && t0.elapsed() < Duration::from_secs(300) {
        while in_flight.len() < a.window && started < a.count {
            let mut g = make(started);
            g.handle_timeout(now_ms());
            while let Some(t) = g.poll_transmit() {
                gms.insert(t.payload[..8].try_into().unwrap(), started);
                out.push((t.to, t.payload));
            }
            engines.push(Some(g));
            in_flight.push(started);
            started += 1;
        }
        for (to, p) in out.drain(..) {
            let _ = socket.send_to(&p, to);
        }
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Some(ck) = buf.get(..8) else { continue };
            let Some(&i) = gms.get(ck) else { continue };
            let Some(g) = engines[i].as_mut() else {
                continue;
            };
            g.handle_datagram(now_ms(), from, &buf[..n]);
            while let Some(t) = g.poll_transmit() {
                gms.insert(t.payload[..8].try_into().unwrap(), i);
                out.push((t.to, t.payload));
            }
            let mut finished = false;
            while let Some(e) = g.poll_event() {
                match e {
                    GmEvent::Registered { .. } => {
                        done += 1;
                        finished = true;
                    }
                    GmEvent::Failed { .. } => retries += 1,
                }
            }
            if finished {
                engines[i] = None;
                in_flight.retain(|x| *x != i);
            }
            for (to, p) in out.drain(..) {
                let _ = socket.send_to(&p, to);
            }
            if in_flight.len() < a.window / 2 {
                break;
            }
        }
        if last_tick.elapsed() > Duration::from_millis(100) {
            last_tick = Instant::now();
            let now = now_ms();
            for &i in &in_flight {
                if let Some(g) = engines[i].as_mut() {
                    g.handle_timeout(now);
                    while let Some(t) = g.poll_transmit() {
                        gms.insert(t.payload[..8].try_into().unwrap(), i);
                        out.push((t.to, t.payload));
                    }
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = done as f64 / secs;
    let mode = if a.pki.is_some() {
        "certificates, group 19"
    } else {
        "PSK, group 19"
    };
    println!("registrations: {done}/{} in {secs:.2} s = {rate:.0} reg/s ({mode}, window {}, {retries} attempts retried)", a.count, a.window);
    let prims = primitives(a.pki.is_some());
    let floor: f64 = prims.iter().map(|(_, us, n)| us * n).sum();
    for (name, us, n) in &prims {
        println!(
            "  primitive {name:<34} {us:>9.2} us x {n:>4} = {:>9.2} us",
            us * n
        );
    }
    println!(
        "  crypto floor per registration (KS side): {floor:.1} us = {:.0} reg/s per core",
        1e6 / floor
    );
    if let (Some(pid), Some(c0)) = (a.server_pid, cpu0) {
        let cpu = cpu_secs(pid) - c0;
        let per = cpu * 1e6 / done.max(1) as f64;
        println!("  server CPU per registration: {per:.1} us (engine + I/O overhead over the crypto floor: {:+.0}%)", (per / floor - 1.0) * 100.0);
    }
    if done < a.count {
        std::process::exit(1);
    }
}
