//! What a GROUPKEY-PULL gives the group member: its group's keys from
//! message 2's SA and message 4's SEQ and KD.

use gkm_wire::consts::{AckRequested, PayloadType};
use gkm_wire::payload::{RawPayload, Sa, SaLayout};
use gkm_wire::Payload;

use super::group::d3p_window_of;
use crate::group::GroupKeys;

/// A completed registration's contents.
pub(crate) struct Registration {
    /// The group's keys and SEQ.
    pub keys: GroupKeys,
    /// Sender IDs granted.
    pub sids: Vec<u32>,
    /// KEK_ACK_REQUESTED of the KEK policy.
    pub ack_requested: Option<AckRequested>,
    /// The IP-D3P window the GAP sets.
    pub d3p: Option<u32>,
}

/// The keys of group `group_id` from message 4's payloads (`raws`: SEQ,
/// KD) and message 2's plaintext (`sa_plain`, holding the SA).
pub(crate) fn registration(
    group_id: u32,
    raws: &[RawPayload<'_>],
    sa_plain: &[u8],
) -> Result<Registration, &'static str> {
    let (mut seq, mut kd) = (0, None);
    for r in raws {
        match Payload::parse(r.payload_type, r.body, SaLayout::Gdoi) {
            Ok(Payload::Seq(s)) => seq = s.0,
            Ok(Payload::KeyDownload(k)) => kd = Some(k),
            _ => {}
        }
    }
    let sa = gkm_wire::payload::PayloadIter::new(PayloadType::HASH, sa_plain)
        .filter_map(Result::ok)
        .find(|r| r.payload_type == PayloadType::SA)
        .and_then(|r| match Sa::parse(r.body, SaLayout::Gdoi) {
            Ok(Sa::Gdoi(g)) => Some(g),
            _ => None,
        });
    let (Some(sa), Some(kd)) = (sa, kd) else {
        return Err("SA or KD missing");
    };
    // The reason names the field (`SA TEK transform ESP_3DES (RFC 8221:
    // MUST NOT)`), not a bare "inconsistent policy".
    let (keys, sids) = GroupKeys::from_pull(group_id, &sa, &kd, seq)
        .map_err(|crate::group::GroupError::Inconsistent(m)| m)?;
    Ok(Registration {
        keys,
        sids,
        ack_requested: sa.kek.as_ref().and_then(|k| k.policy.ack_requested),
        d3p: d3p_window_of(sa.gap.as_ref()),
    })
}
