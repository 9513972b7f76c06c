//! The agent's local status socket: a Unix stream socket (mode 0660) that
//! answers one request line with one JSON line. `replay` returns the
//! group's [`GroupReplay`] (what `gkmctl show crypto gkm gm replay`
//! prints); anything else gets `{"error": ...}`. Requests are read with a
//! size cap and a timeout, so a stuck or hostile client holds nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use gkm_model::health::GroupReplay;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info};

/// Where the agent serves its status unless told otherwise.
pub const DEFAULT_DIR: &str = "/run/gkm-agent";

/// Longest request line accepted.
const MAX_REQUEST: usize = 256;

/// The default socket of a group's agent.
pub fn default_path(group: u32) -> PathBuf {
    Path::new(DEFAULT_DIR).join(format!("{group}.sock"))
}

/// The status the main loop keeps current and the socket serves.
pub type Shared = Arc<Mutex<GroupReplay>>;

/// Binds the socket (replacing a stale one a crashed agent left) and
/// serves it until the process ends.
pub fn serve(
    path: &Path,
    status: Shared,
    tunnel: Option<crate::dataplane::SharedTunnel>,
    now_ms: fn() -> u64,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    info!(path = %path.display(), "serving local status (gkmctl show crypto gkm gm replay --agent PATH)");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let status = status.clone();
            let tunnel = tunnel.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(conn, &status, tunnel.as_ref(), now_ms).await {
                    debug!(error = %e, "status request failed");
                }
            });
        }
    });
    Ok(())
}

/// The group's status now: the dataplane's counters when it runs, the
/// agent's clock.
pub fn snapshot(
    status: &Shared,
    tunnel: Option<&crate::dataplane::SharedTunnel>,
    now_ms: fn() -> u64,
) -> GroupReplay {
    let mut s = status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    s.posix_time_ms = now_ms();
    if let Some(t) = tunnel {
        s.counters = crate::dataplane::lock(t).counters.clone();
    }
    s
}

async fn answer(
    conn: UnixStream,
    status: &Shared,
    tunnel: Option<&crate::dataplane::SharedTunnel>,
    now_ms: fn() -> u64,
) -> Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    tokio::time::timeout(Duration::from_secs(2), reader.read_until(b'\n', &mut line))
        .await
        .context("request timed out")??;
    let reply = match std::str::from_utf8(&line).map(str::trim) {
        Ok("replay") => serde_json::to_string(&snapshot(status, tunnel, now_ms))?,
        _ => serde_json::json!({"error": "unknown request: send `replay`"}).to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkm_dataplane::replay::CountReplay;
    use gkm_model::health::{ReplayCounters, WindowSource};

    async fn ask(path: &Path, req: &[u8]) -> String {
        let mut c = UnixStream::connect(path).await.unwrap();
        c.write_all(req).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_replay_and_refuses_anything_else() {
        let dir = std::env::temp_dir().join(format!("gkm-status-{}", std::process::id()));
        let path = dir.join("7.sock");
        let status: Shared = Arc::new(Mutex::new(GroupReplay {
            group: 7,
            name: "GET".into(),
            d3p_window_ms: Some(5000),
            d3p_window_source: Some(WindowSource::Client),
            posix_time_ms: 0,
            counters: ReplayCounters::default(),
        }));
        serve(&path, status.clone(), None, || 42).unwrap();
        status.lock().unwrap().counters.output();
        let r: GroupReplay = serde_json::from_str(&ask(&path, b"replay\n").await).unwrap();
        assert_eq!(
            (r.group, r.posix_time_ms, r.counters.output_packets),
            (7, 42, 1)
        );
        assert!(ask(&path, b"keys\n").await.contains("unknown request"));
        // An oversized request is cut at the cap and refused (the client may
        // see its connection reset), never buffered; the socket still serves.
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(&[b'x'; 10_000]).await.unwrap();
        let mut out = String::new();
        if c.read_to_string(&mut out).await.is_ok() {
            assert!(out.contains("unknown request"), "{out}");
        }
        assert!(ask(&path, b"replay\n").await.contains("\"group\":7"));
        // A second agent start replaces the stale socket.
        serve(&path, status, None, || 43).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
