//! What `show crypto gkm ks rekey` and `ks policy` show, read from the
//! group table and the rekey part.

use super::groups::{secs_left, GroupTable};
use super::rekey::Rekeys;
use crate::ack_policy::AckOption;
use crate::engine::Millis;

/// What `show crypto gkm ks rekey` shows for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStatus {
    /// `Acknowledgement Type In-Use`: Cisco, Interoperable, Any, or None (multicast).
    pub ack_type_in_use: &'static str,
    /// `Number of Rekeys sent`.
    pub rekeys_sent: u64,
    /// SEQ of the last rekey (the group's current SEQ).
    pub seq: u32,
    /// GMs registered and tracked.
    pub gms: usize,
    /// GMs one miss away from removal.
    pub gms_at_risk: usize,
}

/// What `show crypto gkm ks policy` shows for a group's KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekPolicyStatus {
    /// Number of TEKs.
    pub teks: usize,
    /// Current SEQ.
    pub seq: u32,
    /// `Unicast` or `Multicast`.
    pub transport: &'static str,
    /// KEK SPI, 16 octets.
    pub spi: [u8; 16],
    /// Management algorithm.
    pub management_algorithm: &'static str,
    /// Encryption algorithm, e.g. `AES`.
    pub encryption_algorithm: &'static str,
    /// IV length in octets.
    pub iv_len: usize,
    /// Key size in bits.
    pub key_size_bits: u16,
    /// Original lifetime in seconds.
    pub original_lifetime_secs: u32,
    /// Remaining lifetime in seconds.
    pub remaining_lifetime_secs: u64,
    /// Seconds until the next scheduled rekey (TEK or KEK, whichever first).
    pub time_to_rekey_secs: u64,
    /// Signature hash algorithm.
    pub sig_hash_algorithm: &'static str,
    /// Signature algorithm.
    pub sig_algorithm: &'static str,
    /// Signature key length in bits.
    pub sig_key_bits: u16,
    /// Signature size in octets.
    pub sig_size: usize,
    /// Signature key name.
    pub sig_key_name: String,
    /// `cisco`, `interoperable`, `any`, or `none` for multicast.
    pub acknowledgement: &'static str,
}

/// `show crypto gkm ks rekey` for group `gi`.
pub(crate) fn rekey_status(table: &GroupTable, rekeys: &Rekeys, gi: usize) -> Option<RekeyStatus> {
    let g = table.get(gi)?;
    let (gms, gms_at_risk) = rekeys.gm_counts(gi);
    Some(RekeyStatus {
        ack_type_in_use: if g.rekey.transport.is_unicast() {
            match g.rekey.ack {
                AckOption::Cisco => "Cisco",
                AckOption::Interoperable => "Interoperable",
                AckOption::Any => "Any",
            }
        } else {
            "None"
        },
        rekeys_sent: table.state(gi).map_or(0, |s| s.rekeys_sent),
        seq: g.keys.seq,
        gms,
        gms_at_risk,
    })
}

/// `show crypto gkm ks policy` (KEK part) for group `gi`.
pub(crate) fn kek_policy_status(
    table: &GroupTable,
    rekeys: &Rekeys,
    gi: usize,
    now: Millis,
) -> Option<KekPolicyStatus> {
    let g = table.get(gi)?;
    let state = table.state(gi)?;
    let kek = g.keys.kek.as_ref()?;
    let unicast = g.rekey.transport.is_unicast();
    let next_rekey = state
        .tek_expires_at
        .saturating_sub(g.rekey.tek_rekey_before_ms)
        .min(
            state
                .kek_expires_at
                .saturating_sub(g.rekey.kek_rekey_before_ms),
        );
    Some(KekPolicyStatus {
        teks: g.keys.teks.len(),
        seq: g.keys.seq,
        transport: if unicast { "Unicast" } else { "Multicast" },
        spi: kek.spi,
        management_algorithm: "disabled",
        encryption_algorithm: "AES",
        iv_len: kek.iv.len(),
        key_size_bits: kek.cipher.key_bits(),
        original_lifetime_secs: kek.lifetime_secs,
        remaining_lifetime_secs: secs_left(state.kek_expires_at, now),
        time_to_rekey_secs: secs_left(next_rekey, now),
        sig_hash_algorithm: "SHA256",
        sig_algorithm: if kek.sig_algorithm == gkm_wire::consts::SigAlgorithm::RSA {
            "RSA"
        } else {
            "ECDSA-256"
        },
        sig_key_bits: kek.sig_key_bits,
        sig_size: rekeys.signature_len(),
        sig_key_name: rekeys.key_name().to_owned(),
        acknowledgement: if unicast {
            match g.rekey.ack {
                AckOption::Cisco => "cisco",
                AckOption::Interoperable => "interoperable",
                AckOption::Any => "any",
            }
        } else {
            "none"
        },
    })
}
