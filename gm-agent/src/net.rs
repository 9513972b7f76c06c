//! The agent's sockets: the source address the kernel picks for a key
//! server, and the multicast rekey socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};
use tokio::net::UdpSocket;

/// The local IPv4 address the kernel would use to reach `to`.
pub fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(to).ok()?;
    Some(probe.local_addr().ok()?.ip()).filter(|a| !a.is_unspecified())
}

/// A socket receiving the group's multicast rekeys: bound to the group
/// address and port (shared with other agents on the host), joined on the
/// interface of `local` (or the kernel's choice for 0.0.0.0).
pub fn join_multicast(group: SocketAddrV4, local: Ipv4Addr) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(group).into())
        .with_context(|| format!("cannot bind the multicast rekey socket {group}"))?;
    s.join_multicast_v4(group.ip(), &local)
        .with_context(|| format!("cannot join {} on {local}", group.ip()))?;
    UdpSocket::from_std(s.into()).context("multicast socket")
}
