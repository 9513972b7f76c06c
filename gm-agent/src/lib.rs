//! `gkm-agent`'s parts below its binary: the encrypting [`dataplane`]
//! (routes, TUN, ESP socket, packet workers) and the [`session`] policy
//! that turns the GM engine's keys into the dataplane's SAs. The binary
//! (`main.rs`) owns configuration, the GDOI socket loop, the local status
//! socket and health reports; this library does no GDOI I/O.

pub mod dataplane;
pub mod session;
