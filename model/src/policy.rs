//! A group's policy words as operators write them (docs/FEATURES.md):
//! the rekey acknowledgement option, how rekeys travel, and the IP-D3P
//! window, with the seed's ranges and messages.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// Rekey the TEKs (or the KEK) this many seconds before they expire,
/// unless the policy says otherwise.
pub const REKEY_BEFORE_SECS: u32 = 90;

/// `rekey acknowledgement {cisco | interoperable | any}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AckOption {
    /// The default: Cisco-style (GKM's encrypted unicast) ACKs only.
    #[default]
    Cisco,
    /// RFC 8263 ACKs only.
    Interoperable,
    /// Both, per GM.
    Any,
}

impl AckOption {
    /// Its word in configuration, the API and `show` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cisco => "cisco",
            Self::Interoperable => "interoperable",
            Self::Any => "any",
        }
    }
}

impl fmt::Display for AckOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for AckOption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cisco" => Ok(Self::Cisco),
            "interoperable" => Ok(Self::Interoperable),
            "any" => Ok(Self::Any),
            other => Err(format!(
                "rekey acknowledgement {other:?}: use cisco, interoperable or any"
            )),
        }
    }
}

/// How a group's rekeys travel, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "transport", rename_all = "lowercase", deny_unknown_fields)]
pub enum RekeyTransport {
    /// One GROUPKEY-PUSH per GM, sent `1 + retransmit_number` times at
    /// most, `retransmit_interval` seconds apart, to GMs that have not
    /// acknowledged it.
    Unicast {
        /// Seconds between retransmissions (and the ACK wait after the
        /// last one), 1-60.
        #[serde(default = "RekeyTransport::default_retransmit_interval")]
        retransmit_interval: u32,
        /// Retransmissions after the first send, 0-10.
        #[serde(default = "RekeyTransport::default_retransmit_number")]
        retransmit_number: u32,
    },
    /// One GROUPKEY-PUSH to a multicast group (no ACKs).
    Multicast {
        /// Group address (224.0.0.0/4).
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = Ipv4))]
        address: std::net::Ipv4Addr,
        /// UDP port.
        #[serde(default = "RekeyTransport::default_port")]
        port: u16,
        /// IP TTL the key server sets on multicast rekeys, 1-255.
        #[serde(default = "RekeyTransport::default_ttl")]
        ttl: u8,
    },
}

impl RekeyTransport {
    /// Default seconds between unicast retransmissions.
    pub const RETRANSMIT_INTERVAL_SECS: u32 = 10;
    /// Default unicast retransmissions.
    pub const RETRANSMIT_NUMBER: u32 = 2;
    /// Default multicast rekey port: GDOI's (RFC 6407 section 3).
    pub const MULTICAST_PORT: u16 = 848;
    /// Default multicast TTL.
    pub const MULTICAST_TTL: u8 = 1;

    fn default_retransmit_interval() -> u32 {
        Self::RETRANSMIT_INTERVAL_SECS
    }
    fn default_retransmit_number() -> u32 {
        Self::RETRANSMIT_NUMBER
    }
    fn default_port() -> u16 {
        Self::MULTICAST_PORT
    }
    fn default_ttl() -> u8 {
        Self::MULTICAST_TTL
    }

    /// Whether rekeys are unicast.
    pub fn is_unicast(&self) -> bool {
        matches!(self, Self::Unicast { .. })
    }

    /// Unicast: the retransmissions after the first send and the time
    /// between sends in ms; none for multicast.
    pub fn unicast_schedule(&self) -> Option<(u32, u64)> {
        match *self {
            Self::Unicast {
                retransmit_interval,
                retransmit_number,
            } => Some((retransmit_number, u64::from(retransmit_interval) * 1000)),
            Self::Multicast { .. } => None,
        }
    }
}

impl Default for RekeyTransport {
    /// Unicast, 2 retransmissions 10 s apart.
    fn default() -> Self {
        Self::Unicast {
            retransmit_interval: Self::RETRANSMIT_INTERVAL_SECS,
            retransmit_number: Self::RETRANSMIT_NUMBER,
        }
    }
}

/// An IP-D3P window as an operator writes it: `sec S` (1-100) or `msec M`
/// (100-10000), the seed's `sa d3p window` / `client d3p window` ranges.
/// In JSON: `{"sec": S}` or `{"msec": M}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum D3pWindow {
    /// Seconds, 1-100.
    Sec(u32),
    /// Milliseconds, 100-10000.
    Msec(u32),
}

/// Why a D3P window was refused; the message names the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct D3pWindowError(String);

impl D3pWindow {
    /// Smallest and largest `sec` values.
    pub const SEC_RANGE: (u32, u32) = (1, 100);
    /// Smallest and largest `msec` values.
    pub const MSEC_RANGE: (u32, u32) = (100, 10_000);

    fn unit_range(&self) -> (&'static str, u32, (u32, u32)) {
        match *self {
            Self::Sec(v) => ("sec", v, Self::SEC_RANGE),
            Self::Msec(v) => ("msec", v, Self::MSEC_RANGE),
        }
    }

    /// Checks the seed's ranges; the failure names `{field}/sec` or
    /// `{field}/msec`.
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        let (unit, v, (lo, hi)) = self.unit_range();
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(Invalid::new(
                &format!("{field}/{unit}"),
                format!("{v} is out of range: {unit} must be {lo}-{hi}"),
            ))
        }
    }

    fn checked(self, written: u64) -> Result<Self, D3pWindowError> {
        let (unit, _, (lo, hi)) = self.unit_range();
        match self.validate("") {
            Ok(()) => Ok(self),
            Err(_) => Err(D3pWindowError(format!(
                "d3p window {unit} {written} is out of range: {unit} must be {lo}-{hi}"
            ))),
        }
    }

    /// A window in seconds, checked against 1-100.
    pub fn sec(s: u64) -> Result<Self, D3pWindowError> {
        Self::Sec(u32::try_from(s).unwrap_or(u32::MAX)).checked(s)
    }

    /// A window in milliseconds, checked against 100-10000.
    pub fn msec(m: u64) -> Result<Self, D3pWindowError> {
        Self::Msec(u32::try_from(m).unwrap_or(u32::MAX)).checked(m)
    }

    /// The window in milliseconds, as carried in GAP D3P_WINDOW_MSEC.
    pub fn as_msec(self) -> u32 {
        match self {
            Self::Sec(s) => s.saturating_mul(1000),
            Self::Msec(m) => m,
        }
    }
}

impl core::str::FromStr for D3pWindow {
    type Err = D3pWindowError;

    /// Parses `sec S` or `msec M`, the seed's CLI words.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let unit = words.next();
        let value = words.next().map(str::parse::<u64>);
        match (unit, value, words.next()) {
            (Some("sec"), Some(Ok(v)), None) => Self::sec(v),
            (Some("msec"), Some(Ok(v)), None) => Self::msec(v),
            _ => Err(D3pWindowError(format!(
                "d3p window {s:?} is not understood: write `sec S` (1-100) or `msec M` (100-10000)"
            ))),
        }
    }
}

impl fmt::Display for D3pWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sec(s) => write!(f, "sec {s}"),
            Self::Msec(m) => write!(f, "msec {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d3p_window_ranges_are_the_seeds() {
        assert_eq!(
            "sec 1".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(1000)
        );
        assert_eq!(
            "sec 100".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(100_000)
        );
        assert_eq!(
            "msec 100".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(100)
        );
        assert_eq!(
            "msec 10000".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(10_000)
        );
        for bad in [
            "sec 0",
            "sec 101",
            "msec 99",
            "msec 10001",
            "msec 70000",
            "sec 4294967296001",
            "sec",
            "min 5",
            "sec 5 x",
        ] {
            let e = bad.parse::<D3pWindow>().unwrap_err().to_string();
            assert!(e.contains("1-100") || e.contains("100-10000"), "{bad}: {e}");
        }
        // The seed's example: KS msec 1000, GM override sec 50 -> 50000.
        assert_eq!(D3pWindow::sec(50).map(D3pWindow::as_msec), Ok(50_000));
        assert_eq!(
            D3pWindow::sec(101).unwrap_err().to_string(),
            "d3p window sec 101 is out of range: sec must be 1-100"
        );
    }

    #[test]
    fn validation_names_the_unit_field() {
        assert_eq!(D3pWindow::Sec(100).validate("/d3p_window"), Ok(()));
        let e = D3pWindow::Msec(99).validate("/d3p_window").unwrap_err();
        assert_eq!(e.field, "/d3p_window/msec");
        assert_eq!(e.message, "99 is out of range: msec must be 100-10000");
    }

    #[test]
    fn json_shapes_and_defaults() {
        let w: D3pWindow = serde_json::from_str(r#"{"msec": 500}"#).unwrap();
        assert_eq!(w, D3pWindow::Msec(500));
        assert!(serde_json::from_str::<D3pWindow>(r#"{"min": 5}"#).is_err());
        let t: RekeyTransport = serde_json::from_str(r#"{"transport":"unicast"}"#).unwrap();
        assert_eq!(t, RekeyTransport::default());
        assert_eq!(t.unicast_schedule(), Some((2, 10_000)));
        let m: RekeyTransport =
            serde_json::from_str(r#"{"transport":"multicast","address":"239.1.1.1"}"#).unwrap();
        assert_eq!(
            m,
            RekeyTransport::Multicast {
                address: std::net::Ipv4Addr::new(239, 1, 1, 1),
                port: 848,
                ttl: 1
            }
        );
        assert_eq!(m.unicast_schedule(), None);
        for o in [AckOption::Cisco, AckOption::Interoperable, AckOption::Any] {
            assert_eq!(o.as_str().parse::<AckOption>(), Ok(o));
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
    }
}

/// A TEK's ESP transform as a policy names it (`teks[].transform`): AES-GCM
/// with a 16-octet ICV (RFC 4106), GKM's default, or AES-CBC (RFC 3602)
/// with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA-256-128 (RFC 4868) for peers
/// without GCM. 3DES is not among them (RFC 8221: MUST NOT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TekTransform {
    /// `aes-gcm-128`.
    AesGcm128,
    /// `aes-gcm-256`.
    AesGcm256,
    /// `aes-cbc-128-hmac-sha1`.
    AesCbc128HmacSha1,
    /// `aes-cbc-256-hmac-sha1`.
    AesCbc256HmacSha1,
    /// `aes-cbc-128-hmac-sha256`.
    AesCbc128HmacSha256,
    /// `aes-cbc-256-hmac-sha256`.
    AesCbc256HmacSha256,
}

impl TekTransform {
    /// Every transform, in the order the policy's error message lists them.
    pub const ALL: [Self; 6] = [
        Self::AesGcm128,
        Self::AesGcm256,
        Self::AesCbc128HmacSha1,
        Self::AesCbc256HmacSha1,
        Self::AesCbc128HmacSha256,
        Self::AesCbc256HmacSha256,
    ];

    /// The policy's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesGcm128 => "aes-gcm-128",
            Self::AesGcm256 => "aes-gcm-256",
            Self::AesCbc128HmacSha1 => "aes-cbc-128-hmac-sha1",
            Self::AesCbc256HmacSha1 => "aes-cbc-256-hmac-sha1",
            Self::AesCbc128HmacSha256 => "aes-cbc-128-hmac-sha256",
            Self::AesCbc256HmacSha256 => "aes-cbc-256-hmac-sha256",
        }
    }

    /// The transform a policy names, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The names, comma-separated, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// The transform a policy names, or the message that says which names
    /// there are (and why 3DES is not one).
    pub fn parse_or_explain(name: &str) -> Result<Self, String> {
        Self::parse(name).ok_or_else(|| {
            let hint = if name.to_ascii_lowercase().contains("3des") {
                " (3DES is not offered: RFC 8221 says MUST NOT)"
            } else {
                ""
            };
            format!("{name:?}: use {}{hint}", Self::names())
        })
    }

    /// AES key length in bits.
    pub fn key_bits(self) -> u16 {
        match self {
            Self::AesGcm128 | Self::AesCbc128HmacSha1 | Self::AesCbc128HmacSha256 => 128,
            _ => 256,
        }
    }

    /// Whether it is AES-GCM (combined mode, no separate integrity key).
    pub fn is_gcm(self) -> bool {
        matches!(self, Self::AesGcm128 | Self::AesGcm256)
    }

    /// Octets of TEK_ALGORITHM_KEY: the AES key, with GCM's 4-octet salt
    /// after it (RFC 4106 section 8.1).
    pub fn algorithm_key_len(self) -> usize {
        usize::from(self.key_bits()) / 8 + if self.is_gcm() { 4 } else { 0 }
    }

    /// Octets of TEK_INTEGRITY_KEY: the HMAC key (RFC 2404: 20; RFC 4868:
    /// 32), none for GCM.
    pub fn integrity_key_len(self) -> usize {
        match self {
            Self::AesGcm128 | Self::AesGcm256 => 0,
            Self::AesCbc128HmacSha1 | Self::AesCbc256HmacSha1 => 20,
            Self::AesCbc128HmacSha256 | Self::AesCbc256HmacSha256 => 32,
        }
    }
}

#[cfg(test)]
mod tek_transform_tests {
    use super::TekTransform;

    #[test]
    fn names_round_trip_and_key_sizes_follow_the_rfcs() {
        for t in TekTransform::ALL {
            assert_eq!(TekTransform::parse(t.name()), Some(t));
        }
        assert_eq!(TekTransform::parse("3des-hmac-sha1"), None);
        assert_eq!(TekTransform::AesGcm128.algorithm_key_len(), 20);
        assert_eq!(TekTransform::AesGcm256.algorithm_key_len(), 36);
        assert_eq!(TekTransform::AesCbc256HmacSha1.algorithm_key_len(), 32);
        assert_eq!(TekTransform::AesCbc128HmacSha1.integrity_key_len(), 20);
        assert_eq!(TekTransform::AesCbc128HmacSha256.integrity_key_len(), 32);
        assert_eq!(TekTransform::AesGcm256.integrity_key_len(), 0);
    }
}
