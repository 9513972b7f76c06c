//! The GDOI socket in batches: `recvmmsg` takes in everything queued (up
//! to [`BATCH`] datagrams) with one system call, `sendmmsg` sends what the
//! engine queued the same way. Under a registration storm one datagram in
//! and one out per system call cost as much CPU as the key-server engine
//! itself (docs/BENCHMARKS.md, issue 17).
//!
//! Binding: `[::]:848` by default, one socket for both families, the
//! system's buffers raised for large groups; a refusal says how to fix it.
//!
//! One IPv6 socket serves both families (`[::]:848`, `IPV6_V6ONLY` off):
//! the kernel shows an IPv4 peer as `::ffff:a.b.c.d`. The engine sees
//! plain IPv4 addresses only, so that PSK ranges, authorization and the GM
//! database match IPv4 peers as IPv4: sources are unmapped here, and IPv4
//! destinations mapped back when the socket is IPv6.

use std::io::{self, ErrorKind as IoErrorKind, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Result};
use tokio::net::UdpSocket;
use tracing::info;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams one system call moves at most.
pub const BATCH: usize = 32;

/// The largest datagram taken in (the largest UDP payload).
const DATAGRAM: usize = 65_536;

/// Receive buffers for one `recvmmsg`, reused.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    got: Vec<(usize, SocketAddr)>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl RecvBatch {
    /// Takes in what the socket holds without waiting, at most `max` (and
    /// [`BATCH`]) datagrams; `WouldBlock` when there is none.
    pub fn receive(&mut self, fd: &impl AsRawFd, max: usize) -> io::Result<usize> {
        self.got.clear();
        let n = max.clamp(1, BATCH);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .take(n)
            .map(|b| [IoSliceMut::new(b)])
            .collect();
        let msgs = recvmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            &mut iovs,
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for m in msgs {
            if let Some(from) = m.address.as_ref().and_then(socket_addr) {
                self.got.push((m.bytes, from));
            }
        }
        Ok(self.got.len())
    }

    /// The datagrams of the last [`RecvBatch::receive`], in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.got
            .iter()
            .zip(&self.bufs)
            .map(|(&(n, from), b)| (from, b.get(..n).unwrap_or_default()))
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6()
        .map(|a| unmapped(SocketAddr::V6(SocketAddrV6::from(*a))))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// stands for; any other address as it is.
pub fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// The destination as a socket of the given family takes it: an IPv4
/// address on an IPv6 socket becomes IPv4-mapped.
pub fn for_family(to: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => to,
    }
}

/// Sends `datagrams` (destination, payload) in order with one system call
/// without waiting: how many left (the kernel may take fewer than all);
/// `WouldBlock` when the send buffer is full, another error when the first
/// datagram was refused (e.g. no route to its destination). Call it through
/// tokio's `try_io`, so a full buffer clears the socket's write readiness.
/// `socket_is_v6`: the socket is IPv6 (IPv4 destinations are mapped).
pub fn send(
    fd: &impl AsRawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    datagrams: &[(SocketAddr, Vec<u8>)],
    socket_is_v6: bool,
) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|(_, p)| [IoSlice::new(p)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = datagrams
        .iter()
        .map(|(to, _)| Some(SockaddrStorage::from(for_family(*to, socket_is_v6))))
        .collect();
    let cmsgs: [ControlMessage<'_>; 0] = [];
    sendmmsg(
        fd.as_raw_fd(),
        headers,
        &iovs,
        &addrs,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map(|r| r.count())
    .map_err(io::Error::from)
}

/// Send headers for [`send`], reused.
pub fn send_headers() -> MultiHeaders<SockaddrStorage> {
    MultiHeaders::preallocate(BATCH, None)
}

/// Binds a UDP socket for GDOI: an IPv6 one takes IPv4 too (`IPV6_V6ONLY`
/// off, whatever the host's `net.ipv6.bindv6only`), so `[::]:848` serves
/// both families (the driver unmaps IPv4 peers, below).
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds the default GDOI address: `[::]:port` for both families, or
/// `0.0.0.0:port` where the host has no IPv6.
pub async fn bind_default(port: u16) -> Result<UdpSocket> {
    let both = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    match bind_socket(both).and_then(UdpSocket::from_std) {
        Ok(socket) => Ok(tune(socket)),
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
                || e.kind() == IoErrorKind::AddrNotAvailable =>
        {
            info!(error = %e, "no IPv6 on this host: GDOI on IPv4 only");
            bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await
        }
        Err(e) => Err(bind_error(both, &e)),
    }
}

/// Binds the GDOI socket with an error that says how to fix a refusal.
pub async fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = bind_socket(addr)
        .and_then(UdpSocket::from_std)
        .map_err(|e| bind_error(addr, &e))?;
    Ok(tune(socket))
}

fn bind_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        IoErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, \
             `setcap cap_net_bind_service=+ep $(command -v gkm-server)`, or pass --listen {}",
            SocketAddr::new(addr.ip(), 8848)
        ),
        IoErrorKind::AddrInUse => {
            "another process holds this port: stop it or pass --listen with a free port".into()
        }
        IoErrorKind::AddrNotAvailable => {
            "the address is not configured on this host: check --listen".into()
        }
        _ => "check --listen".into(),
    };
    anyhow!("cannot bind UDP {addr}: {e}; {hint}")
}

/// Asks for socket buffers fit for large groups.
fn tune(socket: UdpSocket) -> UdpSocket {
    // A rekey to a large group draws one ACK per GM at once: ask for room
    // to queue them while the pushes are still going out.
    let s = socket2::SockRef::from(&socket);
    let _ = s.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(UDP_BUFFER_BYTES);
    // Linux grants at most net.core.{r,w}mem_max and reports twice the grant.
    let granted = s.recv_buffer_size().unwrap_or(0) / 2;
    if granted < UDP_BUFFER_BYTES {
        info!(
            granted,
            wanted = UDP_BUFFER_BYTES,
            "UDP receive buffer capped by net.core.rmem_max; raise it for groups of many thousand GMs (docs/OPERATIONS.md)"
        );
    }
    socket
}

/// Socket buffer the GDOI socket asks for in each direction.
const UDP_BUFFER_BYTES: usize = 16 << 20;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Real sockets on loopback: a batch out with one call, in with one
    /// call, each datagram whole, in order, from its sender.
    #[test]
    fn a_batch_goes_out_and_comes_in_whole_and_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let datagrams: Vec<(SocketAddr, Vec<u8>)> = (0..40u8)
            .map(|i| (to, vec![i; 100 + usize::from(i)]))
            .collect();
        let mut headers = send_headers();
        let mut sent = 0;
        while sent < datagrams.len() {
            let end = (sent + BATCH).min(datagrams.len());
            sent += send(&tx, &mut headers, &datagrams[sent..end], false).unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < datagrams.len() {
            match batch.receive(&rx, BATCH) {
                Ok(_) => got.extend(batch.datagrams().map(|(f, d)| (f, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let from = tx.local_addr().unwrap();
        assert!(got.iter().all(|(f, _)| *f == from));
        let payloads: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        let expected: Vec<Vec<u8>> = datagrams.into_iter().map(|(_, d)| d).collect();
        assert_eq!(payloads, expected);
        // Nothing left: WouldBlock, not a wait.
        let e = batch.receive(&rx, BATCH).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    /// One dual-stack socket (what the server binds by default): an IPv4
    /// peer is seen as IPv4, never `::ffff:a.b.c.d`, and answered at its
    /// IPv4 address; an IPv6 peer as IPv6, answered in IPv6.
    #[test]
    fn a_dual_stack_socket_sees_and_answers_ipv4_peers_as_ipv4() {
        let server = bind_socket("[::]:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        v4.send_to(b"four", ("127.0.0.1", port)).unwrap();
        v6.send_to(b"six", ("::1", port)).unwrap();
        let mut batch = RecvBatch::default();
        let mut got: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        for _ in 0..200 {
            if got.len() == 2 {
                break;
            }
            match batch.receive(&server, BATCH) {
                Ok(_) => got.extend(batch.datagrams().map(|(f, d)| (f, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got.sort_by_key(|(_, d)| d.len());
        assert_eq!(got[0], (v6.local_addr().unwrap(), b"six".to_vec()));
        assert_eq!(got[1], (v4.local_addr().unwrap(), b"four".to_vec()));
        assert!(got[1].0.is_ipv4(), "unmapped: {:?}", got[1].0);
        // Answers to both, addressed as the engine would (plain IPv4).
        let replies = vec![
            (got[1].0, b"to-four".to_vec()),
            (got[0].0, b"to-six".to_vec()),
        ];
        let mut headers = send_headers();
        assert_eq!(send(&server, &mut headers, &replies, true).unwrap(), 2);
        let mut buf = [0u8; 16];
        for (sock, want) in [(&v4, &b"to-four"[..]), (&v6, &b"to-six"[..])] {
            sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from.port(), port);
        }
        assert_eq!(
            unmapped("[::ffff:10.1.2.3]:848".parse().unwrap()),
            "10.1.2.3:848".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            for_family("10.1.2.3:848".parse().unwrap(), false),
            "10.1.2.3:848".parse::<SocketAddr>().unwrap()
        );
    }
}
