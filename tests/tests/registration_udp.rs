//! Registration with the real binaries over loopback UDP: a key server and
//! three agents; and the same captured live and decrypted by tshark with
//! the server's key log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gkm_tests::procs::{binary, free_udp_port, fresh_dir, Proc};
use gkm_tests::tshark;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    write_config_at(dir, &format!("127.0.0.1:{port}"), "127.0.0.0/8")
}

/// The test configuration listening on `listen`, its PSK for `psk_range`.
fn write_config_at(dir: &Path, listen: &str, psk_range: &str) -> std::path::PathBuf {
    let p = dir.join("ks.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"{listen}\"\nks_address = \"127.0.0.1\"\n\
             [[psk]]\nprefix = \"{psk_range}\"\nkey = \"loopback-test-psk\"\n\
             [[group]]\nname = \"GET\"\ngroup_id = 4321\n\
             [[group.tek]]\nsrc = \"10.1.0.0/16\"\ndst = \"10.1.0.0/16\"\n\
             [[group.tek]]\nsrc = \"10.2.0.0/16\"\ndst = \"10.2.0.0/16\"\n"
        ),
    )
    .unwrap();
    p
}

fn start_server(dir: &Path, port: u16, key_log: bool) -> Proc {
    start_server_with(dir, write_config(dir, port), key_log)
}

fn start_server_with(dir: &Path, config: std::path::PathBuf, key_log: bool) -> Proc {
    let mut cmd = Command::new(binary("gkm-server", "gkm-server"));
    cmd.arg("--config")
        .arg(config)
        .args(["--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"));
    if key_log {
        cmd.arg("--key-log").arg(dir.join("keylog"));
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd, &dir.join("server.log"));
    p.wait_for("serving GDOI", Duration::from_secs(60));
    p
}

fn agent(dir: &Path, port: u16, i: u8) -> Proc {
    let mut cmd = Command::new(binary("gkm-agent", "gkm-agent"));
    cmd.args([
        "--key-server",
        &format!("127.0.0.1:{port}"),
        "--group",
        "4321",
        "--psk",
        "loopback-test-psk",
    ])
    .args([
        "--bind",
        &format!("127.0.2.{i}:0"),
        "--once",
        "--timeout",
        "20",
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    Proc::spawn(cmd, &dir.join(format!("agent-{i}.log")))
}

/// Issue 18 item 6, the first part: a GM over IPv6. The server listens on
/// [::1], its PSK covers ::1/128 only, and the agent binds [::1]: phase 1
/// (ID_IPV6_ADDR) and the PULL run over IPv6 and the GM database names
/// the GM by its IPv6 address (the refusal of a source outside the
/// prefix is `proto/tests/interop.rs`'s).
#[test]
fn an_agent_registers_over_ipv6_with_a_psk_for_its_ipv6_prefix() {
    let dir = tempdir("reg-ipv6");
    let port = free_udp_port();
    let config = write_config_at(&dir, &format!("[::1]:{port}"), "::1/128");
    let mut server = start_server_with(&dir, config, false);
    let run = |bind: &str, name: &str| {
        let mut cmd = Command::new(binary("gkm-agent", "gkm-agent"));
        cmd.args([
            "--key-server",
            &format!("[::1]:{port}"),
            "--group",
            "4321",
            "--psk",
            "loopback-test-psk",
            "--bind",
            bind,
            "--once",
            "--timeout",
            "10",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
        Proc::spawn(cmd, &dir.join(name))
    };
    let mut a = run("[::1]:0", "agent-v6.log");
    a.wait_for("registered group 4321", Duration::from_secs(30));
    server.wait_for("GM registered", Duration::from_secs(5));
    assert!(server.output().contains("::1"), "{}", server.output());
}

fn tempdir(name: &str) -> std::path::PathBuf {
    fresh_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

#[test]
fn server_and_three_agents_register_over_loopback() {
    let dir = tempdir("reg-loopback");
    let port = free_udp_port();
    let mut server = start_server(&dir, port, false);
    let mut agents: Vec<Proc> = (1..=3).map(|i| agent(&dir, port, i)).collect();
    for a in &mut agents {
        a.wait_for("registered group 4321", Duration::from_secs(30));
    }
    // All three hold the same keys: the same KEK SPI on every summary line.
    let keks: Vec<String> = agents
        .iter()
        .map(|a| {
            a.output()
                .lines()
                .find(|l| l.starts_with("registered"))
                .unwrap()
                .split("KEK ")
                .nth(1)
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(keks.windows(2).all(|w| w[0] == w[1]), "{keks:?}");
    assert!(agents[0].output().contains("2 TEK(s)"));
    server.wait_for("127.0.2.3", Duration::from_secs(5));
    assert_eq!(
        server.output().matches("GM registered").count(),
        3,
        "{}",
        server.output()
    );
    assert!(!dir.join("keylog").exists(), "no key log unless asked for");
}

#[test]
fn tshark_decrypts_a_captured_registration_with_the_key_log() {
    let dir = tempdir("reg-tshark");
    let port = free_udp_port();
    let capture = dir.join("registration.pcap");
    let mut cap = tshark::capture_loopback(port, &capture, &dir.join("tshark.log"));
    let mut server = start_server(&dir, port, true);
    let mut a = agent(&dir, port, 9);
    a.wait_for("registered group 4321", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    cap.interrupt();
    server.interrupt();

    assert!(
        server.output().contains("KEY LOG IS ON"),
        "the key log is announced"
    );
    let conf = dir.join("wireshark");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::copy(dir.join("keylog"), conf.join("ikev1_decryption_table")).unwrap();
    let esp = std::fs::read_to_string(dir.join("keylog.esp_sa")).unwrap();
    let mut want_spis: Vec<String> = esp
        .lines()
        .map(|l| {
            l.split(',')
                .nth(3)
                .unwrap()
                .trim_matches('"')
                .trim_start_matches("0x")
                .to_owned()
        })
        .collect();
    want_spis.sort();

    let fields = [
        "udp.dstport",
        "isakmp.exchangetype",
        "isakmp.nextpayload",
        "isakmp.sa.doi",
        "isakmp.sat.spi",
        "isakmp.kd.num_pkt",
        "isakmp.seq.seq",
        "_ws.malformed",
        "_ws.expert.message",
    ];
    let port_arg = format!("udp.port=={port},isakmp");
    // The agent offers phase 1 in GDOI's DOI (2) and the KS answers in
    // kind; Wireshark reads those SAs in the GDOI layout, learns no cipher
    // and decrypts nothing, so the decrypting pass reads a copy whose two
    // main mode SAs say DOI 1 (docs/WIRE.md, "tshark").
    let sent = tshark::fields_with(
        &capture,
        &["isakmp.sa.doi", "isakmp.sa.situation"],
        None,
        &["-d", &port_arg],
    );
    assert_eq!(
        sent[0],
        ["2", "00000000"],
        "main mode 1: GDOI's DOI, situation 0"
    );
    assert_eq!(sent[1], ["2", "00000000"], "main mode 2: answered in kind");
    let (rewritten, n) = tshark::phase1_doi_as_ipsec(&std::fs::read(&capture).unwrap());
    assert_eq!(n, 2, "the two main mode SA payloads");
    let capture = dir.join("registration-doi1.pcap");
    std::fs::write(&capture, rewritten).unwrap();
    let rows = tshark::fields_with(&capture, &fields, Some(&conf), &["-d", &port_arg]);
    assert_eq!(
        rows.len(),
        10,
        "6 main mode + 4 GROUPKEY-PULL messages: {rows:?}"
    );
    let exch: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(exch, ["2", "2", "2", "2", "2", "2", "32", "32", "32", "32"]);
    // Decrypted main mode 5 and 6 show ID (5) and HASH (8); without the key they could not.
    assert!(
        rows[4][2].split(',').any(|p| p == "5") && rows[4][2].split(',').any(|p| p == "8"),
        "{:?}",
        rows[4]
    );
    assert!(rows[5][2].split(',').any(|p| p == "5"), "{:?}", rows[5]);
    // PULL 2 carries the GDOI SA with both TEKs; PULL 4 the KD and SEQ.
    assert_eq!(rows[7][3], "2", "SA DOI in PULL message 2");
    let mut sat: Vec<String> = rows[7][4].split(',').map(|s| s.replace(':', "")).collect();
    sat.sort();
    assert_eq!(sat, want_spis, "SAT SPIs equal the key log's TEK SPIs");
    assert_eq!(rows[9][5], "3", "KD: 2 TEKs + KEK");
    assert_eq!(rows[9][6], "0", "SEQ");
    for r in &rows {
        assert!(
            r[7].is_empty() && r[8].is_empty(),
            "tshark flags a frame: {r:?}"
        );
    }
}

#[test]
fn bind_refusal_and_bad_options_are_clear_errors() {
    let dir = tempdir("reg-errors");
    // A port someone else holds.
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = Command::new(binary("gkm-server", "gkm-server"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process holds this port"), "{err}");
    // A bad config value names the field and starts nothing.
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[[group]]\nname='G'\ngroup_id=1\ntek_lifetime=5\n[[group.tek]]\nsrc='10.0.0.0/8'\ndst='10.0.0.0/8'\n").unwrap();
    let out = Command::new(binary("gkm-server", "gkm-server"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("group[0].tek_lifetime"));
    // The agent refuses a D3P window outside the seed's ranges when its options load.
    let out = Command::new(binary("gkm-agent", "gkm-agent"))
        .args([
            "--key-server",
            "127.0.0.1:9",
            "--group",
            "1",
            "--psk",
            "k",
            "--client-d3p-window",
            "sec 101",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1-100"), "{err}");
    // A bad agent configuration file: an unknown key, and a D3P window in the file.
    for (text, needle) in [
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\nbogus = 1\n",
            "bogus",
        ),
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\nclient_d3p_window = 'msec 99'\n",
            "100-10000",
        ),
        ("group = 1\npsk = 'k'\n", "key_servers"),
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\n[dataplane]\nprotect = ['10.0.0.0/33']\n",
            "protect \"10.0.0.0/33\"",
        ),
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\n[dataplane]\ntun = 'x'\n",
            "tun",
        ),
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\n[dataplane]\nqueues = 17\n",
            "dataplane queues 17: out of range 1-16",
        ),
        (
            "key_servers = ['127.0.0.1:9']\ngroup = 1\npsk = 'k'\n[dataplane]\nqueues = -1\n",
            "queues",
        ),
    ] {
        let f = dir.join("agent.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(binary("gkm-agent", "gkm-agent"))
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}
