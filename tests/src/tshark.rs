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
