//! What the group member is told (its key servers, group, identity and
//! credential, timers) and what it tells its caller (events, failures).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gkm_wire::consts::NotifyType;
use gkm_wire::Identity;
use zeroize::Zeroizing;

use crate::crypto::{CertificateAuthority, DhBackend, Phase1Signer};
use crate::group::GroupKeys;
use crate::ike::Suite;

/// How the GM authenticates in phase 1.
pub enum GmAuth {
    /// Pre-shared key.
    Psk(Zeroizing<Vec<u8>>),
    /// Certificate authentication.
    Certificate(Box<CertAuth>),
}

/// A GM's certificate (DER), its key, and the CAs that may sign the KS's certificate.
pub struct CertAuth {
    /// The GM's certificate.
    pub cert: Vec<u8>,
    /// Its private key (RSA or ECDSA P-256: it decides the method offered).
    pub key: Phase1Signer,
    /// Trusted CAs.
    pub ca: CertificateAuthority,
}

/// The GM's phase 1 identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GmIdentity {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_DER_ASN1_DN (a certificate subject).
    Dn(Vec<u8>),
    /// ID_FQDN (an enrolled agent's name, its certificate's DNS name).
    Fqdn(String),
}

impl GmIdentity {
    /// Its phase 1 ID payload.
    pub fn payload(&self) -> Identity<'_> {
        match self {
            Self::Ipv4(a) => Identity::Ipv4Addr(*a),
            Self::Ipv6(a) => Identity::Ipv6Addr(*a),
            Self::Dn(d) => Identity::DerAsn1Dn(d),
            Self::Fqdn(n) => Identity::Fqdn(n.as_bytes()),
        }
    }

    /// How the key server's GM database names this GM
    /// ([`crate::identity::identity_string`]).
    pub fn shown(&self) -> String {
        crate::identity::identity_string(&self.payload())
    }
}

/// Group member configuration.
pub struct GmConfig {
    /// Key servers in order of preference.
    pub key_servers: Vec<SocketAddr>,
    /// Key servers offered phase 1 in the IPsec DOI (DOI 1, situation
    /// SIT_IDENTITY_ONLY) instead of the GDOI DOI (DOI 2, situation 0) that
    /// RFC 6407 section 2.1 calls for and every other key server gets: for
    /// peers that want the IPsec DOI in phase 1 (docs/INTEROP.md).
    pub ipsec_doi_key_servers: Vec<SocketAddr>,
    /// Key servers also offered the legacy phase 1 suites (HMAC-SHA-1,
    /// MODP 1024 and 1536), after every strong one: `legacy_phase1` for a
    /// key-server peer that has nothing stronger (docs/INTEROP.md). Every
    /// other key server is offered the strong suites only.
    pub legacy_phase1_key_servers: Vec<SocketAddr>,
    /// The phase 1 suites to offer, in order, instead of GKM's defaults
    /// ([`Suite::offers`]); their lifetime is `phase1_life_secs`. Legacy
    /// suites in it are offered only to `legacy_phase1_key_servers`, and
    /// a suite of another authentication method is left out.
    pub phase1_suites: Option<Vec<Suite>>,
    /// Group identity number.
    pub group_id: u32,
    /// Phase 1 identity.
    pub identity: GmIdentity,
    /// Phase 1 authentication.
    pub auth: GmAuth,
    /// Phase 1 lifetime offered.
    pub phase1_life_secs: u32,
    /// Sender IDs to request (0: none).
    pub sender_ids: u16,
    /// Re-register this long before the earliest TEK expires, if no rekey came.
    pub reregister_before_ms: u64,
    /// First retransmission after this long; doubles each time.
    pub retransmit_initial_ms: u64,
    /// Transmissions of one message before trying the next key server.
    pub max_transmissions: u32,
    /// Group 19 implementation (see [`DhBackend`]).
    pub dh_backend: DhBackend,
    /// Send INITIAL-CONTACT in the first main mode (RFC 2407 section
    /// 4.6.3.3), so the KS drops phase 1 SAs a restarted GM left behind.
    /// On by default; a load generator sharing one identity among many
    /// simulated GMs turns it off.
    pub initial_contact: bool,
    /// The address the GM names in its rekey ACKs' ID payload (the KS
    /// matches it to the registration); defaults to an IP identity.
    pub ack_address: Option<IpAddr>,
    /// Most random delay before acknowledging a multicast rekey, so that a
    /// group's ACKs do not all arrive at once.
    pub multicast_ack_jitter_ms: u64,
    /// Vendor IDs sent in main mode besides GKM's own (interoperability
    /// tests present themselves as another vendor's GM with these).
    pub extra_vendor_ids: Vec<Vec<u8>>,
}

/// Why a registration attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GmFailure {
    /// The KS answered with a notification.
    Notified(NotifyType),
    /// No answer after all retransmissions.
    Timeout,
    /// The KS's answer did not authenticate or parse.
    BadResponse(&'static str),
}

/// Something the caller should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GmEvent {
    /// Registered: install these keys.
    Registered {
        /// The key server.
        ks: SocketAddr,
        /// Keys and policy.
        keys: GroupKeys,
        /// Sender IDs granted.
        sids: Vec<u32>,
    },
    /// A GROUPKEY-PUSH was accepted and applied.
    Rekeyed {
        /// Its SEQ.
        seq: u32,
        /// TEK SPIs installed.
        installed: Vec<u32>,
        /// TEK SPIs deleted at once (rekey replace).
        deleted: Vec<u32>,
        /// Whether it carried a new KEK.
        new_kek: bool,
        /// The new KEK's key packet was labelled with the old KEK's SPI
        /// (the rollover form a real peer sends) and taken as the SA KEK's.
        kek_packet_relabelled: bool,
    },
    /// A GROUPKEY-PUSH was refused (and counted).
    PushRejected(crate::push::PushError),
    /// An attempt at `ks` failed; the engine moves on by itself.
    AttemptFailed {
        /// The key server.
        ks: SocketAddr,
        /// Why.
        reason: GmFailure,
    },
}
