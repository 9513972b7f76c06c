//! tshark as an independent decoder. A missing tshark fails the test with
//! instructions; it is never a silent skip.

use std::path::Path;
use std::process::Command;

/// Runs tshark on `capture` with UDP 848 decoded as ISAKMP and returns one
/// row per frame, one column per field; repeated occurrences of a field are
/// joined with commas. `config_dir` (for key tables such as
/// `ikev1_decryption_table`) becomes `WIRESHARK_CONFIG_DIR` when given.
pub fn fields(capture: &Path, fields: &[&str], config_dir: Option<&Path>) -> Vec<Vec<String>> {
    fields_with(capture, fields, config_dir, &[])
}

/// As [`fields`], with extra tshark options (another `-d` for a test port).
pub fn fields_with(
    capture: &Path,
    fields: &[&str],
    config_dir: Option<&Path>,
    extra: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(capture).args(extra).args([
        "-d",
        "udp.port==848,isakmp",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    if let Some(dir) = config_dir {
        cmd.env("WIRESHARK_CONFIG_DIR", dir);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "tshark could not be run ({e}); install it: \
             DEBIAN_FRONTEND=noninteractive apt-get install -y tshark (.ci/run does)"
        )
    });
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// A copy of a capture whose main mode SA payloads say DOI 1 (IPsec,
/// SIT_IDENTITY_ONLY) where they said DOI 2 (GDOI, situation 0), and how
/// many were rewritten. Wireshark reads a DOI 2 SA in the GDOI layout
/// only, so it learns no phase 1 cipher from GKM's main mode and cannot
/// decrypt the rest; the rewrite (same length, in the SA bodies only:
/// DOI, situation, then a proposal payload numbered 1 for PROTO_ISAKMP)
/// lets it decode the exchange with the key log (docs/WIRE.md, "tshark").
pub fn phase1_doi_as_ipsec(capture: &[u8]) -> (Vec<u8>, usize) {
    let mut out = capture.to_vec();
    let mut n = 0;
    let mut i = 0;
    while i + 14 <= out.len() {
        let w = &out[i..i + 14];
        if w[..10] == [0, 0, 0, 2, 0, 0, 0, 0, 0, 0] && w[12] == 1 && w[13] == 1 {
            out[i..i + 8].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            n += 1;
            i += 14;
        } else {
            i += 1;
        }
    }
    (out, n)
}

/// Starts tshark capturing UDP `port` on the loopback interface into
/// `capture` (its log `log`) and waits until it captures.
pub fn capture_loopback(port: u16, capture: &Path, log: &Path) -> crate::procs::Proc {
    let mut c = Command::new("tshark");
    c.args(["-i", "lo", "-f", &format!("udp port {port}"), "-w"])
        .arg(capture);
    let mut p = crate::procs::Proc::spawn(c, log);
    p.wait_for("Capture started", std::time::Duration::from_secs(20));
    p
}
