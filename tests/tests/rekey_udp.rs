//! Rekeying with the real binaries: unicast over loopback (rekey, ACKs,
//! rekey replace), crash safety (SIGKILL between persisting a SEQ and
//! sending it), and multicast rekeys between two network namespaces,
//! checked by tshark.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gkm_tests::procs::{binary, free_udp_port, fresh_dir, Proc};
use gkm_tests::tshark;

const WAIT: Duration = Duration::from_secs(30);

fn tempdir(name: &str) -> std::path::PathBuf {
    fresh_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn unicast_config(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("ks.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [[psk]]\nprefix = \"127.0.0.0/8\"\nkey = \"rekey-test-psk\"\n\
             [[group]]\nname = \"GET\"\ngroup_id = 4321\n\
             rekey.retransmit_interval = 1\n\
             [[group.tek]]\nsrc = \"10.1.0.0/16\"\ndst = \"10.1.0.0/16\"\n"
        ),
    )
    .unwrap();
    p
}

fn server(dir: &Path, config: &Path, crash_after_persist: bool, netns: Option<&str>) -> Proc {
    let bin = binary("gkm-server", "gkm-server");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--config")
        .arg(config)
        .args(["--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    if crash_after_persist {
        cmd.env("GKM_FAULT_PAUSE_AFTER_SEQ_PERSIST", "1");
    }
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("server"))
        })
        .count();
    let mut p = Proc::spawn(cmd, &dir.join(format!("server-{n}.log")));
    p.wait_for("serving GDOI", Duration::from_secs(60));
    p
}

fn agent(dir: &Path, ks: &str, bind: &str, netns: Option<&str>) -> Proc {
    let bin = binary("gkm-agent", "gkm-agent");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args([
        "--key-server",
        ks,
        "--group",
        "4321",
        "--psk",
        "rekey-test-psk",
        "--bind",
        bind,
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd, &dir.join(format!("agent-{bind}.log")));
    p.wait_for("registered group 4321", WAIT);
    p
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The SEQ and KEK SPI of every "rekeyed" line an agent printed.
fn rekeys(p: &Proc) -> Vec<(u32, String)> {
    p.output()
        .lines()
        .filter(|l| l.starts_with("rekeyed group"))
        .map(|l| {
            let seq = l
                .split("SEQ ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap()
                .parse()
                .unwrap();
            let kek = l.rsplit("KEK ").next().unwrap().to_owned();
            (seq, kek)
        })
        .collect()
}

#[test]
fn unicast_rekey_and_replace_reach_every_agent_and_are_acknowledged() {
    let dir = tempdir("rekey-unicast");
    let port = free_udp_port();
    let cfg = unicast_config(&dir, port);
    let mut ks = server(&dir, &cfg, false, None);
    let ks_addr = format!("127.0.0.1:{port}");
    let mut agents: Vec<Proc> = (1..=3)
        .map(|i| agent(&dir, &ks_addr, &format!("127.0.3.{i}:0"), None))
        .collect();
    signal(&ks, "-USR1");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 1,", WAIT);
    }
    ks.wait_for("rekey acknowledged by every GM", WAIT);
    let line = ks
        .output()
        .lines()
        .find(|l| l.contains("rekey acknowledged by every GM"))
        .unwrap()
        .to_owned();
    assert!(line.contains("gms=3") && line.contains("seq=1"), "{line}");
    // Rekey replace: new TEK and KEK; both older TEKs (the current one and
    // the one the first rekey replaced, still valid for receiving) deleted at once.
    signal(&ks, "-USR2");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 2,", WAIT);
        let out = a.output();
        let l = out.lines().find(|l| l.contains("SEQ 2,")).unwrap();
        assert!(l.contains("2 deleted, new KEK true"), "{l}");
    }
    // All three agents hold the same KEK after each rekey.
    let keks: Vec<Vec<(u32, String)>> = agents.iter().map(rekeys).collect();
    assert!(keks.windows(2).all(|w| w[0] == w[1]), "{keks:?}");
    ks.wait_for("seq=2 acked=3 missed=0 removed=0", WAIT);
    // The group state is in the store, sealed: its JSON (which names the
    // KEK SPI next to the keys) appears in neither the database nor its
    // write-ahead log.
    let mut db = std::fs::read(dir.join("data/gkm.db")).unwrap();
    db.extend(std::fs::read(dir.join("data/gkm.db-wal")).unwrap_or_default());
    assert!(
        contains(&db, b"group-state/4321"),
        "the state secret is there"
    );
    let kek_hex = keks[0][1].1.clone();
    assert!(!contains(&db, kek_hex.as_bytes()));
    assert!(!contains(&db, b"push_kek"));
}

/// Issue 18 item 6: one dual-stack socket (`[::]`) serves GMs of both
/// families; an IPv6 agent registers, takes unicast rekeys and
/// acknowledges them like the IPv4 ones, and IPv4 peers are seen as IPv4
/// (never `::ffff:a.b.c.d`, which their IPv4 PSK range would not cover).
#[test]
fn one_dual_stack_socket_rekeys_ipv4_and_ipv6_agents_and_takes_their_acks() {
    let dir = tempdir("rekey-dual-stack");
    let port = free_udp_port();
    let cfg = dir.join("ks.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"[::]:{port}\"\nks_address = \"127.0.0.1\"\nks_address_v6 = \"::1\"\n\
             [[psk]]\nprefix = \"127.0.0.0/8\"\nkey = \"rekey-test-psk\"\n\
             [[psk]]\nprefix = \"::1/128\"\nkey = \"rekey-test-psk\"\n\
             [[group]]\nname = \"GET\"\ngroup_id = 4321\n\
             rekey.retransmit_interval = 1\n\
             [[group.tek]]\nsrc = \"10.1.0.0/16\"\ndst = \"10.1.0.0/16\"\n"
        ),
    )
    .unwrap();
    let mut ks = server(&dir, &cfg, false, None);
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    let mut agents = vec![
        agent(&dir, &v4, "127.0.3.1:0", None),
        agent(&dir, &v4, "127.0.3.2:0", None),
        agent(&dir, &v6, "[::1]:0", None),
    ];
    signal(&ks, "-USR1");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 1,", WAIT);
    }
    ks.wait_for("rekey acknowledged by every GM", WAIT);
    let out = ks.output();
    let line = out
        .lines()
        .find(|l| l.contains("rekey acknowledged by every GM"))
        .unwrap();
    assert!(line.contains("gms=3") && line.contains("seq=1"), "{line}");
    let registered: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("GM registered"))
        .collect();
    assert_eq!(registered.len(), 3, "{out}");
    assert!(registered.iter().any(|l| l.contains("127.0.3.1")), "{out}");
    assert!(registered.iter().any(|l| l.contains("::1")), "{out}");
    assert!(!out.contains("::ffff:"), "IPv4 peers unmapped: {out}");
    // A second rekey: the IPv6 GM stays in step.
    signal(&ks, "-USR1");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 2,", WAIT);
    }
    ks.wait_for("seq=2 acked=3 missed=0 removed=0", WAIT);
}

#[test]
fn a_key_server_killed_between_persisting_a_seq_and_sending_never_reuses_it() {
    let dir = tempdir("rekey-crash");
    let port = free_udp_port();
    let cfg = unicast_config(&dir, port);
    let mut ks = server(&dir, &cfg, true, None);
    let ks_addr = format!("127.0.0.1:{port}");
    let mut agents: Vec<Proc> = (1..=3)
        .map(|i| agent(&dir, &ks_addr, &format!("127.0.4.{i}:0"), None))
        .collect();
    signal(&ks, "-USR1");
    ks.wait_for("fault point: paused after persisting SEQ 1", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    for a in &agents {
        assert!(rekeys(a).is_empty(), "nothing was sent: {}", a.output());
    }
    signal(&ks, "-KILL");
    let _ = ks.child.wait();
    // Restarted on the same data directory: keys, SEQ and GM database come back.
    let mut ks = server(&dir, &cfg, false, None);
    ks.wait_for("GM database restored", WAIT);
    assert!(
        ks.output().contains("resuming persisted keys"),
        "{}",
        ks.output()
    );
    signal(&ks, "-USR1");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 2,", WAIT);
        assert_eq!(
            a.output().matches("registered group").count(),
            1,
            "accepted without registering again: {}",
            a.output()
        );
        assert!(!a.output().contains("rekey refused"), "{}", a.output());
    }
    ks.wait_for("rekey acknowledged by every GM", WAIT);
}

/// Two network namespaces joined by a veth pair; removed on drop.
struct Netns {
    ks: String,
    gm: String,
}

impl Netns {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let n = Self {
            ks: format!("gkmks{tag}"),
            gm: format!("gkmgm{tag}"),
        };
        let (vk, vg) = (format!("vk{tag}"), format!("vg{tag}"));
        let run = gkm_tests::procs::ip;
        run(&["netns", "add", &n.ks]);
        run(&["netns", "add", &n.gm]);
        run(&["link", "add", &vk, "type", "veth", "peer", "name", &vg]);
        run(&["link", "set", &vk, "netns", &n.ks]);
        run(&["link", "set", &vg, "netns", &n.gm]);
        run(&["-n", &n.ks, "addr", "add", "10.99.0.1/24", "dev", &vk]);
        for a in ["10.99.0.2/24", "10.99.0.3/24", "10.99.0.4/24"] {
            run(&["-n", &n.gm, "addr", "add", a, "dev", &vg]);
        }
        for (ns, dev) in [(&n.ks, &vk), (&n.gm, &vg)] {
            run(&["-n", ns, "link", "set", "lo", "up"]);
            run(&["-n", ns, "link", "set", dev, "up"]);
            run(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.ks, &self.gm] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn multicast_rekeys_reach_agents_in_another_namespace() {
    // On an IPv4 socket, then on the default dual-stack one ([::]): the
    // rekey leaves as IPv4 multicast with the group's TTL either way.
    multicast_rekeys_with("10.99.0.1:848", "rekey-multicast");
    multicast_rekeys_with("[::]:848", "rekey-multicast-dual-stack");
}

fn multicast_rekeys_with(listen: &str, name: &str) {
    let dir = tempdir(name);
    let net = Netns::new();
    let cfg = dir.join("ks.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"{listen}\"\nks_address = \"10.99.0.1\"\n\
             [[psk]]\nprefix = \"10.99.0.0/24\"\nkey = \"rekey-test-psk\"\n\
             [[group]]\nname = \"GET\"\ngroup_id = 4321\nrekey_address = \"239.1.2.3\"\n\
             rekey.multicast_port = 8848\nrekey.multicast_ttl = 2\n\
             [[group.tek]]\nsrc = \"10.1.0.0/16\"\ndst = \"10.1.0.0/16\"\n"
        ),
    )
    .unwrap();
    let mut ks = server(&dir, &cfg, false, Some(&net.ks));
    let mut agents: Vec<Proc> = (2..=4)
        .map(|i| {
            agent(
                &dir,
                "10.99.0.1:848",
                &format!("10.99.0.{i}:0"),
                Some(&net.gm),
            )
        })
        .collect();
    for a in &mut agents {
        a.wait_for("listening for multicast rekeys", WAIT);
    }
    let capture = dir.join("multicast.pcap");
    let mut cap = Proc::spawn(
        {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &net.gm, "tshark", "-i"])
                .arg(format!("vg{}", std::process::id() % 100_000))
                .args(["-f", "udp and dst host 239.1.2.3", "-w"])
                .arg(&capture);
            c
        },
        &dir.join("tshark.log"),
    );
    cap.wait_for("Capture started", WAIT);
    signal(&ks, "-USR1");
    for a in &mut agents {
        a.wait_for("rekeyed group 4321: SEQ 1,", WAIT);
    }
    ks.wait_for("datagrams=1", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    cap.interrupt();
    // One datagram to the group carried the rekey to all three (no ACKs for multicast).
    let rows = tshark::fields_with(
        &capture,
        &[
            "ip.dst",
            "ip.ttl",
            "udp.dstport",
            "isakmp.exchangetype",
            "_ws.malformed",
        ],
        None,
        &["-d", "udp.port==8848,isakmp"],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "239.1.2.3");
    assert_eq!(rows[0][1], "2", "the configured TTL");
    assert_eq!(rows[0][2], "8848");
    assert_eq!(rows[0][3], "33", "GROUPKEY-PUSH");
    assert!(rows[0][4].is_empty());
    for a in &agents {
        assert!(!a.output().contains("rekey refused"), "{}", a.output());
    }
    drop(agents);
    drop(ks);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
