//! A group's credential opens that group only (issue 16, items 1 and 2),
//! with the real server and agents over loopback: two groups on the same
//! source range with different PSKs both serve their GMs; group B's PSK
//! does not open group A; a PSK rotation takes effect without a restart;
//! a switch to certificates retires the PSK; and a group that would give
//! one source more PSKs than the key server tries is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gkm_tests::api::Api;
use gkm_tests::procs::{binary, free_udp_port, fresh_dir, start_server, Proc};
use serde_json::{json, Value};

const PSK_A: &str = "psk-of-group-a-4001";
const PSK_B: &str = "psk-of-group-b-4002";

fn policy(psk: Option<&str>, addresses: &[&str]) -> Value {
    let auth = match psk {
        Some(k) => json!({"method": "psk", "psk": k}),
        None => json!({"method": "psk"}),
    };
    json!({
        "teks": [{"src": "10.1.0.0/16", "dst": "10.1.0.0/16"}],
        "authorization": {"addresses": addresses},
        "authentication": auth,
    })
}

/// `gkm-agent --once` for `group` with `psk` from 127.0.9.`host`: whether it registered.
fn registers(dir: &Path, udp: u16, group: u32, psk: &str, host: u8) -> (bool, String) {
    let log = dir.join(format!("agent-{group}-{host}-{}.log", psk.len()));
    let mut p = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
            c.args([
                "--key-server",
                &format!("127.0.0.1:{udp}"),
                "--group",
                &group.to_string(),
                "--psk",
                psk,
                "--bind",
                &format!("127.0.9.{host}:0"),
                "--once",
                "--timeout",
                "4",
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
            c
        },
        &log,
    );
    let status = p.child.wait().unwrap();
    let out = p.output();
    (
        status.success() && out.contains(&format!("registered group {group}")),
        out,
    )
}

/// Waits until `needle` is in the log `n` times.
fn wait_count(p: &Proc, needle: &str, n: usize) {
    let start = std::time::Instant::now();
    while p.output().matches(needle).count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{needle:?} not {n} times:\n{}",
            p.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_groups_psk_opens_its_own_group_only() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "group-credentials");
    let udp = free_udp_port();
    let (ks, url) = start_server(&dir, udp, "server.log", &[]);
    let api = Api::new(
        &url,
        &std::fs::read_to_string(dir.join("data/admin-token")).unwrap(),
    );
    // Two groups on the same source range, different PSKs.
    for (name, id, psk) in [("A", 4001, PSK_A), ("B", 4002, PSK_B)] {
        let g = api.expect(
            201,
            "POST",
            "/api/v1/groups",
            Some(&json!({"name": name, "group_id": id, "policy": policy(Some(psk), &["127.0.0.0/8"])})),
        );
        assert_eq!(g["psk_set"], true);
    }
    // The attack: group B's PSK asking for group A's keys.
    let (ok, out) = registers(&dir, udp, 4001, PSK_B, 1);
    assert!(!ok, "B's PSK registered to A:\n{out}");
    assert!(out.contains("INVALID-ID-INFORMATION"), "{out}");
    wait_count(&ks, "CredentialNotAccepted", 1);
    let gms = api.expect(200, "GET", "/api/v1/gms?group=4001", None);
    assert_eq!(gms["gms"], json!([]), "nothing stored for A");
    // Both groups keep serving their own GMs from the shared range.
    for (group, psk, host) in [(4001, PSK_A, 2), (4002, PSK_B, 3), (4001, PSK_A, 4)] {
        let (ok, out) = registers(&dir, udp, group, psk, host);
        assert!(ok, "group {group}:\n{out}");
    }
    // Rotation through gkmctl: new exchanges take the new key, no restart.
    let rotated = "rotated-psk-of-group-a";
    let key_file = dir.join("new-psk");
    std::fs::write(&key_file, format!("{rotated}\n")).unwrap();
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args(["--url", &url, "--token-file"])
        .arg(dir.join("data/admin-token"))
        .args(["group", "set-psk", "A", "--psk-file"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_count(&ks, "group policy applied group=A", 2);
    let (ok, out) = registers(&dir, udp, 4001, PSK_A, 5);
    assert!(!ok, "the old PSK still works after rotation:\n{out}");
    assert!(out.contains("AUTHENTICATION-FAILED"), "{out}");
    let (ok, out) = registers(&dir, udp, 4001, rotated, 6);
    assert!(ok, "{out}");
    let audit = api.expect(200, "GET", "/api/v1/audit", None);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "group.psk.rotate" && e["target"] == "A"),
        "{audit}"
    );
    assert!(
        !audit.to_string().contains(rotated),
        "no PSK in the audit log"
    );
    // Switching A to certificates retires its PSK everywhere.
    let mut pki = policy(None, &["127.0.0.0/8"]);
    pki["authentication"] = json!({"method": "pki"});
    let changed = api.expect(
        200,
        "PUT",
        "/api/v1/groups/A",
        Some(&json!({"policy": pki})),
    );
    assert_eq!(changed["group"]["psk_set"], false, "{changed}");
    wait_count(&ks, "group policy applied group=A", 3);
    for group in [4001, 4002] {
        let (ok, out) = registers(&dir, udp, group, rotated, 7);
        assert!(!ok, "the retired PSK opened group {group}:\n{out}");
    }
    // A certificate group takes no PSK.
    let p = api.expect(
        409,
        "PUT",
        "/api/v1/groups/A/psk",
        Some(&json!({"psk": "x"})),
    );
    assert!(
        p["detail"].as_str().unwrap().contains("certificates"),
        "{p}"
    );
    // Clearing B's PSK: B then takes the (empty) keyring, so nobody gets in.
    api.expect(204, "DELETE", "/api/v1/groups/B/psk", None);
    let b = api.expect(200, "GET", "/api/v1/groups/B", None);
    assert_eq!(b["psk_set"], false);
    wait_count(&ks, "group policy applied group=B", 2);
    let (ok, _) = registers(&dir, udp, 4002, PSK_B, 8);
    assert!(!ok, "a cleared PSK still works");
    // Back to a PSK for B, then 15 more PSK groups on every source: the 16
    // fit the key server's candidate bound, a 17th is refused naming them.
    api.expect(
        200,
        "PUT",
        "/api/v1/groups/B/psk",
        Some(&json!({"psk": PSK_B})),
    );
    wait_count(&ks, "group policy applied group=B", 3);
    for i in 0..15u32 {
        api.expect(
            201,
            "POST",
            "/api/v1/groups",
            Some(&json!({"name": format!("C{i}"), "group_id": 5000 + i,
                          "policy": policy(Some(&format!("psk-c-{i}")), &[])})),
        );
    }
    let p = api.expect(
        409,
        "POST",
        "/api/v1/groups",
        Some(&json!({"name": "C15", "group_id": 5015, "policy": policy(Some("psk-c-15"), &["127.0.9.0/24"])})),
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"C15\"") && detail.contains("B, ") && detail.contains("127.0.9.0/24"),
        "{p}"
    );
    assert_eq!(p["field"], "/authorization/addresses");
    api.expect(404, "GET", "/api/v1/groups/C15", None);
    // B still works with all of them in place.
    let (ok, out) = registers(&dir, udp, 4002, PSK_B, 9);
    assert!(ok, "{out}");
}

/// A cooperative key server's pair PSK (`coop.peers[].authentication`) is
/// sealed apart from the group's and opens nothing a GM could ask for:
/// from the peer's own address it does not register to the group that
/// lists the peer, nor to any other.
#[test]
fn a_coop_peers_psk_opens_no_group() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "coop-psk");
    let udp = free_udp_port();
    let (_ks, url) = start_server(&dir, udp, "server.log", &[]);
    let api = Api::new(
        &url,
        &std::fs::read_to_string(dir.join("data/admin-token")).unwrap(),
    );
    let pair = "pair-psk-of-ks2";
    let mut p = policy(Some(PSK_A), &["127.0.0.0/8"]);
    // The shortest timers: with its peer absent, this key server takes
    // over after 2 x 10 s (until then a secondary blocks new GMs:
    // docs/COOP.md, "New GMs at a secondary").
    p["coop"] = json!({"refresh_secs": 10, "check_secs": 10, "dead_periods": 2,
        "peers": [{"address": "127.0.9.20",
        "authentication": {"method": "psk", "psk": pair}}]});
    let g = api.expect(
        201,
        "POST",
        "/api/v1/groups",
        Some(&json!({"name": "A", "group_id": 4001, "policy": p})),
    );
    assert_eq!(g["coop_psk_set"], json!(["127.0.9.20"]), "{g}");
    assert!(!g.to_string().contains(pair));
    api.expect(
        201,
        "POST",
        "/api/v1/groups",
        Some(&json!({"name": "B", "group_id": 4002, "policy": policy(Some(PSK_B), &["127.0.0.0/8"])})),
    );
    // The attack: the pair PSK from the peer's address, as a GM.
    for group in [4001, 4002] {
        let (ok, out) = registers(&dir, udp, group, pair, 20);
        assert!(!ok, "the pair PSK registered to group {group}:\n{out}");
    }
    // The group's own PSK still opens the group from that address, once
    // the key server serves it as primary.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (code, v) = api.call("GET", "/api/v1/groups/A/coop", None);
        if code == 200 && v["local_role"] == "Primary" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{code} {v}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (ok, out) = registers(&dir, udp, 4001, PSK_A, 20);
    assert!(ok, "{out}");
}
