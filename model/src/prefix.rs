//! IP prefixes: IPv4 TEK traffic selectors ([`Ipv4Prefix`]), and the
//! IPv4 or IPv6 source ranges of authorization lists and pre-shared keys
//! ([`IpPrefix`]).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 prefix as an operator writes it, `a.b.c.d/len` (a bare address
/// is a /32). The address is kept as written, host bits and all: it goes
/// on the wire as the selector's address, and containment ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix(Ipv4Net);

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 prefix (a.b.c.d/len, len 0-32)")]
pub struct PrefixError(String);

impl Ipv4Prefix {
    /// 0.0.0.0/0, every address.
    pub fn any() -> Self {
        Self(Ipv4Net::default())
    }

    /// `addr/len`; none when `len` is over 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        Ipv4Net::new(addr, len).ok().map(Self)
    }

    /// The address as written.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.addr()
    }

    /// The prefix length, 0-32.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The netmask.
    pub fn mask(&self) -> Ipv4Addr {
        self.0.netmask()
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// Whether `a` lies in the prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.0.contains(&a)
    }

    /// Whether every address of `inner` lies in this prefix.
    pub fn covers(&self, inner: &Self) -> bool {
        self.0.contains(&inner.0.trunc())
    }

    /// From an address and a netmask; none when the mask is not contiguous.
    pub fn from_netmask(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Self> {
        Ipv4Net::with_netmask(addr, mask).ok().map(Self)
    }
}

impl core::str::FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let bad = || PrefixError(s.to_owned());
        if s.contains('/') {
            s.parse::<Ipv4Net>().map(Self).map_err(|_| bad())
        } else {
            s.parse::<Ipv4Addr>()
                .map(|a| Self(Ipv4Net::from(a)))
                .map_err(|_| bad())
        }
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 or IPv6 prefix as an operator writes it (`a.b.c.d/len`,
/// `x:y::/len`; a bare address is a /32 or /128): a source range of an
/// authorization list or a pre-shared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix(IpNet);

/// Why an IP prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpPrefixError {
    /// Not a prefix at all.
    #[error("{0:?} is not an IP prefix (a.b.c.d/len with len 0-32, or an IPv6 prefix x:y::/len with len 0-128)")]
    Syntax(String),
    /// Inside ::ffff:0:0/96: the key server sees IPv4 peers as IPv4, so
    /// such a prefix would never match anything.
    #[error("{0:?} is an IPv4-mapped IPv6 prefix, which never matches: write the IPv4 prefix (a.b.c.d/len)")]
    Ipv4Mapped(String),
}

impl IpPrefix {
    /// `addr/len`; none when `len` is over the family's (32 or 128).
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        IpNet::new(addr, len).ok().map(Self)
    }

    /// From an address and a netmask of the same family; none when the
    /// families differ or the mask is not contiguous.
    pub fn from_netmask(addr: IpAddr, mask: IpAddr) -> Option<Self> {
        IpNet::with_netmask(addr, mask).ok().map(Self)
    }

    /// The address as written (host bits kept: a TEK selector's address
    /// goes on the wire as the operator wrote it).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The netmask.
    pub fn mask(&self) -> IpAddr {
        self.0.netmask()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `a` lies in the prefix (an IPv4 address never lies in an
    /// IPv6 prefix, nor the other way round).
    pub fn contains(&self, a: IpAddr) -> bool {
        self.0.contains(&a)
    }

    /// Whether it is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.0, IpNet::V6(_))
    }

    /// Every source: 0.0.0.0/0 and ::/0.
    pub fn any() -> [Self; 2] {
        [
            Self(IpNet::V4(Ipv4Net::default())),
            Self(IpNet::V6(ipnet::Ipv6Net::default())),
        ]
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// Whether every address of `inner` lies in this prefix (never across
    /// families).
    pub fn covers(&self, inner: &Self) -> bool {
        self.0.contains(&inner.0.trunc())
    }
}

impl From<Ipv4Prefix> for IpPrefix {
    fn from(p: Ipv4Prefix) -> Self {
        Self(IpNet::V4(p.0))
    }
}

impl core::str::FromStr for IpPrefix {
    type Err = IpPrefixError;
    fn from_str(s: &str) -> Result<Self, IpPrefixError> {
        let bad = || IpPrefixError::Syntax(s.to_owned());
        let net = if s.contains('/') {
            s.parse::<IpNet>().map_err(|_| bad())?
        } else {
            s.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad())?
        };
        match net {
            IpNet::V6(n) if n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some() => {
                Err(IpPrefixError::Ipv4Mapped(s.to_owned()))
            }
            _ => Ok(Self(net)),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr(), self.0.prefix_len())
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn parses_as_operators_write_it() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("10.1.2.3/8").addr(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(p("10.1.2.3/8").network(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(p("0.0.0.0/0").mask(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(p("1.2.3.4/24").mask(), Ipv4Addr::new(255, 255, 255, 0));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "x/8",
            "::1/128",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            let e = bad.parse::<Ipv4Prefix>().unwrap_err();
            assert!(
                e.to_string().contains("is not an IPv4 prefix"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn containment_ignores_host_bits() {
        let net = p("10.1.2.3/8");
        assert!(net.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!net.contains(Ipv4Addr::new(11, 0, 0, 1)));
        assert!(p("0.0.0.0/0").contains(Ipv4Addr::BROADCAST));
        assert_eq!(Ipv4Prefix::any(), p("0.0.0.0/0"));
        assert!(net.covers(&p("10.9.0.0/16")));
        assert!(!p("10.9.0.0/16").covers(&net));
        assert!(p("10.0.0.0/8").covers(&p("10.0.0.0/8")));
    }

    #[test]
    fn netmasks_round_trip() {
        let a = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            Ipv4Prefix::from_netmask(a, Ipv4Addr::new(255, 255, 255, 0)),
            Ipv4Prefix::new(a, 24)
        );
        assert_eq!(
            Ipv4Prefix::from_netmask(a, Ipv4Addr::new(255, 0, 255, 0)),
            None
        );
        assert_eq!(Ipv4Prefix::new(a, 33), None);
    }

    #[test]
    fn json_is_the_written_string() {
        let v: Ipv4Prefix = serde_json::from_str("\"10.0.0.0/8\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"10.0.0.0/8\"");
        assert!(serde_json::from_str::<Ipv4Prefix>("\"10.0.0.0/40\"").is_err());
    }

    #[test]
    fn ipv4_mapped_prefixes_are_refused_naming_the_fix() {
        for mapped in ["::ffff:10.0.0.0/104", "::ffff:10.1.2.3", "::ffff:0:0/96"] {
            let e = mapped.parse::<IpPrefix>().unwrap_err();
            assert!(e.to_string().contains("IPv4-mapped"), "{mapped}: {e}");
        }
        // Prefixes that merely contain the mapped range are fine.
        assert!("::/0".parse::<IpPrefix>().is_ok());
        assert!("::/64".parse::<IpPrefix>().is_ok());
    }

    #[test]
    fn ip_prefixes_keep_the_written_address_and_round_trip_netmasks() {
        let v6: IpPrefix = "fd00:1::5/64".parse().unwrap();
        assert_eq!(v6.addr(), "fd00:1::5".parse::<IpAddr>().unwrap());
        assert_eq!(
            v6.mask(),
            "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(IpPrefix::from_netmask(v6.addr(), v6.mask()), Some(v6));
        assert_eq!(IpPrefix::new(v6.addr(), 64), Some(v6));
        assert_eq!(IpPrefix::new(v6.addr(), 129), None);
        let v4 = IpPrefix::from(p("10.1.2.3/8"));
        assert_eq!(v4.mask(), IpAddr::V4(Ipv4Addr::new(255, 0, 0, 0)));
        // A netmask of the other family, or a gap in the mask: none.
        assert_eq!(IpPrefix::from_netmask(v4.addr(), v6.mask()), None);
        assert_eq!(
            IpPrefix::from_netmask(v6.addr(), "ffff:0:ffff::".parse().unwrap()),
            None
        );
    }

    #[test]
    fn ip_prefixes_take_both_families_and_keep_them_apart() {
        let v6: IpPrefix = "fd00:1::/64".parse().unwrap();
        assert!(v6.is_ipv6());
        assert_eq!(v6.to_string(), "fd00:1::/64");
        assert!(v6.contains("fd00:1::7".parse().unwrap()));
        assert!(!v6.contains("fd00:2::7".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let host: IpPrefix = "fd00::5".parse().unwrap();
        assert_eq!(host.prefix_len(), 128);
        let v4: IpPrefix = "10.0.0.0/8".parse().unwrap();
        assert!(v4.contains("10.9.9.9".parse().unwrap()) && !v4.is_ipv6());
        assert!(!v4.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert_eq!(IpPrefix::from(p("10.0.0.0/8")), v4);
        for bad in ["", "fd00::/129", "10.0.0.0/33", "fd00::/x", "x"] {
            let e = bad.parse::<IpPrefix>().unwrap_err();
            assert!(e.to_string().contains("is not an IP prefix"), "{bad}: {e}");
        }
    }
}
