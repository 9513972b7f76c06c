//! GKM's IP-D3P header, carried inside ESP (DESIGN.md, "IP-D3P").
//!
//! ```text
//! 0        1        2                 4                                 12
//! +--------+--------+--------+--------+--------------------------------+
//! | next   | length |   D3P type      |  POSIX time in ms (8 octets)   |  inner packet ...
//! | header | (= 12) |                 |                                |
//! +--------+--------+--------+--------+--------------------------------+
//! ```
//! The ESP next header that announces it is [`IpProtocol::GKM_D3P`] by
//! default. draft-weis-delay-detection's own layout is not public; this is
//! GKM's encoding, named as such.

use crate::codec::Reader;
use crate::consts::{D3pType, IpProtocol};
use crate::error::{err, ErrorKind, Result};

/// Length of the D3P header for POSIX-TIME-MSEC.
pub const D3P_HEADER_LEN: usize = 12;

/// The D3P header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct D3pHeader {
    /// Protocol of the inner packet (4 = IPv4, 41 = IPv6).
    pub next_header: IpProtocol,
    /// Timestamp type; only POSIX-TIME-MSEC is defined.
    pub d3p_type: D3pType,
    /// Sender's POSIX time in milliseconds.
    pub timestamp_ms: u64,
}

impl D3pHeader {
    /// Parses the header and returns it with the inner packet.
    ///
    /// A length other than 12 is a bad length; an unknown timestamp type is
    /// [`ErrorKind::Unsupported`]: the receiver cannot judge freshness, so
    /// the packet must be dropped, never passed unchecked.
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = Reader::new(buf);
        let next_header = IpProtocol(r.u8("d3p.next_header")?);
        let length = usize::from(r.u8("d3p.length")?);
        let d3p_type = D3pType(r.u16("d3p.type")?);
        let timestamp_ms = r.u64("d3p.timestamp")?;
        if length != D3P_HEADER_LEN {
            return Err(err(ErrorKind::BadLength, "d3p.length"));
        }
        if d3p_type != D3pType::POSIX_TIME_MSEC {
            return Err(err(ErrorKind::Unsupported, "d3p.type"));
        }
        let inner = r.rest();
        if inner.is_empty() {
            return Err(err(ErrorKind::Truncated, "d3p.inner"));
        }
        Ok((
            Self {
                next_header,
                d3p_type,
                timestamp_ms,
            },
            inner,
        ))
    }

    /// Appends the header (the caller appends the inner packet).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// The header's octets (for writing in place before an inner packet).
    pub fn to_bytes(&self) -> [u8; D3P_HEADER_LEN] {
        let mut b = [0u8; D3P_HEADER_LEN];
        let (head, ts) = b.split_at_mut(4);
        let [t0, t1] = self.d3p_type.0.to_be_bytes();
        head.copy_from_slice(&[self.next_header.0, D3P_HEADER_LEN as u8, t0, t1]);
        ts.copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b
    }
}
