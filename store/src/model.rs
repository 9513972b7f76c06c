//! The controller's data model: what the store keeps and the API speaks,
//! with the seed's validation rules (docs/FEATURES.md). Validation
//! names the failing field with a JSON-pointer-like path and says what is
//! allowed; a value that fails is never stored.

use serde::{Deserialize, Serialize};

pub use gkm_model::health::{D3pError, GmHealth, ReplayCounters, WindowSource, MAX_HISTORY};
pub use gkm_model::policy::{AckOption, D3pWindow, RekeyTransport};
pub use gkm_model::{Invalid, IpPrefix, Ipv4Prefix};

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

/// How GMs authenticate in phase 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Authentication {
    /// Pre-shared key. Write-only: the API never returns it (it is sealed
    /// at rest; responses show `psk_set`).
    Psk {
        /// The key (on input only).
        #[serde(default, skip_serializing)]
        psk: Option<String>,
    },
    /// X.509 certificates from the configured CAs.
    Pki,
}

impl Default for Authentication {
    fn default() -> Self {
        Self::Psk { psk: None }
    }
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
}

fn default_rekey_before() -> u32 {
    gkm_model::policy::REKEY_BEFORE_SECS
}

/// A pre-shared key: 1-512 characters.
pub fn check_psk(field: &str, k: &str) -> Result<(), Invalid> {
    if k.is_empty() || k.len() > 512 {
        return Err(invalid(
            field,
            "the pre-shared key must be 1-512 characters",
        ));
    }
    Ok(())
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

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    /// Store id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Group ID: the GDOI group identity number, 1-4294967295 (the wire's
    /// ID payload; Cisco's "Group Identity"). Accepted as `identity` on input
    /// (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub group_id: u32,
    /// Policy.
    pub policy: GroupPolicy,
    /// Bumped by every change.
    pub version: i64,
    /// Created, UNIX ms.
    pub created_at: i64,
    /// Last changed, UNIX ms.
    pub updated_at: i64,
}

/// A key server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KsRole {
    /// Primary.
    Primary,
    /// Secondary.
    Secondary,
}

// The peer row, apart from the engine that serves GMs
// (`gkm_proto::ks::KeyServer`); the API's schema keeps the name `KeyServer`.
/// A cooperative key server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = KeyServer)]
#[serde(deny_unknown_fields)]
pub struct PeerKeyServer {
    /// Name.
    pub name: String,
    /// Address (IPv4).
    #[schema(value_type = String, format = Ipv4)]
    pub address: std::net::Ipv4Addr,
    /// COOP priority 1-255.
    pub priority: u8,
    /// Role.
    pub role: KsRole,
}

/// Names of groups, tokens and key servers: 1-64 ASCII letters, digits,
/// space, `-`, `_`, `.` (so no NUL, control or bidi character and no
/// markup can reach a log line, a page or a shell).
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1-64 characters: letters, digits, space, '-', '_', '.'",
        ))
    }
}

impl PeerKeyServer {
    /// Checks the name and ranges.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("/name", &self.name)?;
        if self.priority == 0 {
            return Err(invalid("/priority", "0 is out of range: 1-255"));
        }
        Ok(())
    }
}

/// A GM's registration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GmState {
    /// Registered and acknowledging.
    Registered,
    /// Missed the last rekey(s).
    Lagging,
    /// Removed after 3 missed rekeys.
    Removed,
}

impl GmState {
    /// Its word in the store.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Lagging => "lagging",
            Self::Removed => "removed",
        }
    }

    /// From its word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registered" => Some(Self::Registered),
            "lagging" => Some(Self::Lagging),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }
}

/// A GM in the GM database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GmRow {
    /// Group identity number.
    pub group: u32,
    /// The GM's phase 1 identity (its IPv4 address for PSK GMs). Accepted as
    /// `identity` on input (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub gm_identity: String,
    /// Address and port.
    pub address: String,
    /// `cisco`, `asr9000` or `non-cisco`.
    pub class: String,
    /// GDOI version `major.minor.mini`, if reported.
    pub version: Option<String>,
    /// Feature bits (GKM VID).
    pub features: u32,
    /// State.
    pub state: GmState,
    /// Registration time, UNIX ms.
    pub registered_at: i64,
    /// Last SEQ sent.
    pub last_seq_sent: Option<u32>,
    /// Last SEQ acknowledged.
    pub last_seq_acked: Option<u32>,
    /// Consecutive missed rekeys.
    pub misses: u32,
    /// Sender IDs (RFC 6054) granted to it.
    pub sids: Vec<u32>,
}

/// D3P errors of a group in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct D3pErrorPoint {
    /// Bucket start, UNIX ms.
    pub at: i64,
    /// Input D3P errors reported in the bucket.
    pub input_errors: u64,
    /// Output D3P errors reported in the bucket.
    pub output_errors: u64,
}

/// A GM whose input D3P errors rose by at least a threshold recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct D3pSpike {
    /// Group identity number.
    pub group: u32,
    /// The GM.
    pub gm_identity: String,
    /// Input D3P errors in the period.
    pub input_errors: u64,
}

/// Interoperability features a GM or KS reports (GKM Vendor ID feature
/// bits), by the name `show crypto gkm feature` uses. The server checks
/// these bits against gkm-wire's `FeatureBits`.
pub const FEATURES: [(&str, u32); 3] = [("ip-d3p", 1), ("gdoi-interop-ack", 2), ("atd", 4)];

/// A feature bit by name.
pub fn feature_bit(name: &str) -> Option<u32> {
    FEATURES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// A GM listing filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GmFilter {
    /// Only this group.
    pub group: Option<u32>,
    /// Only the GM with this phase 1 identity.
    pub gm_identity: Option<String>,
    /// Only this state.
    pub state: Option<GmState>,
    /// Only this class.
    pub class: Option<String>,
    /// Only GMs that do (true) or do not (false) report this feature bit.
    pub feature: Option<(u32, bool)>,
}

/// Keyset pagination: rows after `after` (group, identity), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Continue after this (group, identity).
    pub after: Option<(u32, String)>,
    /// Rows, 1-1000.
    pub limit: u32,
}

/// One rekey, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RekeyRecord {
    /// Group identity number.
    pub group: u32,
    /// SEQ.
    pub seq: u32,
    /// Why.
    pub reason: String,
    /// Start, UNIX ms.
    pub started_at: i64,
    /// GMs it was sent to.
    pub sent: u32,
    /// GMs that acknowledged.
    pub acked: u32,
    /// Until the last ACK, if all came.
    pub duration_ms: Option<i64>,
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When, UNIX ms.
    pub at: i64,
    /// Who (token name or user).
    pub actor: String,
    /// What, e.g. `group.create`.
    pub action: String,
    /// On what, e.g. the group name.
    pub target: String,
    /// Details (JSON text, never a secret).
    pub detail: String,
}

/// An API token's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agent: reports its own health, reads nothing.
    Agent,
    /// Read only.
    Viewer,
    /// Read, and actions (rekey, eject).
    Operator,
    /// Everything, tokens included.
    Admin,
}

impl Role {
    /// Its word in the store.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// From its word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(Self::Agent),
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The one GM an agent token may report health for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenGm {
    /// The group's identity number.
    pub group: u32,
    /// The GM's phase 1 identity (as the GM list shows it). Accepted as
    /// `identity` on input (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub gm_identity: String,
}

impl TokenGm {
    /// Checks the binding's values.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.group == 0 {
            return Err(invalid("/gm/group", "0 is out of range: 1-4294967295"));
        }
        if self.gm_identity.is_empty()
            || self.gm_identity.len() > 255
            || self.gm_identity.chars().any(char::is_control)
        {
            return Err(invalid(
                "/gm/gm_identity",
                "must be 1-255 characters without control characters",
            ));
        }
        Ok(())
    }
}

/// An API token as stored (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Store id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Created, UNIX ms.
    pub created_at: i64,
    /// Agent tokens: the GM it reports for (absent on an agent token made
    /// before bindings existed, until its first accepted report binds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gm: Option<TokenGm>,
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
