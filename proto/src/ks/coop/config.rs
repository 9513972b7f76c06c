//! A group's cooperative key server configuration as the engine is given
//! it: the peers, how the SAs with each authenticate, and the election's
//! numbers (validated by the caller: docs/COOP.md, "Configuration").

use std::net::{IpAddr, SocketAddr};

use zeroize::Zeroizing;

/// How the phase 1 SAs between this key server and a peer authenticate.
#[derive(Clone)]
pub enum CoopPeerAuth {
    /// The pair PSK (the same on both key servers).
    Psk(Zeroizing<Vec<u8>>),
    /// Certificates from the configured CAs: the peer's must have this
    /// subject (a distinguished name, `CN=ks3,O=GKM`; see
    /// [`crate::identity::dn_matches`]), and come from its address.
    Certificate {
        /// The subject the peer's certificate must have.
        subject: String,
    },
}

/// One peer key server of a group, as the engine is given it.
#[derive(Clone)]
pub struct CoopPeerConfig {
    /// Its COOP address and port (UDP 848 unless told otherwise).
    pub addr: SocketAddr,
    /// How the SAs with it authenticate.
    pub auth: CoopPeerAuth,
}

impl std::fmt::Debug for CoopPeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            CoopPeerAuth::Psk(_) => "psk".to_owned(),
            CoopPeerAuth::Certificate { subject } => format!("certificate {subject}"),
        };
        f.debug_struct("CoopPeerConfig")
            .field("addr", &self.addr)
            .field("auth", &auth)
            .finish()
    }
}

/// A group's cooperative key server configuration, as the engine is given
/// it (validated by the caller: docs/COOP.md, "Configuration").
#[derive(Debug, Clone)]
pub struct CoopGroupConfig {
    /// The group.
    pub group_id: u32,
    /// This key server's priority, 1-255.
    pub priority: u8,
    /// This key server's COOP address (what its peers see as the source
    /// of its messages and have configured).
    pub local_addr: IpAddr,
    /// The peers.
    pub peers: Vec<CoopPeerConfig>,
    /// Announcement interval, ms.
    pub refresh_ms: u64,
    /// A secondary's check of its primary, ms.
    pub check_ms: u64,
    /// Check periods without hearing a peer before it is dead.
    pub dead_periods: u8,
    /// The epoch persisted last (0: none yet).
    pub persisted_epoch: u64,
    /// The first anti-replay number to use: above any used before a
    /// restart.
    pub seq_start: u64,
}
