//! GKM's COOP GM database sync (docs/COOP.md, "GM database sync"): the
//! body of the private payload [`PayloadType::GKM_COOP_GMS`]. Each key
//! server keeps a journal of the GM records it knows, each change stamped
//! with the next number of its own counter (its **generation**); to each
//! peer it sends the records of the generations above the one the peer
//! acknowledged, and acknowledges the generations it holds of the peer's.
//!
//! A journal is named by a random number drawn at start (a restarted key
//! server starts a new journal, and its peers take everything again).
//!
//! ```text
//! version (1) = 1 | reserved (1) = 0 | count (2)
//! journal (8): the sender's journal
//! from (8) | to (8): this message carries every record the sender has in generations (from, to]
//! acked journal (8) | acked (8): the receiver's journal, and the generations of it the sender holds (all up to this one)
//! count records:
//!   identity length (1): 1-255 | identity | family (1): 4 or 6 | port (2) | address (4 or 16)
//!   class (1): 1 Cisco, 2 ASR 9000, 3 other | flags (1): 0x01 version present
//!   version major, minor, mini (3) | reserved (1) = 0 | feature bits (4)
//!   registered at, POSIX ms (8) | sender ID count (1): 0-16 | sender IDs (4 each)
//! ```
//!
//! Multi-octet fields are big-endian; every refusal names its field.
//!
//! [`PayloadType::GKM_COOP_GMS`]: crate::consts::PayloadType::GKM_COOP_GMS

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::{put_u16, put_u32, put_u8, Reader};
use crate::coop::COOP_VERSION;
use crate::error::{err, ErrorKind, Result};
use crate::gkm_vid::{FeatureBits, GdoiVersion};

/// Most sender IDs one record carries (a GM asks for at most 16).
pub const MAX_SIDS: usize = 16;

/// Octets before the first record.
pub const HEADER_LEN: usize = 44;

/// One GM record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CoopGm {
    /// Its phase 1 identity (1-255 octets).
    pub identity: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Its class: 1 Cisco, 2 ASR 9000, 3 other.
    pub class: u8,
    /// The GDOI version it reported.
    pub version: Option<GdoiVersion>,
    /// The features it reported.
    pub features: FeatureBits,
    /// When it registered (POSIX ms).
    pub registered_at: u64,
    /// The sender IDs it was granted.
    pub sids: Vec<u32>,
}

/// A GKM-COOP-GMs payload.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct CoopGms {
    /// The sender's journal.
    pub journal: u64,
    /// The receiver's journal the sender holds generations of.
    pub acked_journal: u64,
    /// The generations of it the sender holds (all up to this one).
    pub acked: u64,
    /// The records are every one the sender has in generations (from, to].
    pub from: u64,
    /// See `from`.
    pub to: u64,
    /// The records.
    pub gms: Vec<CoopGm>,
}

impl CoopGms {
    /// Parses a payload body; every refusal names its field.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        if r.u8("coop_gms.version")? != COOP_VERSION {
            return Err(err(ErrorKind::Unsupported, "coop_gms.version"));
        }
        if r.u8("coop_gms.reserved")? != 0 {
            return Err(err(ErrorKind::BadValue, "coop_gms.reserved"));
        }
        let count = r.u16("coop_gms.count")?;
        let journal = r.u64("coop_gms.journal")?;
        let from = r.u64("coop_gms.from")?;
        let to = r.u64("coop_gms.to")?;
        if to < from {
            return Err(err(ErrorKind::BadValue, "coop_gms.to"));
        }
        let acked_journal = r.u64("coop_gms.acked_journal")?;
        let acked = r.u64("coop_gms.acked")?;
        let mut gms = Vec::with_capacity(usize::from(count).min(r.remaining() / 30));
        for _ in 0..count {
            gms.push(parse_gm(&mut r)?);
        }
        r.finish("coop_gms")?;
        Ok(Self {
            journal,
            acked_journal,
            acked,
            from,
            to,
            gms,
        })
    }

    /// The payload body (records beyond the format's limits are a caller
    /// error: at most 65,535 records, identities of 1-255 octets, at most
    /// [`MAX_SIDS`] sender IDs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let count =
            u16::try_from(self.gms.len()).map_err(|_| err(ErrorKind::TooMany, "coop_gms.count"))?;
        let mut v = Vec::with_capacity(HEADER_LEN + self.gms.len() * 48);
        put_u8(&mut v, COOP_VERSION);
        put_u8(&mut v, 0);
        put_u16(&mut v, count);
        for n in [
            self.journal,
            self.from,
            self.to,
            self.acked_journal,
            self.acked,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        for g in &self.gms {
            emit_gm(g, &mut v)?;
        }
        Ok(v)
    }
}

/// The octets one record takes (for splitting messages).
pub fn encoded_len(g: &CoopGm) -> usize {
    let addr = if g.addr.is_ipv4() { 4 } else { 16 };
    1 + g.identity.len() + 1 + 2 + addr + 1 + 1 + 4 + 4 + 8 + 1 + 4 * g.sids.len()
}

fn parse_gm(r: &mut Reader<'_>) -> Result<CoopGm> {
    let len = r.u8("coop_gms.identity")?;
    if len == 0 {
        return Err(err(ErrorKind::BadValue, "coop_gms.identity"));
    }
    let identity = std::str::from_utf8(r.take(usize::from(len), "coop_gms.identity")?)
        .map_err(|_| err(ErrorKind::BadValue, "coop_gms.identity"))?
        .to_owned();
    let family = r.u8("coop_gms.family")?;
    let port = r.u16("coop_gms.port")?;
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("coop_gms.address")?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("coop_gms.address")?)),
        _ => return Err(err(ErrorKind::BadValue, "coop_gms.family")),
    };
    let class = r.u8("coop_gms.class")?;
    if !(1..=3).contains(&class) {
        return Err(err(ErrorKind::BadValue, "coop_gms.class"));
    }
    let flags = r.u8("coop_gms.flags")?;
    if flags & !0x01 != 0 {
        return Err(err(ErrorKind::BadValue, "coop_gms.flags"));
    }
    let [major, minor, mini] = r.array::<3>("coop_gms.version")?;
    if r.u8("coop_gms.reserved")? != 0 {
        return Err(err(ErrorKind::BadValue, "coop_gms.reserved"));
    }
    let version = if flags & 0x01 != 0 {
        Some(GdoiVersion { major, minor, mini })
    } else if [major, minor, mini] != [0; 3] {
        return Err(err(ErrorKind::BadValue, "coop_gms.version"));
    } else {
        None
    };
    let features = FeatureBits(r.u32("coop_gms.features")?);
    let registered_at = r.u64("coop_gms.registered_at")?;
    let n = r.u8("coop_gms.sids")?;
    if usize::from(n) > MAX_SIDS {
        return Err(err(ErrorKind::TooMany, "coop_gms.sids"));
    }
    let sids = (0..n)
        .map(|_| r.u32("coop_gms.sids"))
        .collect::<Result<_>>()?;
    Ok(CoopGm {
        identity,
        addr: SocketAddr::new(ip, port),
        class,
        version,
        features,
        registered_at,
        sids,
    })
}

fn emit_gm(g: &CoopGm, v: &mut Vec<u8>) -> Result<()> {
    let len = u8::try_from(g.identity.len())
        .ok()
        .filter(|l| *l > 0)
        .ok_or_else(|| err(ErrorKind::TooLarge, "coop_gms.identity"))?;
    if !(1..=3).contains(&g.class) {
        return Err(err(ErrorKind::BadValue, "coop_gms.class"));
    }
    let sids = u8::try_from(g.sids.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_SIDS)
        .ok_or_else(|| err(ErrorKind::TooMany, "coop_gms.sids"))?;
    put_u8(v, len);
    v.extend_from_slice(g.identity.as_bytes());
    match g.addr.ip() {
        IpAddr::V4(a) => {
            put_u8(v, 4);
            put_u16(v, g.addr.port());
            v.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            put_u8(v, 6);
            put_u16(v, g.addr.port());
            v.extend_from_slice(&a.octets());
        }
    }
    put_u8(v, g.class);
    put_u8(v, u8::from(g.version.is_some()));
    let ver = g.version.map_or([0; 3], |x| [x.major, x.minor, x.mini]);
    v.extend_from_slice(&ver);
    put_u8(v, 0);
    put_u32(v, g.features.0);
    v.extend_from_slice(&g.registered_at.to_be_bytes());
    put_u8(v, sids);
    for s in &g.sids {
        put_u32(v, *s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CoopGms {
        CoopGms {
            journal: 0x1234,
            acked_journal: 0x5678,
            acked: 7,
            from: 10,
            to: 12,
            gms: vec![
                CoopGm {
                    identity: "10.1.0.5".into(),
                    addr: "10.1.0.5:848".parse().unwrap(),
                    class: 3,
                    version: Some(GdoiVersion {
                        major: 1,
                        minor: 0,
                        mini: 27,
                    }),
                    features: FeatureBits(3),
                    registered_at: 1_800_000_000_123,
                    sids: vec![4, 5],
                },
                CoopGm {
                    identity: "gm-six".into(),
                    addr: "[2001:db8::9]:4500".parse().unwrap(),
                    class: 1,
                    version: None,
                    features: FeatureBits(0),
                    registered_at: 1,
                    sids: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn gms_round_trip_and_the_length_is_known() {
        let s = sample();
        let b = s.to_bytes().unwrap();
        assert_eq!(CoopGms::parse(&b).unwrap(), s);
        assert_eq!(
            b.len(),
            HEADER_LEN + s.gms.iter().map(encoded_len).sum::<usize>()
        );
        let empty = CoopGms::default();
        assert_eq!(CoopGms::parse(&empty.to_bytes().unwrap()).unwrap(), empty);
    }

    #[test]
    fn refusals_name_the_field() {
        let good = sample().to_bytes().unwrap();
        // The first record starts at 44: identity length, identity (8), family.
        const FAMILY: usize = HEADER_LEN + 1 + 8;
        const CLASS: usize = FAMILY + 1 + 2 + 4;
        for (edit, field) in [
            (
                (|b: &mut Vec<u8>| b[0] = 2) as fn(&mut Vec<u8>),
                "coop_gms.version",
            ),
            (|b| b[1] = 1, "coop_gms.reserved"),
            (|b| b[27] = 9, "coop_gms.to"),
            (|b| b[19] = 0xff, "coop_gms.to"),
            (|b| b[HEADER_LEN] = 0, "coop_gms.identity"),
            (|b| b[FAMILY] = 5, "coop_gms.family"),
            (|b| b[CLASS] = 0, "coop_gms.class"),
            (|b| b[CLASS + 1] = 2, "coop_gms.flags"),
            (|b| b[CLASS + 5] = 1, "coop_gms.reserved"),
            (|b| b[3] = 3, "coop_gms.identity"),
            (|b| b.push(0), "coop_gms"),
            (|b| b.truncate(40), "coop_gms"),
        ] {
            let mut b = good.clone();
            edit(&mut b);
            let e = CoopGms::parse(&b).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        let mut too_many = sample();
        too_many.gms[0].sids = (0..17).collect();
        assert!(too_many.to_bytes().is_err());
    }
}
