//! What `show crypto gkm ks rekey` and `ks policy` show, read from the
//! group table and the rekey part.

use super::groups::{secs_left, GroupTable};
use super::rekey::Rekeys;
use crate::ack_policy::AckOption;
use crate::engine::Millis;

pub use gkm_model::status::{KekPolicyStatus, RekeyStatus};

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
        }
        .to_owned(),
        rekeys_sent: table.state(gi).map_or(0, |s| s.rekeys_sent),
        seq: g.keys.seq,
        gms: gms as u64,
        gms_at_risk: gms_at_risk as u64,
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
        teks: g.keys.teks.len() as u64,
        seq: g.keys.seq,
        transport: if unicast { "Unicast" } else { "Multicast" }.to_owned(),
        spi: hex::encode(kek.spi),
        management_algorithm: "disabled".to_owned(),
        encryption_algorithm: "AES".to_owned(),
        iv_len: kek.iv.len() as u32,
        key_size_bits: u32::from(kek.cipher.key_bits()),
        original_lifetime_secs: u64::from(kek.lifetime_secs),
        remaining_lifetime_secs: secs_left(state.kek_expires_at, now),
        time_to_rekey_secs: secs_left(next_rekey, now),
        sig_hash_algorithm: "SHA256".to_owned(),
        sig_algorithm: if kek.sig_algorithm == gkm_wire::consts::SigAlgorithm::RSA {
            "RSA"
        } else {
            "ECDSA-256"
        }
        .to_owned(),
        sig_key_bits: u32::from(kek.sig_key_bits),
        sig_size: u32::try_from(rekeys.signature_len()).unwrap_or(u32::MAX),
        sig_key_name: rekeys.key_name().to_owned(),
        acknowledgement: if unicast {
            g.rekey.ack.as_str()
        } else {
            "none"
        }
        .to_owned(),
    })
}
