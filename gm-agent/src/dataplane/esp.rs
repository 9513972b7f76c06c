//! The raw ESP sockets (protocol 50, header included), one per IP family,
//! and their batched I/O: `sendmmsg` out, `recvmmsg` in with the kernel's
//! drop count.
//!
//! IPv4 raw sockets hand a received packet over with its IP header; IPv6
//! ones never do (RFC 3542 section 3): [`receive_v6`] rebuilds the outer
//! header the tunnel checks from what the kernel reports beside the packet
//! (source address, destination by IPV6_PKTINFO, traffic class, hop
//! limit), so one decapsulation serves both families.

use std::io::{IoSlice, IoSliceMut};
use std::net::Ipv6Addr;
use std::ops::Range;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use gkm_dataplane::ipv6::{self, Ipv6Header};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn,
    SockaddrIn6, SockaddrLike,
};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

/// The ESP sockets: IPv4 always, IPv6 where the host has IPv6.
pub struct EspSockets {
    /// Protocol 50 over IPv4.
    pub v4: Socket,
    /// Protocol 50 over IPv6 (none on a host without IPv6: IPv6 TEKs then
    /// carry nothing, and the agent says so at start).
    pub v6: Option<Socket>,
}

/// Opens both ESP sockets, marked `mark`; a host without IPv6 gets the
/// IPv4 one only (warned).
pub fn esp_sockets(mark: u32) -> Result<EspSockets> {
    let v4 = esp_socket(mark)?;
    let v6 = match esp_socket_v6(mark) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "no IPv6 ESP socket: IPv6 group traffic cannot be carried");
            None
        }
    };
    Ok(EspSockets { v4, v6 })
}

/// The raw IPv6 ESP socket: protocol 50, IPV6_HDRINCL for sending, and the
/// ancillary data [`receive_v6`] rebuilds the outer header from.
pub fn esp_socket_v6(mark: u32) -> Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(50)))
        .context("cannot open a raw IPv6 ESP socket")?;
    s.set_header_included_v6(true)
        .context("IPV6_HDRINCL on the ESP socket")?;
    s.set_recv_tclass_v6(true)?;
    s.set_recv_hoplimit_v6(true)?;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv6RecvPacketInfo, &true)
        .context("IPV6_RECVPKTINFO on the ESP socket")?;
    marked_and_counted(s, mark)
}

/// What both ESP sockets get: the mark, large buffers, and the kernel's
/// count of packets dropped on a full receive queue with each message
/// (logged by `inbound`).
fn marked_and_counted(s: Socket, mark: u32) -> Result<Socket> {
    s.set_mark(mark)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RxqOvfl, &1)
        .context("SO_RXQ_OVFL on the ESP socket")?;
    Ok(s)
}

/// The raw ESP socket: protocol 50, header included, marked, blocking
/// (each direction has a thread of its own; see [`spawn`]).
pub fn esp_socket(mark: u32) -> Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(50)))
        .context("cannot open a raw ESP socket (root or CAP_NET_RAW needed)")?;
    s.set_header_included_v4(true)?;
    marked_and_counted(s, mark)
}

/// Sends the sealed packets with as few `sendmmsg` calls as the kernel
/// allows; a packet the kernel refuses is dropped (and logged at debug).
/// `S` is the socket's address type ([`SockaddrIn`] or [`SockaddrIn6`]).
pub fn send_batch<S: SockaddrLike + Copy>(
    esp: &Socket,
    headers: &mut MultiHeaders<S>,
    bufs: &[Vec<u8>],
    sealed: &[(usize, Range<usize>, S)],
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
        let addrs: Vec<Option<S>> = rest.iter().map(|(_, _, a)| Some(*a)).collect();
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

/// One `recvmmsg` (at least one packet, then what the socket holds):
/// their lengths into `lens`, and the socket's drop count when the kernel
/// reported one (SO_RXQ_OVFL, set by [`esp_socket`]).
pub fn receive(
    esp: &Socket,
    rx: &mut [Vec<u8>],
    lens: &mut Vec<usize>,
) -> nix::Result<Option<u32>> {
    lens.clear();
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = rx.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    // New headers every call: the kernel shrinks each message's control
    // length to what it used (0 without a drop count), and nix's
    // `recvmmsg` does not restore it, so reused headers would lose the
    // count (seen: `tests/esp_socket.rs` failed that way).
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

/// [`receive`] for the IPv6 socket: each packet lands after 40 octets of
/// its buffer, where its outer IPv6 header is rebuilt (source from the
/// sender's address, destination from IPV6_PKTINFO, traffic class, hop
/// limit; next header ESP; the flow label, which the kernel does not
/// report, 0); `lens` counts the header. A packet whose destination the
/// kernel did not report is given length 0 (the caller skips it).
pub fn receive_v6(
    esp: &Socket,
    rx: &mut [Vec<u8>],
    lens: &mut Vec<usize>,
) -> nix::Result<Option<u32>> {
    lens.clear();
    let mut drops = None;
    let mut outer: Vec<Option<Ipv6Header>> = Vec::with_capacity(rx.len());
    {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = rx
            .iter_mut()
            .map(|b| {
                [IoSliceMut::new(
                    b.get_mut(ipv6::HEADER_LEN..).unwrap_or_default(),
                )]
            })
            .collect();
        // New headers every call, as in `receive`.
        let mut headers = MultiHeaders::<SockaddrIn6>::preallocate(
            iovs.len(),
            Some(nix::cmsg_space!(
                nix::libc::in6_pktinfo,
                nix::libc::c_int,
                nix::libc::c_int,
                u32
            )),
        );
        let msgs = recvmmsg(
            esp.as_raw_fd(),
            &mut headers,
            &mut iovs,
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        for m in msgs {
            let (mut dst, mut tc, mut hops) = (None, 0u8, 64u8);
            for c in m.cmsgs().into_iter().flatten() {
                match c {
                    ControlMessageOwned::RxqOvfl(n) => drops = Some(n),
                    ControlMessageOwned::Ipv6PacketInfo(i) => {
                        dst = Some(Ipv6Addr::from(i.ipi6_addr.s6_addr));
                    }
                    ControlMessageOwned::Ipv6TClass(t) => tc = u8::try_from(t).unwrap_or(0),
                    ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).unwrap_or(0),
                    _ => {}
                }
            }
            let src = m.address.map(|a| a.ip());
            outer.push(match (src, dst) {
                (Some(src), Some(dst)) => Some(Ipv6Header {
                    traffic_class: tc,
                    flow_label: 0,
                    payload_len: m.bytes,
                    next_header: 50,
                    hop_limit: hops,
                    src,
                    dst,
                }),
                _ => None,
            });
            lens.push(m.bytes);
        }
    }
    for ((buf, len), h) in rx.iter_mut().zip(lens.iter_mut()).zip(&outer) {
        let written = h.as_ref().and_then(|h| {
            let head = buf.get_mut(..ipv6::HEADER_LEN)?;
            ipv6::write(head, h, *len).ok()
        });
        *len = match written {
            Some(()) => ipv6::HEADER_LEN + *len,
            None => 0,
        };
    }
    Ok(drops)
}

/// The ESP socket's drop count (packets the kernel dropped because the
/// receive queue was full: this host's CPU did not keep up), warned about
/// at most once a minute.
#[derive(Default)]
pub struct Overflow {
    /// The latest count the kernel reported.
    pub total: u32,
    warned: u32,
    last: Option<std::time::Instant>,
}

impl Overflow {
    /// Warns of drops not warned of yet, at most once a minute.
    pub fn warn(&mut self) {
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
