//! The group member's group (RFC 6407 section 4; seed sections 2-3): the
//! keys from registration and each rekey. [`GmGroup::apply_push`] opens
//! and verifies a GROUPKEY-PUSH under the KEK it holds, requires a greater
//! SEQ, applies Delete, SA and KD, honours ATD (send on a new TEK only
//! after it) and DTD (keep an old TEK for receiving until then), and says
//! how to acknowledge; the engine sends the ACK.

use std::net::{IpAddr, SocketAddr};

use gkm_wire::consts::{AckRequested, GdoiProtocol};
use gkm_wire::payload::{GdoiSa, KeyDownload, KeyPacket, Sa, SaLayout};
use gkm_wire::Payload;

use crate::ack::{seal_rfc8263_ack, seal_unicast_ack};
use crate::crypto::RekeyVerifier;
use crate::engine::Millis;
use crate::group::{GroupKeys, Kek, Tek};
use crate::push::{open_push, MalformedPush, PushError};

/// A TEK as the GM holds it, with when it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledTek {
    /// The key and its policy.
    pub tek: Tek,
    /// Outbound use starts here (ATD); inbound use starts at once.
    pub send_from: Millis,
    /// Removed at this time (lifetime, or DTD for a replaced TEK).
    pub expires_at: Millis,
}

/// The GM's rekey state for its group.
#[derive(Debug, Clone)]
pub struct GmGroup {
    /// KS the keys came from.
    pub ks: SocketAddr,
    /// KEK: pushes are encrypted under it.
    pub kek: Option<Kek>,
    verifier: Option<RekeyVerifier>,
    /// KEK_ACK_REQUESTED from the latest KEK policy.
    pub ack_requested: Option<AckRequested>,
    /// Last SEQ accepted (from registration, then each push).
    pub last_seq: u32,
    /// TEKs, oldest first.
    pub teks: Vec<InstalledTek>,
    /// The IP-D3P window (ms) the KS's GAP set, from registration, then
    /// from each rekey (a GAP without it turns IP-D3P off).
    pub d3p_window_ms: Option<u32>,
}

/// The GM's rekey counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GmCounters {
    /// Pushes accepted.
    pub pushes_accepted: u64,
    /// Pushes refused as malformed or truncated.
    pub pushes_malformed: u64,
    /// Pushes for a KEK the GM does not hold.
    pub pushes_wrong_kek: u64,
    /// Pushes whose signature failed.
    pub pushes_bad_signature: u64,
    /// Replayed or stale pushes (SEQ not greater).
    pub pushes_replayed: u64,
    /// Pushes that arrived before registration.
    pub pushes_unregistered: u64,
    /// ACKs sent.
    pub acks_sent: u64,
}

impl GmGroup {
    /// The KS's rekey-signing key, as delivered at registration or in the
    /// last rekey.
    pub fn verifier(&self) -> Option<&RekeyVerifier> {
        self.verifier.as_ref()
    }
}

impl GmCounters {
    /// Counts a refused push.
    pub(crate) fn count(&mut self, e: PushError) {
        match e {
            PushError::Malformed(_) | PushError::Build => self.pushes_malformed += 1,
            PushError::WrongKek => self.pushes_wrong_kek += 1,
            PushError::BadSignature => self.pushes_bad_signature += 1,
            PushError::Replay { .. } => self.pushes_replayed += 1,
        }
    }
}

/// The IP-D3P window a KS's GAP carries: only with the one timestamp type
/// GKM knows (POSIX-TIME-MSEC); another type cannot be judged, so it
/// counts as no IP-D3P rather than a guessed window.
pub(crate) fn d3p_window_of(gap: Option<&gkm_wire::payload::Gap<'_>>) -> Option<u32> {
    let g = gap?;
    (g.d3p_type == Some(gkm_wire::consts::D3pType::POSIX_TIME_MSEC))
        .then_some(g.d3p_window_msec)
        .flatten()
}

fn verifier_for(kek: Option<&Kek>) -> Result<Option<RekeyVerifier>, &'static str> {
    kek.map(|k| RekeyVerifier::new(k.sig_algorithm, &k.sig_key_spki))
        .transpose()
        .map_err(|_| "the rekey-signing key cannot be used")
}

/// A push the group member accepted: what changed, and the ACK to send
/// (under the KEK that protected the push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptedPush {
    /// Its SEQ.
    pub seq: u32,
    /// TEK SPIs installed.
    pub installed: Vec<u32>,
    /// TEK SPIs deleted.
    pub deleted: Vec<u32>,
    /// The KEK rolled.
    pub new_kek: bool,
    /// The KD's KEK packet carried the old KEK's SPI and was taken as the
    /// new SA KEK's (the rollover form a real peer sends).
    pub kek_packet_relabelled: bool,
    /// The ACK, if one is due: its octets, and whether the push came by
    /// multicast (its ACK is jittered).
    pub ack: Option<(Vec<u8>, bool)>,
}

impl GmGroup {
    /// The group from a completed registration; the SEQ restarts from the KS's.
    pub(crate) fn registered(
        now: Millis,
        ks: SocketAddr,
        keys: &GroupKeys,
        ack_requested: Option<AckRequested>,
        d3p_window_ms: Option<u32>,
    ) -> Result<Self, &'static str> {
        let verifier = verifier_for(keys.kek.as_ref())?;
        let teks = keys
            .teks
            .iter()
            .map(|t| InstalledTek {
                tek: t.clone(),
                send_from: now,
                expires_at: now + u64::from(t.lifetime_secs) * 1000,
            })
            .collect();
        Ok(Self {
            ks,
            kek: keys.kek.clone(),
            verifier,
            ack_requested,
            last_seq: keys.seq,
            teks,
            d3p_window_ms,
        })
    }

    /// When to register again, `before_ms` ahead of the last TEK's expiry,
    /// unless a rekey comes first.
    pub(crate) fn renew_at(&self, now: Millis, before_ms: u64) -> Millis {
        let last = self
            .teks
            .iter()
            .map(|t| t.expires_at)
            .max()
            .unwrap_or(now + 3_600_000);
        last.saturating_sub(before_ms).max(now + 1000)
    }

    /// The TEK to send on at `now`: the newest one whose ATD has passed.
    pub(crate) fn outbound_tek(&self, now: Millis) -> Option<&Tek> {
        self.teks
            .iter()
            .filter(|t| t.send_from <= now && now < t.expires_at)
            .max_by_key(|t| t.expires_at)
            .map(|t| &t.tek)
    }

    /// TEKs accepted for receiving at `now`.
    pub(crate) fn inbound_teks(&self, now: Millis) -> impl Iterator<Item = &Tek> {
        self.teks
            .iter()
            .filter(move |t| now < t.expires_at)
            .map(|t| &t.tek)
    }

    /// Forgets TEKs past their expiry.
    pub(crate) fn expire(&mut self, now: Millis) {
        self.teks.retain(|t| now < t.expires_at);
    }

    /// Opens, verifies and applies a GROUPKEY-PUSH of group `group_id`; an
    /// ACK from `ack_address` is made when the KEK policy asks for one (or
    /// the push came by unicast). A refused push changes nothing.
    pub(crate) fn apply_push(
        &mut self,
        now: Millis,
        group_id: u32,
        data: &[u8],
        ack_address: IpAddr,
    ) -> Result<AcceptedPush, PushError> {
        let (Some(kek), Some(verifier)) = (self.kek.clone(), self.verifier.as_ref()) else {
            return Err(PushError::WrongKek);
        };
        let opened = open_push(data, &kek, verifier, self.last_seq)?;
        let seq = opened.seq;
        let (mut sa, mut kd, mut deleted) =
            (None::<GdoiSa<'_>>, None::<KeyDownload<'_>>, Vec::new());
        for raw in opened.payloads() {
            match Payload::parse(raw.payload_type, raw.body, SaLayout::Gdoi) {
                Ok(Payload::Sa(Sa::Gdoi(s))) => sa = Some(s),
                Ok(Payload::KeyDownload(k)) => kd = Some(k),
                Ok(Payload::Delete(d)) if d.protocol_id == GdoiProtocol::IPSEC_ESP.0 => {
                    deleted.extend(
                        d.spis
                            .chunks_exact(4)
                            .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes)),
                    );
                }
                Ok(_) => {}
                Err(e) => return Err(PushError::Malformed(MalformedPush::Payload(e))),
            }
        }
        let Some(sa) = sa else {
            return Err(PushError::Malformed(MalformedPush::Policy("no SA payload")));
        };
        let Some(mut kd) = kd else {
            return Err(PushError::Malformed(MalformedPush::Policy("no KD payload")));
        };
        let kek_packet_relabelled = relabel_rollover_kek_packet(&sa, &mut kd, &kek.spi)?;
        let (keys, _) = GroupKeys::from_pull(group_id, &sa, &kd, seq).map_err(|e| {
            let crate::group::GroupError::Inconsistent(what) = e;
            PushError::Malformed(MalformedPush::Policy(what))
        })?;
        let new_verifier = verifier_for(keys.kek.as_ref())
            .map_err(|_| PushError::Malformed(MalformedPush::SigningKey))?;
        let gap = sa.gap.as_ref();
        let atd_ms = gap
            .and_then(|g| g.activation_time_delay)
            .map_or(0, |s| u64::from(s) * 1000);
        let dtd_ms = gap
            .and_then(|g| g.deactivation_time_delay)
            .map(|s| u64::from(s) * 1000);
        let ack_policy = sa.kek.as_ref().map(|k| k.policy.ack_requested);
        self.d3p_window_ms = d3p_window_of(gap);
        self.teks.retain(|t| !deleted.contains(&t.tek.spi));
        let mut installed = Vec::new();
        for t in &keys.teks {
            if self.teks.iter().any(|x| x.tek.spi == t.spi) {
                continue;
            }
            if let Some(d) = dtd_ms {
                for old in self.teks.iter_mut() {
                    old.expires_at = old.expires_at.min(now + d);
                }
            }
            installed.push(t.spi);
            self.teks.push(InstalledTek {
                tek: t.clone(),
                send_from: now + atd_ms,
                expires_at: now + u64::from(t.lifetime_secs) * 1000,
            });
        }
        let new_kek = keys.kek.as_ref().is_some_and(|k| k.spi != kek.spi);
        if keys.kek.is_some() {
            self.kek = keys.kek;
            self.verifier = new_verifier;
        }
        if let Some(a) = ack_policy {
            self.ack_requested = a;
        }
        self.last_seq = seq;
        // ACK under the KEK that protected this push (its cookies name it).
        let ack = match self.ack_requested {
            Some(a) => seal_rfc8263_ack(&kek, a, seq, ack_address).ok(),
            None if kek.is_unicast() => seal_unicast_ack(&kek, seq, ack_address).ok(),
            None => None,
        };
        Ok(AcceptedPush {
            seq,
            installed,
            deleted,
            new_kek,
            kek_packet_relabelled,
            ack: ack.map(|a| (a, !kek.is_unicast())),
        })
    }
}

/// A KEK rollover as a real peer sends it (docs/INTEROP.md): the SA KEK
/// names a new SPI while the KD's one KEK packet carries the SPI of the
/// KEK in use (RFC 6407 section 5.6 has the packet carry the SA KEK's).
/// The push is otherwise verified already (signed by the KS, under the
/// current KEK), so the packet's key is the new KEK's: relabel it with
/// the SA KEK's SPI and say so. Any other KEK packet SPI that matches
/// neither is refused, naming all three SPIs.
fn relabel_rollover_kek_packet(
    sa: &GdoiSa<'_>,
    kd: &mut KeyDownload<'_>,
    current: &[u8; 16],
) -> Result<bool, PushError> {
    let Some(sak) = &sa.kek else {
        return Ok(false);
    };
    let mut keks = kd.packets.iter_mut().filter_map(|p| match p {
        KeyPacket::Kek(k) => Some(k),
        _ => None,
    });
    let (Some(k), None) = (keks.next(), keks.next()) else {
        // None or several KEK packets: from_pull says what is missing.
        return Ok(false);
    };
    if k.spi == sak.spi {
        return Ok(false);
    }
    if k.spi == *current && sak.spi != *current {
        k.spi = sak.spi;
        return Ok(true);
    }
    Err(PushError::Malformed(MalformedPush::KekPacketSpi {
        packet: k.spi,
        sa_kek: sak.spi,
        current: *current,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkm_wire::consts::D3pType;
    use gkm_wire::payload::Gap;

    #[test]
    fn a_d3p_window_counts_only_with_the_known_timestamp_type() {
        let gap = |t: Option<u16>, w: Option<u32>| Gap {
            d3p_type: t.map(D3pType),
            d3p_window_msec: w,
            ..Gap::default()
        };
        assert_eq!(d3p_window_of(Some(&gap(Some(1), Some(5000)))), Some(5000));
        assert_eq!(
            d3p_window_of(Some(&gap(Some(7), Some(5000)))),
            None,
            "unknown type"
        );
        assert_eq!(d3p_window_of(Some(&gap(None, Some(5000)))), None, "no type");
        assert_eq!(d3p_window_of(Some(&gap(Some(1), None))), None, "no window");
        assert_eq!(d3p_window_of(None), None);
    }
}
