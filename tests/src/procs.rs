//! Running the real binaries from tests: find (or build) them, start them
//! with logs in files, wait for a log line, stop them.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries for this test build.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Removes what cargo set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*...)
/// from a command that builds: build scripts that watch those variables
/// (ring's) would otherwise rebuild half the workspace.
pub fn without_test_cargo_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let keep = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&k.as_ref())
            || k.starts_with("CARGO_BUILD_")
            || k.starts_with("CARGO_TERM_");
        if k.starts_with("CARGO_") && !keep {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// The features the scenario tests' binaries are built with: the test-only
/// hooks (`scripts/test` and the e2e scripts build with the same).
pub const TEST_FEATURES: &str = "gkm-server/test-hooks,gkm-agent/test-hooks";

/// Path of a workspace binary. The first call in a test process runs
/// `cargo build --workspace --bins --features TEST_FEATURES` (what
/// `scripts/test` runs before the tests, so normally a no-op; the same
/// command keeps the same feature set, so nothing is rebuilt) and a test
/// never runs a stale binary.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--features",
            TEST_FEATURES,
        ]);
        without_test_cargo_env(&mut cmd);
        if bin_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found after building (package {package})",
        path.display()
    );
    path
}

/// An empty directory `name` under `base` (a test's `CARGO_TARGET_TMPDIR`),
/// emptied first if an earlier run left it.
pub fn fresh_dir(base: &str, name: &str) -> PathBuf {
    let d = Path::new(base).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test directory");
    d
}

/// A UDP port free on 127.0.0.1 right now.
/// Never one in traceroute's range (33434-33534): tshark flags UDP to those
/// ports as "Possible traceroute", which the capture checks read as a
/// warning about our own packets.
pub fn free_udp_port() -> u16 {
    loop {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !(33434..=33534).contains(&port) {
            return port;
        }
    }
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback TCP port")
}

/// A child process that is killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its combined log file.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        let f = std::fs::File::create(log).expect("create log");
        let g = f.try_clone().expect("clone log handle");
        let child = cmd
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(g))
            .spawn()
            .expect("spawn");
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "process exited ({status}) before {needle:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} within {timeout:?}:\n{}", self.output());
    }

    /// The address a server logged for a listener: `key=ADDR` on the
    /// first line containing `line`.
    pub fn logged_addr(&self, line: &str, key: &str) -> String {
        let out = self.output();
        out.lines()
            .find(|l| l.contains(line))
            .and_then(|l| l.split(&format!("{key}=")).nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no {line:?} line:\n{out}"))
    }

    /// Sends SIGINT (lets tshark flush its capture) and waits for exit.
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `gkm-server` with GDOI on `127.0.0.1:udp`, the REST API on a free
/// loopback port, its data in `dir/data` and its log in `dir/log`, plus
/// `extra` arguments; waits for the REST API and returns it with its base
/// URL (`http://127.0.0.1:PORT`).
pub fn start_server(dir: &Path, udp: u16, log: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(binary("gkm-server", "gkm-server"));
    cmd.args(extra)
        .args([
            "--listen",
            &format!("127.0.0.1:{udp}"),
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd, &dir.join(log));
    let url = wait_for_http(&mut p);
    (p, url)
}

/// Waits for a starting `gkm-server`'s REST API and returns its base URL
/// (`http://127.0.0.1:PORT`).
pub fn wait_for_http(p: &mut Proc) -> String {
    // The REST API line comes after "serving GDOI": wait for it, not the first.
    p.wait_for("serving the REST API", Duration::from_secs(60));
    let http = p
        .output()
        .lines()
        .find(|l| l.contains("serving the REST API"))
        .and_then(|l| l.split("http=").nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("http://{http}")
}

/// Runs `ip ARGS` (iproute2: namespaces, veth pairs, addresses) and fails
/// the test with its error when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` could not be run ({e}); install iproute2 (.ci/run does)"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
