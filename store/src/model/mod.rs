//! The controller's data model: what the store keeps and the API speaks,
//! with the seed's validation rules (docs/FEATURES.md). Validation
//! names the failing field with a JSON-pointer-like path and says what is
//! allowed; a value that fails is never stored.

use serde::{Deserialize, Serialize};

pub use gkm_model::health::{
    AckKind, D3pError, GmHealth, Membership, PushesRefused, ReplayCounters, Traffic, WindowSource,
    MAX_HISTORY,
};
pub use gkm_model::policy::{AckOption, D3pWindow, RekeyTransport};
pub use gkm_model::{Invalid, IpPrefix, Ipv4Prefix};

mod auth;
pub mod coop;
pub mod enroll;
mod policy;
pub use auth::{check_psk, Authentication};
pub use coop::{CoopPeer, CoopPolicy};
pub use enroll::{Agent, NewSetupKey, SetupKey, SetupKeyRefused};
pub use policy::{
    parse_prefix, Authorization, GroupPolicy, KekPolicy, TekPolicy, LEGACY_PHASE1_ALGORITHMS,
};

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
        Err(Invalid::new(
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
            return Err(Invalid::new("/priority", "0 is out of range: 1-255"));
        }
        Ok(())
    }
}

/// A GM's registration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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
            return Err(Invalid::new("/gm/group", "0 is out of range: 1-4294967295"));
        }
        if self.gm_identity.is_empty()
            || self.gm_identity.len() > 255
            || self.gm_identity.chars().any(char::is_control)
        {
            return Err(Invalid::new(
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
    /// An enrolled agent's token: the agent's name (it reports for that
    /// GM identity in the agent's groups, until the agent is revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}
