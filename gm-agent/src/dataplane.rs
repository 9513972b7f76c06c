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

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, bail, Context, Result};
use gkm_dataplane::tunnel::{Tunnel, HEADROOM, TAILROOM};
use gkm_dataplane::DataplaneError;
use gkm_proto::group::Ipv4Prefix;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};
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

/// Creates the TUN device, with segmentation offload (virtio-net header:
/// TSO/GSO super-packets are read whole and split here, received segments
/// are coalesced into one write, GRO) where the kernel offers it, else
/// without.
pub fn tun(s: &Settings) -> Result<tun_rs::SyncDevice> {
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(s.device.clone())
            .mtu(s.mtu)
            .offload(offload)
            .enable(true)
            .build_sync()
    };
    let dev = match build(true) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "TUN segmentation offload unavailable: one packet per read and write");
            build(false).with_context(|| {
                format!(
                    "cannot create TUN device {} (root or CAP_NET_ADMIN needed)",
                    s.device
                )
            })?
        }
    };
    // No address of its own: it only carries packets to and from this host's.
    ip(&["link", "set", &s.device, "up"], &[])?;
    Ok(dev)
}

/// The raw ESP socket: protocol 50, header included, marked, blocking
/// (each direction has a thread of its own; see [`spawn`]).
pub fn esp_socket(mark: u32) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(50)))
        .context("cannot open a raw ESP socket (root or CAP_NET_RAW needed)")?;
    s.set_header_included_v4(true)?;
    s.set_mark(mark)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    Ok(s)
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

/// Packets moved per batch in each direction.
const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Where an inner packet starts in every buffer: room for the outer
/// headers before it when sending, and for the virtio-net header (and the
/// coalescing's own room) when writing to the TUN device.
const OFFSET: usize = HEADROOM;

/// Size of one ESP receive buffer: the largest IPv4 packet.
const RX_LEN: usize = 65_535;

/// Starts the two packet threads, which run until the process ends:
/// TUN → encrypt in place → raw socket, and raw socket → decrypt → TUN.
/// `now_ms` is the clock D3P uses.
///
/// Why threads with blocking I/O, not tasks on the async runtime: a
/// socket registered with epoll for writing wakes an epoll waiter each
/// time the kernel frees one of its sent packets; at tens of thousands of
/// packets a second those wake-ups (and the task switches behind them)
/// cost more than the cryptography. A thread blocked in `read` or
/// `recvmmsg` is woken only when there is data.
pub fn spawn(
    tun: tun_rs::SyncDevice,
    esp: Socket,
    tunnel: SharedTunnel,
    now_ms: fn() -> u64,
) -> Result<()> {
    let tun = Arc::new(tun);
    let esp = Arc::new(esp);
    let (t, e, tu) = (tun.clone(), esp.clone(), tunnel.clone());
    std::thread::Builder::new()
        .name("gkm-esp-out".into())
        .spawn(move || report(outbound(&t, &e, &tu, now_ms)))
        .context("starting the outbound dataplane thread")?;
    std::thread::Builder::new()
        .name("gkm-esp-in".into())
        .spawn(move || report(inbound(&tun, &esp, &tunnel, now_ms)))
        .context("starting the inbound dataplane thread")?;
    Ok(())
}

fn report(r: Result<()>) {
    if let Err(e) = r {
        tracing::error!(error = %format!("{e:#}"), "dataplane stopped");
    }
}

/// TUN → ESP: a read returns one packet, or (with offload) a TSO/GSO
/// super-packet split into segments, each at [`OFFSET`] in its buffer with
/// the head- and tailroom ESP needs; all are sealed in place under one
/// lock and sent with one `sendmmsg`.
fn outbound(
    tun: &tun_rs::SyncDevice,
    esp: &Socket,
    tunnel: &SharedTunnel,
    now_ms: fn() -> u64,
) -> Result<()> {
    let mut original = vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_535];
    // Segments are at most the MTU, but a packet read without offload is
    // whatever the device holds: room for the largest.
    let seg_len = OFFSET + usize::from(u16::MAX) + TAILROOM;
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; seg_len]).collect();
    let mut sizes = vec![0usize; BATCH];
    let mut sealed: Vec<(usize, Range<usize>, SockaddrIn)> = Vec::with_capacity(BATCH);
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    loop {
        let n = match tun.recv_multiple(&mut original, &mut bufs, &mut sizes, OFFSET) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error().is_some() => {
                return Err(e).context("reading the TUN device")
            }
            // A super-packet tun-rs could not split (malformed): dropped.
            Err(e) => {
                debug!(error = %e, "TUN read dropped");
                continue;
            }
        };
        sealed.clear();
        {
            let now = now_ms();
            let mut t = lock(tunnel);
            for (i, (buf, size)) in bufs.iter_mut().zip(&sizes).take(n).enumerate() {
                match t.encapsulate_in_place(now, buf, OFFSET..OFFSET + size) {
                    Ok(r) => {
                        let dst = buf
                            .get(r.start + 16..r.start + 20)
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map(Ipv4Addr::from)
                            .unwrap_or(Ipv4Addr::UNSPECIFIED);
                        sealed.push((i, r, SockaddrIn::from(SocketAddrV4::new(dst, 0))));
                    }
                    Err(e) => dropped("out", e),
                }
            }
        }
        send_batch(esp, &mut headers, &bufs, &sealed);
    }
}

/// Sends the sealed packets with as few `sendmmsg` calls as the kernel
/// allows; a packet the kernel refuses is dropped (and logged at debug).
fn send_batch(
    esp: &Socket,
    headers: &mut MultiHeaders<SockaddrIn>,
    bufs: &[Vec<u8>],
    sealed: &[(usize, Range<usize>, SockaddrIn)],
) {
    let mut from = 0;
    while let Some(rest) = sealed.get(from..).filter(|r| !r.is_empty()) {
        let iovs: Vec<[IoSlice<'_>; 1]> = rest
            .iter()
            .map(|(i, r, _)| {
                [IoSlice::new(
                    bufs.get(*i)
                        .and_then(|b| b.get(r.clone()))
                        .unwrap_or_default(),
                )]
            })
            .collect();
        let addrs: Vec<Option<SockaddrIn>> = rest.iter().map(|(_, _, a)| Some(*a)).collect();
        let cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            esp.as_raw_fd(),
            headers,
            &iovs,
            &addrs,
            cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(sent) => from += sent.count().max(1),
            Err(Errno::EINTR) => {}
            Err(e) => {
                debug!(error = %e, "ESP send failed");
                from += 1;
            }
        }
    }
}

/// ESP → TUN: `recvmmsg` returns what the raw socket holds (at least
/// one, at most [`BATCH`]); each packet is decrypted in place, its inner
/// packet copied to [`OFFSET`] in an output buffer, and the batch written
/// to the TUN device, which (with offload) coalesces a TCP flow's
/// segments into one write.
fn inbound(
    tun: &tun_rs::SyncDevice,
    esp: &Socket,
    tunnel: &SharedTunnel,
    now_ms: fn() -> u64,
) -> Result<()> {
    let mut rx: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; RX_LEN]).collect();
    let mut lens = Vec::with_capacity(BATCH);
    // Capacity for coalescing (tun-rs needs 2 x offset + the merged length).
    let cap = 2 * OFFSET + RX_LEN;
    let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(cap)).collect();
    let mut gro = tun_rs::GROTable::default();
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    loop {
        lens.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                rx.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(
                esp.as_raw_fd(),
                &mut headers,
                &mut iovs,
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => lens.extend(msgs.map(|m| m.bytes)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(anyhow!("reading the ESP socket: {e}")),
            }
        }
        let mut ready = 0;
        {
            let now = now_ms();
            let mut t = lock(tunnel);
            for (buf, len) in rx.iter_mut().zip(&lens) {
                let Some(packet) = buf.get_mut(..*len) else {
                    continue;
                };
                let r = t.decapsulate(now, packet);
                match r.map(|r| packet.get(r)) {
                    Ok(Some(inner)) => {
                        if let Some(o) = out.get_mut(ready) {
                            o.clear();
                            o.resize(OFFSET, 0);
                            o.extend_from_slice(inner);
                            ready += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => dropped("in", e),
                }
            }
        }
        if let Some(batch) = out.get_mut(..ready).filter(|b| !b.is_empty()) {
            if let Err(e) = tun.send_multiple(&mut gro, batch, OFFSET) {
                warn!(error = %e, "cannot write to the TUN device");
            }
        }
    }
}
