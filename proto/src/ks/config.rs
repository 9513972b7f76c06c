//! What the key server is told: its groups, keys, credentials and limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zeroize::Zeroizing;

use crate::crypto::{CertificateAuthority, DhBackend, Phase1Signer, RekeySigner};
use crate::group::{GroupKeys, IpPrefix, Ipv4Prefix};
use crate::rekey::{GroupState, RekeyPolicy};

/// Bounds on responder state (the half-open flood defence).
#[derive(Debug, Clone, Copy)]
pub struct KsLimits {
    /// Most phase 1 exchanges not yet authenticated, all peers together.
    pub max_half_open: usize,
    /// Most half-open exchanges from one source address.
    pub max_half_open_per_source: usize,
    /// A half-open exchange is forgotten after this long.
    pub half_open_timeout_ms: u64,
    /// A GROUPKEY-PULL not finished after this long is forgotten.
    pub pull_timeout_ms: u64,
}

impl Default for KsLimits {
    fn default() -> Self {
        Self {
            max_half_open: 20_000,
            max_half_open_per_source: 64,
            half_open_timeout_ms: 30_000,
            pull_timeout_ms: 30_000,
        }
    }
}

/// Who may register to a group. Both lists empty: any authenticated GM.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    /// Source address ranges, IPv4 or IPv6.
    pub addresses: Vec<IpPrefix>,
    /// Phase 1 identities (as [`crate::identity::identity_string`] renders them).
    pub identities: Vec<String>,
}

impl Authorization {
    pub(crate) fn allows(&self, addr: IpAddr, identity: &str) -> bool {
        if self.addresses.is_empty() && self.identities.is_empty() {
            return true;
        }
        let by_addr = self.addresses.iter().any(|p| p.contains(addr));
        by_addr || self.identities.iter().any(|i| i == identity)
    }
}

/// What authenticated a peer in phase 1. A GROUPKEY-PULL for a group
/// succeeds only when the peer's credential is one the group accepts
/// ([`GroupAuth`]): holding one group's PSK never opens another group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// The pre-shared key of the group with this identity number.
    GroupPsk(u32),
    /// Entry `n` of the configuration file's keyring (`[[psk]]`, in file order).
    Keyring(usize),
    /// A certificate chaining to the configured CAs.
    Certificate,
    /// The pair PSK between this key server and a cooperative peer of the
    /// group with this identity number (`coop.peers[]`): it opens that
    /// group's COOP announcements from that peer, never a GROUPKEY-PULL.
    CoopPeer(u32),
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GroupPsk(g) => write!(f, "psk of group {g}"),
            Self::Keyring(i) => write!(f, "keyring entry psk[{i}]"),
            Self::Certificate => f.write_str("certificate"),
            Self::CoopPeer(g) => write!(f, "COOP pair psk of group {g}"),
        }
    }
}

/// How a group's GMs authenticate in phase 1, and so which credentials
/// its GROUPKEY-PULL accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupAuth {
    /// Pre-shared key: the group's own PSK when it has one (a
    /// [`PskEntry`] with [`Credential::GroupPsk`] of its identity), else
    /// the configuration file's keyring.
    #[default]
    Psk,
    /// Certificates from the configured CAs only.
    Certificate,
}

/// One pre-shared key the phase 1 responder may try for a source address.
#[derive(Clone)]
pub struct PskEntry {
    /// Whose key it is.
    pub credential: Credential,
    /// Source ranges it applies to, IPv4 or IPv6; empty: any source.
    pub ranges: Vec<IpPrefix>,
    /// The key.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskEntry")
            .field("credential", &self.credential)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

impl PskEntry {
    /// How specifically the entry covers `a` (its longest covering range;
    /// 0 for an entry without ranges), or None when it does not.
    pub(crate) fn specificity(&self, a: IpAddr) -> Option<u8> {
        if self.ranges.is_empty() {
            return Some(0);
        }
        self.ranges
            .iter()
            .filter(|p| p.contains(a))
            .map(|p| p.prefix_len())
            .max()
    }
}

/// Most pre-shared keys the responder tries for one source address in
/// main mode message 5 (the most specific ranges first). Each try costs
/// a key derivation and one decryption of a short message, a small
/// fraction of the Diffie-Hellman already done.
pub const MAX_PSK_CANDIDATES: usize = 16;

/// One group the key server serves.
#[derive(Debug, Clone)]
pub struct KsGroup {
    /// Group name.
    pub name: String,
    /// Current keys and policy.
    pub keys: GroupKeys,
    /// Who may register.
    pub authorization: Authorization,
    /// Which phase 1 credentials the group accepts.
    pub authentication: GroupAuth,
    /// `legacy_phase1`: the group's GMs may register over a phase 1 SA
    /// with a legacy suite (3DES-CBC, HMAC-SHA-1, MODP 1024 or 1536; docs/INTEROP.md).
    /// Off: such an SA opens no GROUPKEY-PULL for the group.
    pub legacy_phase1: bool,
    /// How and when the group is rekeyed.
    pub rekey: RekeyPolicy,
    /// Key state persisted before a restart (None: start from `keys`).
    pub resume: Option<GroupState>,
    /// `sa d3p window`: IP-D3P on with this window (ms), carried to GMs in
    /// the GAP of every registration and rekey (seed section 1).
    pub d3p_window_ms: Option<u32>,
}

/// Key server configuration.
pub struct KsConfig {
    /// The KS's own address (its phase 1 identity and rekey source).
    pub address: Ipv4Addr,
    /// The KS's IPv6 address: its phase 1 identity (ID_IPV6_ADDR) to GMs
    /// that come over IPv6. None: they get `address` (ID_IPV4_ADDR).
    pub address_v6: Option<Ipv6Addr>,
    /// Groups by identity number.
    pub groups: Vec<KsGroup>,
    /// Pre-shared keys: the keyring's and each PSK group's, with the
    /// source ranges each applies to.
    pub psks: Vec<PskEntry>,
    /// CAs for certificate authentication (None: certificates refused).
    pub ca: Option<CertificateAuthority>,
    /// The KS's certificates (DER) and keys for certificate
    /// authentication, at most one per key kind (a GM's or peer's offer of
    /// RSA or ECDSA-256 signatures is answered with the certificate of
    /// that kind; a COOP session initiates with the first).
    pub certificates: Vec<(Vec<u8>, Phase1Signer)>,
    /// Operator tags marking ASR 9000 GMs by address.
    pub asr9000: Vec<Ipv4Prefix>,
    /// Limits.
    pub limits: KsLimits,
    /// Phase 1 lifetime the KS accepts at most; longer offers are answered with this.
    pub max_phase1_life_secs: u32,
    /// Group 19 implementation (see [`DhBackend`]).
    pub dh_backend: DhBackend,
    /// Emit [`KsEvent::Phase1Keys`] for the operator's key log. Off by default.
    pub export_keys: bool,
    /// The rekey-signing key (None: groups are never rekeyed).
    pub rekey_signer: Option<RekeySigner>,
    /// Its name, as `show crypto gkm ks policy` prints it.
    pub rekey_key_name: String,
}

/// The controller's enrolled agents as the key server enforces them: a
/// certificate naming an enrolled agent (its CN or DNS name) joins only
/// that agent's groups; one naming a revoked agent is refused at phase 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrolledAgents {
    /// Agent name → the groups (identity numbers) it may join.
    pub groups: std::collections::HashMap<String, Vec<u32>>,
    /// Names of revoked agents.
    pub revoked: std::collections::HashSet<String>,
}

impl EnrolledAgents {
    /// The groups a certificate certifying `names` may join: None when it
    /// names no enrolled agent (the group's authentication decides alone).
    pub fn groups_of(&self, names: &[String]) -> Option<Vec<u32>> {
        names.iter().find_map(|n| self.groups.get(n)).cloned()
    }
}
