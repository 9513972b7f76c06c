//! What the key server tells its caller: events, refusals, counters, and
//! the outbox they travel in with the datagrams to send.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use gkm_wire::consts::NotifyType;
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};
use zeroize::Zeroizing;

use super::config::Credential;
use crate::engine::{GmClass, Millis, Outbox, Transmit};
use crate::rekey::RekeyReason;

/// What a registration told the KS about a GM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmRecord {
    /// Its phase 1 identity.
    pub gm_identity: String,
    /// Source address and port.
    pub addr: SocketAddr,
    /// Group identity number.
    pub group_id: u32,
    /// Class.
    pub class: GmClass,
    /// Reported version (GKM VID), if any.
    pub version: Option<GdoiVersion>,
    /// Reported features.
    pub features: FeatureBits,
    /// Sender IDs granted.
    pub sids: Vec<u32>,
    /// Registration time.
    pub registered_at: Millis,
}

/// Why the KS refused or dropped something; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not a well-formed ISAKMP message.
    Malformed,
    /// No acceptable proposal.
    NoProposal,
    /// Aggressive mode or another exchange GKM does not serve.
    UnsupportedExchange,
    /// No PSK for the peer, wrong PSK, bad signature.
    AuthenticationFailed,
    /// Untrusted, expired or mismatching certificate.
    InvalidCertificate,
    /// A HASH payload of a protected exchange does not verify.
    InvalidHash,
    /// The group does not exist.
    UnknownGroup,
    /// The GM is not authorised for the group.
    Unauthorized,
    /// The GM's phase 1 credential is not one the group accepts (another
    /// group's PSK, a keyring entry for a group with its own PSK, a
    /// certificate for a PSK group or a PSK for a certificate group).
    CredentialNotAccepted,
    /// A GROUPKEY-PULL over a phase 1 SA with a legacy suite (SHA-1, MODP
    /// 1024 or 1536) for a group without `legacy_phase1`.
    LegacyPhase1,
    /// A message for an exchange the KS does not know or has finished.
    UnknownExchange,
    /// A repeated message; the cached answer was resent.
    Retransmit,
    /// Dropped by the half-open caps.
    HalfOpenLimit,
    /// A half-open exchange whose initiator had not yet proved its address
    /// (no message 3) was forgotten to make room for a newer one at the
    /// global half-open cap.
    HalfOpenEvicted,
    /// A rekey ACK of a kind the group's `rekey acknowledgement` option
    /// does not accept (seed Table 2).
    AckNotAccepted,
    /// A rekey ACK that does not verify or parse.
    BadAck,
    /// A registration at a COOP secondary that has not yet taken its
    /// primary's keys ("New GM Temporary Blocking Enforced?: Yes").
    CoopBlocking,
}

/// Something the caller should record or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KsEvent {
    /// Phase 1 completed.
    Phase1Established {
        /// Peer.
        peer: SocketAddr,
        /// Its phase 1 identity.
        peer_identity: String,
        /// What authenticated it.
        credentials: Vec<Credential>,
        /// The authentication method (PSK, RSA or ECDSA-256 signatures).
        method: crate::ike::AuthKind,
        /// Milliseconds from its main mode message 1 to message 6 sent.
        elapsed_ms: u64,
    },
    /// Phase 1 keys for the key log (only with `export_keys`): Wireshark's
    /// `ikev1_decryption_table` wants the initiator cookie and the cipher key.
    Phase1Keys {
        /// Initiator cookie.
        initiator_cookie: [u8; 8],
        /// The phase 1 cipher key.
        enc_key: Zeroizing<Vec<u8>>,
    },
    /// A GROUPKEY-PULL completed: milliseconds from the GM's message 1 to
    /// message 4 sent (phase 1 excluded: `Phase1Established` times that).
    /// Followed by the GM's `Registered`.
    PullCompleted {
        /// Group.
        group_id: u32,
        /// Milliseconds.
        elapsed_ms: u64,
    },
    /// A GM registered (PULL message 4 sent).
    Registered(GmRecord),
    /// A rekey is prepared: persist [`KeyServer::group_state`], then call
    /// [`KeyServer::rekey_persisted`]. Nothing is sent before that.
    RekeyPrepared {
        /// Group.
        group_id: u32,
        /// Its new SEQ.
        seq: u32,
        /// Why.
        reason: RekeyReason,
    },
    /// A GROUPKEY-PUSH went out (persist the group state again: GMs now
    /// hold the new KEK).
    RekeySent {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// Why.
        reason: RekeyReason,
        /// Datagrams queued (one per GM, or one multicast).
        datagrams: usize,
    },
    /// Every GM a unicast rekey was sent to has acknowledged it.
    RekeyAcked {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// GMs.
        gms: usize,
        /// From preparing the rekey to the last ACK.
        elapsed_ms: u64,
    },
    /// The ACK wait of a unicast rekey ended.
    RekeyRoundClosed {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// GMs that acknowledged.
        acked: usize,
        /// GMs that missed it (and stay).
        missed: usize,
        /// GMs removed for their third consecutive miss.
        removed: usize,
    },
    /// A GM missed its third consecutive unicast rekey and was removed
    /// from the GM database; it gets no rekeys until it registers again.
    GmRemoved {
        /// Group.
        group_id: u32,
        /// Its phase 1 identity.
        gm_identity: String,
        /// Its address.
        addr: SocketAddr,
        /// The SEQ of the rekey it missed last.
        seq: u32,
    },
    /// Cooperative key servers: an election outcome, a peer SA, a dropped
    /// announcement (docs/COOP.md).
    Coop(CoopEvent),
    /// A message was refused; `notify` says what was answered, if anything.
    Rejected {
        /// Peer.
        peer: SocketAddr,
        /// Why.
        reason: Reject,
        /// Notification sent back.
        notify: Option<NotifyType>,
        /// What in the message was refused, with its value where a peer
        /// can act on it (e.g. `sa.situation: Unsupported`, `offered
        /// 3DES-CBC/SHA/MODP-1024`); for the log line only: counters count
        /// `reason`, never this.
        detail: Option<String>,
    },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KsCounters {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Phase 1 SAs established.
    pub phase1_established: u64,
    /// Registrations completed.
    pub registrations: u64,
    /// Refusals by reason.
    pub rejects: HashMap<Reject, u64>,
    /// Rekeys sent (all groups).
    pub rekeys_sent: u64,
    /// GROUPKEY-PUSH datagrams queued, retransmissions included.
    pub push_datagrams: u64,
    /// GROUPKEY-PUSH retransmissions.
    pub push_retransmits: u64,
    /// ACKs recorded (for the last SEQ sent to that GM).
    pub acks_recorded: u64,
    /// Valid ACKs not recorded (late, duplicate, unknown GM).
    pub acks_ignored: u64,
    /// GMs removed after 3 consecutive missed rekeys.
    pub gms_removed: u64,
}

impl KsCounters {
    /// The count for one reason.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejects.get(&r).copied().unwrap_or(0)
    }
}

/// The key server's outbox: datagrams and events for the caller, and the
/// counters every part adds to.
#[derive(Debug, Default)]
pub(crate) struct KsOutbox {
    queue: Outbox<KsEvent>,
    /// Counters.
    pub(crate) counters: KsCounters,
}

impl KsOutbox {
    pub(crate) fn transmit(&mut self, t: Transmit) {
        self.queue.transmit(t);
    }

    pub(crate) fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.queue.send(to, payload);
    }

    pub(crate) fn event(&mut self, e: KsEvent) {
        self.queue.event(e);
    }

    /// Counts a refusal and reports it.
    pub(crate) fn reject(&mut self, peer: SocketAddr, reason: Reject, notify: Option<NotifyType>) {
        self.refuse(peer, reason, notify, None);
    }

    /// As [`Self::reject`], saying what in the message was refused.
    pub(crate) fn refuse(
        &mut self,
        peer: SocketAddr,
        reason: Reject,
        notify: Option<NotifyType>,
        detail: Option<String>,
    ) {
        *self.counters.rejects.entry(reason).or_insert(0) += 1;
        self.queue.event(KsEvent::Rejected {
            peer,
            reason,
            notify,
            detail,
        });
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.poll_transmit()
    }

    pub(crate) fn poll_event(&mut self) -> Option<KsEvent> {
        self.queue.poll_event()
    }
}

/// A wire error as a refusal's detail: the field and what is wrong with it.
pub(crate) fn wire_detail(e: gkm_wire::Error) -> Option<String> {
    Some(format!("{}: {:?}", e.field, e.kind))
}

/// Why a COOP message was dropped (each is counted, none changes
/// anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CoopDrop {
    /// Not over an established phase 1 SA from that address.
    NoSa,
    /// It does not decrypt under the SA.
    Undecryptable,
    /// Its HASH does not verify.
    BadHash,
    /// The announcement does not parse (the field named).
    Malformed(String),
    /// A group this key server has no COOP configuration for.
    UnknownGroup(u32),
    /// The SA's credential is not this group's pair PSK with that peer,
    /// or the SA's peer is not a configured peer of the group.
    NotAPeer,
    /// The election refused it (replayed, address mismatch, epoch out of
    /// range).
    Election(crate::coop::election::Dropped),
    /// A later part of an announcement that is not the next part of the
    /// announcement last taken from that peer (replayed or reordered).
    PartOutOfOrder,
}

impl CoopDrop {
    /// The reason's name, as counted (`show crypto gkm ks coop`, the API).
    pub fn kind(&self) -> &'static str {
        use crate::coop::election::Dropped;
        match self {
            Self::NoSa => "no_sa",
            Self::Undecryptable => "undecryptable",
            Self::BadHash => "bad_hash",
            Self::Malformed(_) => "malformed",
            Self::UnknownGroup(_) => "unknown_group",
            Self::NotAPeer | Self::Election(Dropped::NotAPeer) => "not_a_peer",
            Self::Election(Dropped::Replayed) => "replayed",
            Self::Election(Dropped::AddressMismatch) => "address_mismatch",
            Self::Election(Dropped::EpochOutOfRange) => "epoch_out_of_range",
            Self::PartOutOfOrder => "part_out_of_order",
        }
    }
}

/// What the COOP part tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoopEvent {
    /// Persist `epoch` for the group, then call
    /// [`crate::ks::KeyServer::coop_epoch_persisted`].
    PersistEpoch {
        /// Group.
        group_id: u32,
        /// Epoch.
        epoch: u64,
    },
    /// This key server's role in the group changed.
    RoleChanged {
        /// Group.
        group_id: u32,
        /// The new role.
        role: crate::coop::election::Role,
        /// Its epoch.
        epoch: u64,
        /// The primary now followed (this key server when primary).
        primary: Option<IpAddr>,
    },
    /// The group's keys changed without a rekey of this key server's own:
    /// a secondary took its primary's state, or a key server raised its
    /// SEQ above what its peers announced (a takeover, a merge). Persist
    /// [`crate::ks::KeyServer::group_state`].
    PersistGroupState {
        /// Group.
        group_id: u32,
        /// Its SEQ now.
        seq: u32,
        /// Taken from the primary (else raised by this key server).
        adopted: bool,
    },
    /// A GM record learned from a peer (the GM database sync): the GM is
    /// in this key server's GM database now; persist its row.
    GmLearned(GmRecord),
    /// This primary made another step down: the whole group must be
    /// rekeyed.
    Merged {
        /// Group.
        group_id: u32,
        /// The primary that stepped down.
        with: IpAddr,
    },
    /// The phase 1 SA to a peer came up, or main mode to it failed.
    PeerSa {
        /// Group.
        group_id: u32,
        /// Peer.
        peer: SocketAddr,
        /// None: up; Some: why it failed.
        failed: Option<&'static str>,
    },
    /// This secondary's configuration of an option every key server must
    /// share differs from its primary's announcement (`raised`), or
    /// matches again (not `raised`).
    Mismatch {
        /// Group.
        group_id: u32,
        /// Which option.
        kind: CoopMismatch,
        /// Raised, or cleared.
        raised: bool,
    },
    /// A COOP message was dropped.
    Dropped {
        /// Where it came from.
        from: SocketAddr,
        /// Why.
        reason: CoopDrop,
    },
}

/// An option every key server of a group must share (docs/FEATURES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CoopMismatch {
    /// IP-D3P on or off, or its window.
    D3p,
    /// The `rekey acknowledgement` option.
    RekeyAck,
    /// The rekey-signing key (GKM's own check: GMs verify rekeys with the
    /// primary's public key, so a secondary that took over with another
    /// key would have every rekey refused).
    RekeySigningKey,
}

impl CoopMismatch {
    /// The seed's syslog text, exactly (the signing key's is GKM's, in the
    /// same form).
    pub fn text(self) -> &'static str {
        match self {
            Self::D3p => "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched",
            Self::RekeyAck => "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: Interoperable Rekey ACK configuration between Primary KS and Secondary KS are mismatched",
            Self::RekeySigningKey => "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: Rekey signing key between Primary KS and Secondary KS are mismatched",
        }
    }
}
