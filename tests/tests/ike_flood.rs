//! A forged main-mode flood against the real server (issue 16, item 4):
//! 20,000 forged first messages from 400 loopback sources fill the
//! half-open cap, and more keep coming while a real agent registers,
//! which it does within 5 s; the server's log stays small (refusals are
//! written once per reason every 10 s, with the count of the rest).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use gkm_proto::gm::{GmAuth, GmConfig, GmIdentity, GroupMember};
use gkm_tests::procs::{binary, free_udp_port, fresh_dir, Proc};
use rand_chacha::rand_core::SeedableRng;
use zeroize::Zeroizing;

/// A well-formed main-mode message 1 (the GM engine's own), to replay
/// with fresh initiator cookies.
fn message_1(ks: SocketAddr) -> Vec<u8> {
    let mut gm = GroupMember::new(
        GmConfig {
            key_servers: vec![ks],
            ipsec_doi_key_servers: Vec::new(),
            legacy_phase1_key_servers: Vec::new(),
            phase1_suites: None,
            group_id: 4321,
            identity: GmIdentity::Ipv4(Ipv4Addr::new(127, 0, 0, 1)),
            auth: GmAuth::Psk(Zeroizing::new(b"x".to_vec())),
            phase1_life_secs: 86_400,
            sender_ids: 0,
            reregister_before_ms: 60_000,
            retransmit_initial_ms: 1000,
            max_transmissions: 4,
            initial_contact: true,
            dh_backend: gkm_proto::crypto::DhBackend::Ring,
            ack_address: None,
            multicast_ack_jitter_ms: 500,
            extra_vendor_ids: Vec::new(),
        },
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(7)),
    );
    gm.handle_timeout(1_800_000_000_000);
    gm.poll_transmit().unwrap().payload
}

/// Sends `n` forged message 1s from the 400 sockets, `per_sec` a second.
fn flood(sockets: &[UdpSocket], mm1: &[u8], ks: SocketAddr, from: u32, n: u32, per_sec: u32) {
    let start = Instant::now();
    let mut d = mm1.to_vec();
    for i in from..from + n {
        d[..4].copy_from_slice(&i.to_be_bytes());
        d[4] = 0xf1;
        let s = &sockets[(i % 400) as usize];
        let _ = s.send_to(&d, ks);
        let due = Duration::from_secs_f64(f64::from(i - from + 1) / f64::from(per_sec));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            if wait > Duration::from_millis(2) {
                std::thread::sleep(wait);
            }
        }
    }
}

#[test]
fn a_real_agent_registers_during_a_forged_message_1_flood() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "ike-flood");
    let udp = free_udp_port();
    let cfg = dir.join("ks.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{udp}\"\n\
             [[psk]]\nprefix = \"127.0.0.0/8\"\nkey = \"flood-test-psk\"\n\
             [[group]]\nname = \"GET\"\ngroup_id = 4321\n\
             [[group.tek]]\nsrc = \"10.1.0.0/16\"\ndst = \"10.1.0.0/16\"\n"
        ),
    )
    .unwrap();
    let mut server = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-server", "gkm-server"));
            c.arg("--config")
                .arg(&cfg)
                .args(["--http", "127.0.0.1:0", "--data-dir"])
                .arg(dir.join("data"))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1");
            c
        },
        &dir.join("server.log"),
    );
    server.wait_for("serving GDOI", Duration::from_secs(60));
    let ks: SocketAddr = format!("127.0.0.1:{udp}").parse().unwrap();
    let mm1 = message_1(ks);
    // 400 forged sources on loopback (127.30.x.y).
    let sockets: Vec<UdpSocket> = (0..400u32)
        .map(|i| {
            UdpSocket::bind((
                Ipv4Addr::new(127, 30, (i / 200) as u8, (i % 200 + 1) as u8),
                0,
            ))
            .unwrap()
        })
        .collect();
    // Fill the cap: 20,000 in about 0.7 s.
    flood(&sockets, &mm1, ks, 0, 20_000, 28_000);
    // Keep flooding while a real agent registers.
    let flooder = std::thread::spawn(move || flood(&sockets, &mm1, ks, 20_000, 60_000, 28_000));
    let start = Instant::now();
    let mut agent = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
            c.args([
                "--key-server",
                &ks.to_string(),
                "--group",
                "4321",
                "--psk",
                "flood-test-psk",
                "--bind",
                "127.0.8.1:0",
                "--once",
                "--timeout",
                "5",
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
            c
        },
        &dir.join("agent.log"),
    );
    let status = agent.child.wait().unwrap();
    let took = start.elapsed();
    assert!(
        status.success() && agent.output().contains("registered group 4321"),
        "the agent did not register within 5 s during the flood:\n{}",
        agent.output()
    );
    flooder.join().unwrap();
    eprintln!("registered in {took:?} during the flood");
    // The log: a refusal line per reason every 10 s, not one per datagram.
    std::thread::sleep(Duration::from_millis(300));
    let log = server.output();
    let refused = log.lines().filter(|l| l.contains(" refused ")).count();
    assert!(
        refused <= 20,
        "{refused} refusal lines:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(log.len() < 64 * 1024, "log grew to {} bytes", log.len());
    assert!(log.contains("HalfOpenEvicted"), "{log}");
}
