//! The HTTP listener under connection floods (issue 16, item 3), with the
//! real server, plain and TLS: more idle connections than the cap do not
//! keep a fresh API request out, slowloris headers and idle keep-alive
//! connections are closed on time, a client that keeps working is not,
//! the open-file limit is raised, and TLS answers carry HSTS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gkm_tests::api::Api;
use gkm_tests::procs::{free_udp_port, fresh_dir, start_server, Proc};

const CAP: usize = 64;

fn limits() -> Vec<String> {
    [
        "--http-max-connections",
        &CAP.to_string(),
        "--http-header-timeout-secs",
        "2",
        "--http-idle-timeout-secs",
        "3",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .parse()
        .unwrap()
}

/// Whether the server closed `s` within `within` (EOF or reset on read).
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 256];
    while start.elapsed() < within {
        match s.read(&mut b) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn soft_nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

#[test]
fn idle_floods_slowloris_and_keep_alive_on_plain_http() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "http-limits");
    let extra = limits();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (ks, url) = start_server(&dir, free_udp_port(), "server.log", &extra);
    assert!(
        ks.output().contains(&format!("max_connections={CAP}")),
        "{}",
        ks.output()
    );
    let (soft, hard) = soft_nofile(ks.child.id());
    assert_eq!(
        soft, hard,
        "the soft open-file limit is raised to the hard one"
    );
    let addr = addr_of(&url);
    let api = Api::new(
        &url,
        &std::fs::read_to_string(dir.join("data/admin-token")).unwrap(),
    );
    // The flood: more idle connections than the cap, all held open.
    let mut flood: Vec<TcpStream> = (0..CAP + 36)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fresh request is still served, at once.
    let start = Instant::now();
    api.expect(200, "GET", "/api/v1/groups", None);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "API request took {took:?} behind {} idle connections",
        flood.len()
    );
    // The oldest idle connections made room: some of the flood was closed.
    let mut closed = 0;
    for s in flood.iter_mut().take(40) {
        if closed_within(s, Duration::from_millis(150)).is_some() {
            closed += 1;
        }
    }
    assert!(closed > 0, "no idle connection was evicted");
    drop(flood);
    // Slowloris: a header byte every 500 ms never finishes; closed about
    // 2 s after its first byte.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/v1/groups HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut slow_closed = None;
    while start.elapsed() < Duration::from_secs(6) {
        if slow.write_all(b"X").is_err() {
            slow_closed = Some(start.elapsed());
            break;
        }
        if let Some(t) = closed_within(&mut slow, Duration::from_millis(500)) {
            slow_closed = Some(start.elapsed().max(t));
            break;
        }
    }
    let t = slow_closed.expect("slowloris connection still open after 6 s");
    assert!(t >= Duration::from_millis(1500), "closed too early: {t:?}");
    // An idle connection (no byte at all) is closed after the idle timeout.
    let mut idle = TcpStream::connect(addr).unwrap();
    let t = closed_within(&mut idle, Duration::from_secs(6)).expect("idle connection still open");
    assert!(
        t >= Duration::from_millis(2500),
        "idle closed too early: {t:?}"
    );
    // A keep-alive client working every second outlives the idle timeout.
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..5 {
        busy.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 65536];
        // Read until the whole answer is in (Content-Length).
        loop {
            let n = busy.read(&mut b).unwrap();
            assert!(n > 0, "closed while in use");
            got.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(h) = text.find("\r\n\r\n") {
                let len: usize = text[..h]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if got.len() >= h + 4 + len {
                    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..h]);
                    assert!(
                        !text[..h]
                            .to_ascii_lowercase()
                            .contains("strict-transport-security"),
                        "no HSTS on plain HTTP"
                    );
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (cert, key)
}

#[test]
fn tls_handshakes_are_bounded_and_answers_carry_hsts() {
    let dir = fresh_dir(env!("CARGO_TARGET_TMPDIR"), "https-limits");
    let (cert, key) = self_signed(&dir);
    let mut extra = limits();
    extra.extend([
        "--tls-cert".to_owned(),
        cert.to_str().unwrap().to_owned(),
        "--tls-key".to_owned(),
        key.to_str().unwrap().to_owned(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (_ks, url) = start_server(&dir, free_udp_port(), "server.log", &extra);
    let addr = addr_of(&url);
    // More connections than the cap that never start their handshake.
    let mut flood: Vec<TcpStream> = (0..CAP + 36)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A real TLS client still gets its answer, with HSTS.
    let start = Instant::now();
    let mut client = Proc::spawn(
        {
            let mut c = Command::new("openssl");
            c.args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-quiet",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&cert)
            .stdin(Stdio::piped());
            c
        },
        &dir.join("s_client.log"),
    );
    client
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    client.wait_for("strict-transport-security", Duration::from_secs(5));
    let took = start.elapsed();
    let out = client.output();
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    assert!(took < Duration::from_secs(2), "TLS request took {took:?}");
    drop(flood.drain(..40));
    // A connection that never completes its handshake is closed after the
    // header timeout (2 s).
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let t =
        closed_within(&mut stalled, Duration::from_secs(6)).expect("stalled handshake still open");
    assert!(t >= Duration::from_millis(1500), "closed too early: {t:?}");
}
