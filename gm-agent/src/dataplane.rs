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
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn,
};
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
    /// TUN queues (1 = a single-queue device), each read by an
    /// encrypting thread of its own; see [`spawn`].
    pub queues: usize,
}

/// Most TUN queues [`queues`] accepts.
pub const MAX_QUEUES: u32 = 16;

/// Checks a configured number of TUN queues (1-16).
pub fn queues(q: u32) -> Result<usize> {
    if (1..=MAX_QUEUES).contains(&q) {
        Ok(q as usize)
    } else {
        bail!("dataplane queues {q}: out of range 1-{MAX_QUEUES}")
    }
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
            // One encrypting thread per CPU, up to 4.
            queues: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
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
/// without; with [`Settings::queues`] > 1 it is a multi-queue device and
/// one handle per queue is returned (a single queue where the kernel
/// refuses more).
pub fn tun(s: &Settings) -> Result<Vec<tun_rs::SyncDevice>> {
    let build = |offload: bool, multi: bool| {
        tun_rs::DeviceBuilder::new()
            .name(s.device.clone())
            .mtu(s.mtu)
            .offload(offload)
            .multi_queue(multi)
            .enable(true)
            .build_sync()
    };
    // Offload matters more than queues: with it a read is a 64 KiB
    // super-packet, without it one packet.
    let mut tries = vec![(true, s.queues > 1), (true, false)];
    if s.queues > 1 {
        tries.push((false, true));
    }
    tries.push((false, false));
    tries.dedup();
    let mut last = None;
    let mut built = None;
    for (offload, multi) in tries {
        match build(offload, multi) {
            Ok(d) => {
                if !offload {
                    warn!("TUN segmentation offload unavailable: one packet per read and write");
                }
                if s.queues > 1 && !multi {
                    warn!("multi-queue TUN unavailable: one queue, one encrypting thread");
                }
                built = Some((d, multi));
                break;
            }
            Err(e) => {
                debug!(offload, multi, error = %e, "TUN device not created");
                last = Some(e);
            }
        }
    }
    let Some((dev, multi)) = built else {
        let e = last.map_or_else(|| "no attempt".to_string(), |e| e.to_string());
        bail!(
            "cannot create TUN device {} (root or CAP_NET_ADMIN needed): {e}",
            s.device
        );
    };
    let mut devs = Vec::with_capacity(s.queues);
    if multi {
        for _ in 1..s.queues {
            match dev.try_clone() {
                Ok(q) => devs.push(q),
                Err(e) => {
                    warn!(error = %e, queues = devs.len() + 1, "cannot open another TUN queue");
                    break;
                }
            }
        }
    }
    devs.insert(0, dev);
    // No address of its own: it only carries packets to and from this host's.
    ip(&["link", "set", &s.device, "up"], &[])?;
    Ok(devs)
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
    // The kernel's count of packets dropped on a full receive queue comes
    // with each message (logged by `inbound`).
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RxqOvfl, &1)
        .context("SO_RXQ_OVFL on the ESP socket")?;
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

/// Starts the packet threads, which run until the process ends: per TUN
/// queue, TUN → encrypt in place → raw socket; and one raw socket →
/// decrypt → TUN. `now_ms` is the clock D3P uses.
///
/// Why threads with blocking I/O, not tasks on the async runtime: a
/// socket registered with epoll for writing wakes an epoll waiter each
/// time the kernel frees one of its sent packets; at tens of thousands of
/// packets a second those wake-ups (and the task switches behind them)
/// cost more than the cryptography. A thread blocked in `read` or
/// `recvmmsg` is woken only when there is data.
///
/// Why one encrypting thread per queue: the thread that sends an ESP
/// packet also runs, inside `sendmmsg`, the kernel's forwarding of it
/// (on a bridge or veth, the receiver's IP input too), so one sending
/// thread keeps one CPU busy while the others idle. The kernel spreads
/// flows over the queues by a hash of the flow, and [`inbound`] writes a
/// flow's received packets on the queue [`queue_of`] picks, which the
/// kernel then keeps for the flow's sent packets too (tun "automq").
pub fn spawn(
    tuns: Vec<tun_rs::SyncDevice>,
    esp: Socket,
    tunnel: SharedTunnel,
    now_ms: fn() -> u64,
    failed: &ThreadFailures,
) -> Result<()> {
    let tuns: Vec<Arc<tun_rs::SyncDevice>> = tuns.into_iter().map(Arc::new).collect();
    let esp = Arc::new(esp);
    for (q, t) in tuns.iter().enumerate() {
        let (t, e, tu, f) = (t.clone(), esp.clone(), tunnel.clone(), failed.clone());
        std::thread::Builder::new()
            .name(format!("gkm-esp-out{q}"))
            .spawn(move || report(outbound(&t, &e, &tu, now_ms), &f))
            .context("starting an outbound dataplane thread")?;
    }
    let f = failed.clone();
    std::thread::Builder::new()
        .name("gkm-esp-in".into())
        .spawn(move || report(inbound(&tuns, &esp, &tunnel, now_ms), &f))
        .context("starting the inbound dataplane thread")?;
    Ok(())
}

/// The TUN queue of an inner IPv4 packet's flow among `queues`: a hash of
/// the addresses, protocol and (TCP, UDP, SCTP) ports, the same in both
/// directions, so a flow's packets stay in order on one queue. (Inner
/// packets are never fragments: the tunnel refuses them.)
pub fn queue_of(packet: &[u8], queues: usize) -> usize {
    if queues < 2 {
        return 0;
    }
    let word = |r: Range<usize>| {
        packet
            .get(r)
            .map_or(0u64, |b| b.iter().fold(0u64, |a, x| a << 8 | u64::from(*x)))
    };
    let (a, b) = (word(12..16), word(16..20));
    let proto = word(9..10);
    let ihl = packet.first().map_or(20, |v| usize::from(v & 0x0f) * 4);
    let (p, q) = if matches!(proto, 6 | 17 | 132) {
        (word(ihl..ihl + 2), word(ihl + 2..ihl + 4))
    } else {
        (0, 0)
    };
    let key = (a.min(b) << 32 | a.max(b)) ^ (p.min(q) << 48 | p.max(q) << 32 | proto);
    // splitmix64's finalizer: every output bit depends on every key bit
    // (Linux gives connect()ed sockets even ports: the low bits alone
    // would put every client flow on one queue).
    let mut h = key ^ (key >> 30);
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % queues as u64) as usize
}

/// Where a packet thread that stops sends why: the agent then ends (its
/// routes and rules go with it), rather than run on with a queue nobody
/// reads, whose flows the kernel would keep sending into it.
pub type ThreadFailures = tokio::sync::mpsc::UnboundedSender<anyhow::Error>;

fn report(r: Result<()>, failed: &ThreadFailures) {
    if let Err(e) = r {
        tracing::error!(error = %format!("{e:#}"), "dataplane stopped");
        let _ = failed.send(e);
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
/// packet copied to [`OFFSET`] in an output buffer of its flow's queue
/// ([`queue_of`]), and each queue's batch written to the TUN device,
/// which (with offload) coalesces a TCP flow's segments into one write.
fn inbound(
    tuns: &[Arc<tun_rs::SyncDevice>],
    esp: &Socket,
    tunnel: &SharedTunnel,
    now_ms: fn() -> u64,
) -> Result<()> {
    let mut rx: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; RX_LEN]).collect();
    let mut lens = Vec::with_capacity(BATCH);
    // Capacity for coalescing (tun-rs needs 2 x offset + the merged length).
    let cap = 2 * OFFSET + RX_LEN;
    let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(cap)).collect();
    // Each ready packet's queue, then where it goes when grouped by queue.
    let mut queue = Vec::with_capacity(BATCH);
    let mut place = Vec::with_capacity(BATCH);
    let mut gro: Vec<tun_rs::GROTable> = tuns.iter().map(|_| Default::default()).collect();
    let mut overflow = Overflow::default();
    loop {
        match receive(esp, &mut rx, &mut lens) {
            Ok(Some(drops)) => overflow.total = drops,
            Ok(None) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(anyhow!("reading the ESP socket: {e}")),
        }
        overflow.warn();
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
                        if let Some(o) = out.get_mut(queue.len()) {
                            o.clear();
                            o.resize(OFFSET, 0);
                            o.extend_from_slice(inner);
                            queue.push(queue_of(inner, tuns.len()));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => dropped("in", e),
                }
            }
        }
        let count = group_by_queue(&mut out, &queue, &mut place);
        let mut from = 0;
        for ((tun, gro), &n) in tuns.iter().zip(&mut gro).zip(&count) {
            if let Some(batch) = out.get_mut(from..from + n).filter(|b| !b.is_empty()) {
                if let Err(e) = tun.send_multiple(gro, batch, OFFSET) {
                    warn!(error = %e, "cannot write to the TUN device");
                }
            }
            from += n;
        }
        queue.clear();
    }
}

/// One `recvmmsg` (at least one packet, then what the socket holds):
/// their lengths into `lens`, and the socket's drop count when the kernel
/// reported one (SO_RXQ_OVFL, set by [`esp_socket`]).
fn receive(esp: &Socket, rx: &mut [Vec<u8>], lens: &mut Vec<usize>) -> nix::Result<Option<u32>> {
    lens.clear();
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = rx.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    // New headers every call: the kernel shrinks each message's control
    // length to what it used (0 without a drop count), and nix's
    // `recvmmsg` does not restore it, so reused headers would lose the
    // count (seen: the test below failed that way).
    let mut headers =
        MultiHeaders::<SockaddrIn>::preallocate(iovs.len(), Some(nix::cmsg_space!(u32)));
    let msgs = recvmmsg(
        esp.as_raw_fd(),
        &mut headers,
        &mut iovs,
        MsgFlags::MSG_WAITFORONE,
        None,
    )?;
    let mut drops = None;
    for m in msgs {
        lens.push(m.bytes);
        for c in m.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::RxqOvfl(n) = c {
                drops = Some(n);
            }
        }
    }
    Ok(drops)
}

/// The ESP socket's drop count (packets the kernel dropped because the
/// receive queue was full: this host's CPU did not keep up), warned about
/// at most once a minute.
#[derive(Default)]
struct Overflow {
    total: u32,
    warned: u32,
    last: Option<std::time::Instant>,
}

impl Overflow {
    fn warn(&mut self) {
        if self.total == self.warned
            || self
                .last
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        {
            return;
        }
        warn!(
            dropped = self.total.wrapping_sub(self.warned),
            total = self.total,
            "ESP receive queue full: packets dropped before decryption (the host's CPU is not keeping up)"
        );
        self.warned = self.total;
        self.last = Some(std::time::Instant::now());
    }
}

/// Reorders `bufs[..queue.len()]` so each queue's packets lie together,
/// queue 0 first, in their order of arrival within a queue (a stable
/// counting sort, applied by swapping the buffers: nothing is copied or
/// allocated, and one pool of buffers serves every queue). Returns how
/// many packets each queue has.
fn group_by_queue(
    bufs: &mut [Vec<u8>],
    queue: &[usize],
    place: &mut Vec<usize>,
) -> [usize; MAX_QUEUES as usize] {
    let mut count = [0usize; MAX_QUEUES as usize];
    for q in queue {
        if let Some(c) = count.get_mut(*q) {
            *c += 1;
        }
    }
    if count.iter().filter(|&&c| c > 0).count() < 2 {
        return count;
    }
    place.clear();
    let mut start = [0usize; MAX_QUEUES as usize];
    let mut next = 0;
    for (s, c) in start.iter_mut().zip(&count) {
        *s = next;
        next += c;
    }
    for q in queue {
        if let Some(s) = start.get_mut(*q) {
            place.push(*s);
            *s += 1;
        }
    }
    // Apply the permutation in place, cycle by cycle.
    for i in 0..place.len() {
        while let Some(&j) = place.get(i).filter(|&&j| j != i) {
            bufs.swap(i, j);
            place.swap(i, j);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.resize(40, 0);
        p
    }

    #[test]
    fn a_flow_and_its_replies_take_one_queue_and_flows_spread() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut seen = [0usize; 4];
        for port in 40_000..40_064 {
            let out = queue_of(&packet(a, b, 6, port, 5201), 4);
            assert_eq!(out, queue_of(&packet(b, a, 6, 5201, port), 4));
            seen[out] += 1;
        }
        // 64 flows over 4 queues: every queue gets some.
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        // Client ports of one parity (Linux's connect()): still spread over 2.
        let even: Vec<usize> = (0..16)
            .map(|i| queue_of(&packet(a, b, 6, 45_000 + 2 * i, 5201), 2))
            .collect();
        assert!(even.contains(&0) && even.contains(&1), "{even:?}");
        // One queue, short or odd packets: queue 0, no panic.
        assert_eq!(queue_of(&packet(a, b, 6, 1, 2), 1), 0);
        for len in 0..40 {
            assert!(queue_of(&packet(a, b, 17, 1, 2)[..len], 3) < 3);
        }
    }

    #[test]
    fn packets_are_grouped_by_queue_in_arrival_order() {
        let queue = [2, 0, 1, 0, 2, 2, 1, 0];
        let mut bufs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
        let mut place = Vec::new();
        let count = group_by_queue(&mut bufs, &queue, &mut place);
        let order: Vec<u8> = bufs.iter().map(|b| b[0]).collect();
        assert_eq!(order, [1, 3, 7, 2, 6, 0, 4, 5, 8, 9]);
        assert_eq!(count[..4], [3, 2, 3, 0]);
        // One queue: untouched.
        let count = group_by_queue(&mut bufs, &[1, 1], &mut place);
        assert_eq!((bufs[0].as_slice(), count[1]), (&[1u8][..], 2));
    }

    /// Root only (raw sockets, a network namespace), as in CI: a receive
    /// queue too small for a burst drops packets, and the drop count
    /// reaches the agent. In a namespace of its own, so no other ESP on
    /// the host reaches these sockets.
    #[test]
    fn a_full_esp_receive_queue_reports_its_drops() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("a network namespace (run as root)");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip (iproute2)");
            assert!(up.success());
            let rx = esp_socket(0).unwrap();
            rx.set_recv_buffer_size(1).unwrap();
            rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let tx = esp_socket(0).unwrap();
            let mut p = vec![
                0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 50, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
            ];
            p.resize(1400, 0x5a);
            p[2..4].copy_from_slice(&1400u16.to_be_bytes());
            let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into();
            for _ in 0..200 {
                tx.send_to(&p, &to).unwrap();
            }
            // A marked packet after the burst carries the count; it may
            // itself meet a full queue, so it is sent again after each drain.
            p[20] = 0xa5;
            let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048]).collect();
            let mut lens = Vec::new();
            let (mut sent, mut received, mut drops) = (200, 0, None);
            'probe: for _ in 0..20 {
                tx.send_to(&p, &to).unwrap();
                sent += 1;
                while let Ok(d) = receive(&rx, &mut bufs, &mut lens) {
                    drops = d.or(drops);
                    received += lens.len();
                    if bufs
                        .iter()
                        .zip(&lens)
                        .any(|(b, &n)| n == 1400 && b[20] == 0xa5)
                    {
                        break 'probe;
                    }
                }
            }
            let drops = drops.expect("a drop count") as usize;
            assert!(drops > 0 && received > 0, "{drops} {received}");
            assert_eq!(received + drops, sent);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn queues_outside_1_to_16_are_refused_with_the_range() {
        assert_eq!(queues(1).unwrap(), 1);
        assert_eq!(queues(16).unwrap(), 16);
        for q in [0, 17, 1000] {
            let e = queues(q).unwrap_err().to_string();
            assert!(e.contains("1-16"), "{e}");
        }
    }
}
