//! Runs `scripts/e2e-coop` (three key servers and five agents with the
//! dataplane in network namespaces, real binaries; root) and checks its
//! verdict line: issue 19's acceptance, in the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn cooperative_key_servers_fail_over_under_ping_with_agents_and_the_dataplane() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/e2e-coop");
    let mut cmd = Command::new(script);
    gkm_tests::procs::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run scripts/e2e-coop");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let failover: f64 = last
        .strip_prefix("failover ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    // Within the dead window plus a check period (2 x 10 s + 10 s).
    assert!(failover <= 30.0, "{last}");
    assert!(
        last.ends_with("; rekey accepted 5/5; ping lost 0; mismatch alarms ok"),
        "{stdout}"
    );
}
