//! Runs `scripts/e2e-dataplane` (network namespaces, TUN devices, real
//! binaries, tshark; root) and checks its verdict line, so the suite
//! covers the dataplane end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// Runs the script with `env`; its stdout, after checking it succeeded.
fn e2e(env: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/e2e-dataplane");
    let mut cmd = Command::new(script);
    gkm_tests::procs::without_test_cargo_env(&mut cmd);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run scripts/e2e-dataplane");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn dataplane_end_to_end_in_network_namespaces() {
    let stdout = e2e(&[]);
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

/// Issue 18 item 3: a group whose TEK is AES-256-CBC with HMAC-SHA-256-128
/// carries ping and TCP as ESP, and tshark decrypts it and finds every ICV
/// good with the key log's keys; the same for AES-128-CBC with
/// HMAC-SHA1-96. Steps 1-2 of the script only: the rest does not depend
/// on the transform.
#[test]
fn cbc_hmac_tek_groups_end_to_end() {
    for transform in ["aes-cbc-256-hmac-sha256", "aes-cbc-128-hmac-sha1"] {
        let stdout = e2e(&[("GKM_E2E_TRANSFORM", transform), ("GKM_E2E_ONLY", "esp")]);
        let last = stdout.lines().last().unwrap_or_default();
        assert_eq!(last, format!("esp ok ({transform})"), "{stdout}");
        assert!(
            stdout.contains("tshark decrypted echo requests 1 2 3 4 5 ")
                && stdout.contains("esp icv: tshark finds every h1->h2 ICV good"),
            "{stdout}"
        );
    }
}

/// Issue 18 item 6: an IPv6 group. The hosts and the KS have IPv6
/// addresses; the KS listens on [::] (both families on one socket), the
/// agents register over IPv6 and carry ping and TCP between IPv6 hosts as
/// ESP over IPv6 with the inner addresses; tshark decrypts it (and, under
/// AES-CBC with HMAC-SHA-256-128, finds every ICV good), the KS's
/// traffic outside the selector stays in clear.
#[test]
fn an_ipv6_group_end_to_end() {
    for transform in ["aes-gcm-128", "aes-cbc-256-hmac-sha256"] {
        let stdout = e2e(&[
            ("GKM_E2E_FAMILY", "ipv6"),
            ("GKM_E2E_TRANSFORM", transform),
            ("GKM_E2E_ONLY", "esp"),
        ]);
        let last = stdout.lines().last().unwrap_or_default();
        assert_eq!(last, format!("esp ok ({transform}, ipv6)"), "{stdout}");
        assert!(
            stdout.contains("tshark decrypted echo requests 1 2 3 4 5 ")
                && stdout.contains(", none in clear;"),
            "{stdout}"
        );
    }
}
