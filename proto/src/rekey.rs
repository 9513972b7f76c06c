//! Rekey policy and key state as the key server's configuration and its
//! caller see them: transport, ACK option and timing, why a rekey happens,
//! why one is refused, and the state that must survive a restart. The
//! rekey engine itself is the key server's rekey part (`ks::rekey`).

use crate::ack_policy::AckOption;
pub use crate::ack_tracker::MAX_MISSED_ACKS;
use crate::engine::Millis;
use crate::group::{GroupKeys, Kek, Tek};

pub use gkm_model::RekeyTransport;

/// A group's rekey policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Unicast or multicast.
    pub transport: RekeyTransport,
    /// `rekey acknowledgement {cisco | interoperable | any}` (unicast only).
    pub ack: AckOption,
    /// Rekey the TEKs this long before they expire.
    pub tek_rekey_before_ms: u64,
    /// Rekey the KEK this long before it expires.
    pub kek_rekey_before_ms: u64,
}

impl Default for RekeyPolicy {
    /// Unicast, 2 retransmissions 10 s apart, `cisco` ACKs, rekeys 90 s
    /// before expiry.
    fn default() -> Self {
        Self {
            transport: RekeyTransport::default(),
            ack: AckOption::default(),
            tek_rekey_before_ms: u64::from(gkm_model::policy::REKEY_BEFORE_SECS) * 1000,
            kek_rekey_before_ms: u64::from(gkm_model::policy::REKEY_BEFORE_SECS) * 1000,
        }
    }
}

/// Why a rekey happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RekeyReason {
    /// The TEKs are about to expire.
    TekExpiry,
    /// The KEK is about to expire (new KEK, same TEKs).
    KekExpiry,
    /// An operator asked for a TEK rekey now.
    Manual,
    /// "rekey replace": new KEK and TEKs now, the old TEKs deleted at once
    /// (used when GMs must see a policy change, e.g. CMD <-> IP-D3P).
    Replace,
}

impl core::fmt::Display for RekeyReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::TekExpiry => "tek-expiry",
            Self::KekExpiry => "kek-expiry",
            Self::Manual => "manual",
            Self::Replace => "replace",
        })
    }
}

/// Why a rekey request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RekeyError {
    /// No such group.
    #[error("no group with identity {0}")]
    UnknownGroup(u32),
    /// The group has no KEK, so it cannot be rekeyed (registration only).
    #[error("group {0} has no KEK: it cannot be rekeyed")]
    NoKek(u32),
    /// The KS has no rekey-signing key.
    #[error("the key server has no rekey-signing key")]
    NoSigner,
    /// SEQ would wrap: the group must be re-created.
    #[error("group {0}: the rekey SEQ is exhausted")]
    SeqExhausted(u32),
    /// The key server is a COOP secondary of the group: only its primary
    /// rekeys (docs/COOP.md).
    #[error("group {0}: this key server is a COOP secondary; only the primary rekeys")]
    NotPrimary(u32),
    /// `rekey_persisted` named a SEQ that is not the prepared one.
    #[error("group {group}: SEQ {seq} is not the prepared rekey")]
    NotPrepared {
        /// Group.
        group: u32,
        /// SEQ given.
        seq: u32,
    },
}

/// A group's key state as it must survive a restart: the caller persists
/// it on `KsEvent::RekeyPrepared` (before anything is sent) and on
/// `KsEvent::RekeySent`, and hands it back in `KsGroup::resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// Current keys; `keys.seq` is the last SEQ used.
    pub keys: GroupKeys,
    /// The KEK GMs hold now: the next GROUPKEY-PUSH is encrypted under it.
    pub push_kek: Option<Kek>,
    /// Earlier TEKs still valid for receiving, with their expiry.
    pub previous_teks: Vec<(Tek, Millis)>,
    /// When the current TEKs expire.
    pub tek_expires_at: Millis,
    /// When the current KEK expires.
    pub kek_expires_at: Millis,
    /// Rekeys sent so far (`show crypto gkm ks rekey`).
    pub rekeys_sent: u64,
}
