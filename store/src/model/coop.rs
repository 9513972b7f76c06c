//! A group's cooperative key server configuration (docs/COOP.md): this key
//! server's priority, the election's timers and the peer key servers, with
//! their validation. Each key server has its own copy (its own store), as
//! each GET VPN key server has its own configuration; a difference in the
//! group's policy between them is what the mismatch alarms report.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::auth::{check_psk, Authentication};
use gkm_model::Invalid;

/// This key server's priority unless configured (the vendor's default).
pub const DEFAULT_PRIORITY: u32 = 100;
/// The priorities an operator may give (the vendor's range).
pub const PRIORITIES: std::ops::RangeInclusive<u32> = 1..=255;
/// The primary's announcement interval unless configured, seconds ("Primary
/// Refresh Policy Time: 20").
pub const DEFAULT_REFRESH_SECS: u32 = 20;
/// Announcement intervals allowed, seconds.
pub const REFRESH_SECS: std::ops::RangeInclusive<u32> = 10..=300;
/// A secondary's check of its primary unless configured, seconds ("Sec
/// Primary Periodic Time: 30").
pub const DEFAULT_CHECK_SECS: u32 = 30;
/// Check periods allowed, seconds (and never under the refresh interval:
/// a secondary checking more often than the primary announces would count
/// periods in which no announcement could have come).
pub const CHECK_SECS: std::ops::RangeInclusive<u32> = 10..=300;
/// Check periods without the primary before it counts as dead, unless
/// configured.
pub const DEFAULT_DEAD_PERIODS: u32 = 3;
/// Dead-peer thresholds allowed, in missed check periods.
pub const DEAD_PERIODS: std::ops::RangeInclusive<u32> = 2..=10;
/// A peer's port unless configured: GDOI's UDP 848 (RFC 6407 section
/// 5.1; the wire's own constant is `gkm_wire::consts::GDOI_PORT`, which
/// the server's tests hold this equal to).
pub const DEFAULT_PEER_PORT: u16 = 848;
/// Peer key servers a group may list (16 key servers in all).
pub const MAX_PEERS: usize = 15;

/// One peer key server of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoopPeer {
    /// Its COOP address (where its announcements come from and ours go).
    pub address: String,
    /// Its GDOI port, 1-65535 (default 848).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Its phase 1 identity, when it is not its address (a certificate's
    /// subject DN, or a name); 1-255 printable characters.
    #[serde(default)]
    pub identity: Option<String>,
    /// How the phase 1 SA between the two key servers authenticates: a
    /// pre-shared key of this pair (write-only, sealed apart like the
    /// group's; responses show `psk_set` per peer) or certificates from the
    /// configured CAs.
    #[serde(default)]
    pub authentication: Authentication,
}

/// The group's cooperative key server configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoopPolicy {
    /// This key server's priority, 1-255 (default 100); the highest
    /// priority is elected primary, ties go to the highest address.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Seconds between announcements, 10-300 (default 20).
    #[serde(default = "default_refresh")]
    pub refresh_secs: u32,
    /// Seconds between a secondary's checks of its primary, 10-300 and at
    /// least `refresh_secs` (default 30).
    #[serde(default = "default_check")]
    pub check_secs: u32,
    /// Check periods without hearing a peer before it is dead, 2-10
    /// (default 3).
    #[serde(default = "default_dead_periods")]
    pub dead_periods: u32,
    /// The peer key servers, 1-15.
    pub peers: Vec<CoopPeer>,
}

fn default_port() -> u16 {
    DEFAULT_PEER_PORT
}
fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}
fn default_refresh() -> u32 {
    DEFAULT_REFRESH_SECS
}
fn default_check() -> u32 {
    DEFAULT_CHECK_SECS
}
fn default_dead_periods() -> u32 {
    DEFAULT_DEAD_PERIODS
}

fn out_of_range(field: &str, v: u32, r: &std::ops::RangeInclusive<u32>, unit: &str) -> Invalid {
    Invalid::new(
        field,
        format!("{v} is out of range: {}-{}{unit}", r.start(), r.end()),
    )
}

impl CoopPeer {
    /// Its address, parsed: a unicast IPv4 or IPv6 address (not
    /// unspecified, not multicast, not IPv4-mapped).
    pub fn ip(&self, field: &str) -> Result<IpAddr, Invalid> {
        let f = format!("{field}/address");
        let ip: IpAddr = self
            .address
            .parse()
            .map_err(|_| Invalid::new(&f, format!("{:?} is not an IP address", self.address)))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(Invalid::new(
                &f,
                format!("{ip} is not a unicast address of a key server"),
            ));
        }
        if let IpAddr::V6(v6) = ip {
            if v6.to_ipv4_mapped().is_some() {
                return Err(Invalid::new(
                    &f,
                    format!("{ip} is IPv4-mapped: write the IPv4 address"),
                ));
            }
        }
        Ok(ip)
    }
}

impl CoopPolicy {
    /// The rules, each failure naming its field under `field` (`/coop`).
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        for (name, v, range, unit) in [
            ("priority", self.priority, &PRIORITIES, ""),
            ("refresh_secs", self.refresh_secs, &REFRESH_SECS, " seconds"),
            ("check_secs", self.check_secs, &CHECK_SECS, " seconds"),
            (
                "dead_periods",
                self.dead_periods,
                &DEAD_PERIODS,
                " check periods",
            ),
        ] {
            if !range.contains(&v) {
                return Err(out_of_range(&format!("{field}/{name}"), v, range, unit));
            }
        }
        if self.check_secs < self.refresh_secs {
            return Err(Invalid::new(
                &format!("{field}/check_secs"),
                format!(
                    "{} is under refresh_secs ({}): a secondary would count periods in which no announcement could come",
                    self.check_secs, self.refresh_secs
                ),
            ));
        }
        if self.peers.is_empty() {
            return Err(Invalid::new(
                &format!("{field}/peers"),
                "at least one peer key server is needed (remove coop for a key server alone)",
            ));
        }
        if self.peers.len() > MAX_PEERS {
            return Err(Invalid::new(
                &format!("{field}/peers"),
                format!(
                    "{} peers: at most {MAX_PEERS} (16 key servers in all)",
                    self.peers.len()
                ),
            ));
        }
        let mut seen: Vec<IpAddr> = Vec::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let at = format!("{field}/peers/{i}");
            let ip = p.ip(&at)?;
            if let Some(j) = seen.iter().position(|s| *s == ip) {
                return Err(Invalid::new(
                    &format!("{at}/address"),
                    format!("{ip} is listed twice (also peers/{j})"),
                ));
            }
            if let Some(first) = seen.first() {
                if first.is_ipv4() != ip.is_ipv4() {
                    return Err(Invalid::new(
                        &format!("{at}/address"),
                        format!("{ip} is not of peers/0's IP family ({first}): a group's key servers talk over one family"),
                    ));
                }
            }
            if p.port == 0 {
                return Err(Invalid::new(&format!("{at}/port"), "0 is not a port"));
            }
            seen.push(ip);
            if let Some(id) = &p.identity {
                if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
                    return Err(Invalid::new(
                        &format!("{at}/identity"),
                        "the phase 1 identity must be 1-255 printable characters",
                    ));
                }
            }
            if let Authentication::Psk { psk: Some(k) } = &p.authentication {
                check_psk(&format!("{at}/authentication/psk"), k)?;
            }
        }
        Ok(())
    }

    /// The peers' pre-shared keys given on input, by address.
    pub fn peer_psks(&self) -> impl Iterator<Item = (&str, &str)> {
        self.peers.iter().filter_map(|p| match &p.authentication {
            Authentication::Psk { psk: Some(k) } => Some((p.address.as_str(), k.as_str())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CoopPolicy {
        serde_json::from_str(r#"{"peers":[{"address":"10.0.0.2"}]}"#).unwrap()
    }

    fn field(p: &CoopPolicy) -> String {
        p.validate("/coop").unwrap_err().field
    }

    #[test]
    fn defaults_are_the_vendors_and_valid() {
        let p = base();
        assert_eq!(
            (p.priority, p.refresh_secs, p.check_secs, p.dead_periods),
            (100, 20, 30, 3)
        );
        assert_eq!(p.validate("/coop"), Ok(()));
    }

    #[test]
    fn every_range_edge_names_its_field() {
        for (edit, ok) in [
            (
                (|p: &mut CoopPolicy| p.priority = 1) as fn(&mut CoopPolicy),
                None,
            ),
            (|p| p.priority = 255, None),
            (|p| p.priority = 0, Some("/coop/priority")),
            (|p| p.priority = 256, Some("/coop/priority")),
            (|p| p.refresh_secs = 10, None),
            (|p| p.refresh_secs = 9, Some("/coop/refresh_secs")),
            (
                |p| {
                    p.refresh_secs = 300;
                    p.check_secs = 300;
                },
                None,
            ),
            (|p| p.refresh_secs = 301, Some("/coop/refresh_secs")),
            (|p| p.check_secs = 301, Some("/coop/check_secs")),
            (|p| p.check_secs = 19, Some("/coop/check_secs")),
            (|p| p.check_secs = 20, None),
            (|p| p.dead_periods = 1, Some("/coop/dead_periods")),
            (|p| p.dead_periods = 2, None),
            (|p| p.dead_periods = 10, None),
            (|p| p.dead_periods = 11, Some("/coop/dead_periods")),
            (|p| p.peers.clear(), Some("/coop/peers")),
            (
                |p| p.peers[0].address = "ks2".into(),
                Some("/coop/peers/0/address"),
            ),
            (
                |p| p.peers[0].address = "0.0.0.0".into(),
                Some("/coop/peers/0/address"),
            ),
            (
                |p| p.peers[0].address = "239.1.1.1".into(),
                Some("/coop/peers/0/address"),
            ),
            (
                |p| p.peers[0].address = "::ffff:10.0.0.2".into(),
                Some("/coop/peers/0/address"),
            ),
            (|p| p.peers[0].address = "2001:db8::2".into(), None),
            (|p| p.peers[0].port = 0, Some("/coop/peers/0/port")),
            (
                |p| {
                    let mut v6 = p.peers[0].clone();
                    v6.address = "2001:db8::3".into();
                    p.peers.push(v6);
                },
                Some("/coop/peers/1/address"),
            ),
            (
                |p| p.peers[0].identity = Some(String::new()),
                Some("/coop/peers/0/identity"),
            ),
            (
                |p| p.peers[0].identity = Some("ks\n2".into()),
                Some("/coop/peers/0/identity"),
            ),
            (|p| p.peers[0].identity = Some("CN=ks2,O=GKM".into()), None),
            (
                |p| {
                    p.peers[0].authentication = Authentication::Psk {
                        psk: Some(String::new()),
                    }
                },
                Some("/coop/peers/0/authentication/psk"),
            ),
            (
                |p| {
                    let again = p.peers[0].clone();
                    p.peers.push(again);
                },
                Some("/coop/peers/1/address"),
            ),
            (
                |p| {
                    p.peers = (1..=16)
                        .map(|i| CoopPeer {
                            address: format!("10.0.1.{i}"),
                            port: 848,
                            identity: None,
                            authentication: Authentication::Pki,
                        })
                        .collect();
                },
                Some("/coop/peers"),
            ),
        ] {
            let mut p = base();
            edit(&mut p);
            match ok {
                None => assert_eq!(p.validate("/coop"), Ok(()), "{p:?}"),
                Some(f) => assert_eq!(field(&p), f, "{p:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_peer_psks_are_never_serialized() {
        assert!(serde_json::from_str::<CoopPolicy>(r#"{"peers":[],"prio":5}"#).is_err());
        let p: CoopPolicy = serde_json::from_str(
            r#"{"peers":[{"address":"10.0.0.2","authentication":{"method":"psk","psk":"s3cret"}}]}"#,
        )
        .unwrap();
        assert_eq!(p.peer_psks().collect::<Vec<_>>(), [("10.0.0.2", "s3cret")]);
        let out = serde_json::to_string(&p).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
    }
}
