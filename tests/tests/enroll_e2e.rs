//! Issue 21, end to end with the real binaries on loopback: setup keys
//! (single-use, expired, used up, bound to groups), `gkm-agent enroll`
//! (its own P-256 key, a certificate from the controller's internal CA,
//! an agent token), registration with that certificate (ECDSA-256 phase
//! 1, decoded by tshark with nothing malformed), renewal with the agent's
//! token, and revocation (its token at once, its certificate at its next
//! phase 1, its reports).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gkm_tests::api::Api;
use gkm_tests::procs::{binary, free_udp_port, fresh_dir, start_server, Proc};
use gkm_tests::tshark;
use serde_json::{json, Value};

const A: u32 = 4101;
const B: u32 = 4102;

/// A certificate group.
fn pki_group(api: &Api, name: &str, id: u32) {
    api.expect(
        201,
        "POST",
        "/api/v1/groups",
        Some(&json!({"name": name, "group_id": id, "policy": {
            "teks": [{"src": "10.7.0.0/16", "dst": "10.7.0.0/16"}],
            "authentication": {"method": "pki"}}})),
    );
}

/// A setup key's secret.
fn setup_key(api: &Api, body: Value) -> String {
    api.expect(201, "POST", "/api/v1/setup-keys", Some(&body))["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn agent() -> Command {
    let mut c = Command::new(binary("gkm-agent", "gkm-agent"));
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0");
    c
}

fn enroll(base: &str, key: &str, name: &str, state: &Path) -> Output {
    agent()
        .args([
            "enroll",
            "--controller",
            base,
            "--name",
            name,
            "--state-dir",
        ])
        .arg(state)
        .env("GKM_SETUP_KEY", key)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Registers once with the enrollment in `state` to `group`.
fn register(state: &Path, group: u32, source: &str) -> Output {
    agent()
        .arg("--enrollment")
        .arg(state)
        .args(["--group", &group.to_string(), "--bind", source])
        .args(["--once", "--timeout", "6"])
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn setup_keys_enroll_agents_that_register_with_certificates_until_revoked() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "enroll-e2e");
    let port = free_udp_port();
    let capture = dir.join("phase1.pcap");
    let mut cap = tshark::capture_loopback(port, &capture, &dir.join("tshark.log"));
    let keylog = dir.join("keylog");
    let (mut server, base) = start_server(
        &dir,
        port,
        "server.log",
        &["--key-log", keylog.to_str().unwrap()],
    );
    let api = Api::bootstrap_admin(&base, &dir.join("data"));
    pki_group(&api, "BRANCH-A", A);
    pki_group(&api, "BRANCH-B", B);

    // A single-use key for group A: the second enrollment is refused.
    let once = setup_key(
        &api,
        json!({"name": "once", "groups": ["BRANCH-A"], "tags": ["asr9000"]}),
    );
    let a1 = dir.join("a1");
    let o = enroll(&base, &once, "a1.branch", &a1);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("enrolled a1.branch in BRANCH-A"),
        "{}",
        text(&o)
    );
    for (f, want) in [
        ("key.pem", 0o600),
        ("token", 0o600),
        ("cert.pem", 0o600),
        ("ca.pem", 0o600),
        ("enrollment.json", 0o600),
    ] {
        assert_eq!(mode(&a1.join(f)), want, "{f}");
    }
    let o = enroll(&base, &once, "a2.branch", &dir.join("a2-refused"));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("(403): the setup key has been used up"),
        "{}",
        text(&o)
    );
    // An unknown key is refused as such.
    let o = enroll(
        &base,
        &format!("gkmsk_{}", "0".repeat(64)),
        "a9.branch",
        &dir.join("a9"),
    );
    assert!(
        text(&o).contains("(401): unknown setup key"),
        "{}",
        text(&o)
    );
    // Expired: the key's expiry is moved into the past in its store.
    let old = setup_key(
        &api,
        json!({"name": "old", "groups": ["BRANCH-A"], "reusable": true}),
    );
    let db = dir.join("data/gkm.db");
    let py = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"UPDATE setup_keys SET expires_at = 1 WHERE name = 'old'\"); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(py.success());
    let o = enroll(&base, &old, "a3.branch", &dir.join("a3"));
    assert!(
        text(&o).contains("(403): the setup key has expired"),
        "{}",
        text(&o)
    );

    // A reusable key with a limit of 2, for group B: a third is refused.
    let two = setup_key(
        &api,
        json!({"name": "two", "groups": ["BRANCH-B"], "reusable": true, "usage_limit": 2}),
    );
    // A garbled request is refused by field and does not count a use.
    let (status, body) = api.call(
        "POST",
        "/api/v1/enroll",
        Some(&json!({"setup_key": two, "name": "a8.branch", "csr": "not a request"})),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("/csr")),
        "{body}"
    );

    let (b1, b2) = (dir.join("b1"), dir.join("b2"));
    for (name, state) in [("b1.branch", &b1), ("b2.branch", &b2)] {
        let o = enroll(&base, &two, name, state);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = enroll(&base, &two, "b3.branch", &dir.join("b3"));
    assert!(text(&o).contains("used up"), "{}", text(&o));

    // Registration with the certificates: each in its own group only.
    let o = register(&a1, A, "127.0.5.1:0");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("registered group 4101"), "{}", text(&o));
    let o = register(&a1, B, "127.0.5.1:0");
    assert!(!o.status.success(), "a1 joined group B: {}", text(&o));
    assert!(text(&o).contains("INVALID-ID-INFORMATION"), "{}", text(&o));
    assert!(server
        .output()
        .contains("the certificate's enrolled agent may join groups [4101] only, not 4102"));
    let o = register(&b1, B, "127.0.5.2:0");
    assert!(o.status.success(), "{}", text(&o));
    let gms = api.expect(200, "GET", &format!("/api/v1/gms?group={A}"), None);
    assert!(gms.to_string().contains("\"a1.branch\""), "{gms}");

    // Renewal with the agent's own token: a new key and certificate, and
    // the agent registers with them.
    let before = std::fs::read_to_string(b2.join("cert.pem")).unwrap();
    let o = agent()
        .arg("renew")
        .arg("--state-dir")
        .arg(&b2)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(
        std::fs::read_to_string(b2.join("cert.pem")).unwrap(),
        before
    );
    let o = register(&b2, B, "127.0.5.3:0");
    assert!(o.status.success(), "{}", text(&o));
    let agents = api.expect(200, "GET", "/api/v1/agents", None);
    let b2_row = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "b2.branch")
        .unwrap();
    assert!(b2_row["renewed_at"].as_i64().is_some(), "{agents}");

    // A running agent renews by itself when its certificate is within
    // --renew-before-days of expiry (here at once: 365 > 90), and goes on
    // with the new certificate.
    let before = std::fs::read_to_string(b1.join("cert.pem")).unwrap();
    let mut running = Proc::spawn(
        {
            let mut c = agent();
            c.arg("--enrollment")
                .arg(&b1)
                .args(["--bind", "127.0.5.4:0", "--renew-before-days", "365"])
                .arg("--status-socket")
                .arg(dir.join("b1.sock"));
            c
        },
        &dir.join("b1-running.log"),
    );
    running.wait_for("certificate renewed", Duration::from_secs(20));
    running.wait_for("registered group 4102", Duration::from_secs(20));
    drop(running);
    assert_ne!(
        std::fs::read_to_string(b1.join("cert.pem")).unwrap(),
        before
    );
    // The agent's token reports for itself in its group only.
    let b1_token = std::fs::read_to_string(b1.join("token")).unwrap();
    let report = |group: u32, who: &str| {
        json!({"group": group, "gm_identity": who, "agent_version": "test",
               "registered": true, "d3p_window_ms": null, "d3p_window_source": null,
               "agent_time_ms": 1, "counters": {"input_packets": 0, "output_packets": 0,
               "input_errors": 0, "output_errors": 0, "history": []}})
    };
    let as_b1 = api.with_token(&b1_token);
    let (status, body) = as_b1.call("POST", "/api/v1/gm-health", Some(&report(B, "a1.branch")));
    assert_eq!(status, 403, "{body}");
    let (status, body) = as_b1.call("POST", "/api/v1/gm-health", Some(&report(A, "b1.branch")));
    assert_eq!(status, 403, "{body}");
    let (status, body) = as_b1.call(
        "POST",
        "/api/v1/setup-keys",
        Some(&json!({"name": "x", "groups": ["BRANCH-B"]})),
    );
    assert_eq!(status, 403, "an agent token makes no setup key: {body}");

    // Revocation: the token at once, the certificate at the next phase 1.
    let a1_token = std::fs::read_to_string(a1.join("token")).unwrap();
    let (status, _) =
        api.with_token(&a1_token)
            .call("POST", "/api/v1/gm-health", Some(&report(A, "a1.branch")));
    assert_eq!(status, 204, "the token works before revocation");
    let revoked = api.expect(200, "POST", "/api/v1/agents/a1.branch/revoke", None);
    assert!(revoked["revoked_at"].as_i64().is_some());
    let (status, body) =
        api.with_token(&a1_token)
            .call("POST", "/api/v1/gm-health", Some(&report(A, "a1.branch")));
    assert_eq!(status, 401, "{body}");
    let o = register(&a1, A, "127.0.5.1:0");
    assert!(
        !o.status.success(),
        "the revoked agent registered: {}",
        text(&o)
    );
    assert!(text(&o).contains("INVALID-CERTIFICATE"), "{}", text(&o));
    assert!(
        server
            .output()
            .contains("agent \\\"a1.branch\\\" is revoked"),
        "{}",
        server.output()
    );
    let gms = api.expect(
        200,
        "GET",
        &format!("/api/v1/gms?group={A}&state=registered"),
        None,
    );
    assert!(!gms.to_string().contains("\"a1.branch\""), "ejected: {gms}");
    let audit = api
        .expect(200, "GET", "/api/v1/audit?limit=200", None)
        .to_string();
    for action in [
        "setup_key.create",
        "setup_key.use",
        "agent.enroll",
        "agent.renew",
        "agent.revoke",
    ] {
        assert!(audit.contains(action), "{action} not audited");
    }
    std::thread::sleep(Duration::from_millis(300));
    cap.interrupt();
    server.interrupt();
    tshark_reads_the_ecdsa_phase1(&capture, &keylog, port, &dir);
}

/// The captured ECDSA-256 main modes, decrypted with the key log: method
/// 9 offered and chosen, CERT and SIG in messages 5 and 6, nothing
/// malformed.
fn tshark_reads_the_ecdsa_phase1(capture: &Path, keylog: &Path, port: u16, dir: &Path) {
    let conf = dir.join("wireshark");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::copy(keylog, conf.join("ikev1_decryption_table")).unwrap();
    let (rewritten, n) = tshark::phase1_doi_as_ipsec(&std::fs::read(capture).unwrap());
    assert!(n >= 2, "main mode SA payloads: {n}");
    let copy: PathBuf = dir.join("phase1-doi1.pcap");
    std::fs::write(&copy, rewritten).unwrap();
    let port_arg = format!("udp.port=={port},isakmp");
    let rows = tshark::fields_with(
        &copy,
        &[
            "isakmp.exchangetype",
            "isakmp.nextpayload",
            "isakmp.ike.attr.authentication_method",
            "isakmp.cert.encoding",
            "_ws.malformed",
            "_ws.expert.message",
        ],
        Some(&conf),
        &["-d", &port_arg],
    );
    let methods: Vec<&str> = rows
        .iter()
        .filter(|r| !r[2].is_empty())
        .flat_map(|r| r[2].split(','))
        .collect();
    assert!(
        !methods.is_empty() && methods.iter().all(|m| *m == "9"),
        "{rows:?}"
    );
    // Decrypted messages 5 and 6 carry CERT (6, X.509 signature: 4) and SIG (9).
    let with_sig = rows
        .iter()
        .filter(|r| {
            let p: Vec<&str> = r[1].split(',').collect();
            p.contains(&"6") && p.contains(&"9") && r[3] == "4"
        })
        .count();
    assert!(with_sig >= 2, "CERT and SIG decrypted: {rows:?}");
    for r in &rows {
        assert!(r[4].is_empty(), "tshark flags a frame as malformed: {r:?}");
    }
}

/// The acceptance: `scripts/demo-enroll 3`, run with the test
/// build's binaries, ends with its summary line.
#[test]
fn demo_enroll_enrolls_registers_and_refuses_the_revoked() {
    let bin = binary("gkm-server", "gkm-server");
    binary("gkmctl", "gkmctl");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(root.join("scripts/demo-enroll"))
        .arg("3")
        .env("GKM_BIN_DIR", bin.parent().unwrap())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("enrolled 3/3; registered 3/3; revoked 1 refused"),
        "{out}"
    );
}
