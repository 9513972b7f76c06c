//! tshark as an independent decoder. A missing tshark is a test failure
//! with instructions, never a silent skip.

use std::path::Path;
use std::process::Command;

/// Runs tshark on a capture with UDP 848 decoded as ISAKMP and returns the
/// `-T json` output parsed. Panics (fails the test) with a clear message if
/// tshark is absent or fails.
pub fn json(capture: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(capture)
        .args(["-d", "udp.port==848,isakmp", "-T", "json"])
        .args(extra)
        .env("WIRESHARK_CONFIG_DIR", capture.parent().unwrap_or(Path::new(".")))
        .output()
        .unwrap_or_else(|e| {
            panic!("tshark could not be run ({e}); install it: apt-get install tshark (scripts/test and .ci/run do)")
        });
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tshark -T json output is JSON")
}
