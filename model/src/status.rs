//! What `show crypto gkm ks rekey` and `show crypto gkm ks policy` show
//! for a group: computed by the key-server engine, served by the REST
//! API, rendered by the dashboard and gkmctl.

use serde::{Deserialize, Serialize};

/// What `show crypto gkm ks rekey` shows for a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RekeyStatus {
    /// `Acknowledgement Type In-Use`: Cisco, Interoperable, Any, or None (multicast).
    pub ack_type_in_use: String,
    /// `Number of Rekeys sent`.
    pub rekeys_sent: u64,
    /// SEQ of the last rekey (the group's current SEQ).
    pub seq: u32,
    /// GMs registered to this KS and tracked.
    pub gms: u64,
    /// GMs one missed rekey away from removal.
    pub gms_at_risk: u64,
}

/// What `show crypto gkm ks policy` shows for a group's KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KekPolicyStatus {
    /// Number of TEKs.
    pub teks: u64,
    /// Current SEQ.
    pub seq: u32,
    /// `Unicast` or `Multicast`.
    pub transport: String,
    /// KEK SPI, 32 hex digits.
    pub spi: String,
    /// Management algorithm.
    pub management_algorithm: String,
    /// Encryption algorithm, e.g. `AES`.
    pub encryption_algorithm: String,
    /// IV length in octets.
    pub iv_len: u32,
    /// Key size in bits.
    pub key_size_bits: u32,
    /// Original lifetime, seconds.
    pub original_lifetime_secs: u64,
    /// Remaining lifetime, seconds.
    pub remaining_lifetime_secs: u64,
    /// Seconds until the next scheduled rekey (TEK or KEK, whichever first).
    pub time_to_rekey_secs: u64,
    /// Signature hash algorithm.
    pub sig_hash_algorithm: String,
    /// Signature algorithm.
    pub sig_algorithm: String,
    /// Signature key length, bits.
    pub sig_key_bits: u32,
    /// Signature size, octets.
    pub sig_size: u32,
    /// Signature key name.
    pub sig_key_name: String,
    /// `cisco`, `interoperable`, `any`, or `none` (multicast).
    pub acknowledgement: String,
}

/// What `show crypto gkm ks coop` shows for a group with cooperative key
/// servers (the fields of the vendor's `show crypto gdoi ks coop detail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoopView {
    /// `Local Address`.
    pub local_address: String,
    /// `Local Priority`.
    pub local_priority: u8,
    /// `Local KS Role`: `Primary` or `Secondary`.
    pub local_role: String,
    /// `Local KS version` (GDOI version, `major.minor.mini`).
    pub local_version: String,
    /// The epoch this key server holds (the primary's term).
    pub epoch: u64,
    /// The primary it follows (itself when primary), if one is known.
    pub primary: Option<String>,
    /// `Primary Refresh Policy Time`, seconds.
    pub refresh_secs: u64,
    /// `Sec Primary Periodic Time`, seconds.
    pub check_secs: u64,
    /// Check periods without a peer before it is dead.
    pub dead_periods: u8,
    /// `Remaining Time`: seconds to the election's next timer.
    pub remaining_secs: u64,
    /// `Antireplay Sequence Number`: the next one this key server sends.
    pub antireplay_seq: u64,
    /// `Invalid ANN PST recvd`: announcements dropped as replayed.
    pub invalid_ann_received: u64,
    /// `New GM Temporary Blocking Enforced?`: whether new GMs are refused
    /// (never: a secondary serves registrations; docs/COOP.md).
    pub new_gm_blocking: bool,
    /// Announcements dropped for not coming from a configured peer.
    pub not_a_peer: u64,
    /// The `%GDOI-3-COOP_CONFIG_MISMATCH` warnings raised now (this
    /// secondary's options differ from its primary's), exactly as logged.
    pub mismatches: Vec<String>,
    /// `Peer Sessions`.
    pub peers: Vec<CoopPeerView>,
    /// GMs in this key server's GM database sync journal (docs/COOP.md,
    /// "GM database sync").
    #[serde(default)]
    pub gm_journal: u64,
    /// GM sync messages from peers not taken for a gap (resent).
    #[serde(default)]
    pub gm_sync_gaps: u64,
    /// COOP messages this key server refused, by reason (`no_sa`,
    /// `undecryptable`, `bad_hash`, `malformed`, `unknown_group`,
    /// `not_a_peer`, `replayed`, `address_mismatch`,
    /// `epoch_out_of_range`, `part_out_of_order`), all groups together:
    /// most are refused before their group is known.
    #[serde(default)]
    pub refused: std::collections::BTreeMap<String, u64>,
}

/// One `Session N:` of [`CoopView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoopPeerView {
    /// `Peer Address` (with the port).
    pub address: String,
    /// `Peer Version`, from its announcements (`-` before the first).
    pub version: String,
    /// `Peer Priority`, from its announcements.
    pub priority: Option<u8>,
    /// `Peer KS Role`, from its announcements.
    pub role: Option<String>,
    /// `Peer KS Status`: `Alive` or `Dead`.
    pub status: String,
    /// `Antireplay Sequence Number`: the last taken from it.
    pub antireplay_seq: Option<u64>,
    /// The epoch it last announced.
    pub epoch: Option<u64>,
    /// `IKE status`: `Established` when this key server's phase 1 SA to it
    /// is up.
    pub ike_status: String,
    /// `Counters:`.
    pub counters: CoopCounters,
    /// GM database sync: the generation of the peer's journal held here,
    /// and of this key server's journal the peer acknowledged.
    #[serde(default)]
    pub gm_sync_held: u64,
    /// See `gm_sync_held`.
    #[serde(default)]
    pub gm_sync_acked: u64,
}

/// The `Counters:` of one COOP peer session, as the key server engine
/// counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoopCounters {
    /// `Ann msgs sent`.
    pub ann_sent: u64,
    /// `Ann msgs sent with reply request`.
    #[serde(default)]
    pub ann_sent_reply_request: u64,
    /// `Ann msgs recv`: announcements taken from the peer.
    pub ann_received: u64,
    /// `Ann msgs recv with reply request`.
    #[serde(default)]
    pub ann_received_reply_request: u64,
    /// `Packet sent drops`: announcements replaced before the SA was up.
    pub send_drops: u64,
    /// `Packet Recv drops`: the peer's messages the election refused.
    pub recv_drops: u64,
    /// `Total bytes sent` (main mode and announcements).
    pub bytes_sent: u64,
    /// `Total bytes recv` (announcements taken).
    pub bytes_received: u64,
    /// Phase 1 SAs this key server established to the peer.
    pub sas_established: u64,
}
