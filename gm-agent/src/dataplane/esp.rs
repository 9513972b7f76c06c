//! The raw ESP socket (protocol 50, header included) and its batched I/O:
//! `sendmmsg` out, `recvmmsg` in with the kernel's drop count.

use std::io::{IoSlice, IoSliceMut};
use std::ops::Range;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

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

/// Sends the sealed packets with as few `sendmmsg` calls as the kernel
/// allows; a packet the kernel refuses is dropped (and logged at debug).
pub fn send_batch(
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
