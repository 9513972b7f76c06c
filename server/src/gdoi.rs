//! The UDP driver around the key-server engine: receive, feed, drain. The
//! engine does all protocol work; this loop only moves datagrams and time.

use std::io::ErrorKind as IoErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use gkm_proto::ks::{KeyServer, KsConfig, KsEvent, Reject};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::OsRng;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::keylog::KeyLog;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds the GDOI socket with an error that says how to fix a refusal.
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            IoErrorKind::PermissionDenied => format!(
                "ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, \
                 `setcap cap_net_bind_service=+ep $(command -v gkm-server)`, or pass --listen {}:8848",
                addr.ip()
            ),
            IoErrorKind::AddrInUse => "another process holds this port: stop it or pass --listen with a free port".into(),
            IoErrorKind::AddrNotAvailable => "the address is not configured on this host: check --listen".into(),
            _ => "check --listen".into(),
        };
        anyhow!("cannot bind UDP {addr}: {e}; {hint}")
    })
}

/// Sends what the engine queued: without waiting while the socket has room,
/// waiting only when it is full.
async fn flush(socket: &UdpSocket, ks: &mut KeyServer) {
    while let Some(t) = ks.poll_transmit() {
        let sent = match socket.try_send_to(&t.payload, t.to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == IoErrorKind::WouldBlock => {
                socket.send_to(&t.payload, t.to).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            warn!(peer = %t.to, error = %e, "send failed");
        }
    }
}

/// Runs the key server until Ctrl-C.
pub async fn run(socket: UdpSocket, cfg: KsConfig, mut key_log: Option<KeyLog>) -> Result<()> {
    // ChaCha20 seeded once from the OS: cookies, nonces and message IDs
    // without a getrandom system call each (ring's ECDH draws from the OS itself).
    let rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| anyhow!("seeding the generator: {e}"))?;
    let mut ks = KeyServer::new(cfg, Box::new(rng));
    let mut buf = vec![0u8; 65_536];
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let wait = ks
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                ks.handle_datagram(now_ms(), from, buf.get(..n).unwrap_or_default());
                flush(&socket, &mut ks).await;
                // Serve whatever else is already queued, answering each at once.
                for _ in 0..256 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            ks.handle_datagram(now_ms(), from, buf.get(..n).unwrap_or_default());
                            flush(&socket, &mut ks).await;
                        }
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                ks.handle_timeout(now_ms());
                flush(&socket, &mut ks).await;
            }
            _ = &mut shutdown => {
                info!(registrations = ks.counters().registrations, "shutting down");
                return Ok(());
            }
        }
        while let Some(e) = ks.poll_event() {
            match e {
                KsEvent::Registered(r) => info!(
                    gm = %r.identity, addr = %r.addr, group = r.group_id, class = %r.class,
                    version = %r.version.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    features = r.features.0, sids = ?r.sids, "GM registered"
                ),
                KsEvent::Phase1Established { peer, identity } => {
                    debug!(%peer, %identity, "phase 1 established")
                }
                KsEvent::Phase1Keys {
                    initiator_cookie,
                    enc_key,
                } => {
                    if let Some(log) = key_log.as_mut() {
                        if let Err(e) = log.phase1(&initiator_cookie, &enc_key) {
                            warn!(error = %e, "key log write failed");
                        }
                    }
                }
                KsEvent::Rejected {
                    peer,
                    reason: Reject::Retransmit,
                    ..
                } => debug!(%peer, "retransmission answered"),
                KsEvent::Rejected {
                    peer,
                    reason,
                    notify,
                } => warn!(
                    %peer, reason = ?reason, notify = %notify.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    "refused"
                ),
            }
        }
    }
}
