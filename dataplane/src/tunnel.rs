//! ESP tunnel mode with address preservation, sans IO: an inner IPv4 or
//! IPv6 packet becomes an outer ESP packet of the same family with the
//! inner source and destination, and back (RFC 4303 section 3.1.2).
//!
//! Outer header (RFC 4301 section 5.1.2.1, and GET VPN's address
//! preservation): source and destination copied from the inner header;
//! DSCP and ECN copied (RFC 6040 normal mode); the TTL or hop limit copied
//! from the inner packet (the host already set it; keeping it lets
//! traceroute-style TTL scoping work across the tunnel); ESP (50) as the
//! protocol or next header. IPv4 also copies DF and numbers packets with a
//! per-tunnel identification counter; IPv6 copies the flow label (RFC
//! 6437 lets a tunnel endpoint keep the inner flow's label, so the outer
//! packets of one flow stay on one ECMP path) and has no extension
//! headers. On decapsulation a CE mark on the outer header moves to an
//! ECN-capable inner packet; a CE mark over a not-ECN-capable packet
//! drops it (RFC 6040 section 4.2). An outer packet carries an inner
//! packet of its own family only: address preservation makes both
//! headers name the same addresses.
//!
//! With IP-D3P on, the sender puts a D3P header (POSIX time in ms) before
//! the inner packet inside ESP; the receiver drops packets outside its
//! window and counts them (`show crypto gkm gm replay`).
//!
//! SAs: every installed SA is used for receiving until it expires; the
//! one used for sending a packet is the latest-expiring SA whose
//! activation time (ATD) has come and whose TEK selectors cover the
//! packet, so a rekey never leaves a moment without an SA in either
//! direction. A TEK's selectors (source and destination prefix, one
//! family) cover a packet going either way between them, as GET VPN
//! mirrors a group's policy; a received packet whose inner addresses its
//! SA's selectors do not cover is dropped (RFC 4301 section 5.2).

use core::ops::Range;
use std::net::IpAddr;

use gkm_model::health::Traffic;
use gkm_model::IpPrefix;

use gkm_wire::consts::{D3pType, IpProtocol};
use gkm_wire::d3p::{D3pHeader, D3P_HEADER_LEN};

use crate::d3p::D3pVerdict;
use crate::esp::{EspKeys, GroupSa, IvSource, ESP_HEADER_MAX, ESP_TRAILER_MAX};
use crate::ipv4::{self, Ipv4Header};
use crate::ipv6::{self, Ipv6Header};
use crate::replay::{CountReplay, ReplayCounters};
use crate::DataplaneError;

/// Octets [`Tunnel::encapsulate_in_place`] needs before an inner packet of
/// either family: the outer IPv6 header, the ESP header and IV (at most
/// CBC's), the D3P header.
pub const HEADROOM: usize = ipv6::HEADER_LEN + ESP_HEADER_MAX + D3P_HEADER_LEN;

/// The same for an inner IPv4 packet (its outer header is 20 octets
/// shorter).
pub const HEADROOM_V4: usize = ipv4::HEADER_LEN + ESP_HEADER_MAX + D3P_HEADER_LEN;

/// An inner or outer packet's IP header, by family.
#[derive(Debug, Clone, Copy)]
enum IpHeader {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

impl IpHeader {
    /// Parses `packet`'s header by its version nibble.
    fn parse(packet: &[u8]) -> Result<Self, DataplaneError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => Ipv4Header::parse(packet).map(Self::V4),
            Some(6) => Ipv6Header::parse(packet).map(Self::V6),
            _ => Err(DataplaneError::Malformed("ip.version")),
        }
    }

    /// The outer header's length for this family (IPv4 without options).
    fn outer_len(&self) -> usize {
        match self {
            Self::V4(_) => ipv4::HEADER_LEN,
            Self::V6(_) => ipv6::HEADER_LEN,
        }
    }

    /// The header's own length as it lies in the packet.
    fn len(&self) -> usize {
        match self {
            Self::V4(h) => h.header_len,
            Self::V6(_) => ipv6::HEADER_LEN,
        }
    }

    /// The ESP (or D3P) next-header value naming a packet of this family.
    fn protocol(&self) -> IpProtocol {
        match self {
            Self::V4(_) => IpProtocol::IPV4,
            Self::V6(_) => IpProtocol::IPV6,
        }
    }

    /// The protocol or next header after the fixed header.
    fn next(&self) -> u8 {
        match self {
            Self::V4(h) => h.protocol,
            Self::V6(h) => h.next_header,
        }
    }

    fn src(&self) -> IpAddr {
        match self {
            Self::V4(h) => h.src.into(),
            Self::V6(h) => h.src.into(),
        }
    }

    fn dst(&self) -> IpAddr {
        match self {
            Self::V4(h) => h.dst.into(),
            Self::V6(h) => h.dst.into(),
        }
    }

    /// DSCP and ECN (IPv4 TOS, IPv6 traffic class).
    fn tos(&self) -> u8 {
        match self {
            Self::V4(h) => h.tos,
            Self::V6(h) => h.traffic_class,
        }
    }
}

/// Octets [`Tunnel::encapsulate_in_place`] needs after the inner packet:
/// ESP padding, trailer and ICV.
pub const TAILROOM: usize = ESP_TRAILER_MAX;

/// One installed SA with its timing, selectors and this sender's IVs
/// under it.
#[derive(Debug)]
struct Installed {
    sa: GroupSa,
    /// None: any packet (tests and benchmarks that install a bare key).
    selectors: Option<Selectors>,
    send_from: u64,
    expires_at: u64,
    iv: IvSource,
}

/// A TEK's traffic selectors: the packets its SA protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selectors {
    /// Source prefix as the KS wrote it.
    pub src: IpPrefix,
    /// Destination prefix.
    pub dst: IpPrefix,
}

impl Selectors {
    /// Whether a packet from `src` to `dst` is the SA's: source in one
    /// prefix and destination in the other, in either direction.
    pub fn covers(&self, src: IpAddr, dst: IpAddr) -> bool {
        (self.src.contains(src) && self.dst.contains(dst))
            || (self.dst.contains(src) && self.src.contains(dst))
    }
}

fn covered(sel: Option<&Selectors>, src: IpAddr, dst: IpAddr) -> bool {
    sel.is_none_or(|s| s.covers(src, dst))
}

/// The group's dataplane state on one GM.
#[derive(Debug)]
pub struct Tunnel {
    sas: Vec<Installed>,
    d3p_window_ms: Option<u32>,
    d3p_protocol: IpProtocol,
    ip_id: u16,
    /// Counters for `show crypto gkm gm replay`.
    pub counters: ReplayCounters,
    /// Inner bytes through the tunnel each way (its health report's
    /// traffic; the kernel's receive-queue drops are the caller's).
    pub traffic: Traffic,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self::new(IpProtocol::GKM_D3P)
    }
}

impl Tunnel {
    /// A tunnel with no SA (it drops everything: fail-close until the
    /// first registration) that marks D3P headers with `d3p_protocol`.
    pub fn new(d3p_protocol: IpProtocol) -> Self {
        Self {
            sas: Vec::new(),
            d3p_window_ms: None,
            d3p_protocol,
            ip_id: 0,
            counters: ReplayCounters::default(),
            traffic: Traffic::default(),
        }
    }

    /// Sets the IP-D3P window (from the KS's GAP or the agent's override);
    /// `None` turns stamping and checking off.
    pub fn set_d3p_window(&mut self, window_ms: Option<u32>) {
        self.d3p_window_ms = window_ms;
    }

    /// Installs an SA for any packet (a key without selectors: tests and
    /// benchmarks); see [`Tunnel::install_for`].
    pub fn install(
        &mut self,
        spi: u32,
        keys: &EspKeys<'_>,
        send_from: u64,
        expires_at: u64,
        iv: IvSource,
    ) -> Result<(), DataplaneError> {
        self.install_sa(spi, keys, None, send_from, expires_at, iv)
    }

    /// Installs an SA from a TEK, for the packets its `selectors` cover.
    /// An SPI already installed is refused: installing its key again would
    /// restart this sender's IV counter.
    pub fn install_for(
        &mut self,
        spi: u32,
        keys: &EspKeys<'_>,
        selectors: Selectors,
        send_from: u64,
        expires_at: u64,
        iv: IvSource,
    ) -> Result<(), DataplaneError> {
        self.install_sa(spi, keys, Some(selectors), send_from, expires_at, iv)
    }

    fn install_sa(
        &mut self,
        spi: u32,
        keys: &EspKeys<'_>,
        selectors: Option<Selectors>,
        send_from: u64,
        expires_at: u64,
        iv: IvSource,
    ) -> Result<(), DataplaneError> {
        if self.has(spi) {
            return Err(DataplaneError::SpiInUse(spi));
        }
        let sa = GroupSa::new(spi, keys)?;
        self.sas.push(Installed {
            sa,
            selectors,
            send_from,
            expires_at,
            iv,
        });
        Ok(())
    }

    /// Whether an SA with this SPI is installed. A key already installed
    /// must never be installed again: that would restart its IV counter.
    pub fn has(&self, spi: u32) -> bool {
        self.sas.iter().any(|s| s.sa.spi() == spi)
    }

    /// Moves an installed SA's activation or expiry (DTD, ATD).
    pub fn set_timing(&mut self, spi: u32, send_from: u64, expires_at: u64) {
        for s in self.sas.iter_mut().filter(|s| s.sa.spi() == spi) {
            s.send_from = send_from;
            s.expires_at = expires_at;
        }
    }

    /// Keeps only the SAs whose SPI `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.sas.retain(|s| keep(s.sa.spi()));
    }

    /// Removes an SA (a rekey's Delete payload).
    pub fn remove(&mut self, spi: u32) {
        self.sas.retain(|s| s.sa.spi() != spi);
    }

    /// Drops SAs expired at `now`.
    pub fn expire(&mut self, now: u64) {
        self.sas.retain(|s| now < s.expires_at);
    }

    /// The SPI packets are sent under at `now`, selectors aside (the
    /// latest-expiring active SA).
    pub fn outbound_spi(&self, now: u64) -> Option<u32> {
        self.sas
            .iter()
            .filter(|s| s.send_from <= now && now < s.expires_at)
            .max_by_key(|s| s.expires_at)
            .map(|s| s.sa.spi())
    }

    fn outbound(&self, now: u64, src: IpAddr, dst: IpAddr) -> Option<usize> {
        self.sas
            .iter()
            .enumerate()
            .filter(|(_, s)| s.send_from <= now && now < s.expires_at)
            .filter(|(_, s)| covered(s.selectors.as_ref(), src, dst))
            .max_by_key(|(_, s)| s.expires_at)
            .map(|(i, _)| i)
    }

    /// Encrypts the inner IPv4 or IPv6 packet `inner` into `out` (cleared first).
    /// (A copying front end of [`Tunnel::encapsulate_in_place`].)
    pub fn encapsulate(
        &mut self,
        now_ms: u64,
        inner: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DataplaneError> {
        out.clear();
        out.resize(HEADROOM, 0);
        out.extend_from_slice(inner);
        out.resize(HEADROOM + inner.len() + TAILROOM, 0);
        let packet = self.encapsulate_in_place(now_ms, out, HEADROOM..HEADROOM + inner.len())?;
        out.truncate(packet.end);
        out.drain(..packet.start);
        Ok(())
    }

    /// Encrypts the inner IPv4 or IPv6 packet at `inner` in `buf` where it
    /// lies, with at least [`HEADROOM`] octets before it ([`HEADROOM_V4`]
    /// for IPv4; 12 fewer with IP-D3P off) and [`TAILROOM`] after it, and
    /// returns where the outer packet lies in `buf`: the inner packet is
    /// never copied.
    pub fn encapsulate_in_place(
        &mut self,
        now_ms: u64,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DataplaneError> {
        let inner_len = inner.len();
        let h = IpHeader::parse(buf.get(inner.clone()).ok_or(DataplaneError::NoRoom)?)?;
        let head = h.outer_len()
            + ESP_HEADER_MAX
            + match self.d3p_window_ms {
                Some(_) => D3P_HEADER_LEN,
                None => 0,
            };
        // All the room is checked before anything is written or an IV used.
        if inner.start < head || buf.len() < inner.end.saturating_add(TAILROOM) {
            return Err(DataplaneError::NoRoom);
        }
        let i = self
            .outbound(now_ms, h.src(), h.dst())
            .ok_or(DataplaneError::NoOutboundSa)?;
        let entry = self.sas.get_mut(i).ok_or(DataplaneError::NoOutboundSa)?;
        let (iv, seq) = entry.iv.next_iv().ok_or(DataplaneError::IvExhausted)?;
        let (payload, next_header) = match self.d3p_window_ms {
            Some(_) => {
                let start = inner
                    .start
                    .checked_sub(D3P_HEADER_LEN)
                    .ok_or(DataplaneError::NoRoom)?;
                let d3p = D3pHeader {
                    next_header: h.protocol(),
                    d3p_type: D3pType::POSIX_TIME_MSEC,
                    timestamp_ms: now_ms,
                };
                buf.get_mut(start..inner.start)
                    .ok_or(DataplaneError::NoRoom)?
                    .copy_from_slice(&d3p.to_bytes());
                (start..inner.end, self.d3p_protocol)
            }
            None => (inner, h.protocol()),
        };
        let esp = entry.sa.seal_in_place(buf, payload, seq, iv, next_header)?;
        let start = esp
            .start
            .checked_sub(h.outer_len())
            .ok_or(DataplaneError::NoRoom)?;
        let room = buf
            .get_mut(start..esp.start)
            .ok_or(DataplaneError::NoRoom)?;
        match h {
            IpHeader::V4(h) => {
                let outer = Ipv4Header {
                    header_len: ipv4::HEADER_LEN,
                    total_len: ipv4::HEADER_LEN + esp.len(),
                    protocol: IpProtocol::ESP.0,
                    ..h
                };
                self.ip_id = self.ip_id.wrapping_add(1);
                ipv4::write(room, &outer, self.ip_id, esp.len())?;
            }
            IpHeader::V6(h) => {
                let outer = Ipv6Header {
                    payload_len: esp.len(),
                    next_header: IpProtocol::ESP.0,
                    ..h
                };
                ipv6::write(room, &outer, esp.len())?;
            }
        }
        self.counters.output();
        self.traffic.bytes_out += inner_len as u64;
        Ok(start..esp.end)
    }

    /// Decrypts the outer IPv4 or IPv6 packet `outer` in place and returns
    /// where the inner packet (of the same family) lies in it. A D3P
    /// refusal is counted and sampled.
    pub fn decapsulate(
        &mut self,
        now_ms: u64,
        outer: &mut [u8],
    ) -> Result<Range<usize>, DataplaneError> {
        let h = IpHeader::parse(outer)?;
        if h.next() != IpProtocol::ESP.0 {
            return Err(DataplaneError::Malformed(match h {
                IpHeader::V4(_) => "ipv4.protocol (not ESP)",
                IpHeader::V6(_) => "ipv6.next_header (not ESP)",
            }));
        }
        let header_len = h.len();
        let family = h.protocol();
        let esp = outer
            .get_mut(header_len..)
            .ok_or(DataplaneError::Malformed("esp"))?;
        let spi = esp
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(DataplaneError::Malformed("esp.spi"))?;
        let entry = self
            .sas
            .iter()
            .find(|s| s.sa.spi() == spi && now_ms < s.expires_at)
            .ok_or(DataplaneError::UnknownSpi(spi))?;
        let selectors = entry.selectors;
        let (nh, r) = entry.sa.open(esp)?;
        let mut inner = (r.start + header_len)..(r.end + header_len);
        if nh == self.d3p_protocol {
            let payload = outer
                .get(inner.clone())
                .ok_or(DataplaneError::Malformed("d3p"))?;
            let (d3p, _) =
                D3pHeader::parse(payload).map_err(|_| DataplaneError::Malformed("d3p"))?;
            if d3p.next_header != family {
                return Err(DataplaneError::Unsupported(
                    "inner protocol (not the outer packet's family)",
                ));
            }
            inner.start += D3P_HEADER_LEN;
            match self.d3p_window_ms {
                Some(w) => match self.counters.input(now_ms, h.src(), d3p.timestamp_ms, w) {
                    D3pVerdict::Fresh => {}
                    D3pVerdict::TooOld => return Err(DataplaneError::D3pTooOld),
                    D3pVerdict::TooNew => return Err(DataplaneError::D3pTooNew),
                },
                // Stamped but IP-D3P is off here: nothing to judge against.
                None => self.counters.input_unstamped(),
            }
        } else if nh == family {
            if self.d3p_window_ms.is_some() {
                // IP-D3P is on: an unstamped packet cannot prove it is fresh.
                self.counters.input_packets += 1;
                self.counters.input_errors += 1;
                return Err(DataplaneError::Malformed("d3p header missing"));
            }
            self.counters.input_unstamped();
        } else {
            return Err(DataplaneError::Unsupported(
                "inner protocol (not the outer packet's family)",
            ));
        }
        let packet = outer
            .get_mut(inner.clone())
            .ok_or(DataplaneError::Malformed("inner"))?;
        let ih = IpHeader::parse(packet)?;
        if ih.protocol() != family || ih.src() != h.src() || ih.dst() != h.dst() {
            return Err(DataplaneError::Malformed(
                "inner addresses differ from the outer ones",
            ));
        }
        if !covered(selectors.as_ref(), ih.src(), ih.dst()) {
            return Err(DataplaneError::Malformed(
                "inner addresses outside the SA's selectors",
            ));
        }
        match ih {
            IpHeader::V4(ih) => ecn_decapsulate(h.tos(), packet, ih.header_len)?,
            IpHeader::V6(_) => ecn_decapsulate_v6(h.tos(), packet)?,
        }
        self.traffic.bytes_in += inner.len() as u64;
        Ok(inner)
    }
}

/// RFC 6040 section 4.2 (normal mode), the ECN an inner packet leaves
/// with: an outer CE moves to an ECN-capable inner packet (over a
/// not-ECN-capable one the packet is dropped), an outer ECT(1) over an
/// inner ECT(0) makes it ECT(1); otherwise the inner ECN stays. `None`:
/// unchanged.
fn ecn_after(outer: u8, inner: u8) -> Result<Option<u8>, DataplaneError> {
    const NOT_ECT: u8 = 0b00;
    const ECT1: u8 = 0b01;
    const ECT0: u8 = 0b10;
    const CE: u8 = 0b11;
    match (outer & 0b11, inner & 0b11) {
        (CE, NOT_ECT) => Err(DataplaneError::Malformed("ecn: CE on a not-ECT packet")),
        (CE, ECT0 | ECT1) => Ok(Some(CE)),
        (ECT1, ECT0) => Ok(Some(ECT1)),
        _ => Ok(None),
    }
}

/// [`ecn_after`] applied to an inner IPv6 packet: its ECN bits are bits
/// 2-3 of the second octet (the traffic class straddles octets 0 and 1),
/// and there is no header checksum.
fn ecn_decapsulate_v6(outer_tc: u8, inner: &mut [u8]) -> Result<(), DataplaneError> {
    let b1 = inner
        .get(1)
        .copied()
        .ok_or(DataplaneError::Malformed("ipv6"))?;
    if let Some(ecn) = ecn_after(outer_tc, b1 >> 4)? {
        if let Some(b) = inner.get_mut(1) {
            *b = (b1 & !0x30) | ecn << 4;
        }
    }
    Ok(())
}

/// [`ecn_after`] applied to an inner IPv4 packet, its header checksum
/// recomputed when the ECN changes.
fn ecn_decapsulate(
    outer_tos: u8,
    inner: &mut [u8],
    header_len: usize,
) -> Result<(), DataplaneError> {
    let tos = inner
        .get(1)
        .copied()
        .ok_or(DataplaneError::Malformed("ipv4"))?;
    if let Some(ecn) = ecn_after(outer_tos, tos)? {
        if let Some(t) = inner.get_mut(1) {
            *t = (tos & !0b11) | ecn;
        }
        if let Some(c) = inner.get_mut(10..12) {
            c.copy_from_slice(&[0, 0]);
        }
        let sum = ipv4::checksum(inner.get(..header_len).unwrap_or_default());
        if let Some(c) = inner.get_mut(10..12) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 36] = [0x11; 36];
    const T0: u64 = 1_700_000_000_000;

    fn ping(tos: u8, ttl: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, tos, 0, 0, 0x12, 0x34, 0x40, 0x00, ttl, 1, 0, 0, 10, 1, 0, 1, 10, 1, 0, 2,
        ];
        p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        p.extend((0..56).map(|i| i as u8));
        let len = (p.len() as u16).to_be_bytes();
        p[2] = len[0];
        p[3] = len[1];
        let sum = ipv4::checksum(&p[..20]).to_be_bytes();
        p[10] = sum[0];
        p[11] = sum[1];
        p
    }

    fn gcm(key: &[u8]) -> EspKeys<'_> {
        EspKeys {
            transform: gkm_wire::consts::EspTransformId::AES_GCM_16,
            auth: None,
            algorithm_key: key,
            integrity_key: &[],
        }
    }

    fn pair(d3p: Option<u32>) -> (Tunnel, Tunnel) {
        pair_with(d3p, &gcm(&KEY))
    }

    fn pair_with(d3p: Option<u32>, keys: &EspKeys<'_>) -> (Tunnel, Tunnel) {
        let mk = |sid| {
            let mut t = Tunnel::default();
            t.set_d3p_window(d3p);
            t.install(
                0x0a0b0c0d,
                keys,
                T0,
                T0 + 3_600_000,
                IvSource::from_sid(sid, 8).unwrap(),
            )
            .unwrap();
            t
        };
        (mk(1), mk(2))
    }

    #[test]
    fn address_preserving_round_trip_with_dscp_ecn_ttl_and_df_copied() {
        let (mut a, mut b) = pair(Some(1000));
        let inner = ping(0xb8 | 0b10, 17);
        let mut out = Vec::new();
        a.encapsulate(T0 + 5, &inner, &mut out).unwrap();
        let oh = Ipv4Header::parse(&out).unwrap();
        let ih = Ipv4Header::parse(&inner).unwrap();
        assert_eq!(
            (oh.src, oh.dst, oh.tos, oh.ttl, oh.dont_fragment),
            (ih.src, ih.dst, ih.tos, 17, true)
        );
        assert_eq!(oh.protocol, 50);
        assert_eq!(ipv4::checksum(&out[..20]), 0);
        // The inner packet is not visible in the ciphertext.
        assert!(!out.windows(16).any(|w| w == &inner[28..44]));
        let r = b.decapsulate(T0 + 10, &mut out).unwrap();
        assert_eq!(&out[r], &inner[..]);
        assert_eq!(
            (a.counters.output_packets, b.counters.input_packets),
            (1, 1)
        );
        let n = inner.len() as u64;
        assert_eq!((a.traffic.bytes_out, b.traffic.bytes_in), (n, n));
        assert_eq!((a.traffic.bytes_in, b.traffic.bytes_out), (0, 0));
    }

    #[test]
    fn cbc_hmac_sas_round_trip_within_the_headroom_and_tailroom() {
        use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
        for (auth, mac) in [
            (AuthAlgorithm::HMAC_SHA1, &[0x22u8; 20][..]),
            (AuthAlgorithm::HMAC_SHA2_256, &[0x22u8; 32][..]),
        ] {
            for key in [&KEY[..16], &KEY[..32]] {
                let keys = EspKeys {
                    transform: EspTransformId::AES_CBC,
                    auth: Some(auth),
                    algorithm_key: key,
                    integrity_key: mac,
                };
                let (mut a, mut b) = pair_with(Some(1000), &keys);
                // Every payload length through a whole CBC block of padding.
                for extra in 0..17 {
                    let mut inner = ping(0, 64);
                    inner.extend(std::iter::repeat_n(0xab, extra));
                    let len = (inner.len() as u16).to_be_bytes();
                    inner[2..4].copy_from_slice(&len);
                    inner[10..12].copy_from_slice(&[0, 0]);
                    let sum = ipv4::checksum(&inner[..20]).to_be_bytes();
                    inner[10..12].copy_from_slice(&sum);
                    let mut out = Vec::new();
                    a.encapsulate(T0 + 5, &inner, &mut out).unwrap();
                    assert_eq!(out[20..24], 0x0a0b0c0du32.to_be_bytes());
                    let r = b.decapsulate(T0 + 10, &mut out).unwrap();
                    assert_eq!(&out[r], &inner[..], "{auth:?} {} +{extra}", key.len());
                }
            }
        }
    }

    #[test]
    fn d3p_window_edges_are_counted_and_sampled() {
        let (mut a, mut b) = pair(Some(1000));
        let mut pkt = |at_send: u64| {
            let mut out = Vec::new();
            a.encapsulate(at_send, &ping(0, 64), &mut out).unwrap();
            out
        };
        let now = T0 + 10_000;
        let mut exactly = pkt(now - 1000);
        let mut late = pkt(now - 1001);
        let mut early = pkt(now + 1001);
        assert!(b.decapsulate(now, &mut exactly).is_ok());
        assert_eq!(
            b.decapsulate(now, &mut late).unwrap_err(),
            DataplaneError::D3pTooOld
        );
        assert_eq!(
            b.decapsulate(now, &mut early).unwrap_err(),
            DataplaneError::D3pTooNew
        );
        assert_eq!((b.counters.input_packets, b.counters.input_errors), (3, 2));
        let e = b.counters.history[0];
        assert_eq!(
            (e.peer_time_ms, e.my_time_ms, e.window_ms),
            (now - 1001, now, 1000)
        );
        // Unstamped packets are refused while IP-D3P is on.
        let (mut plain, _) = pair(None);
        let mut out = Vec::new();
        plain.encapsulate(now, &ping(0, 64), &mut out).unwrap();
        assert!(b.decapsulate(now, &mut out).is_err());
        assert_eq!(b.counters.input_errors, 3);
    }

    #[test]
    fn rollover_uses_the_new_sa_only_after_its_activation_and_receives_both() {
        let (mut a, mut b) = pair(None);
        let new_key = [0x22; 36];
        for t in [&mut a, &mut b] {
            t.install(
                0x0e0f0001,
                &gcm(&new_key),
                T0 + 60_000,
                T0 + 7_200_000,
                IvSource::from_sid(3, 8).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(
            a.outbound_spi(T0 + 59_999),
            Some(0x0a0b0c0d),
            "ATD: old SA until activation"
        );
        assert_eq!(a.outbound_spi(T0 + 60_000), Some(0x0e0f0001));
        for at in [T0 + 59_999, T0 + 60_000] {
            let mut out = Vec::new();
            a.encapsulate(at, &ping(0, 64), &mut out).unwrap();
            assert!(
                b.decapsulate(at, &mut out).is_ok(),
                "no loss at the rollover"
            );
        }
        b.remove(0x0a0b0c0d);
        a.expire(T0 + 7_200_000);
        let mut out = Vec::new();
        assert_eq!(
            a.encapsulate(T0 + 7_200_000, &ping(0, 64), &mut out)
                .unwrap_err(),
            DataplaneError::NoOutboundSa
        );
    }

    #[test]
    fn ecn_marks_move_inward_and_ce_over_not_ect_drops() {
        let (mut a, mut b) = pair(None);
        let mut out = Vec::new();
        a.encapsulate(T0, &ping(0b01, 64), &mut out).unwrap();
        out[1] |= 0b11; // a router marked CE on the way
        let sum = {
            out[10] = 0;
            out[11] = 0;
            ipv4::checksum(&out[..20]).to_be_bytes()
        };
        out[10..12].copy_from_slice(&sum);
        let r = b.decapsulate(T0, &mut out).unwrap();
        let inner = &out[r];
        assert_eq!(inner[1] & 0b11, 0b11);
        assert_eq!(ipv4::checksum(&inner[..20]), 0);
        let mut out = Vec::new();
        a.encapsulate(T0, &ping(0, 64), &mut out).unwrap();
        out[1] |= 0b11;
        out[10] = 0;
        out[11] = 0;
        let sum = ipv4::checksum(&out[..20]).to_be_bytes();
        out[10..12].copy_from_slice(&sum);
        assert!(b.decapsulate(T0, &mut out).is_err());
    }

    #[test]
    fn rfc_6040_decapsulation_table() {
        // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer the same.
        let want: [[Option<u8>; 4]; 4] = [
            [Some(0b00), Some(0b00), Some(0b00), None],
            [Some(0b10), Some(0b10), Some(0b01), Some(0b11)],
            [Some(0b01), Some(0b01), Some(0b01), Some(0b11)],
            [Some(0b11), Some(0b11), Some(0b11), Some(0b11)],
        ];
        let code = [0b00u8, 0b10, 0b01, 0b11];
        for (r, &inner) in code.iter().enumerate() {
            for (c, &outer) in code.iter().enumerate() {
                let got = ecn_after(outer, inner).ok().map(|x| x.unwrap_or(inner));
                assert_eq!(got, want[r][c], "inner {inner:02b} outer {outer:02b}");
            }
        }
        // Through the tunnel, both families: ECT(1) outside, ECT(0) inside.
        let (mut a, mut b) = pair(None);
        let mut out = Vec::new();
        a.encapsulate(T0, &ping(0b10, 64), &mut out).unwrap();
        out[1] = (out[1] & !0b11) | 0b01;
        out[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4::checksum(&out[..20]).to_be_bytes();
        out[10..12].copy_from_slice(&sum);
        let r = b.decapsulate(T0, &mut out).unwrap();
        assert_eq!(out[r.start + 1] & 0b11, 0b01);
        assert_eq!(ipv4::checksum(&out[r.start..r.start + 20]), 0);
        a.encapsulate(T0, &ping6(0b10, 64, 8), &mut out).unwrap();
        out[1] = (out[1] & !0x30) | 0b01 << 4;
        let r = b.decapsulate(T0, &mut out).unwrap();
        assert_eq!(
            Ipv6Header::parse(&out[r]).unwrap().traffic_class & 0b11,
            0b01
        );
    }

    #[test]
    fn an_installed_key_is_never_installed_again() {
        let (mut a, _) = pair(None);
        let again = a.install(
            0x0a0b0c0d,
            &gcm(&KEY),
            T0,
            T0 + 1,
            IvSource::from_sid(1, 8).unwrap(),
        );
        assert_eq!(again, Err(DataplaneError::SpiInUse(0x0a0b0c0d)));
        assert_eq!(
            a.outbound_spi(T0 + 10),
            Some(0x0a0b0c0d),
            "the first one stays"
        );
    }

    #[test]
    fn nothing_without_an_sa_and_garbage_is_refused() {
        let mut t = Tunnel::default();
        let mut out = Vec::new();
        assert_eq!(
            t.encapsulate(T0, &ping(0, 64), &mut out).unwrap_err(),
            DataplaneError::NoOutboundSa
        );
        let mut g = vec![0x45u8; 10];
        assert!(t.decapsulate(T0, &mut g).is_err());
        let (mut a, _) = pair(None);
        a.encapsulate(T0, &ping(0, 64), &mut out).unwrap();
        assert!(matches!(
            t.decapsulate(T0, &mut out),
            Err(DataplaneError::UnknownSpi(_))
        ));
    }

    /// An ICMPv6 echo request fd00:1::1 -> fd00:1::2 with `payload`
    /// octets of data, traffic class `tc`, flow label 0xabcde.
    fn ping6(tc: u8, hop_limit: u8, payload: usize) -> Vec<u8> {
        let len = (8 + payload) as u16;
        let word = 6u32 << 28 | u32::from(tc) << 20 | 0xabcde;
        let mut p = word.to_be_bytes().to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[58, hop_limit]);
        p.extend_from_slice(&"fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        p.extend((0..payload).map(|i| i as u8));
        p
    }

    #[test]
    fn ipv6_round_trip_preserves_addresses_traffic_class_flow_label_and_hop_limit() {
        for d3p in [None, Some(1000)] {
            let (mut a, mut b) = pair(d3p);
            let inner = ping6(0xb8 | 0b01, 17, 56);
            let mut out = Vec::new();
            a.encapsulate(T0 + 5, &inner, &mut out).unwrap();
            let oh = Ipv6Header::parse(&out).unwrap();
            let ih = Ipv6Header::parse(&inner).unwrap();
            assert_eq!(
                (
                    oh.src,
                    oh.dst,
                    oh.traffic_class,
                    oh.flow_label,
                    oh.hop_limit
                ),
                (ih.src, ih.dst, ih.traffic_class, ih.flow_label, 17)
            );
            assert_eq!((oh.next_header, oh.payload_len), (50, out.len() - 40));
            assert_eq!(out[40..44], 0x0a0b0c0du32.to_be_bytes());
            assert!(!out.windows(16).any(|w| w == &inner[48..64]));
            let r = b.decapsulate(T0 + 10, &mut out).unwrap();
            assert_eq!(&out[r], &inner[..]);
        }
        // A D3P error names an IPv6 sender.
        let (mut a, mut b) = pair(Some(1000));
        let mut out = Vec::new();
        a.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        assert_eq!(
            b.decapsulate(T0 + 5_000, &mut out),
            Err(DataplaneError::D3pTooOld)
        );
        assert_eq!(
            b.counters.history[0].src,
            "fd00:1::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn each_packet_goes_under_the_sa_whose_selectors_cover_it() {
        let sel = |src: &str, dst: &str| Selectors {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        };
        let v4 = sel("10.1.0.0/16", "10.1.0.0/16");
        let v6 = sel("fd00:1::/64", "fd00:1::/64");
        let mk = |sid| {
            let mut t = Tunnel::default();
            // The IPv6 TEK expires later: before selectors, everything
            // went under it.
            t.install_for(
                0x100,
                &gcm(&KEY),
                v4,
                T0,
                T0 + 1_000_000,
                IvSource::from_sid(sid, 8).unwrap(),
            )
            .unwrap();
            t.install_for(
                0x200,
                &gcm(&[0x22; 36]),
                v6,
                T0,
                T0 + 2_000_000,
                IvSource::from_sid(sid, 8).unwrap(),
            )
            .unwrap();
            t
        };
        let (mut a, mut b) = (mk(1), mk(2));
        let spi = |out: &[u8], at: usize| u32::from_be_bytes(out[at..at + 4].try_into().unwrap());
        let mut out = Vec::new();
        a.encapsulate(T0, &ping(0, 64), &mut out).unwrap();
        assert_eq!(spi(&out, 20), 0x100);
        assert!(b.decapsulate(T0, &mut out).is_ok());
        a.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        assert_eq!(spi(&out, 40), 0x200);
        assert!(b.decapsulate(T0, &mut out).is_ok());
        // Mirrored: the reply direction is covered as well.
        let s = sel("10.1.0.0/24", "10.2.0.0/24");
        let (x, y) = ("10.1.0.9".parse().unwrap(), "10.2.0.9".parse().unwrap());
        assert!(s.covers(x, y) && s.covers(y, x));
        assert!(!s.covers(x, x));
        // Outside every selector: no SA, nothing sent in clear or under a
        // stranger's key.
        let mut other = ping(0, 64);
        other[12..16].copy_from_slice(&[192, 0, 2, 1]);
        other[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4::checksum(&other[..20]).to_be_bytes();
        other[10..12].copy_from_slice(&sum);
        assert_eq!(
            a.encapsulate(T0, &other, &mut out),
            Err(DataplaneError::NoOutboundSa)
        );
        // A sender that puts an IPv6 packet under the IPv4 TEK's SPI (its
        // key known, its selectors ignored) is refused by the receiver.
        let mut rogue = Tunnel::default();
        rogue
            .install(
                0x100,
                &gcm(&KEY),
                T0,
                T0 + 1_000_000,
                IvSource::from_sid(3, 8).unwrap(),
            )
            .unwrap();
        rogue.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        assert_eq!(
            b.decapsulate(T0, &mut out),
            Err(DataplaneError::Malformed(
                "inner addresses outside the SA's selectors"
            ))
        );
    }

    #[test]
    fn ipv6_outer_and_inner_must_agree_and_ce_moves_inward() {
        let (mut a, mut b) = pair(None);
        // CE on the outer header over an ECT(1) inner packet: CE inside.
        let mut out = Vec::new();
        a.encapsulate(T0, &ping6(0b01, 64, 8), &mut out).unwrap();
        out[1] |= 0b11 << 4;
        let r = b.decapsulate(T0, &mut out).unwrap();
        assert_eq!(
            Ipv6Header::parse(&out[r]).unwrap().traffic_class & 0b11,
            0b11
        );
        // CE over a not-ECT packet: dropped.
        let mut out = Vec::new();
        a.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        out[1] |= 0b11 << 4;
        assert!(b.decapsulate(T0, &mut out).is_err());
        // The outer destination rewritten on the way: the inner one differs.
        let mut out = Vec::new();
        a.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        out[39] ^= 1;
        assert_eq!(
            b.decapsulate(T0, &mut out),
            Err(DataplaneError::Malformed(
                "inner addresses differ from the outer ones"
            ))
        );
        // An IPv6 header claiming another next header than ESP.
        let mut out = Vec::new();
        a.encapsulate(T0, &ping6(0, 64, 8), &mut out).unwrap();
        out[6] = 17;
        assert_eq!(
            b.decapsulate(T0, &mut out),
            Err(DataplaneError::Malformed("ipv6.next_header (not ESP)"))
        );
        // An IPv4 packet inside an IPv6 one (or any other mix) is refused:
        // built by hand, since encapsulation never makes one.
        let mut v4 = Vec::new();
        a.encapsulate(T0, &ping(0, 64), &mut v4).unwrap();
        let mut mixed = ping6(0, 64, 0)[..40].to_vec();
        mixed.extend_from_slice(&v4[20..]);
        let n = (mixed.len() - 40) as u16;
        mixed[4..6].copy_from_slice(&n.to_be_bytes());
        mixed[6] = 50;
        assert_eq!(
            b.decapsulate(T0, &mut mixed),
            Err(DataplaneError::Unsupported(
                "inner protocol (not the outer packet's family)"
            ))
        );
        let mut junk = vec![0x75u8; 60];
        assert_eq!(
            b.decapsulate(T0, &mut junk),
            Err(DataplaneError::Malformed("ip.version"))
        );
    }

    #[test]
    fn in_place_needs_exactly_its_room_and_matches_the_copying_path() {
        // The most room an SA takes: AES-CBC (16-octet IV) with a 16-octet
        // ICV, and a payload that needs 15 octets of padding: 95 octets
        // without the 12-octet D3P header, 99 with it (IPv4; IPv6's outer
        // header takes 20 more).
        let (key, mac) = ([0x33u8; 32], [0x44u8; 32]);
        let keys = EspKeys {
            transform: gkm_wire::consts::EspTransformId::AES_CBC,
            auth: Some(gkm_wire::consts::AuthAlgorithm::HMAC_SHA2_256),
            algorithm_key: &key,
            integrity_key: &mac,
        };
        for (d3p, need_head, extra, v6) in [
            (None, HEADROOM_V4 - D3P_HEADER_LEN, 11, false),
            (Some(1000), HEADROOM_V4, 15, false),
            (None, HEADROOM - D3P_HEADER_LEN, 11, true),
            (Some(1000), HEADROOM, 15, true),
        ] {
            let inner = if v6 {
                // 48 + 36 + extra octets: the IPv4 case's 84 + extra, so
                // the padding is the same 15 octets.
                ping6(0, 64, 36 + extra)
            } else {
                let mut inner = ping(0, 64);
                inner.extend(std::iter::repeat_n(0xaa, extra));
                let n = inner.len();
                inner[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                inner[10..12].copy_from_slice(&[0, 0]);
                let sum = ipv4::checksum(&inner[..20]).to_be_bytes();
                inner[10..12].copy_from_slice(&sum);
                inner
            };
            let n = inner.len();
            let framed = |head: usize, tail: usize| {
                let mut buf = vec![0u8; head + n + tail];
                buf[head..head + n].copy_from_slice(&inner);
                (buf, head..head + n)
            };
            for gcm_too in [false, true] {
                let (mut a, mut b) = if gcm_too {
                    pair(d3p)
                } else {
                    pair_with(d3p, &keys)
                };
                let (mut buf, at) = framed(need_head, TAILROOM);
                let r = a.encapsulate_in_place(T0, &mut buf, at).unwrap();
                if !gcm_too {
                    assert_eq!(r, 0..buf.len(), "the whole room is used");
                }
                let mut outer = buf[r.clone()].to_vec();
                let got = b.decapsulate(T0, &mut outer).unwrap();
                assert_eq!(&outer[got], &inner[..]);
                let mut copied = Vec::new();
                a.encapsulate(T0, &inner, &mut copied).unwrap();
                assert_eq!(copied.len(), r.len(), "the copying path frames the same");
                // One octet short before or after: refused, nothing counted.
                let sent = a.counters.output_packets;
                for (head, tail) in [(need_head - 1, TAILROOM), (need_head, TAILROOM - 1)] {
                    let (mut buf, at) = framed(head, tail);
                    assert_eq!(
                        a.encapsulate_in_place(T0, &mut buf, at),
                        Err(DataplaneError::NoRoom)
                    );
                }
                assert_eq!(a.counters.output_packets, sent);
            }
        }
    }
}
