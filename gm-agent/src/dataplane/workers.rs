//! The packet threads' loops: TUN → encrypt → ESP socket per TUN queue,
//! and ESP socket → decrypt → the flow's TUN queue.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use gkm_dataplane::tunnel::{HEADROOM, TAILROOM};
use gkm_dataplane::DataplaneError;
use nix::errno::Errno;
use nix::sys::socket::{MultiHeaders, SockaddrIn, SockaddrIn6};
use socket2::Socket;
use tracing::{debug, warn};

use super::esp::{receive, receive_v6, send_batch, EspSockets, Overflow};
use super::{lock, SharedTunnel, MAX_QUEUES};

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

/// Size of one ESP receive buffer: the largest packet (an IPv6 one: its
/// 40-octet header, rebuilt, and a 65,535-octet payload).
const RX_LEN: usize = 40 + 65_535;

/// The TUN queue of an inner packet's flow among `queues`: a hash of the
/// addresses, protocol and (TCP, UDP, SCTP) ports, the same in both
/// directions, so a flow's packets stay in order on one queue. (Inner
/// IPv4 packets are never fragments: the tunnel refuses them. An IPv6
/// packet whose first next header is an extension header hashes on its
/// addresses alone.)
pub fn queue_of(packet: &[u8], queues: usize) -> usize {
    if queues < 2 {
        return 0;
    }
    let word = |r: Range<usize>| {
        packet
            .get(r)
            .map_or(0u64, |b| b.iter().fold(0u64, |a, x| a << 8 | u64::from(*x)))
    };
    let v6 = packet.first().is_some_and(|v| v >> 4 == 6);
    let (a, b, proto, ihl) = if v6 {
        // Each address folded to 64 bits (the halves xored): enough for
        // spreading, and the same both ways.
        (
            word(8..16) ^ word(16..24),
            word(24..32) ^ word(32..40),
            word(6..7),
            40,
        )
    } else {
        (
            word(12..16),
            word(16..20),
            word(9..10),
            packet.first().map_or(20, |v| usize::from(v & 0x0f) * 4),
        )
    };
    let (p, q) = if matches!(proto, 6 | 17 | 132) {
        (word(ihl..ihl + 2), word(ihl + 2..ihl + 4))
    } else {
        (0, 0)
    };
    let key = (a.min(b).rotate_left(32) ^ a.max(b)) ^ (p.min(q) << 48 | p.max(q) << 32 | proto);
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

/// TUN → ESP: a read returns one packet, or (with offload) a TSO/GSO
/// super-packet split into segments, each at [`OFFSET`] in its buffer with
/// the head- and tailroom ESP needs; all are sealed in place under one
/// lock and sent with one `sendmmsg`.
pub(super) fn outbound(
    tun: &tun_rs::SyncDevice,
    esp: &EspSockets,
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
    let mut sealed6: Vec<(usize, Range<usize>, SockaddrIn6)> = Vec::with_capacity(BATCH);
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut headers6 = MultiHeaders::<SockaddrIn6>::preallocate(BATCH, None);
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
        sealed6.clear();
        {
            let now = now_ms();
            let mut t = lock(tunnel);
            for (i, (buf, size)) in bufs.iter_mut().zip(&sizes).take(n).enumerate() {
                match t.encapsulate_in_place(now, buf, OFFSET..OFFSET + size) {
                    Ok(r) if buf.get(r.start).is_some_and(|v| v >> 4 == 6) => {
                        let dst = buf
                            .get(r.start + 24..r.start + 40)
                            .and_then(|b| <[u8; 16]>::try_from(b).ok())
                            .map(Ipv6Addr::from)
                            .unwrap_or(Ipv6Addr::UNSPECIFIED);
                        let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, 0));
                        sealed6.push((i, r, to));
                    }
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
        send_batch(&esp.v4, &mut headers, &bufs, &sealed);
        match &esp.v6 {
            Some(v6) => send_batch(v6, &mut headers6, &bufs, &sealed6),
            None if !sealed6.is_empty() => dropped(
                "out",
                DataplaneError::Unsupported("IPv6 (no IPv6 ESP socket)"),
            ),
            None => {}
        }
    }
}

/// Which ESP socket an inbound thread reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// The IPv4 socket: packets come with their header.
    V4,
    /// The IPv6 socket: headers rebuilt by [`receive_v6`].
    V6,
}

/// ESP → TUN: `recvmmsg` returns what the raw socket holds (at least
/// one, at most [`BATCH`]); each packet is decrypted in place, its inner
/// packet copied to [`OFFSET`] in an output buffer of its flow's queue
/// ([`queue_of`]), and each queue's batch written to the TUN device,
/// which (with offload) coalesces a TCP flow's segments into one write.
pub(super) fn inbound(
    tuns: &[Arc<tun_rs::SyncDevice>],
    esp: &Socket,
    family: Family,
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
        let got = match family {
            Family::V4 => receive(esp, &mut rx, &mut lens),
            Family::V6 => receive_v6(esp, &mut rx, &mut lens),
        };
        // The kernel's count is the socket's since it opened; the tunnel
        // adds each family's rise (its health report's receive-queue drops).
        let mut new_drops = 0;
        match got {
            Ok(Some(drops)) => {
                new_drops = drops.wrapping_sub(overflow.total);
                overflow.total = drops;
            }
            Ok(None) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(anyhow!("reading the ESP socket: {e}")),
        }
        overflow.warn();
        {
            let now = now_ms();
            let mut t = lock(tunnel);
            t.traffic.esp_rx_queue_drops += u64::from(new_drops);
            for (buf, len) in rx.iter_mut().zip(&lens) {
                let Some(packet) = buf.get_mut(..*len).filter(|p| !p.is_empty()) else {
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

    fn packet6(src: u16, dst: u16, next: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 20, next, 64];
        let addr = |h: u16| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[14..].copy_from_slice(&h.to_be_bytes());
            a
        };
        p.extend_from_slice(&addr(src));
        p.extend_from_slice(&addr(dst));
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.resize(60, 0);
        p
    }

    #[test]
    fn an_ipv6_flow_and_its_replies_take_one_queue_and_flows_spread() {
        let mut seen = [0usize; 4];
        for port in 40_000..40_064 {
            let out = queue_of(&packet6(1, 2, 6, port, 5201), 4);
            assert_eq!(out, queue_of(&packet6(2, 1, 6, 5201, port), 4));
            seen[out] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        // Host pairs alone (no ports: ICMPv6) spread too.
        let hosts: Vec<usize> = (1..32)
            .map(|h| queue_of(&packet6(h, 100, 58, 0, 0), 2))
            .collect();
        assert!(hosts.contains(&0) && hosts.contains(&1), "{hosts:?}");
        for len in 0..60 {
            assert!(queue_of(&packet6(1, 2, 17, 1, 2)[..len], 3) < 3);
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
}
