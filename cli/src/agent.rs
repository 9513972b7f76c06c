//! Asking a local agent for its status over its Unix socket (see
//! `gkm-agent`'s status module): one request line, one JSON line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gkm_model::health::GroupReplay;

/// Where agents serve their status by default (one socket per group).
pub const DEFAULT_DIR: &str = "/run/gkm-agent";

/// Why an agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No socket there, or nobody listening.
    #[error(
        "cannot reach the agent at {path}: {source} (is gkm-agent running? pass --agent PATH)"
    )]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory without sockets.
    #[error("no agent sockets (*.sock) in {0}: pass --agent PATH")]
    NoSockets(PathBuf),
    /// The answer was not a status.
    #[error("the agent at {path} answered something else: {detail}")]
    BadAnswer {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// Asks one socket, or every `*.sock` in a directory (sorted), for `replay`.
pub fn replay(path: &Path) -> Result<Vec<GroupReplay>, AgentError> {
    let sockets = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| AgentError::Unreachable {
                path: path.to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(AgentError::NoSockets(path.to_owned()));
        }
        v
    } else {
        vec![path.to_owned()]
    };
    sockets.iter().map(|p| ask(p)).collect()
}

fn ask(path: &Path) -> Result<GroupReplay, AgentError> {
    let io = |source| AgentError::Unreachable {
        path: path.to_owned(),
        source,
    };
    let mut c = UnixStream::connect(path).map_err(io)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    c.write_all(b"replay\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line).map_err(|e| AgentError::BadAnswer {
        path: path.to_owned(),
        detail: format!("{e}: {}", line.trim()),
    })
}
