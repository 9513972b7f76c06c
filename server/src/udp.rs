//! The GDOI socket in batches: `recvmmsg` takes in everything queued (up
//! to [`BATCH`] datagrams) with one system call, `sendmmsg` sends what the
//! engine queued the same way. Under a registration storm one datagram in
//! and one out per system call cost as much CPU as the key-server engine
//! itself (docs/BENCHMARKS.md, issue 17).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

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
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

/// Sends `datagrams` (destination, payload) in order with one system call
/// without waiting: how many left (the kernel may take fewer than all);
/// `WouldBlock` when the send buffer is full, another error when the first
/// datagram was refused (e.g. no route to its destination). Call it through
/// tokio's `try_io`, so a full buffer clears the socket's write readiness.
pub fn send(
    fd: &impl AsRawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    datagrams: &[(SocketAddr, Vec<u8>)],
) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|(_, p)| [IoSlice::new(p)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = datagrams
        .iter()
        .map(|(to, _)| Some(SockaddrStorage::from(*to)))
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
            sent += send(&tx, &mut headers, &datagrams[sent..end]).unwrap();
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
}
