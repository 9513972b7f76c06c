//! `gkm-server`: the GKM key server.
//!
//! Owns (DESIGN.md): configuration, start-up, the UDP 848 driver around the
//! key-server engine, the rekey scheduler, the COOP driver, metrics, and
//! mounting `gkm-web`. This build serves the GDOI port and decodes every
//! datagram with `gkm-wire`, logging what arrived; registration
//! (GROUPKEY-PULL) and the dashboard land with their issues.

use std::io::ErrorKind as IoErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use gkm_wire::{Body, Message};
use tracing::{info, warn};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "gkm-server",
    version,
    about = "GKM group key server (GDOI, RFC 6407)"
)]
struct Args {
    /// Address and port for GDOI (UDP). 848 is the registered GDOI port.
    #[arg(long, default_value = "0.0.0.0:848", env = "GKM_LISTEN")]
    listen: SocketAddr,
    /// Directory for the embedded database, master key and logs.
    #[arg(long, default_value = "gkm-data", env = "GKM_DATA_DIR")]
    data_dir: PathBuf,
}

fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(|e| {
        let hint = if e.kind() == IoErrorKind::PermissionDenied {
            format!(
                "ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, \
                 `setcap cap_net_bind_service=+ep $(command -v gkm-server)`, \
                 or pass --listen {}:8848",
                addr.ip()
            )
        } else if e.kind() == IoErrorKind::AddrInUse {
            "another process holds this port: stop it or pass --listen with a free port".to_owned()
        } else {
            "check --listen".to_owned()
        };
        anyhow::anyhow!("cannot bind UDP {addr}: {e}; {hint}")
    })
}

fn describe(msg: &Message<'_>) -> String {
    let h = &msg.header;
    match &msg.body {
        Body::Encrypted(ct) => format!(
            "{} msgid={:08x} encrypted {} octets, first payload {}",
            h.exchange_type,
            h.message_id,
            ct.len(),
            h.next_payload
        ),
        Body::Payloads(ps) => {
            let names: Vec<String> = ps.iter().map(|p| p.payload_type().to_string()).collect();
            format!(
                "{} msgid={:08x} payloads [{}]",
                h.exchange_type,
                h.message_id,
                names.join(", ")
            )
        }
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let socket = bind(args.listen)?;
    info!(
        listen = %socket.local_addr()?,
        data_dir = %args.data_dir.display(),
        "gkm-server {} serving GDOI; this build decodes and logs datagrams \
         (registration lands with the GROUPKEY-PULL issue)",
        env!("CARGO_PKG_VERSION")
    );
    let mut buf = vec![0u8; 65_536];
    let (mut ok, mut bad) = (0u64, 0u64);
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .context("receiving on the GDOI socket")?;
        let datagram = buf.get(..n).unwrap_or_default();
        match Message::parse(datagram) {
            Ok(msg) => {
                ok += 1;
                info!(peer = %from, decoded = ok, "{}", describe(&msg));
            }
            Err(e) => {
                bad += 1;
                warn!(peer = %from, rejected = bad, error = %e, notify = %e.kind.notify(), "malformed ISAKMP datagram");
            }
        }
    }
}
