//! `gkm-dataplane`: GKM's encrypting dataplane.
//!
//! Owns (DESIGN.md): ESP tunnel mode with address preservation, AES-GCM,
//! D3P stamping and checking, the SA table with ATD/DTD transitions and
//! counters. Framing comes from `gkm-wire`. It is sans-IO:
//! [`tunnel::Tunnel`] turns inner packets into outer ESP packets and back;
//! the TUN device, the raw ESP socket and the packet threads are the
//! agent's (`gm-agent/src/dataplane/`, see docs/ARCHITECTURE.md).

pub mod d3p;
pub mod esp;
pub mod ipv4;
pub mod ipv6;
pub mod replay;
pub mod tunnel;

/// Why the dataplane refused a packet or a key. Small and `Copy`: it is
/// returned per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataplaneError {
    /// A header is malformed; names the field.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet would exceed 65,535 octets.
    #[error("packet too large")]
    TooLarge,
    /// The buffer lacks the head- or tailroom an in-place operation needs.
    #[error("no room around the packet in the buffer")]
    NoRoom,
    /// No inbound SA has this SPI.
    #[error("no SA with SPI {0:#010x}")]
    UnknownSpi(u32),
    /// The ICV did not verify (wrong key, forged or damaged packet).
    #[error("ICV check failed")]
    Authentication,
    /// IP-D3P: the sender's timestamp is older than the window.
    #[error("IP-D3P: packet too old")]
    D3pTooOld,
    /// IP-D3P: the sender's timestamp is newer than the window.
    #[error("IP-D3P: packet too new")]
    D3pTooNew,
    /// No SA to send on yet (not registered, or fail-close).
    #[error("no outbound SA")]
    NoOutboundSa,
    /// This sender's IVs under the SA are used up: it must not send
    /// until the next TEK.
    #[error("IV space exhausted")]
    IvExhausted,
    /// An SA with this SPI is installed already.
    #[error("SPI {0:#010x} is installed already")]
    SpiInUse(u32),
    /// A transform or key the dataplane does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}
