//! GKM's COOP announcement header (docs/COOP.md, "Wire"): the body of the
//! private payload [`PayloadType::GKM_COOP_ANNOUNCEMENT`] that opens every
//! message of a [`ExchangeType::GKM_COOP`] exchange, after its HASH. GKM's
//! own format, version 1 (COOP between vendors is unpublished):
//!
//! ```text
//! version (1) = 1 | role (1): 1 primary, 2 secondary | priority (1): 1-255 | flags (1)
//! epoch (8) | anti-replay number (8) | stepped-down-from epoch (8, 0 unless flag 0x01)
//! group ID (4) | GDOI version major, minor, mini (3) | reserved (1) = 0 | feature bits (4)
//! part (2) | parts (2): this message's place in an announcement split over several
//! address family (1): 4 or 6 | reserved (3) = 0 | sender's COOP address (4 or 16)
//! ```
//!
//! Flags: 0x01 the stepped-down-from epoch is present; 0x02 the sender asks
//! for an announcement back at once (a key server that has just started).
//! Other flag bits must be 0. Multi-octet fields are big-endian.
//!
//! [`PayloadType::GKM_COOP_ANNOUNCEMENT`]: crate::consts::PayloadType::GKM_COOP_ANNOUNCEMENT
//! [`ExchangeType::GKM_COOP`]: crate::consts::ExchangeType::GKM_COOP

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{put_u16, put_u32, put_u8, Reader};
use crate::error::{err, ErrorKind, Result};
use crate::gkm_vid::{FeatureBits, GdoiVersion};

/// The format version this codec reads and writes.
pub const COOP_VERSION: u8 = 1;

/// Octets before the address.
const FIXED_LEN: usize = 48;

/// The sender's role.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CoopRole {
    /// Primary (1).
    Primary,
    /// Secondary (2).
    Secondary,
}

/// One COOP announcement's header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CoopAnnouncement {
    /// The sender's role.
    pub role: CoopRole,
    /// The sender's priority, 1-255.
    pub priority: u8,
    /// The sender's epoch.
    pub epoch: u64,
    /// The sender's anti-replay number.
    pub seq: u64,
    /// The epoch the sender was primary in before it stepped down.
    pub stepped_down_from: Option<u64>,
    /// The sender asks for an announcement back at once.
    pub reply_requested: bool,
    /// The sender cannot open what this receiver sends it (datagrams over
    /// an SA it does not hold: it restarted): connect to it again.
    pub connect_again: bool,
    /// The group (its ID_KEY_ID number).
    pub group_id: u32,
    /// The sender's GDOI version.
    pub version: GdoiVersion,
    /// The sender's interoperability features; unknown bits are kept.
    pub features: FeatureBits,
    /// This message's place among the announcement's parts (0-based).
    pub part: u16,
    /// How many messages the announcement takes (at least 1).
    pub parts: u16,
    /// The sender's COOP address.
    pub addr: IpAddr,
}

impl CoopAnnouncement {
    /// Parses a payload body; every refusal names its field.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        if r.u8("coop.version")? != COOP_VERSION {
            return Err(err(ErrorKind::Unsupported, "coop.version"));
        }
        let role = match r.u8("coop.role")? {
            1 => CoopRole::Primary,
            2 => CoopRole::Secondary,
            _ => return Err(err(ErrorKind::BadValue, "coop.role")),
        };
        let priority = r.u8("coop.priority")?;
        if priority == 0 {
            return Err(err(ErrorKind::BadValue, "coop.priority"));
        }
        let flags = r.u8("coop.flags")?;
        if flags & !0x07 != 0 {
            return Err(err(ErrorKind::BadValue, "coop.flags"));
        }
        let epoch = r.u64("coop.epoch")?;
        let seq = r.u64("coop.seq")?;
        let stepped = r.u64("coop.stepped_down_from")?;
        let stepped_down_from = match (flags & 0x01 != 0, stepped) {
            (true, e) => Some(e),
            (false, 0) => None,
            (false, _) => return Err(err(ErrorKind::BadValue, "coop.stepped_down_from")),
        };
        let group_id = r.u32("coop.group_id")?;
        let version = GdoiVersion {
            major: r.u8("coop.gdoi_version")?,
            minor: r.u8("coop.gdoi_version")?,
            mini: r.u8("coop.gdoi_version")?,
        };
        if r.u8("coop.reserved")? != 0 {
            return Err(err(ErrorKind::BadValue, "coop.reserved"));
        }
        let features = FeatureBits(r.u32("coop.features")?);
        let part = r.u16("coop.part")?;
        let parts = r.u16("coop.parts")?;
        if parts == 0 || part >= parts {
            return Err(err(ErrorKind::BadValue, "coop.part"));
        }
        let family = r.u8("coop.address_family")?;
        if r.array::<3>("coop.reserved")? != [0; 3] {
            return Err(err(ErrorKind::BadValue, "coop.reserved"));
        }
        let addr = match family {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("coop.address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("coop.address")?)),
            _ => return Err(err(ErrorKind::BadValue, "coop.address_family")),
        };
        r.finish("coop")?;
        Ok(Self {
            role,
            priority,
            epoch,
            seq,
            stepped_down_from,
            reply_requested: flags & 0x02 != 0,
            connect_again: flags & 0x04 != 0,
            group_id,
            version,
            features,
            part,
            parts,
            addr,
        })
    }

    /// The payload body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED_LEN + 16);
        put_u8(&mut v, COOP_VERSION);
        put_u8(
            &mut v,
            match self.role {
                CoopRole::Primary => 1,
                CoopRole::Secondary => 2,
            },
        );
        put_u8(&mut v, self.priority);
        let flags = u8::from(self.stepped_down_from.is_some())
            | if self.reply_requested { 0x02 } else { 0 }
            | if self.connect_again { 0x04 } else { 0 };
        put_u8(&mut v, flags);
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.stepped_down_from.unwrap_or(0).to_be_bytes());
        put_u32(&mut v, self.group_id);
        put_u8(&mut v, self.version.major);
        put_u8(&mut v, self.version.minor);
        put_u8(&mut v, self.version.mini);
        put_u8(&mut v, 0);
        put_u32(&mut v, self.features.0);
        put_u16(&mut v, self.part);
        put_u16(&mut v, self.parts);
        match self.addr {
            IpAddr::V4(a) => {
                v.extend_from_slice(&[4, 0, 0, 0]);
                v.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                v.extend_from_slice(&[6, 0, 0, 0]);
                v.extend_from_slice(&a.octets());
            }
        }
        v
    }
}

/// The group options every key server of a group must share, as the
/// primary announces them: the body of [`PayloadType::GKM_COOP_OPTIONS`],
/// after the announcement header in a primary's messages. A secondary
/// whose own configuration differs raises the seed's
/// `COOP_CONFIG_MISMATCH` warnings. Version 1, 8 octets:
///
/// ```text
/// version (1) = 1 | flags (1): 0x01 IP-D3P on, 0x02 KEK_ACK_REQUESTED | rekey ack option (1) | reserved (1) = 0
/// IP-D3P window, ms (4): 0 unless flag 0x01
/// ```
///
/// Rekey ack option: 0 none (multicast rekeys), 1 cisco, 2 interoperable,
/// 3 any.
///
/// [`PayloadType::GKM_COOP_OPTIONS`]: crate::consts::PayloadType::GKM_COOP_OPTIONS
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CoopOptions {
    /// IP-D3P's window (ms) when IP-D3P is on.
    pub d3p_window_ms: Option<u32>,
    /// The `rekey acknowledgement` option: 0 none, 1 cisco, 2
    /// interoperable, 3 any.
    pub ack_option: u8,
    /// Whether the KEK policy carries KEK_ACK_REQUESTED (RFC 8263).
    pub kek_ack_requested: bool,
}

impl CoopOptions {
    /// Parses a payload body; every refusal names its field.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        if r.u8("coop_options.version")? != COOP_VERSION {
            return Err(err(ErrorKind::Unsupported, "coop_options.version"));
        }
        let flags = r.u8("coop_options.flags")?;
        if flags & !0x03 != 0 {
            return Err(err(ErrorKind::BadValue, "coop_options.flags"));
        }
        let ack_option = r.u8("coop_options.ack_option")?;
        if ack_option > 3 {
            return Err(err(ErrorKind::BadValue, "coop_options.ack_option"));
        }
        if r.u8("coop_options.reserved")? != 0 {
            return Err(err(ErrorKind::BadValue, "coop_options.reserved"));
        }
        let window = r.u32("coop_options.d3p_window")?;
        let d3p_window_ms = match (flags & 0x01 != 0, window) {
            (true, 0) | (false, 1..) => {
                return Err(err(ErrorKind::BadValue, "coop_options.d3p_window"))
            }
            (true, w) => Some(w),
            (false, _) => None,
        };
        r.finish("coop_options")?;
        Ok(Self {
            d3p_window_ms,
            ack_option,
            kek_ack_requested: flags & 0x02 != 0,
        })
    }

    /// The payload body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let flags =
            u8::from(self.d3p_window_ms.is_some()) | if self.kek_ack_requested { 0x02 } else { 0 };
        let mut v = vec![COOP_VERSION, flags, self.ack_option, 0];
        v.extend_from_slice(&self.d3p_window_ms.unwrap_or(0).to_be_bytes());
        v
    }
}

/// The body of a GKM-COOP-SEQ payload ([`PayloadType::GKM_COOP_SEQ`]):
/// the highest SEQ the sender has used or holds for the group, so that a
/// key server that becomes primary (a takeover, or the one left after a
/// partition heals) starts above every SEQ any GM may have accepted.
///
/// ```text
/// version (1) = 1 | reserved (3) = 0 | highest SEQ (4)
/// ```
///
/// [`PayloadType::GKM_COOP_SEQ`]: crate::consts::PayloadType::GKM_COOP_SEQ
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CoopSeq {
    /// The highest SEQ used or held.
    pub highest: u32,
}

impl CoopSeq {
    /// Parses a payload body; every refusal names its field.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        if r.u8("coop_seq.version")? != COOP_VERSION {
            return Err(err(ErrorKind::Unsupported, "coop_seq.version"));
        }
        for _ in 0..3 {
            if r.u8("coop_seq.reserved")? != 0 {
                return Err(err(ErrorKind::BadValue, "coop_seq.reserved"));
            }
        }
        let highest = r.u32("coop_seq.highest")?;
        r.finish("coop_seq")?;
        Ok(Self { highest })
    }

    /// The payload body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![COOP_VERSION, 0, 0, 0];
        v.extend_from_slice(&self.highest.to_be_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(addr: IpAddr) -> CoopAnnouncement {
        CoopAnnouncement {
            role: CoopRole::Primary,
            priority: 200,
            epoch: 7,
            seq: 1_700_000_000_000_000,
            stepped_down_from: Some(5),
            reply_requested: true,
            connect_again: true,
            group_id: 1234,
            version: GdoiVersion {
                major: 1,
                minor: 0,
                mini: 27,
            },
            features: FeatureBits(0x8000_0007),
            part: 2,
            parts: 3,
            addr,
        }
    }

    #[test]
    fn round_trips_in_both_families_with_the_documented_layout() {
        let v4 = sample(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let b = v4.to_bytes();
        assert_eq!(b.len(), FIXED_LEN + 4);
        assert_eq!(
            hex_head(&b),
            "01 01 c8 07 0000000000000007 00060a24181e4000 0000000000000005 000004d2 01001b 00 80000007 0002 0003 04000000 c0000201"
        );
        assert_eq!(CoopAnnouncement::parse(&b).unwrap(), v4);
        let v6 = CoopAnnouncement {
            stepped_down_from: None,
            reply_requested: false,
            connect_again: false,
            role: CoopRole::Secondary,
            ..sample("2001:db8::1".parse().unwrap())
        };
        let b = v6.to_bytes();
        assert_eq!(b.len(), FIXED_LEN + 16);
        assert_eq!(CoopAnnouncement::parse(&b).unwrap(), v6);
    }

    fn hex_head(b: &[u8]) -> String {
        let cut = [1, 1, 1, 1, 8, 8, 8, 4, 3, 1, 4, 2, 2, 4, 4];
        let mut at = 0;
        cut.iter()
            .map(|&n| {
                let s: String = b[at..at + n].iter().map(|x| format!("{x:02x}")).collect();
                at += n;
                s
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn every_refusal_names_its_field() {
        let good = sample(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).to_bytes();
        let field = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            CoopAnnouncement::parse(&b).unwrap_err().field
        };
        assert_eq!(field(&|b| b[0] = 2), "coop.version");
        assert_eq!(field(&|b| b[1] = 3), "coop.role");
        assert_eq!(field(&|b| b[2] = 0), "coop.priority");
        assert_eq!(field(&|b| b[3] = 0x08), "coop.flags");
        // Flag off, but a stepped-down epoch there: refused, not ignored.
        assert_eq!(field(&|b| b[3] = 0x02), "coop.stepped_down_from");
        assert_eq!(field(&|b| b[35] = 1), "coop.reserved");
        assert_eq!(field(&|b| b[40..42].copy_from_slice(&[0, 3])), "coop.part");
        assert_eq!(field(&|b| b[42..44].copy_from_slice(&[0, 0])), "coop.part");
        assert_eq!(field(&|b| b[44] = 5), "coop.address_family");
        assert_eq!(field(&|b| b[45] = 1), "coop.reserved");
        assert_eq!(field(&|b| b.truncate(50)), "coop.address");
        assert_eq!(field(&|b| b.push(0)), "coop");
        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(CoopAnnouncement::parse(&good[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn options_round_trip_and_refusals_name_the_field() {
        for o in [
            CoopOptions {
                d3p_window_ms: Some(5000),
                ack_option: 2,
                kek_ack_requested: true,
            },
            CoopOptions {
                d3p_window_ms: None,
                ack_option: 0,
                kek_ack_requested: false,
            },
        ] {
            assert_eq!(CoopOptions::parse(&o.to_bytes()), Ok(o));
        }
        let good = CoopOptions {
            d3p_window_ms: Some(100),
            ack_option: 1,
            kek_ack_requested: false,
        }
        .to_bytes();
        for (edit, field) in [
            (
                (|b: &mut Vec<u8>| b[0] = 2) as fn(&mut Vec<u8>),
                "coop_options.version",
            ),
            (|b| b[1] |= 0x04, "coop_options.flags"),
            (|b| b[2] = 4, "coop_options.ack_option"),
            (|b| b[3] = 1, "coop_options.reserved"),
            (
                |b| b[4..8].copy_from_slice(&[0; 4]),
                "coop_options.d3p_window",
            ),
            (|b| b[1] = 0, "coop_options.d3p_window"),
            (|b| b.push(0), "coop_options"),
            (|b| b.truncate(6), "coop_options.d3p_window"),
        ] {
            let mut b = good.clone();
            edit(&mut b);
            let e = CoopOptions::parse(&b).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn seq_round_trips_and_refusals_name_the_field() {
        let s = CoopSeq {
            highest: 0xfedc_ba98,
        };
        let good = s.to_bytes();
        assert_eq!(good.len(), 8);
        assert_eq!(CoopSeq::parse(&good), Ok(s));
        for (edit, field) in [
            (
                (|b: &mut Vec<u8>| b[0] = 2) as fn(&mut Vec<u8>),
                "coop_seq.version",
            ),
            (|b| b[2] = 1, "coop_seq.reserved"),
            (|b| b.truncate(6), "coop_seq.highest"),
            (|b| b.push(0), "coop_seq"),
        ] {
            let mut b = good.clone();
            edit(&mut b);
            let e = CoopSeq::parse(&b).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
