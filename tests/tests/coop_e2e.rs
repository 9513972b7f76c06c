//! Cooperative key servers with real processes (issue 19): three
//! `gkm-server`s on loopback addresses 127.0.0.11-13, each with its own
//! store and its own configuration file naming the other two as peers
//! with a pair PSK. They connect over real UDP with main mode, announce
//! themselves in GKM-COOP messages, and elect the highest priority;
//! `gkmctl show crypto gkm ks coop` shows the roles, peers and counters;
//! SIGKILL of the primary makes the next best primary within the dead
//! window plus a check period (measured, printed), and the third follows
//! it; a secondary whose IP-D3P or rekey ACK option differs from the
//! primary's sends the seed's exact warning to its log and to a syslog
//! collector, and clears it when fixed; the killed key server, restarted
//! with its store, resumes from its persisted epoch and follows the new
//! primary without preempting it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gkm_tests::procs::{binary, free_udp_port, fresh_dir, wait_for_http, Proc};

const PAIR: &str = "pair-psk-of-the-coop-test";
const REFRESH: u64 = 10;
const CHECK: u64 = 10;
const DEAD: u64 = 2;

fn addr(i: u8) -> String {
    format!("127.0.0.{}", 10 + i)
}

/// Starts key server `i` with `priority` and the other two as peers;
/// returns it with its REST API's base URL.
fn key_server(dir: &Path, i: u8, priority: u8, udp: u16, syslog: u16) -> (Proc, String) {
    let peers: String = (1..=3)
        .filter(|&p| p != i)
        .map(|p| {
            format!(
                "[[group.coop.peers]]\naddress = '{}'\nport = {udp}\nauthentication = {{ method = 'psk', psk = '{PAIR}' }}\n",
                addr(p)
            )
        })
        .collect();
    // One rekey-signing key for the three (docs/COOP.md): GMs verify a
    // new primary's rekeys with the key their KEK names.
    let signing_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/data/ks-rekey.pem"
    );
    let config = format!(
        "ks_address = '{}'\nsyslog = '127.0.0.1:{syslog}'\nrekey_signing_key = '{signing_key}'\n[[group]]\nname = 'COOP'\ngroup_id = 7001\n[[group.tek]]\nsrc = '10.1.0.0/16'\ndst = '10.1.0.0/16'\n[group.coop]\npriority = {priority}\nrefresh_secs = {REFRESH}\ncheck_secs = {CHECK}\ndead_periods = {DEAD}\n{peers}",
        addr(i)
    );
    spawn(dir, i, udp, &config)
}

/// Starts `gkm-server` `i` on its address and `udp` with `config` (its
/// file and store in `dir/ks{i}`); returns it with its REST API's URL.
fn spawn(dir: &Path, i: u8, udp: u16, config: &str) -> (Proc, String) {
    let data = dir.join(format!("ks{i}"));
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("ks.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(binary("gkm-server", "gkm-server"));
    cmd.arg("--config")
        .arg(&file)
        .args([
            "--listen",
            &format!("{}:{udp}", addr(i)),
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.join("data"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd, &dir.join(format!("ks{i}.log")));
    let url = wait_for_http(&mut p);
    (p, url)
}

fn gkmctl(dir: &Path, i: u8, url: &str, words: &[&str]) -> String {
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args(["--url", url, "--token-file"])
        .arg(dir.join(format!("ks{i}/data/admin-token")))
        .arg("show")
        .args(words)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn three_key_servers_elect_a_primary_and_fail_over_when_it_is_killed() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "coop-e2e");
    let udp = free_udp_port();
    // A real syslog collector, Debian's rsyslog, on its own UDP port with
    // its own configuration: what it receives goes to a file.
    let syslog = free_udp_port();
    let received = dir.join("syslog.log");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\")\nmodule(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{syslog}\")\n*.* action(type=\"omfile\" file=\"{}\")\n",
            dir.display(),
            received.display()
        ),
    )
    .unwrap();
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd is needed (Debian's rsyslog; .ci/run installs it)");
    let mut collector = Proc::spawn(
        {
            let mut c = Command::new(rsyslogd);
            c.arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslog.pid"));
            c
        },
        &dir.join("rsyslogd.out"),
    );
    let (mut ks1, url1) = key_server(&dir, 1, 100, udp, syslog);
    let (mut ks2, url2) = key_server(&dir, 2, 200, udp, syslog);
    let (mut ks3, url3) = key_server(&dir, 3, 150, udp, syslog);
    // The election: a dead window (2 x 10 s) without a primary, then the
    // highest priority takes over; the others follow it.
    let window = Duration::from_secs(DEAD * CHECK + CHECK + 15);
    ks2.wait_for("COOP role changed group=7001 role=Primary", window);
    for ks in [&mut ks1, &mut ks3] {
        ks.wait_for(
            &format!("role=Secondary epoch=1 primary={}", addr(2)),
            window,
        );
    }
    // The operator's view on the primary, once every peer has announced
    // over an SA of its own.
    let deadline = Instant::now() + Duration::from_secs(2 * REFRESH + 5);
    let view = loop {
        let v = gkmctl(&dir, 2, &url2, &["crypto", "gkm", "ks", "coop"]);
        if v.matches("Peer KS Status: Alive").count() == 2
            && v.matches("IKE status: Established").count() == 2
        {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(view.contains("Crypto Gdoi Group Name :COOP"), "{view}");
    assert!(view.contains("Local KS Role: Primary"), "{view}");
    assert!(view.contains("Local Priority: 200"), "{view}");
    assert!(view.contains("Primary Refresh Policy Time: 10"), "{view}");
    for p in [1, 3] {
        assert!(
            view.contains(&format!("Peer Address: {}:{udp}", addr(p))),
            "{view}"
        );
    }
    assert!(view.contains("Peer KS Role: Secondary"), "{view}");
    assert!(!view.contains("Ann msgs recv: 0"), "{view}");
    assert!(
        view.contains("Ann msgs sent with reply request: "),
        "{view}"
    );
    assert!(
        view.contains("Ann msgs recv with reply request: "),
        "{view}"
    );
    assert!(
        view.contains("GM database sync: 0 GMs in the journal, 0 gaps"),
        "{view}"
    );
    assert!(
        view.contains("\tMessages refused: none, Not a peer: 0\n"),
        "{view}"
    );
    let json = Command::new(binary("gkmctl", "gkmctl"))
        .args(["--url", &url1, "--token-file"])
        .arg(dir.join("ks1/data/admin-token"))
        .args(["--json", "show", "crypto", "gkm", "ks", "coop"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["coop"]["local_role"], "Secondary", "{v}");
    assert_eq!(v[0]["coop"]["primary"], addr(2), "{v}");
    // The secondaries serve the primary's keys: the same KEK SPI (random
    // on each key server until then) on all three; the shared signing key raises no mismatch; a
    // secondary refuses to rekey.
    for ks in [&mut ks1, &mut ks3] {
        ks.wait_for("COOP: took the primary's keys", window);
    }
    let spis = |i: u8, url: &str| -> Vec<String> {
        gkmctl(&dir, i, url, &["crypto", "gkm", "ks", "policy"])
            .lines()
            .filter(|l| l.to_lowercase().contains("spi"))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    // The primary raised its SEQ 1,000 above every SEQ it knew at its
    // takeover (0) and announced it at once.
    ks3.wait_for(
        "took the primary's keys group=7001 seq=1000",
        Duration::from_secs(5),
    );
    let primary_spis = spis(2, &url2);
    assert_eq!(primary_spis.len(), 1, "{primary_spis:?}");
    assert_eq!(spis(1, &url1), primary_spis);
    assert_eq!(spis(3, &url3), primary_spis);
    assert!(
        !ks1.output().contains("Rekey signing key"),
        "{}",
        ks1.output()
    );
    let token1 = std::fs::read_to_string(dir.join("ks1/data/admin-token")).unwrap();
    let api1 = gkm_tests::api::Api::new(&url1, &token1);
    let refused = api1.expect(
        503,
        "POST",
        "/api/v1/groups/COOP/rekey",
        Some(&serde_json::json!({})),
    );
    assert!(refused.to_string().contains("COOP secondary"), "{refused}");
    // SIGKILL the primary: KS 3 (priority 150) takes over within the dead
    // window plus a check period, in epoch 2; KS 1 follows it.
    let killed = Instant::now();
    let _ = ks2.child.kill();
    let _ = ks2.child.wait();
    ks3.wait_for("COOP role changed group=7001 role=Primary epoch=2", window);
    let failover = killed.elapsed();
    ks1.wait_for(&format!("epoch=2 primary={}", addr(3)), window);
    println!(
        "failover {:.1} s (refresh {REFRESH} s, check {CHECK} s, dead after {DEAD} periods)",
        failover.as_secs_f64()
    );
    assert!(
        failover <= Duration::from_secs(DEAD * CHECK + CHECK + 2),
        "failover took {failover:?}"
    );
    // The new primary's SEQ starts above every SEQ it heard.
    ks3.wait_for("COOP: SEQ raised above every peer's", window);
    let after = gkmctl(&dir, 3, &url3, &["crypto", "gkm", "ks", "coop"]);
    assert!(after.contains("Local KS Role: Primary"), "{after}");
    assert!(after.contains("Peer KS Status: Dead"), "{after}");
    // Configuration mismatch: KS 1 (secondary) turns IP-D3P on, then
    // interoperable ACKs, through its API; the primary (KS 3) has neither.
    // Each exact warning reaches KS 1's log and the syslog collector
    // within an announcement; undoing each change clears it.
    let set = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut g = api1.expect(200, "GET", "/api/v1/groups/COOP", None);
        edit(&mut g["policy"]);
        api1.expect(
            200,
            "PUT",
            "/api/v1/groups/COOP",
            Some(&serde_json::json!({"policy": g["policy"]})),
        );
    };
    // Waits until rsyslog has written a line ending with `text`, and
    // returns it; `n`: the how-many-th such line.
    let syslogged = |text: &str, n: usize| -> String {
        let deadline = Instant::now() + Duration::from_secs(2 * REFRESH + 5);
        loop {
            let all = std::fs::read_to_string(&received).unwrap_or_default();
            if let Some(l) = all.lines().filter(|l| l.ends_with(text)).nth(n - 1) {
                return l.to_owned();
            }
            assert!(Instant::now() < deadline, "rsyslog got no {text:?}:\n{all}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    const D3P: &str = "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched";
    const ACK: &str = "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: Interoperable Rekey ACK configuration between Primary KS and Secondary KS are mismatched";
    let t = Instant::now();
    set(&|p| p["d3p_window"] = serde_json::json!({"msec": 5000}));
    let m = syslogged(D3P, 1);
    let took = t.elapsed();
    assert!(m.contains(" gkm-server["), "{m}");
    ks1.wait_for(D3P, Duration::from_secs(5));
    println!(
        "IP-D3P mismatch reached rsyslog in {:.1} s",
        took.as_secs_f64()
    );
    let view = gkmctl(&dir, 1, &url1, &["crypto", "gkm", "ks", "coop"]);
    assert!(view.contains(D3P), "{view}");
    set(&|p| p["d3p_window"] = serde_json::Value::Null);
    syslogged("COOP configuration matches the primary again: IP-D3P", 1);
    set(&|p| p["acknowledgement"] = serde_json::json!("interoperable"));
    syslogged(ACK, 1);
    ks1.wait_for(ACK, Duration::from_secs(5));
    set(&|p| p["acknowledgement"] = serde_json::json!("cisco"));
    syslogged(
        "COOP configuration matches the primary again: rekey acknowledgement",
        1,
    );
    // Raised once each while it lasted, not once per announcement.
    let all = std::fs::read_to_string(&received).unwrap();
    assert_eq!(all.matches(D3P).count(), 1, "{all}");
    assert_eq!(all.matches(ACK).count(), 1, "{all}");
    collector.interrupt();
    let view = gkmctl(&dir, 1, &url1, &["crypto", "gkm", "ks", "coop"]);
    assert!(!view.contains("COOP_CONFIG_MISMATCH"), "all clear: {view}");
    // The policy edits kept KS 1's pair PSKs: it still hears the primary.
    assert!(view.contains("Peer KS Status: Alive"), "{view}");
    // KS 2 comes back with its store: it resumes from the epoch it
    // persisted (1), follows the primary it finds (KS 3, epoch 2) without
    // preempting it, and both others hear it again.
    let (mut ks2, url2) = key_server(&dir, 2, 200, udp, syslog);
    ks2.wait_for(
        "starting as secondary group=7001 peers=2 priority=200 epoch=1",
        window,
    );
    ks2.wait_for(
        &format!("role=Secondary epoch=2 primary={}", addr(3)),
        window,
    );
    let deadline = Instant::now() + Duration::from_secs(2 * REFRESH + 5);
    loop {
        let v = gkmctl(&dir, 2, &url2, &["crypto", "gkm", "ks", "coop"]);
        if v.matches("Peer KS Status: Alive").count() == 2 {
            assert!(v.contains("Local KS Role: Secondary"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let v3 = gkmctl(&dir, 3, &url3, &["crypto", "gkm", "ks", "coop"]);
    assert!(v3.contains("Local KS Role: Primary"), "no preemption: {v3}");
    // The restarted key server takes the new primary's state (its SEQ was
    // raised at the takeover) and serves its keys.
    ks2.wait_for("COOP: took the primary's keys group=7001 seq=2000", window);
    assert_eq!(spis(2, &url2), spis(3, &url3));
    assert_eq!(
        spis(3, &url3),
        primary_spis,
        "no rekey yet: KS 2's keys of epoch 1"
    );
    for log in [ks1.output(), ks2.output(), ks3.output()] {
        assert!(!log.contains(PAIR), "a pair PSK in the log");
    }
}

/// Two `gkm-server`s whose phase 1 SA between them is on certificates
/// (each its own `[pki]` from the test CA, each knowing the other by its
/// certificate's subject): they elect the higher priority over real UDP,
/// each hears the other, and gkmctl shows it. A third, at priority 250,
/// holds the second's very certificate (valid, from the same CA) and
/// names both as its peers, the second under another subject: its main
/// mode to the second fails on that subject, and the first refuses its
/// announcements as not a peer's (no peer of the first is at its
/// address); nothing changes.
#[test]
fn two_key_servers_on_certificates_elect_and_a_wrong_subject_is_refused() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "coop-pki-e2e");
    let udp = free_udp_port();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/data");
    let signing_key = format!("{data}/ks-rekey.pem");
    // (index, priority, own certificate, peers: (index, subject)).
    let start = |i: u8, priority: u8, cert: &str, peers: &[(u8, &str)]| {
        let peers: String = peers
            .iter()
            .map(|(p, subject)| {
                format!(
                    "[[group.coop.peers]]\naddress = '{}'\nport = {udp}\nidentity = '{subject}'\nauthentication = {{ method = 'pki' }}\n",
                    addr(*p)
                )
            })
            .collect();
        let config = format!(
            "ks_address = '{}'\nrekey_signing_key = '{signing_key}'\n[pki]\nca = '{data}/ca.pem'\ncert = '{data}/{cert}.pem'\nkey = '{data}/{cert}.key'\n[[group]]\nname = 'COOP'\ngroup_id = 7002\n[[group.tek]]\nsrc = '10.2.0.0/16'\ndst = '10.2.0.0/16'\n[group.coop]\npriority = {priority}\nrefresh_secs = {REFRESH}\ncheck_secs = {CHECK}\ndead_periods = {DEAD}\n{peers}",
            addr(i)
        );
        spawn(&dir, i, udp, &config)
    };
    const KS: &str = "CN=ks1.gkm.test,O=GKM test";
    const GM: &str = "CN=gm1.gkm.test,O=GKM test";
    let (mut a, url_a) = start(1, 100, "ks", &[(2, GM)]);
    let (mut b, url_b) = start(2, 200, "gm", &[(1, KS)]);
    let (mut c, url_c) = start(3, 250, "gm", &[(1, KS), (2, "CN=ks9.gkm.test,O=GKM test")]);
    let window = Duration::from_secs(DEAD * CHECK + CHECK + 15);
    b.wait_for("COOP role changed group=7002 role=Primary epoch=1", window);
    a.wait_for(
        &format!("role=Secondary epoch=1 primary={}", addr(2)),
        window,
    );
    c.wait_for(
        "main mode 6: the peer's certificate is not the configured subject",
        window,
    );
    for (i, url, peer) in [(1, &url_a, 2), (2, &url_b, 1)] {
        let view = gkmctl(&dir, i, url, &["crypto", "gkm", "ks", "coop"]);
        let session = &view[view
            .find(&format!("Peer Address: {}:{udp}", addr(peer)))
            .unwrap_or_else(|| panic!("{view}"))..];
        assert!(session.contains("Peer KS Status: Alive"), "{view}");
        assert!(session.contains("IKE status: Established"), "{view}");
        assert!(!session.contains("Ann msgs recv: 0\n"), "{view}");
    }
    let json = |url: &str, i: u8| -> serde_json::Value {
        let o = Command::new(binary("gkmctl", "gkmctl"))
            .args(["--url", url, "--token-file"])
            .arg(dir.join(format!("ks{i}/data/admin-token")))
            .args(["--json", "show", "crypto", "gkm", "ks", "coop"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(2 * REFRESH + 5);
    loop {
        let v = json(&url_a, 1);
        let coop = &v[0]["coop"];
        if coop["refused"]["not_a_peer"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(coop["local_role"], "Secondary", "{v}");
            assert_eq!(coop["primary"], addr(2), "{v}");
            assert_eq!(coop["epoch"], 1, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "KS 1 refused nothing of KS 3: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = json(&url_c, 3);
    let peers = v[0]["coop"]["peers"].as_array().unwrap();
    assert!(peers.iter().all(|p| p["status"] == "Dead"), "{v}");
    drop((a, b, c));
}
