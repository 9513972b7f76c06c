//! Registration load generator for `scripts/bench-register`: drives N
//! group-member engines (gkm-proto, the same code as gkm-agent) against a
//! real gkm-server over loopback UDP from 2 source addresses, keeping a window of
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

/// The key server's batched socket I/O (recvmmsg, sendmmsg), the same
/// code: the load generator then spends as few system calls per GM as the
/// key server does, and leaves the shared cores to it.
#[allow(dead_code)]
#[path = "../../../server/src/udp.rs"]
mod udp;
use std::time::{Duration, Instant};

use gkm_model::clock::unix_ms as now_ms;
use gkm_proto::crypto::{
    certificates_from_pem, CbcCipher, CertificateAuthority, DhBackend, DhGroup, Phase1Signer, Prf,
    RsaSigner,
};
use gkm_proto::gm::{CertAuth, GmAuth, GmConfig, GmEvent, GmIdentity, GroupMember};
use rand_chacha::rand_core::SeedableRng;
use rand_core::OsRng;
use zeroize::Zeroizing;

struct Args {
    /// The key servers: GM i registers with the (i mod n)-th.
    ks: Vec<SocketAddr>,
    count: usize,
    window: usize,
    group: u32,
    psk: Option<String>,
    pki: Option<(String, String, String)>,
    server_pid: Option<u32>,
    /// After registering, ask the server for a rekey and answer it.
    rekey: bool,
    /// The server's log, where the rekey's outcome is read.
    server_log: Option<String>,
    /// With --rekey: wait for this file to exist before asking for the
    /// rekey (the caller's signal that the GM database is complete).
    rekey_when: Option<String>,
    sources: usize,
}

fn args() -> Args {
    let mut a = Args {
        ks: Vec::new(),
        count: 1000,
        window: 120,
        group: 1234,
        psk: None,
        pki: None,
        server_pid: None,
        rekey: false,
        server_log: None,
        rekey_when: None,
        sources: 2,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--ks" => a.ks.push(val.parse().expect("--ks ADDR:PORT")),
            "--rekey-when" => a.rekey_when = Some(val),
            "--count" => a.count = val.parse().expect("--count N"),
            "--window" => a.window = val.parse().expect("--window N"),
            "--group" => a.group = val.parse().expect("--group N"),
            "--psk" => a.psk = Some(val),
            "--pki" => {
                let p: Vec<&str> = val.split(',').collect();
                a.pki = Some((p[0].into(), p[1].into(), p[2].into()));
            }
            "--server-pid" => a.server_pid = Some(val.parse().expect("--server-pid PID")),
            "--server-log" => a.server_log = Some(val),
            "--sources" => a.sources = val.parse().expect("--sources N"),
            "--rekey" => {
                a.rekey = true;
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    if a.ks.is_empty() {
        a.ks.push("127.0.0.1:8848".parse().unwrap());
    }
    a
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
/// The key-server engine alone, without sockets or kernel: `n` PSK
/// registrations driven in memory, timing only the KS's calls. Returns
/// microseconds of KS engine time per registration.
fn ks_engine_only(n: u32) -> f64 {
    use gkm_proto::group::GroupKeys;
    use gkm_proto::ks::{
        Authorization, Credential, KeyServer, KsConfig, KsGroup, KsLimits, PskEntry,
    };
    let signer = RsaSigner::from_pkcs8_pem(
        &std::fs::read_to_string("proto/tests/data/ks-rekey.pem").unwrap(),
    )
    .unwrap();
    let spki = signer.public_spki_der().unwrap();
    let p = |s: &str| s.parse::<gkm_proto::group::Ipv4Prefix>().unwrap();
    let keys = GroupKeys::generate(
        &mut OsRng,
        1234,
        &[(p("10.1.0.0/16"), p("10.1.0.0/16"))],
        3600,
        Some(&gkm_proto::group::KekParams {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::UNSPECIFIED,
            port: 848,
            lifetime_secs: 86_400,
            cipher: gkm_proto::crypto::CbcCipher::Aes128,
            sig_algorithm: gkm_wire::consts::SigAlgorithm::RSA,
            sig_key_spki: spki,
            sig_key_bits: 2048,
        }),
    );
    let mut ks = KeyServer::new(
        KsConfig {
            address: Ipv4Addr::LOCALHOST,
            address_v6: None,
            groups: vec![KsGroup {
                name: "B".into(),
                keys,
                authorization: Authorization::default(),
                authentication: Default::default(),
                legacy_phase1: false,
                rekey: Default::default(),
                resume: None,
                d3p_window_ms: None,
            }],
            psks: vec![PskEntry {
                credential: Credential::Keyring(0),
                ranges: vec![p("0.0.0.0/0").into()],
                key: Zeroizing::new(b"k".to_vec()),
            }],
            ca: None,
            certificates: Vec::new(),
            asr9000: vec![],
            limits: KsLimits::default(),
            max_phase1_life_secs: 86_400,
            export_keys: false,
            dh_backend: DhBackend::Ring,
            rekey_signer: None,
            rekey_key_name: String::new(),
        },
        // as gkm-server does: ChaCha20 seeded from the OS
        Box::new(rand_chacha::ChaCha20Rng::from_rng(OsRng).unwrap()),
    );
    let ks_addr: SocketAddr = "127.0.0.1:848".parse().unwrap();
    let mut spent = Duration::ZERO;
    for i in 0..n {
        let from = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 848);
        let mut gm = GroupMember::new(
            GmConfig {
                key_servers: vec![ks_addr],
                ipsec_doi_key_servers: Vec::new(),
                legacy_phase1_key_servers: Vec::new(),
                phase1_suites: None,
                group_id: 1234,
                identity: GmIdentity::Ipv4(Ipv4Addr::from(0x0a00_0000 + i)),
                auth: GmAuth::Psk(Zeroizing::new(b"k".to_vec())),
                phase1_life_secs: 86_400,
                sender_ids: 0,
                reregister_before_ms: 60_000,
                retransmit_initial_ms: 2000,
                max_transmissions: 5,
                initial_contact: true,
                ack_address: None,
                multicast_ack_jitter_ms: 500,
                extra_vendor_ids: Vec::new(),
                dh_backend: DhBackend::Ring,
            },
            Box::new(OsRng),
        );
        let now = now_ms();
        gm.handle_timeout(now);
        while let Some(t) = gm.poll_transmit() {
            let start = Instant::now();
            ks.handle_datagram(now, from, &t.payload);
            let mut answers = Vec::new();
            while let Some(a) = ks.poll_transmit() {
                answers.push(a);
            }
            while ks.poll_event().is_some() {}
            spent += start.elapsed();
            for a in answers {
                gm.handle_datagram(now, ks_addr, &a.payload);
            }
        }
        assert!(gm.is_registered());
    }
    spent.as_secs_f64() * 1e6 / f64::from(n)
}

/// The primitives one registration costs the key server, timed here;
/// with certificates, those of the GM's key kind (`pki`: CA, certificate
/// and key files).
fn primitives(pki: Option<&(String, String, String)>) -> Vec<(String, f64, f64)> {
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
    let sha = per_op(20_000, || {
        std::hint::black_box(Prf::HmacSha256.hash(&[&key, &[0u8; 4]]));
    });
    // What the KS computes per registration (ks.rs): one ECDH key pair and
    // shared secret (MM3); HMACs: SKEYID, SKEYID_d/_a/_e (MM3), HASH_I
    // check and HASH_R (MM5), HASH(1) check and HASH(2), HASH(3) check and
    // HASH(4) = 10; CBC: decrypt MM5, encrypt MM6, decrypt/encrypt PULL 1-4
    // = 6; plain hashes: the phase 1 IV and the PULL IV = 2.
    let mut v = vec![
        ("ECDH P-256 (keygen + shared)".to_owned(), ecdh, 1.0),
        ("HMAC-SHA-256 (300 B)".to_owned(), hmac, 10.0),
        ("AES-256-CBC (320 B)".to_owned(), aes, 6.0),
        ("SHA-256 (IV derivation)".to_owned(), sha, 2.0),
    ];
    if let Some((ca, cert, key)) = pki {
        let read = |p: &str| std::fs::read_to_string(p).unwrap();
        // The GM's key stands for the key server's own (the same kind: the
        // key server answers each method with its certificate of that kind).
        let signer = Phase1Signer::from_pkcs8_pem(&read(key)).unwrap();
        let kind = signer.kind().name();
        let hash = [9u8; 32];
        let sign = per_op(200, || {
            std::hint::black_box(signer.sign(&mut rng, &hash).unwrap());
        });
        let ca = CertificateAuthority::new(&certificates_from_pem(&read(ca)).unwrap()).unwrap();
        let gm_cert = certificates_from_pem(&read(cert)).unwrap().remove(0);
        let sig = signer.sign(&mut rng, &hash).unwrap();
        let verify = per_op(2000, || {
            let v = ca.verify(&gm_cert, now_ms() / 1000).unwrap();
            std::hint::black_box(v.key.verify(&hash, &sig).is_ok());
        });
        v.push((format!("{kind} sign (SIG_R)"), sign, 1.0));
        v.push((
            format!("X.509 chain check + {kind} verify (CERT, SIG_I)"),
            verify,
            1.0,
        ));
    }
    v
}

/// Receive buffer of each source socket: a rekey fan-out delivers one
/// push per simulated GM at once (real GMs each have their own buffer).
const SOURCE_RCVBUF: usize = 64 << 20;

/// Resident memory of a process in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let a = args();
    // Source sockets: GMs are spread over a few loopback addresses (the
    // fewer, the fewer empty receive calls per loop; the KS caps half-open
    // exchanges per source).
    let sockets: Vec<UdpSocket> = (0..a.sources)
        .map(|k| {
            let s = UdpSocket::bind((
                Ipv4Addr::new(127, 10, (k / 256) as u8, (k % 256) as u8 + 1),
                0,
            ))
            .unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(SOURCE_RCVBUF);
            s
        })
        .collect();
    let rss0 = a.server_pid.map(rss_bytes);
    let mut gms: HashMap<[u8; 8], usize> = HashMap::new();
    let mut engines: Vec<Option<GroupMember>> = Vec::with_capacity(a.count);
    let mut started = 0usize;
    let mut done = 0usize;
    let mut retries = 0usize;
    let mut in_flight = 0usize;
    let mut live: Vec<usize> = Vec::new();
    let pki = a.pki.as_ref().map(|(ca, cert, key)| {
        let cert = certificates_from_pem(&std::fs::read_to_string(cert).unwrap())
            .unwrap()
            .remove(0);
        let (_, c) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let dn = c.subject().as_raw().to_vec();
        let key = Phase1Signer::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
        let ca = CertificateAuthority::new(
            &certificates_from_pem(&std::fs::read_to_string(ca).unwrap()).unwrap(),
        )
        .unwrap();
        (cert, dn, key, ca)
    });
    let make = |i: usize| -> GroupMember {
        let (auth, identity) = match (&a.psk, &pki) {
            (Some(k), _) => (
                GmAuth::Psk(Zeroizing::new(k.clone().into_bytes())),
                GmIdentity::Ipv4(Ipv4Addr::from(0x0a00_0000 + i as u32)),
            ),
            (None, Some((cert, dn, key, ca))) => (
                GmAuth::Certificate(Box::new(CertAuth {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                })),
                GmIdentity::Dn(dn.clone()),
            ),
            _ => panic!("--psk or --pki"),
        };
        GroupMember::new(
            GmConfig {
                key_servers: vec![a.ks[i % a.ks.len()]],
                ipsec_doi_key_servers: Vec::new(),
                legacy_phase1_key_servers: Vec::new(),
                phase1_suites: None,
                group_id: a.group,
                identity,
                auth,
                phase1_life_secs: 86_400,
                sender_ids: 0,
                reregister_before_ms: 60_000,
                retransmit_initial_ms: 2000,
                max_transmissions: 5,
                initial_contact: false,
                ack_address: None,
                multicast_ack_jitter_ms: 500,
                extra_vendor_ids: Vec::new(),
                dh_backend: gkm_proto::crypto::DhBackend::Ring,
            },
            Box::new(OsRng),
        )
    };
    let send = |i: usize, g: &mut GroupMember, gms: &mut HashMap<[u8; 8], usize>| {
        while let Some(t) = g.poll_transmit() {
            gms.insert(t.payload[..8].try_into().unwrap(), i);
            let _ = sockets[i % sockets.len()].send_to(&t.payload, t.to);
        }
    };
    let cpu0 = a.server_pid.map(cpu_secs);
    let self_cpu0 = cpu_secs(std::process::id());
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut last_tick = Instant::now();
    // Five minutes, or more for a count that needs it (1,000 a second).
    let limit = Duration::from_secs(300.max(a.count as u64 / 1000));
    while done < a.count && t0.elapsed() < limit {
        // Ramp up in small steps so bursts do not overflow socket buffers.
        let mut ramp = 0;
        while in_flight < a.window && started < a.count && ramp < 8 {
            ramp += 1;
            let mut g = make(started);
            g.handle_timeout(now_ms());
            send(started, &mut g, &mut gms);
            engines.push(Some(g));
            live.push(started);
            in_flight += 1;
            started += 1;
        }
        let mut idle = true;
        for sock in &sockets {
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                idle = false;
                let Some(&i) = buf.get(..8).and_then(|ck| gms.get(ck)) else {
                    continue;
                };
                let Some(g) = engines[i].as_mut() else {
                    continue;
                };
                g.handle_datagram(now_ms(), from, &buf[..n]);
                send(i, g, &mut gms);
                let mut finished = false;
                while let Some(e) = g.poll_event() {
                    match e {
                        GmEvent::Registered { .. } => finished = true,
                        GmEvent::AttemptFailed { .. } => retries += 1,
                        GmEvent::Rekeyed { .. } | GmEvent::PushRejected(_) => {}
                    }
                }
                if finished {
                    done += 1;
                    in_flight -= 1;
                    // With --rekey, GM 0's engine stays: it checks each push in full.
                    if !(a.rekey && i == 0) {
                        engines[i] = None;
                    }
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(50));
        }
        if last_tick.elapsed() > Duration::from_millis(100) {
            last_tick = Instant::now();
            let now = now_ms();
            live.retain(|i| engines[*i].is_some());
            for &i in &live {
                if let Some(g) = engines[i].as_mut() {
                    g.handle_timeout(now);
                    send(i, g, &mut gms);
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
    if a.rekey {
        let reference = engines
            .first_mut()
            .and_then(Option::take)
            .expect("GM 0 registered");
        let pid = a.server_pid.expect("--rekey needs --server-pid");
        if let Some(go) = &a.rekey_when {
            let waited = Instant::now();
            while !std::path::Path::new(go).exists() {
                assert!(waited.elapsed() < limit, "{go} never came");
                // Sockets drained meanwhile (the key servers' traffic).
                for sock in &sockets {
                    while sock.recv_from(&mut buf).is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let (Some(r0), true) = (rss0, done > 0) {
            let grown = rss_bytes(pid).saturating_sub(r0);
            println!(
                "  KS memory: {:.0} bytes per registered GM (RSS growth over {done} GMs: {:.1} MiB; phase 1 SA + GM record + ACK state)",
                grown as f64 / done as f64,
                grown as f64 / (1 << 20) as f64
            );
        }
        rekey_fanout(&a, &sockets, &reference, pid);
        return;
    }
    let prims = primitives(a.pki.as_ref());
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
    if a.pki.is_none() {
        let engine = ks_engine_only(2000);
        println!("  KS engine alone (in memory, no sockets): {engine:.1} us per registration = {:+.0}% over the crypto floor", (engine / floor - 1.0) * 100.0);
    }
    if let (Some(pid), Some(c0)) = (a.server_pid, cpu0) {
        let cpu = cpu_secs(pid) - c0;
        let per = cpu * 1e6 / done.max(1) as f64;
        println!("  server process CPU per registration: {per:.1} us (engine + UDP syscalls + scheduling: {:+.0}% over the crypto floor)", (per / floor - 1.0) * 100.0);
    }
    let own = (cpu_secs(std::process::id()) - self_cpu0) * 1e6 / done.max(1) as f64;
    println!("  load generator CPU per registration (GM side, same engine): {own:.1} us");
    if done < a.count {
        std::process::exit(1);
    }
}

/// Asks the server (SIGUSR1) for a rekey and answers it for every GM: each
/// distinct push datagram is checked in full once (decrypted under the
/// KEK, signature verified, SEQ checked) by GM 0's engine state, as every
/// GM would on its own CPU; each GM's ACK is then built and sent
/// individually. The time reported is the server's, from preparing the
/// rekey to the last ACK recorded, beside the floor: sending as many
/// datagrams of the push's size from one socket.
fn rekey_fanout(a: &Args, sockets: &[UdpSocket], reference: &GroupMember, pid: u32) {
    use gkm_proto::ack::{seal_rfc8263_ack, seal_unicast_ack};
    use gkm_proto::push::open_push;
    use std::collections::VecDeque;
    let n = a.count;
    let group = reference.group().expect("registered");
    let kek = group.kek.clone().expect("KEK");
    let verifier = group.verifier().expect("rekey-signing key").clone();
    let last_seq = group.last_seq;
    let ack_requested = group.ack_requested;
    let log = a.server_log.clone().expect("--rekey needs --server-log");
    // GM i listens on socket i % S; each push datagram to a socket is taken
    // by the next GM of that socket that has not had this rekey.
    let mut waiting: Vec<VecDeque<usize>> = vec![VecDeque::new(); sockets.len()];
    for i in 0..n {
        waiting[i % sockets.len()].push_back(i);
    }
    let gm_ip = |i: usize| Ipv4Addr::from(0x0a00_0000 + i as u32);
    let mut checked: HashMap<Vec<u8>, Option<u32>> = HashMap::new();
    let (mut pushes, mut acks, mut refused) = (0usize, 0usize, 0usize);
    let mut push_len = 0usize;
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -USR1 {pid}");
    let t0 = Instant::now();
    let mut outcome: Option<(f64, usize)> = None;
    let mut last_look = Instant::now();
    // The log is read from where the rekey began (it may be large).
    let mut log_at = std::fs::metadata(&log).map_or(0, |m| m.len());
    let mut text = String::new();
    let mut batch = udp::RecvBatch::default();
    let mut headers = udp::send_headers();
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(udp::BATCH);
    while outcome.is_none() && t0.elapsed() < Duration::from_secs(120) {
        let mut idle = true;
        for (k, sock) in sockets.iter().enumerate() {
            while batch.receive(sock, udp::BATCH).is_ok_and(|n| n > 0) {
                idle = false;
                for (from, d) in batch.datagrams() {
                    if d.get(18) != Some(&33) {
                        continue;
                    }
                    pushes += 1;
                    push_len = d.len();
                    let seq = match checked.get(d) {
                        Some(s) => *s,
                        None => *checked.entry(d.to_vec()).or_insert_with(|| {
                            open_push(d, &kek, &verifier, last_seq).ok().map(|o| o.seq)
                        }),
                    };
                    let Some(seq) = seq else {
                        refused += 1;
                        continue;
                    };
                    let gm = waiting[k]
                        .pop_front()
                        .or_else(|| waiting.iter_mut().find_map(VecDeque::pop_front));
                    let Some(gm) = gm else { continue };
                    let ack = match ack_requested {
                        Some(kind) => seal_rfc8263_ack(&kek, kind, seq, gm_ip(gm).into()),
                        None => seal_unicast_ack(&kek, seq, gm_ip(gm).into()),
                    }
                    .unwrap();
                    out.push((from, ack));
                }
                // Every ACK goes (a full send buffer is waited out, as a
                // GM's kernel would).
                let mut from = 0;
                while from < out.len() {
                    match udp::send(sock, &mut headers, &out[from..], false) {
                        Ok(n) => from += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::hint::spin_loop()
                        }
                        Err(e) => panic!("sending ACKs: {e}"),
                    }
                }
                acks += out.len();
                out.clear();
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(50));
        }
        if last_look.elapsed() > Duration::from_millis(20) {
            last_look = Instant::now();
            if let Ok(mut f) = std::fs::File::open(&log) {
                use std::io::{Read, Seek, SeekFrom};
                if f.seek(SeekFrom::Start(log_at)).is_ok() {
                    let mut more = Vec::new();
                    if f.read_to_end(&mut more).is_ok() {
                        log_at += more.len() as u64;
                        text.push_str(&String::from_utf8_lossy(&more));
                    }
                }
            }
            if let Some(l) = text
                .lines()
                .find(|l| l.contains("rekey acknowledged by every GM"))
            {
                let ms: f64 = field(l, "elapsed_ms").parse().unwrap();
                let gms: usize = field(l, "gms").parse().unwrap();
                outcome = Some((ms / 1000.0, gms));
            } else if let Some(l) = text.lines().find(|l| l.contains("rekey round closed")) {
                let acked: usize = field(l, "acked").parse().unwrap();
                outcome = Some((t0.elapsed().as_secs_f64(), acked));
            }
        }
    }
    let (secs, acked) = outcome.unwrap_or((t0.elapsed().as_secs_f64(), 0));
    // The floor: the same number of datagrams of the same size from one socket.
    let floor_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    floor_sock.set_nonblocking(true).unwrap();
    let _ = socket2::SockRef::from(&floor_sock).set_send_buffer_size(16 << 20);
    let dests: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let junk = vec![0u8; push_len.max(1)];
    let f0 = Instant::now();
    for i in 0..n {
        loop {
            match floor_sock.send_to(&junk, dests[i % dests.len()]) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => panic!("floor send: {e}"),
            }
        }
    }
    let floor = f0.elapsed().as_secs_f64();
    // What each GM spends on one push (here done once per distinct datagram).
    let gm_check_us = checked.keys().next().map_or(0.0, |d| {
        per_op(200, || {
            std::hint::black_box(open_push(d, &kek, &verifier, last_seq).is_ok());
        })
    });
    let ack_us = per_op(20_000, || {
        std::hint::black_box(seal_unicast_ack(&kek, 1, gm_ip(1).into()).unwrap());
    });
    println!("  per GM: checking the push {gm_check_us:.1} us (decrypt, signature, SEQ), building its ACK {ack_us:.1} us");
    println!(
        "  pushes received {pushes} ({push_len} octets), refused {refused}, distinct {}, ACKs sent {acks}",
        checked.len()
    );
    println!(
        "rekeyed {n} GMs: {:.1}% acked in {secs:.3} s (floor {floor:.3} s)",
        acked as f64 * 100.0 / n as f64
    );
    if acked < n {
        std::process::exit(1);
    }
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("0")
}
