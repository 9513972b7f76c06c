//! The IPv6 header as the tunnel needs it (RFC 8200 section 3): a checked
//! view over a packet's fixed header and the outer header the
//! encapsulation writes. Extension headers of an inner packet are part of
//! its payload: tunnel mode carries the inner packet whole (RFC 4303
//! section 3.1.2), so nothing here walks them.

use std::net::Ipv6Addr;

use crate::DataplaneError;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// A parsed IPv6 fixed header; every field the tunnel reads, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Traffic class: DSCP (6 bits) and ECN (2 bits).
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Payload length: the octets after the fixed header.
    pub payload_len: usize,
    /// Next header (the first extension header or the upper protocol).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
}

fn addr(p: &[u8], at: usize) -> Result<Ipv6Addr, DataplaneError> {
    let b: [u8; 16] = p
        .get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(DataplaneError::Malformed("ipv6.address"))?;
    Ok(Ipv6Addr::from(b))
}

impl Ipv6Header {
    /// Parses the fixed header of `packet`, which must hold exactly the
    /// packet (40 + payload length = buffer length). A jumbogram (payload
    /// length 0 with a hop-by-hop jumbo option, RFC 2675) is refused: no
    /// link GKM runs over carries one.
    pub fn parse(packet: &[u8]) -> Result<Self, DataplaneError> {
        let h: &[u8; HEADER_LEN] = packet
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DataplaneError::Malformed("ipv6.header"))?;
        if h[0] >> 4 != 6 {
            return Err(DataplaneError::Malformed("ipv6.version"));
        }
        let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if HEADER_LEN + payload_len != packet.len() {
            return Err(DataplaneError::Malformed("ipv6.payload_length"));
        }
        let word = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        Ok(Self {
            // Bits 4-11 of the first word; the shift leaves 8 bits.
            traffic_class: ((word >> 20) & 0xff) as u8,
            flow_label: word & 0x000f_ffff,
            payload_len,
            next_header: h[6],
            hop_limit: h[7],
            src: addr(packet, 8)?,
            dst: addr(packet, 24)?,
        })
    }
}

/// Writes a 40-octet outer header for a payload of `payload_len` octets
/// into `dst` (exactly [`HEADER_LEN`] octets), with `h`'s fields but its
/// payload length.
pub fn write(dst: &mut [u8], h: &Ipv6Header, payload_len: usize) -> Result<(), DataplaneError> {
    let len = u16::try_from(payload_len).map_err(|_| DataplaneError::TooLarge)?;
    let dst: &mut [u8; HEADER_LEN] = dst.try_into().map_err(|_| DataplaneError::NoRoom)?;
    let word = 6u32 << 28 | u32::from(h.traffic_class) << 20 | (h.flow_label & 0x000f_ffff);
    let (first, rest) = dst.split_at_mut(8);
    let [l0, l1] = len.to_be_bytes();
    let [w0, w1, w2, w3] = word.to_be_bytes();
    first.copy_from_slice(&[w0, w1, w2, w3, l0, l1, h.next_header, h.hop_limit]);
    let (s, d) = rest.split_at_mut(16);
    s.copy_from_slice(&h.src.octets());
    d.copy_from_slice(&h.dst.octets());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ICMPv6 echo request, fd00:1::1 -> fd00:1::2, traffic class 0xb9
    /// (DSCP EF, ECT(1)), flow label 0x12345, hop limit 63.
    fn ping() -> Vec<u8> {
        let mut p = vec![0x6b, 0x91, 0x23, 0x45, 0, 8, 58, 63];
        p.extend_from_slice(&"fd00:1::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:1::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        p
    }

    #[test]
    fn parse_and_write_round_trip() {
        let p = ping();
        let h = Ipv6Header::parse(&p).unwrap();
        assert_eq!(
            (
                h.traffic_class,
                h.flow_label,
                h.payload_len,
                h.next_header,
                h.hop_limit
            ),
            (0xb9, 0x12345, 8, 58, 63)
        );
        assert_eq!(h.src, "fd00:1::1".parse::<Ipv6Addr>().unwrap());
        let mut out = vec![0; HEADER_LEN];
        write(&mut out, &h, 8).unwrap();
        assert_eq!(out, p[..HEADER_LEN]);
        assert_eq!(write(&mut out, &h, 70_000), Err(DataplaneError::TooLarge));
        assert_eq!(write(&mut out[..39], &h, 8), Err(DataplaneError::NoRoom));
    }

    #[test]
    fn refuses_what_the_tunnel_cannot_carry() {
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ping();
            f(&mut p);
            Ipv6Header::parse(&p).unwrap_err()
        };
        assert_eq!(
            bad(&|p| p[0] = 0x4b),
            DataplaneError::Malformed("ipv6.version")
        );
        assert_eq!(
            bad(&|p| p.truncate(47)),
            DataplaneError::Malformed("ipv6.payload_length")
        );
        assert_eq!(
            bad(&|p| p.push(0)),
            DataplaneError::Malformed("ipv6.payload_length")
        );
        assert_eq!(
            bad(&|p| p.truncate(39)),
            DataplaneError::Malformed("ipv6.header")
        );
        assert!(Ipv6Header::parse(&[]).is_err());
    }
}
