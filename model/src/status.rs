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
