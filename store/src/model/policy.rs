//! A group's policy (TEKs, KEK, authorization, authentication, the seed's
//! feature options) and its validation: each failing value named by its
//! field path, with what is allowed.

use serde::{Deserialize, Serialize};

use gkm_model::policy::{AckOption, D3pWindow, RekeyTransport};
use gkm_model::{Invalid, IpPrefix};

use super::auth::{check_psk, Authentication};

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid::new(field, message)
}

/// A TEK's traffic selectors, transform and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TekPolicy {
    /// Source prefix, `a.b.c.d/len`.
    pub src: String,
    /// Destination prefix.
    pub dst: String,
    /// `aes-gcm-128` (default), `aes-gcm-256`, or for peers without GCM
    /// `aes-cbc-128-hmac-sha1`, `aes-cbc-256-hmac-sha1`,
    /// `aes-cbc-128-hmac-sha256`, `aes-cbc-256-hmac-sha256`.
    #[serde(default = "default_transform")]
    pub transform: String,
    /// Lifetime in seconds, 300-86400.
    #[serde(default = "default_tek_lifetime")]
    pub lifetime: u32,
}

impl TekPolicy {
    /// The transform a TEK gets unless its policy names one.
    pub const DEFAULT_TRANSFORM: &'static str = "aes-gcm-128";
    /// A TEK's lifetime unless its policy says otherwise, seconds.
    pub const LIFETIME_SECS: u32 = 3600;
}

fn default_transform() -> String {
    TekPolicy::DEFAULT_TRANSFORM.into()
}
fn default_tek_lifetime() -> u32 {
    TekPolicy::LIFETIME_SECS
}

/// The KEK policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KekPolicy {
    /// `aes-cbc-128` or `aes-cbc-256`.
    #[serde(default = "default_kek_algorithm")]
    pub algorithm: String,
    /// Lifetime in seconds, 300-604800.
    #[serde(default = "default_kek_lifetime")]
    pub lifetime: u32,
}

impl KekPolicy {
    /// The KEK's algorithm unless the policy names one.
    pub const DEFAULT_ALGORITHM: &'static str = "aes-cbc-128";
    /// The KEK's lifetime unless the policy says otherwise, seconds.
    pub const LIFETIME_SECS: u32 = 86_400;
}

fn default_kek_algorithm() -> String {
    KekPolicy::DEFAULT_ALGORITHM.into()
}
fn default_kek_lifetime() -> u32 {
    KekPolicy::LIFETIME_SECS
}

impl Default for KekPolicy {
    fn default() -> Self {
        Self {
            algorithm: default_kek_algorithm(),
            lifetime: default_kek_lifetime(),
        }
    }
}

/// Who may register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// GM address prefixes.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// GM phase 1 identities.
    #[serde(default)]
    pub identities: Vec<String>,
}

/// Everything an operator configures on a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicy {
    /// KEK policy.
    #[serde(default)]
    pub kek: KekPolicy,
    /// TEK policies, one TEK each (at least one).
    pub teks: Vec<TekPolicy>,
    /// Rekey transport.
    #[serde(default)]
    pub rekey: RekeyTransport,
    /// Rekey the TEKs this many seconds before they expire (at least 10,
    /// under half the shortest TEK lifetime).
    #[serde(default = "default_rekey_before")]
    pub tek_rekey_before: u32,
    /// Rekey the KEK this many seconds before it expires (at least 10,
    /// under half its lifetime).
    #[serde(default = "default_rekey_before")]
    pub kek_rekey_before: u32,
    /// `rekey acknowledgement`; requires unicast rekey. Absent: `cisco`
    /// for unicast groups, none for multicast ones.
    #[serde(default)]
    pub acknowledgement: Option<AckOption>,
    /// Send the activation time delay to the GM classes that take it.
    /// Absent: on when the group allows it. Requires unicast rekey and a
    /// single TEK.
    #[serde(default)]
    pub activation_time_delay: Option<bool>,
    /// `sa d3p window`: IP-D3P on, with this window.
    #[serde(default)]
    pub d3p_window: Option<D3pWindow>,
    /// GM error detection / resiliency (conflicts with IP-D3P).
    #[serde(default)]
    pub gm_error_detection: bool,
    /// Inline security-group tagging, Cisco metadata (CMD; conflicts with IP-D3P).
    #[serde(default)]
    pub cmd_inline_tagging: bool,
    /// Who may register.
    #[serde(default)]
    pub authorization: Authorization,
    /// Phase 1 authentication.
    #[serde(default)]
    pub authentication: Authentication,
    /// `legacy_phase1`: the group's GMs may register over a phase 1 SA
    /// with a legacy suite (3DES-CBC, HMAC-SHA-1, MODP 1024 or 1536) for
    /// peers that have nothing stronger. Off by default; the API and
    /// dashboard mark a group with it on as using weak algorithms
    /// (docs/INTEROP.md).
    #[serde(default)]
    pub legacy_phase1: bool,
    /// Cooperative key servers: this key server's priority, the election's
    /// timers and the peer key servers (docs/COOP.md). Absent: this key
    /// server serves the group alone.
    #[serde(default)]
    pub coop: Option<super::coop::CoopPolicy>,
}

fn default_rekey_before() -> u32 {
    gkm_model::policy::REKEY_BEFORE_SECS
}

/// A prefix as written (`a.b.c.d/len` or `x:y::/len`, a bare address
/// being a /32 or /128).
pub fn parse_prefix(field: &str, s: &str) -> Result<IpPrefix, Invalid> {
    s.parse().map_err(|e| invalid(field, format!("{e}")))
}

impl TekPolicy {
    /// Its source and destination selectors, IPv4 or IPv6 but both of one
    /// family (address preservation keeps a packet in its family); the
    /// failure names `{field}/src` or `{field}/dst`.
    pub fn selectors(&self, field: &str) -> Result<(IpPrefix, IpPrefix), Invalid> {
        let src = parse_prefix(&format!("{field}/src"), &self.src)?;
        let dst = parse_prefix(&format!("{field}/dst"), &self.dst)?;
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(invalid(
                &format!("{field}/dst"),
                format!(
                    "{dst} is not of the source's IP family ({src}): a TEK protects one family"
                ),
            ));
        }
        Ok((src, dst))
    }
}

impl Authorization {
    /// Its address ranges, IPv4 or IPv6; the failure names
    /// `/authorization/addresses/{i}`.
    pub fn prefixes(&self) -> Result<Vec<IpPrefix>, Invalid> {
        self.addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse()
                    .map_err(|e| invalid(&format!("/authorization/addresses/{i}"), format!("{e}")))
            })
            .collect()
    }
}

/// What `legacy_phase1` lets a group's GMs negotiate in phase 1: the
/// weak algorithms the API and dashboard list for such a group.
pub const LEGACY_PHASE1_ALGORITHMS: [&str; 4] = [
    "phase 1 cipher 3DES-CBC",
    "phase 1 hash HMAC-SHA-1",
    "phase 1 DH group 2 (MODP-1024)",
    "phase 1 DH group 5 (MODP-1536)",
];

impl GroupPolicy {
    /// The weak algorithms the policy lets GMs use (empty: none).
    pub fn weak_algorithms(&self) -> Vec<String> {
        if self.legacy_phase1 {
            LEGACY_PHASE1_ALGORITHMS.map(str::to_owned).to_vec()
        } else {
            Vec::new()
        }
    }

    /// The seed's rules, in the order an operator would fix them.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !["aes-cbc-128", "aes-cbc-256"].contains(&self.kek.algorithm.as_str()) {
            return Err(invalid(
                "/kek/algorithm",
                format!("{:?}: use aes-cbc-128 or aes-cbc-256", self.kek.algorithm),
            ));
        }
        if !(300..=604_800).contains(&self.kek.lifetime) {
            return Err(invalid(
                "/kek/lifetime",
                format!("{} is out of range: 300-604800 seconds", self.kek.lifetime),
            ));
        }
        if self.teks.is_empty() {
            return Err(invalid("/teks", "at least one TEK is needed"));
        }
        if self.teks.len() > 16 {
            return Err(invalid("/teks", "at most 16 TEKs"));
        }
        for (i, t) in self.teks.iter().enumerate() {
            t.selectors(&format!("/teks/{i}"))?;
            if let Err(m) = gkm_model::TekTransform::parse_or_explain(&t.transform) {
                return Err(invalid(&format!("/teks/{i}/transform"), m));
            }
            if !(300..=86_400).contains(&t.lifetime) {
                return Err(invalid(
                    &format!("/teks/{i}/lifetime"),
                    format!("{} is out of range: 300-86400 seconds", t.lifetime),
                ));
            }
        }
        let shortest = self.teks.iter().map(|t| t.lifetime).min().unwrap_or(0);
        if self.tek_rekey_before < 10 || self.tek_rekey_before >= shortest / 2 {
            return Err(invalid(
                "/tek_rekey_before",
                format!(
                    "{} must be at least 10 and under half the shortest TEK lifetime ({shortest} s)",
                    self.tek_rekey_before
                ),
            ));
        }
        if self.kek_rekey_before < 10 || self.kek_rekey_before >= self.kek.lifetime / 2 {
            return Err(invalid(
                "/kek_rekey_before",
                format!(
                    "{} must be at least 10 and under half the KEK lifetime ({} s)",
                    self.kek_rekey_before, self.kek.lifetime
                ),
            ));
        }
        let unicast = match &self.rekey {
            RekeyTransport::Unicast {
                retransmit_interval,
                retransmit_number,
            } => {
                if !(1..=60).contains(retransmit_interval) {
                    return Err(invalid(
                        "/rekey/retransmit_interval",
                        format!("{retransmit_interval} is out of range: 1-60 seconds"),
                    ));
                }
                if *retransmit_number > 10 {
                    return Err(invalid(
                        "/rekey/retransmit_number",
                        format!("{retransmit_number} is out of range: 0-10"),
                    ));
                }
                true
            }
            RekeyTransport::Multicast { address, port, ttl } => {
                if !address.is_multicast() {
                    return Err(invalid(
                        "/rekey/address",
                        format!("{address} is not a multicast address (224.0.0.0/4)"),
                    ));
                }
                if *port == 0 {
                    return Err(invalid("/rekey/port", "0 is not a port"));
                }
                if *ttl == 0 {
                    return Err(invalid("/rekey/ttl", "0 is out of range: 1-255"));
                }
                false
            }
        };
        if self.acknowledgement.is_some() && !unicast {
            return Err(invalid(
                "/acknowledgement",
                "rekey acknowledgement requires unicast rekey (multicast rekeys are not acknowledged)",
            ));
        }
        if self.activation_time_delay == Some(true) {
            if !unicast {
                return Err(invalid(
                    "/activation_time_delay",
                    "activation time delay requires unicast rekey",
                ));
            }
            if self.teks.len() != 1 {
                return Err(invalid(
                    "/activation_time_delay",
                    format!(
                        "activation time delay requires a single TEK; the group has {}",
                        self.teks.len()
                    ),
                ));
            }
        }
        if let Some(w) = &self.d3p_window {
            w.validate("/d3p_window")?;
            if self.gm_error_detection {
                return Err(invalid(
                    "/d3p_window",
                    "IP-D3P cannot be enabled while GM error detection / resiliency is enabled: disable gm_error_detection first",
                ));
            }
            if self.cmd_inline_tagging {
                return Err(invalid(
                    "/d3p_window",
                    "IP-D3P cannot be enabled while CMD inline tagging is enabled: disable cmd_inline_tagging first",
                ));
            }
        }
        self.authorization.prefixes()?;
        if let Authentication::Psk { psk: Some(k) } = &self.authentication {
            check_psk("/authentication/psk", k)?;
        }
        if let Some(c) = &self.coop {
            c.validate("/coop")?;
        }
        Ok(())
    }

    /// The acknowledgement shown for the group: the option, or `none` for multicast.
    pub fn acknowledgement_shown(&self) -> &'static str {
        match (&self.rekey, self.acknowledgement.unwrap_or_default()) {
            (RekeyTransport::Multicast { .. }, _) => "none",
            (_, AckOption::Cisco) => "cisco",
            (_, AckOption::Interoperable) => "interoperable",
            (_, AckOption::Any) => "any",
        }
    }

    /// Whether changing from `self` to `next` switches between CMD and
    /// IP-D3P, which needs a rekey replace so both are never active at once.
    pub fn needs_replace_for(&self, next: &GroupPolicy) -> bool {
        let was_d3p = self.d3p_window.is_some();
        let is_d3p = next.d3p_window.is_some();
        (self.cmd_inline_tagging && is_d3p) || (was_d3p && next.cmd_inline_tagging)
    }

    /// Whether `next` gives the group keys of another shape, which the key
    /// server sends as a rekey replace: TEK selectors, transforms or
    /// lifetimes, the KEK's algorithm or lifetime, or where rekeys go (a
    /// multicast address or port, unicast ⇄ multicast).
    pub fn key_shape_differs(&self, next: &GroupPolicy) -> bool {
        let rekey_to = |p: &GroupPolicy| match p.rekey {
            RekeyTransport::Multicast { address, port, .. } => Some((address, port)),
            RekeyTransport::Unicast { .. } => None,
        };
        self.teks != next.teks || self.kek != next.kek || rekey_to(self) != rekey_to(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GroupPolicy {
        serde_json::from_str(r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}]}"#).unwrap()
    }

    fn field_of(p: &GroupPolicy) -> String {
        p.validate().unwrap_err().field
    }

    #[test]
    fn defaults_are_valid() {
        let p = base();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.acknowledgement_shown(), "cisco");
    }

    #[test]
    fn d3p_window_ranges_are_the_seeds() {
        for (w, ok) in [
            (D3pWindow::Sec(1), true),
            (D3pWindow::Sec(100), true),
            (D3pWindow::Sec(0), false),
            (D3pWindow::Sec(101), false),
            (D3pWindow::Msec(100), true),
            (D3pWindow::Msec(10_000), true),
            (D3pWindow::Msec(99), false),
            (D3pWindow::Msec(10_001), false),
        ] {
            let mut p = base();
            p.d3p_window = Some(w);
            assert_eq!(p.validate().is_ok(), ok, "{w:?}");
            if !ok {
                assert!(field_of(&p).starts_with("/d3p_window/"));
            }
        }
    }

    #[test]
    fn d3p_conflicts_name_both_features() {
        let mut p = base();
        p.d3p_window = Some(D3pWindow::Msec(500));
        p.gm_error_detection = true;
        let e = p.validate().unwrap_err();
        assert!(e.message.contains("IP-D3P") && e.message.contains("GM error detection"));
        p.gm_error_detection = false;
        p.cmd_inline_tagging = true;
        let e = p.validate().unwrap_err();
        assert!(e.message.contains("IP-D3P") && e.message.contains("CMD"));
    }

    #[test]
    fn ack_and_atd_need_unicast_and_atd_a_single_tek() {
        let mut p = base();
        p.rekey = RekeyTransport::Multicast {
            address: "239.1.1.1".parse().unwrap(),
            port: 848,
            ttl: 1,
        };
        assert_eq!(p.acknowledgement_shown(), "none");
        p.acknowledgement = Some(AckOption::Any);
        assert_eq!(field_of(&p), "/acknowledgement");
        p.acknowledgement = None;
        p.activation_time_delay = Some(true);
        assert_eq!(field_of(&p), "/activation_time_delay");
        let mut p = base();
        p.teks.push(p.teks[0].clone());
        p.activation_time_delay = Some(true);
        assert!(p.validate().unwrap_err().message.contains("single TEK"));
        p.activation_time_delay = None;
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn switching_between_cmd_and_d3p_needs_a_replace() {
        let mut cmd = base();
        cmd.cmd_inline_tagging = true;
        let mut d3p = base();
        d3p.d3p_window = Some(D3pWindow::Sec(5));
        assert!(cmd.needs_replace_for(&d3p));
        assert!(d3p.needs_replace_for(&cmd));
        assert!(!d3p.needs_replace_for(&d3p));
        assert!(!base().needs_replace_for(&d3p));
        // Keys of another shape are a replace too; other changes are not.
        assert!(!base().key_shape_differs(&d3p));
        let mut cbc = base();
        cbc.teks[0].transform = "aes-cbc-256-hmac-sha256".into();
        assert!(base().key_shape_differs(&cbc));
        let mut longer = base();
        longer.kek.lifetime += 1;
        assert!(base().key_shape_differs(&longer));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<GroupPolicy>(
            r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}],"bogus":1}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<GroupPolicy>(r#"{"teks":[],"d3p_window":{"min":5}}"#).is_err()
        );
        let mut p = base();
        p.teks[0].src = "10.0.0.0/33".into();
        assert_eq!(field_of(&p), "/teks/0/src");
        // IPv6 selectors are fine; a TEK across families is not.
        let mut p = base();
        p.teks[0].src = "fd00:1::/64".into();
        p.teks[0].dst = "fd00:2::/64".into();
        assert_eq!(p.validate(), Ok(()));
        p.teks[0].dst = "10.0.0.0/8".into();
        assert_eq!(field_of(&p), "/teks/0/dst");
        let mut p = base();
        p.teks[0].lifetime = 10;
        assert_eq!(field_of(&p), "/teks/0/lifetime");
        let mut p = base();
        p.kek.lifetime = 604_801;
        assert_eq!(field_of(&p), "/kek/lifetime");
        let mut p = base();
        p.rekey = RekeyTransport::Unicast {
            retransmit_interval: 0,
            retransmit_number: 1,
        };
        assert_eq!(field_of(&p), "/rekey/retransmit_interval");
    }

    #[test]
    fn the_psk_is_never_serialized() {
        let mut p = base();
        p.authentication = Authentication::Psk {
            psk: Some("s3cret".into()),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
    }
}
