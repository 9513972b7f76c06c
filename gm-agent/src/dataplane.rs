//! The agent's encrypting dataplane I/O (Linux): a TUN device takes the
//! group's protected traffic, [`Tunnel`] encrypts it, and a raw IPv4
//! socket (protocol 50, header included) sends the ESP packet with the
//! inner addresses; the same socket receives the group's ESP, which is
//! decrypted and written into the TUN device for local delivery.
//!
//! Routing (iproute2, undone on exit and redone cleanly after a crash):
//! - rule `pref P fwmark M lookup main`: the agent's own packets (ESP,
//!   GDOI, multicast rekeys; all sockets carry mark M) never loop back
//!   into the TUN device;
//! - rule `pref P+1 to DST lookup T` for each TEK's destination prefix,
//!   and in table T `DST dev gkm0`: everything else to a protected
//!   destination enters the TUN device. Traffic outside the selectors
//!   keeps the main table, in clear. With fail-close (the default) the
//!   routes exist from the start, so protected traffic is dropped, never
//!   sent in clear, until the agent holds keys.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, bail, Context, Result};
use gkm_dataplane::tunnel::Tunnel;
use gkm_dataplane::DataplaneError;
use gkm_proto::group::Ipv4Prefix;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

/// Dataplane settings (the agent's `[dataplane]` section).
#[derive(Debug, Clone)]
pub struct Settings {
    /// TUN device name.
    pub device: String,
    /// TUN MTU: 1500 minus the worst ESP + D3P overhead (69 octets), rounded down.
    pub mtu: u16,
    /// Mark on the agent's own sockets.
    pub fwmark: u32,
    /// Routing table of the protected prefixes.
    pub table: u32,
    /// Preference of the first of the two rules.
    pub rule_pref: u32,
    /// Drop protected traffic until registered (routes from the start).
    pub fail_close: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            device: "gkm0".into(),
            mtu: 1400,
            fwmark: 0x474b,
            table: 0x474b,
            rule_pref: 10_000,
            fail_close: true,
        }
    }
}

/// Runs `ip` with `args`; `ok_if` lists error texts that mean "already so".
fn ip(args: &[&str], ok_if: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || ok_if.iter().any(|e| err.contains(e)) {
        Ok(())
    } else {
        bail!("ip {}: {}", args.join(" "), err.trim())
    }
}

/// The routing state the agent owns; removed on drop.
pub struct Routes {
    s: Settings,
    prefixes: Vec<Ipv4Prefix>,
}

impl Routes {
    /// Removes what an earlier (crashed) agent with these settings left,
    /// then installs the mark rule.
    pub fn new(s: &Settings) -> Result<Self> {
        let r = Self {
            s: s.clone(),
            prefixes: Vec::new(),
        };
        r.clear();
        let pref = s.rule_pref.to_string();
        let mark = format!("{:#x}", s.fwmark);
        ip(
            &[
                "rule", "add", "pref", &pref, "fwmark", &mark, "lookup", "main",
            ],
            &["File exists"],
        )?;
        Ok(r)
    }

    fn clear(&self) {
        let table = self.s.table.to_string();
        for pref in [self.s.rule_pref, self.s.rule_pref + 1] {
            // Every rule at our preferences (one per prefix), until none is left.
            for _ in 0..1000 {
                if ip(&["rule", "del", "pref", &pref.to_string()], &[]).is_err() {
                    break;
                }
            }
        }
        let _ = ip(&["route", "flush", "table", &table], &[]);
    }

    /// Sends the group's destination prefixes into the TUN device.
    pub fn protect(&mut self, prefixes: &[Ipv4Prefix]) -> Result<()> {
        let table = self.s.table.to_string();
        let pref = (self.s.rule_pref + 1).to_string();
        for p in prefixes {
            if self.prefixes.contains(p) {
                continue;
            }
            let dst = p.to_string();
            ip(
                &[
                    "route",
                    "replace",
                    &dst,
                    "dev",
                    &self.s.device,
                    "table",
                    &table,
                ],
                &[],
            )?;
            ip(
                &["rule", "add", "pref", &pref, "to", &dst, "lookup", &table],
                &["File exists"],
            )?;
            info!(prefix = %dst, device = %self.s.device, "protecting");
            self.prefixes.push(*p);
        }
        Ok(())
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.clear();
        debug!("routes and rules removed");
    }
}

/// Creates the TUN device.
pub fn tun(s: &Settings) -> Result<tun_rs::AsyncDevice> {
    let dev = tun_rs::DeviceBuilder::new()
        .name(s.device.clone())
        .mtu(s.mtu)
        .enable(true)
        .build_async()
        .with_context(|| {
            format!(
                "cannot create TUN device {} (root or CAP_NET_ADMIN needed)",
                s.device
            )
        })?;
    // No address of its own: it only carries packets to and from this host's.
    ip(&["link", "set", &s.device, "up"], &[])?;
    Ok(dev)
}

/// The raw ESP socket: protocol 50, header included, marked. Tokio has
/// no raw-socket type; its datagram socket drives any datagram-style fd
/// through `recvfrom`/`sendto`, which is exactly what a raw IPv4 socket
/// takes, so the raw socket is handed to it (no `unsafe` registration).
pub fn esp_socket(mark: u32) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(50)))
        .context("cannot open a raw ESP socket (root or CAP_NET_RAW needed)")?;
    s.set_header_included_v4(true)?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    UdpSocket::from_std(std::net::UdpSocket::from(s)).context("registering the ESP socket")
}

/// Shared dataplane state: the tunnel the GDOI loop installs keys into.
pub type SharedTunnel = Arc<Mutex<Tunnel>>;

/// Locks the tunnel (a panic elsewhere while holding it leaves the data usable).
pub fn lock(t: &SharedTunnel) -> std::sync::MutexGuard<'_, Tunnel> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a packet was dropped, for the debug log (not per packet at info).
fn dropped(dir: &str, e: DataplaneError) {
    debug!(direction = dir, error = %e, "packet dropped");
}

/// Moves packets until the process ends: TUN → encrypt → raw socket, and
/// raw socket → decrypt → TUN. `now_ms` is the clock D3P uses.
pub async fn run(
    tun: tun_rs::AsyncDevice,
    esp: UdpSocket,
    tunnel: SharedTunnel,
    now_ms: fn() -> u64,
) -> Result<()> {
    let mut inner = vec![0u8; 65_536];
    let mut outer = Vec::with_capacity(65_536);
    let mut rx = vec![0u8; 65_536];
    loop {
        tokio::select! {
            n = tun.recv(&mut inner) => {
                let n = n.context("reading the TUN device")?;
                let Some(pkt) = inner.get(..n) else { continue };
                let r = lock(&tunnel).encapsulate(now_ms(), pkt, &mut outer);
                match r {
                    Ok(()) => send(&esp, &outer).await,
                    Err(e) => dropped("out", e),
                }
            }
            r = esp.recv_from(&mut rx) => {
                let mut first = Some(r.context("reading the ESP socket")?.0);
                // Drain what is queued, then wait again.
                loop {
                    let n = match first.take() {
                        Some(n) => n,
                        None => match esp.try_recv_from(&mut rx) {
                            Ok((n, _)) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(anyhow!("reading the ESP socket: {e}")),
                        },
                    };
                    let Some(pkt) = rx.get_mut(..n) else { continue };
                    let r = lock(&tunnel).decapsulate(now_ms(), pkt);
                    match r {
                        Ok(range) => {
                            if let Some(p) = pkt.get(range) {
                                if let Err(e) = tun.send(p).await {
                                    warn!(error = %e, "cannot write to the TUN device");
                                }
                            }
                        }
                        Err(e) => dropped("in", e),
                    }
                }
            }
        }
    }
}

async fn send(esp: &UdpSocket, packet: &[u8]) {
    let Some(dst) = packet
        .get(16..20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Ipv4Addr::from)
    else {
        return;
    };
    if let Err(e) = esp.send_to(packet, SocketAddrV4::new(dst, 0)).await {
        debug!(error = %e, %dst, "ESP send failed");
    }
}
