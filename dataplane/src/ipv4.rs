//! The IPv4 header as the tunnel needs it (RFC 791): a checked view over
//! a packet (options allowed, fragments refused) and the outer header the
//! encapsulation writes.

use std::net::Ipv4Addr;

use crate::DataplaneError;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// A parsed IPv4 header; every field the tunnel reads, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in octets (20-60).
    pub header_len: usize,
    /// Total length of the packet.
    pub total_len: usize,
    /// DSCP (6 bits) and ECN (2 bits).
    pub tos: u8,
    /// Don't-fragment flag.
    pub dont_fragment: bool,
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
}

fn octet(p: &[u8], i: usize) -> Result<u8, DataplaneError> {
    p.get(i)
        .copied()
        .ok_or(DataplaneError::Malformed("ipv4.header"))
}

fn addr(p: &[u8], at: usize) -> Result<Ipv4Addr, DataplaneError> {
    let b: [u8; 4] = p
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(DataplaneError::Malformed("ipv4.address"))?;
    Ok(Ipv4Addr::from(b))
}

impl Ipv4Header {
    /// Parses the header of `packet`, which must hold exactly the packet
    /// (total length = buffer length); fragments are refused (a group SA
    /// protects whole packets; the kernel reassembles before the TUN).
    pub fn parse(packet: &[u8]) -> Result<Self, DataplaneError> {
        let v_ihl = octet(packet, 0)?;
        if v_ihl >> 4 != 4 {
            return Err(DataplaneError::Malformed("ipv4.version"));
        }
        let header_len = usize::from(v_ihl & 0x0f) * 4;
        if header_len < HEADER_LEN || packet.len() < header_len {
            return Err(DataplaneError::Malformed("ipv4.ihl"));
        }
        let total_len = usize::from(u16::from_be_bytes([octet(packet, 2)?, octet(packet, 3)?]));
        if total_len != packet.len() {
            return Err(DataplaneError::Malformed("ipv4.total_length"));
        }
        let flags_frag = u16::from_be_bytes([octet(packet, 6)?, octet(packet, 7)?]);
        let more_fragments = flags_frag & 0x2000 != 0;
        if more_fragments || flags_frag & 0x1fff != 0 {
            return Err(DataplaneError::Malformed("ipv4.fragment"));
        }
        Ok(Self {
            header_len,
            total_len,
            tos: octet(packet, 1)?,
            dont_fragment: flags_frag & 0x4000 != 0,
            ttl: octet(packet, 8)?,
            protocol: octet(packet, 9)?,
            src: addr(packet, 12)?,
            dst: addr(packet, 16)?,
        })
    }
}

/// The Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let words = data.chunks_exact(2);
    let odd = match words.remainder() {
        [a] => u32::from(*a) << 8,
        _ => 0,
    };
    // At most 32,768 words of at most 0xffff: the sum fits in a u64 with
    // room to spare (and a u32 for any IPv4 packet; u64 costs nothing here).
    let mut sum: u64 = words
        .map(|w| match w {
            [a, b] => u64::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        })
        .sum::<u64>()
        + u64::from(odd);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // sum <= 0xffff after folding.
    !(sum as u16)
}

/// The checksum of an option-less header: ten words, no loop to unroll.
fn header_checksum(h: &[u8; HEADER_LEN]) -> u16 {
    let w = |i: usize| u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
    let mut sum = w(0) + w(2) + w(4) + w(6) + w(8) + w(10) + w(12) + w(14) + w(16) + w(18);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // sum <= 0xffff after two folds of at most 10 x 0xffff.
    !(sum as u16)
}

/// Writes a 20-octet outer header for a payload of `payload_len` octets
/// into `dst` (exactly [`HEADER_LEN`] octets).
pub fn write(
    dst: &mut [u8],
    h: &Ipv4Header,
    id: u16,
    payload_len: usize,
) -> Result<(), DataplaneError> {
    let total = u16::try_from(HEADER_LEN + payload_len).map_err(|_| DataplaneError::TooLarge)?;
    let dst: &mut [u8; HEADER_LEN] = dst.try_into().map_err(|_| DataplaneError::NoRoom)?;
    let [t0, t1] = total.to_be_bytes();
    let [i0, i1] = id.to_be_bytes();
    let df = if h.dont_fragment { 0x40 } else { 0 };
    let [s0, s1, s2, s3] = h.src.octets();
    let [d0, d1, d2, d3] = h.dst.octets();
    *dst = [
        0x45, h.tos, t0, t1, i0, i1, df, 0, h.ttl, h.protocol, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3,
    ];
    let [c0, c1] = header_checksum(dst).to_be_bytes();
    dst[10] = c0;
    dst[11] = c1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMP echo header from a real capture (RFC 1071 example style).
    const PING: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 1, 0, 1, 10, 1,
        0, 2, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn parse_emit_and_checksum_round_trip() {
        let h = Ipv4Header::parse(&PING).unwrap();
        assert_eq!(
            (
                h.header_len,
                h.total_len,
                h.ttl,
                h.protocol,
                h.dont_fragment
            ),
            (20, 28, 64, 1, true)
        );
        let mut out = vec![0; HEADER_LEN];
        write(&mut out, &h, 0x1234, 8).unwrap();
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&out), 0);
        assert_eq!(out.get(12..20), PING.get(12..20));
        assert_eq!(Ipv4Header::parse(&[out, vec![0; 8]].concat()).unwrap(), h);
    }

    #[test]
    fn refuses_what_the_tunnel_cannot_carry() {
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = PING.to_vec();
            f(&mut p);
            Ipv4Header::parse(&p).unwrap_err()
        };
        assert_eq!(
            bad(&|p| p[0] = 0x65),
            DataplaneError::Malformed("ipv4.version")
        );
        assert_eq!(bad(&|p| p[0] = 0x44), DataplaneError::Malformed("ipv4.ihl"));
        assert_eq!(
            bad(&|p| p.truncate(27)),
            DataplaneError::Malformed("ipv4.total_length")
        );
        assert_eq!(
            bad(&|p| p[6] = 0x20),
            DataplaneError::Malformed("ipv4.fragment")
        );
        assert_eq!(
            bad(&|p| p[7] = 1),
            DataplaneError::Malformed("ipv4.fragment")
        );
        assert!(Ipv4Header::parse(&[]).is_err());
    }
}
