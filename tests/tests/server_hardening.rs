//! The server's own files and logs (issue 16, items 7, 8, 13, 14), with
//! the real binary: the data directory is private and the SQLite files
//! are 0600; a generated admin password goes to a terminal only, never to
//! a log; a short `GKM_ADMIN_PASSWORD` is refused; and a sign-in with a
//! user name carrying a forged log line is logged escaped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gkm_tests::procs::{binary, free_udp_port, fresh_dir, start_server, Proc};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn private_files_and_no_password_in_the_log() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "hardening-files");
    // A data directory left open by hand is narrowed at start.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ks, url) = start_server(&dir, free_udp_port(), "server.log", &[]);
    assert_eq!(mode(&data), 0o700, "data directory");
    for f in [
        "gkm.db",
        "gkm.db-wal",
        "gkm.db-shm",
        "master.key",
        "admin-token",
        "admin-password",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // Not a terminal: the password is only in its file.
    let pw = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let log = ks.output();
    assert!(
        !log.contains(pw.trim()),
        "the generated password reached the log"
    );
    assert!(log.contains("generated the local admin password"), "{log}");
    // A sign-in whose user name carries a forged log line.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut page = agent.get(&format!("{url}/login")).call().unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = page.body_mut().read_to_string().unwrap();
    let at = body.find(r#"name="csrf" value=""#).unwrap() + 19;
    let csrf = &body[at..at + 64];
    let forged = "mallory\n2026-12-01T00:00:00.000000Z  INFO gkm_server: forged line \u{1b}[2J";
    let form = format!(
        "csrf={csrf}&user={}&password=x",
        forged
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let r = agent
        .post(&format!("{url}/login"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    std::thread::sleep(Duration::from_millis(300));
    let log = ks.output();
    assert!(log.contains(r#"user="mallory\n2026-12-01"#), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("INFO gkm_server: forged line") && !l.contains("mallory")),
        "a forged line made it into the log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
}

#[test]
fn a_short_admin_password_is_refused() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "hardening-password");
    let server = |pw: &str| {
        let mut c = Command::new(binary("gkm-server", "gkm-server"));
        c.args([
            "--listen",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join(format!("data-{}", pw.len())))
        .env("GKM_ADMIN_PASSWORD", pw)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
        c
    };
    let out = server("fifteen-chars!!").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GKM_ADMIN_PASSWORD must be at least 16 characters"),
        "{err}"
    );
    let mut ok = Proc::spawn(server("sixteen-chars!!!"), &dir.join("ok.log"));
    ok.wait_for("serving the REST API", Duration::from_secs(60));
    assert!(ok
        .output()
        .contains("the local admin password is the one in GKM_ADMIN_PASSWORD"));
}
