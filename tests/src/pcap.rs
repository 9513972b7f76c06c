//! A minimal pcap writer (libpcap format, LINKTYPE_ETHERNET) that wraps UDP
//! payloads in Ethernet/IPv4/UDP, so tshark can dissect what GKM emits.

use std::net::Ipv4Addr;

use gkm_dataplane::ipv4::checksum;

/// One UDP datagram to record.
#[derive(Debug, Clone)]
pub struct UdpRecord {
    /// Source address and port.
    pub src: (Ipv4Addr, u16),
    /// Destination address and port.
    pub dst: (Ipv4Addr, u16),
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Builds a pcap file holding the records, one per frame, a millisecond apart.
pub fn write(records: &[UdpRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, r) in records.iter().enumerate() {
        let udp_len = 8 + r.payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&r.src.0.octets());
        ip.extend_from_slice(&r.dst.0.octets());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&r.src.1.to_be_bytes());
        frame.extend_from_slice(&r.dst.1.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]); // UDP checksum optional over IPv4
        frame.extend_from_slice(&r.payload);
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&((i as u32) * 1000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}
