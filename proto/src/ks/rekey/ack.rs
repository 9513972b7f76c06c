//! ACK intake of the rekey part: an RFC 8263 ACK or a GKM unicast ACK,
//! opened with the KEK it names (the round's, a merge's, or the one GMs
//! hold), counted for the GM it comes from.

use std::net::SocketAddr;

use gkm_wire::consts::{AckRequested, ExchangeType};
use gkm_wire::IsakmpHeader;

use super::Rekeys;
use crate::ack::{open_rfc8263_ack, open_unicast_ack};
use crate::ack_policy::{accepts, AckKind};
use crate::ack_tracker::AckOutcome;
use crate::engine::Millis;
use crate::ks::events::{KsEvent, KsOutbox, Reject};
use crate::ks::groups::GroupTable;

impl Rekeys {
    /// An RFC 8263 ACK (exchange 35) or GKM unicast ACK (exchange 240).
    pub(crate) fn on_ack(
        &mut self,
        now: Millis,
        from: SocketAddr,
        header: &IsakmpHeader,
        data: &[u8],
        table: &GroupTable,
        out: &mut KsOutbox,
    ) {
        let kind = if header.exchange_type == ExchangeType::GROUPKEY_PUSH_ACK {
            AckKind::Rfc8263
        } else {
            AckKind::CiscoUnicast
        };
        let spi = header.kek_spi();
        let held = |gi: usize| {
            table
                .state(gi)
                .and_then(|s| s.push_kek.as_ref())
                .filter(|k| k.spi == spi)
        };
        let Some(gi) = (0..self.groups.len()).find(|gi| {
            self.groups
                .get(*gi)
                .and_then(|g| g.round.as_ref())
                .is_some_and(|r| r.kek.spi == spi || r.merge.iter().any(|(k, _)| k.spi == spi))
                || held(*gi).is_some()
        }) else {
            return out.refuse(
                from,
                Reject::UnknownExchange,
                None,
                Some(format!(
                    "{kind:?} ACK for KEK {}, which no group holds",
                    hex::encode(spi)
                )),
            );
        };
        let Some((option, group_id)) = table.get(gi).map(|g| (g.rekey.ack, g.keys.group_id)) else {
            return;
        };
        // ACKs go to the primary only (docs/COOP.md, "ACKs").
        if table.is_held(gi) {
            return out.refuse(
                from,
                Reject::UnknownExchange,
                None,
                Some(format!(
                    "{kind:?} ACK for group {group_id} at a COOP secondary: ACKs go to the primary"
                )),
            );
        }
        if let Err(e) = accepts(option, kind) {
            return out.refuse(
                from,
                Reject::AckNotAccepted,
                None,
                Some(format!("group {group_id}: {e}")),
            );
        }
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let in_round = g.round.as_ref().and_then(|r| {
            std::iter::once(&r.kek)
                .chain(r.merge.iter().map(|(k, _)| k))
                .find(|k| k.spi == spi)
        });
        let kek = match in_round.or_else(|| held(gi)) {
            Some(k) => k,
            None => return,
        };
        let opened = match kind {
            AckKind::Rfc8263 => open_rfc8263_ack(data, kek, AckRequested::REKEY_ACK_KEK_SHA256),
            AckKind::CiscoUnicast => open_unicast_ack(data, kek),
        };
        let ack = match opened {
            Ok(ack) => ack,
            Err(e) => {
                return out.refuse(
                    from,
                    Reject::BadAck,
                    None,
                    Some(format!(
                        "{kind:?} ACK for group {group_id}, KEK {}: {e}",
                        hex::encode(spi)
                    )),
                )
            }
        };
        let Some(id) = g.by_addr.get(&ack.gm) else {
            out.counters.acks_ignored += 1;
            return;
        };
        match g.tracker.acked(id, ack.seq) {
            AckOutcome::Recorded => {
                out.counters.acks_recorded += 1;
                if let Some(r) = g.round.as_mut().filter(|r| r.seq == ack.seq) {
                    r.acked += 1;
                    if r.acked == r.targets {
                        out.event(KsEvent::RekeyAcked {
                            group_id,
                            seq: r.seq,
                            gms: r.targets,
                            elapsed_ms: now.saturating_sub(r.prepared_at),
                        });
                    }
                }
            }
            AckOutcome::Ignored | AckOutcome::UnknownGm => out.counters.acks_ignored += 1,
        }
    }
}
