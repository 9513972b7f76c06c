//! The controller end to end with the real binaries: gkm-server on its
//! SQLite default with the REST API, gkmctl creating a group and asking for
//! a rekey, a real agent registering and acknowledging, the show layouts
//! reading the engine's state, and a restart keeping groups, keys and SEQ.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use gkm_tests::procs::{binary, free_udp_port, fresh_dir, start_server, Proc};

const WAIT: Duration = Duration::from_secs(30);

fn tempdir(name: &str) -> std::path::PathBuf {
    fresh_dir(env!("CARGO_TARGET_TMPDIR"), name)
}

fn server(dir: &Path, udp: u16, n: u32, database: Option<&str>) -> (Proc, String) {
    let extra: Vec<&str> = database
        .map(|db| vec!["--database", db])
        .unwrap_or_default();
    start_server(dir, udp, &format!("server-{n}.log"), &extra)
}

fn gkmctl(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(binary("gkmctl", "gkmctl"))
        .args(["--url", url, "--token-file"])
        .arg(dir.join("data/admin-token"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "gkmctl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh database on the test PostgreSQL (`scripts/test` starts one).
fn postgres_database(name: &str) -> String {
    let admin = std::env::var("GKM_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("GKM_TEST_POSTGRES_URL is not set: run scripts/test (it starts a throwaway PostgreSQL 15)")
    });
    let db = format!("{name}_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        let o = Command::new("psql")
            .args(["-q", &admin, "-c", &sql])
            .output()
            .expect("psql (PostgreSQL client) is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{db}")
}

#[test]
fn gkmctl_creates_a_group_an_agent_registers_a_rekey_is_shown_and_survives_a_restart() {
    scenario("controller", None);
}

#[test]
fn the_same_on_postgresql() {
    let db = postgres_database("gkm_controller");
    scenario("controller-pg", Some(&db));
}

fn scenario(name: &str, database: Option<&str>) {
    let dir = tempdir(name);
    let udp = free_udp_port();
    let (mut ks, url) = server(&dir, udp, 0, database);
    let token = std::fs::read_to_string(dir.join("data/admin-token")).unwrap();
    assert!(token.starts_with("gkm_"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("data/admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"teks":[{"src":"10.1.0.0/16","dst":"10.1.0.0/16"}],
            "rekey":{"transport":"unicast","retransmit_interval":1},
            "d3p_window":{"msec":5000},
            "authentication":{"method":"psk","psk":"controller-test-psk"}}"#,
    )
    .unwrap();
    let created = ok(gkmctl(
        &dir,
        &url,
        &[
            "group",
            "create",
            "GET",
            "--group-id",
            "4321",
            "--policy",
            policy.to_str().unwrap(),
        ],
    ));
    assert!(
        created.contains("\"psk_set\": true") && !created.contains("controller-test-psk"),
        "{created}"
    );
    // A validation error comes back naming the field.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"teks":[{"src":"10.1.0.0/16","dst":"10.1.0.0/16"}],"d3p_window":{"sec":101}}"#,
    )
    .unwrap();
    let o = gkmctl(
        &dir,
        &url,
        &[
            "group",
            "create",
            "BAD",
            "--group-id",
            "9",
            "--policy",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/d3p_window/sec") && err.contains("1-100"),
        "{err}"
    );
    // The engine serves the new group at once: a real agent registers with the group's PSK.
    let mut agent = Proc::spawn(
        {
            let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
            c.args([
                "--key-server",
                &format!("127.0.0.1:{udp}"),
                "--group",
                "4321",
                "--psk",
                "controller-test-psk",
                "--bind",
                "127.0.5.1:0",
                "--group-name",
                "GET",
                "--client-d3p-window",
                "sec 50",
                "--status-socket",
            ])
            .arg(dir.join("agent.sock"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
            c
        },
        &dir.join("agent.log"),
    );
    agent.wait_for("registered group 4321", WAIT);
    // The agent answers `show crypto gkm gm replay` on its socket, no token needed.
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args(["show", "crypto", "gkm", "gm", "replay", "--agent"])
        .arg(dir.join("agent.sock"))
        .output()
        .unwrap();
    let replay = ok(o);
    assert!(
        replay.starts_with("Anti-replay Information For Group GET:\nIP-D3P:\nPosix-time-msec : ")
            && replay.contains("\nInput Packets : 0 Output Packets : 0\n")
            && replay.contains("IP-D3P Error History (sampled at 10pak/min):"),
        "{replay}"
    );
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args(["--json", "show", "crypto", "gkm", "gm", "replay", "--agent"])
        .arg(&dir)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
    assert_eq!(j[0]["d3p_window_ms"], 50_000, "the client override: {j}");
    assert_eq!(j[0]["d3p_window_source"], "client");
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args(["show", "crypto", "gkm", "gm", "replay", "--agent"])
        .arg(dir.join("nobody.sock"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the agent"));
    let out = ok(gkmctl(&dir, &url, &["rekey", "now", "GET"]));
    assert!(out.contains("rekey of group GET started"), "{out}");
    agent.wait_for("rekeyed group 4321: SEQ 1,", WAIT);
    ks.wait_for("rekey acknowledged by every GM", WAIT);
    let rekey = ok(gkmctl(
        &dir,
        &url,
        &["show", "crypto", "gkm", "ks", "rekey"],
    ));
    assert!(
        rekey.contains("Acknowledgement Type In-Use : Cisco"),
        "{rekey}"
    );
    assert!(rekey.contains("Number of Rekeys sent       : 1"), "{rekey}");
    let pol = ok(gkmctl(
        &dir,
        &url,
        &["show", "crypto", "gkm", "ks", "policy"],
    ));
    assert!(pol.contains("# of teks : 1  Seq num : 1"), "{pol}");
    assert!(pol.contains("acknowledgement    : cisco"), "{pol}");
    let replay = ok(gkmctl(
        &dir,
        &url,
        &["show", "crypto", "gkm", "ks", "replay"],
    ));
    assert!(
        replay.contains("IP-D3P: Type = POSIX-TIME-MSEC, Window-size = 5000 msec"),
        "{replay}"
    );
    // The GM database reaches the store: the feature view lists the agent.
    let mut feature = String::new();
    for _ in 0..50 {
        feature = ok(gkmctl(
            &dir,
            &url,
            &["show", "crypto", "gkm", "feature", "ip-d3p"],
        ));
        if feature.contains("127.0.5.1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        feature.contains("127.0.5.1         1.0.0     Yes"),
        "{feature}"
    );
    let lacking = ok(gkmctl(
        &dir,
        &url,
        &["show", "crypto", "gkm", "feature", "ip-d3p", "--lacking"],
    ));
    assert!(!lacking.contains("127.0.5.1"), "{lacking}");
    // This key server's own row, between the two headers (none when lacking).
    let ks_rows = |t: &str| -> Vec<String> {
        let from = t.find("Key Server ID").map_or(0, |i| i);
        let to = t.find("Group Member ID").unwrap_or(t.len());
        t[from..to]
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let rows = ks_rows(&feature);
    assert_eq!(rows.len(), 1, "{feature}");
    assert!(rows[0].ends_with("1.0.0     Yes"), "{feature}");
    assert!(ks_rows(&lacking).is_empty(), "{lacking}");
    // Wrong token and unreachable controller: clear errors.
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args([
            "--url", &url, "--token", "gkm_0000", "show", "crypto", "gkm",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused the token"));
    let o = Command::new(binary("gkmctl", "gkmctl"))
        .args([
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "gkm_0000",
            "show",
            "crypto",
            "gkm",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the controller"));
    // Restart: the group, its keys and SEQ come back; the next rekey is SEQ 2 and the agent takes it.
    ks.interrupt();
    let (mut ks, url) = server(&dir, udp, 1, database);
    ks.wait_for("GM database restored gms=1", WAIT);
    let out = ok(gkmctl(&dir, &url, &["rekey", "now", "GET"]));
    assert!(out.contains("started"));
    agent.wait_for("rekeyed group 4321: SEQ 2,", WAIT);
    let pol = ok(gkmctl(
        &dir,
        &url,
        &["show", "crypto", "gkm", "ks", "policy"],
    ));
    assert!(pol.contains("Seq num : 2"), "{pol}");
    assert_eq!(agent.output().matches("registered group").count(), 1);
}
