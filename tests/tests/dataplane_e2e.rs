//! Runs `scripts/e2e-dataplane` (network namespaces, TUN devices, real
//! binaries, tshark; root) and checks its verdict line, so the suite
//! covers the dataplane end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn dataplane_end_to_end_in_network_namespaces() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/e2e-dataplane");
    let mut cmd = Command::new(script);
    gkm_tests::procs::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run scripts/e2e-dataplane");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("esp ok; d3p late-drops=")
            && last.contains(" in-window-drops=0; rekey-loss=0"),
        "{stdout}"
    );
    let late: u32 = last
        .split("late-drops=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(late >= 10, "{last}");
    // The switch-over at the activation time lost nothing.
    let switch = stdout
        .lines()
        .find(|l| l.starts_with("switch: h1 sent "))
        .unwrap_or_default();
    assert!(switch.contains("800 echoes, 800 answered"), "{stdout}");
}
