//! Rekeys on the group member (RFC 6407 section 4; seed sections 2-3):
//! open and verify a GROUPKEY-PUSH under the KEK from registration,
//! require a greater SEQ, apply Delete, SA and KD, honour ATD (send on a
//! new TEK only after it) and DTD (keep an old TEK for receiving until
//! then), and acknowledge as told.

use std::net::{Ipv4Addr, SocketAddr};

use gkm_wire::consts::{AckRequested, GdoiProtocol};
use gkm_wire::payload::{GdoiSa, KeyDownload, Sa, SaLayout};
use gkm_wire::Payload;

use crate::ack::{seal_rfc8263_ack, seal_unicast_ack};
use crate::crypto::RekeyVerifier;
use crate::engine::{Millis, Transmit};
use crate::gm::{GmEvent, GmIdentity, GroupMember};
use crate::group::{GroupKeys, Kek, Tek};
use crate::push::{open_push, PushError};

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
    fn count(&mut self, e: PushError) {
        match e {
            PushError::Malformed | PushError::Build => self.pushes_malformed += 1,
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

impl GroupMember {
    /// Keys from a completed registration; the SEQ restarts from the KS's.
    pub(crate) fn install_registration(
        &mut self,
        now: Millis,
        ks: SocketAddr,
        keys: &GroupKeys,
        ack_requested: Option<AckRequested>,
        d3p_window_ms: Option<u32>,
    ) -> Result<(), &'static str> {
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
        self.group = Some(GmGroup {
            ks,
            kek: keys.kek.clone(),
            verifier,
            ack_requested,
            last_seq: keys.seq,
            teks,
            d3p_window_ms,
        });
        Ok(())
    }

    /// Re-register this long before the last TEK expires, unless a rekey comes.
    pub(crate) fn renew_at(&self, now: Millis) -> Millis {
        let last = self
            .group
            .as_ref()
            .and_then(|g| g.teks.iter().map(|t| t.expires_at).max())
            .unwrap_or(now + 3_600_000);
        last.saturating_sub(self.cfg.reregister_before_ms)
            .max(now + 1000)
    }

    /// The group state, once registered.
    pub fn group(&self) -> Option<&GmGroup> {
        self.group.as_ref()
    }

    /// Rekey counters.
    pub fn rekey_counters(&self) -> GmCounters {
        self.counters
    }

    /// The TEK to send on at `now`: the newest one whose ATD has passed.
    pub fn outbound_tek(&self, now: Millis) -> Option<&Tek> {
        self.group
            .as_ref()?
            .teks
            .iter()
            .filter(|t| t.send_from <= now && now < t.expires_at)
            .max_by_key(|t| t.expires_at)
            .map(|t| &t.tek)
    }

    /// TEKs accepted for receiving at `now`.
    pub fn inbound_teks(&self, now: Millis) -> impl Iterator<Item = &Tek> {
        self.group
            .iter()
            .flat_map(|g| g.teks.iter())
            .filter(move |t| now < t.expires_at)
            .map(|t| &t.tek)
    }

    pub(crate) fn release_delayed(&mut self, now: Millis) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, t) in due {
            self.out.transmit(t);
        }
        if let Some(g) = self.group.as_mut() {
            g.teks.retain(|t| now < t.expires_at);
        }
    }

    fn ack_address(&self) -> Ipv4Addr {
        self.cfg.ack_address.unwrap_or(match &self.cfg.identity {
            GmIdentity::Ipv4(a) => *a,
            GmIdentity::Dn(_) => Ipv4Addr::UNSPECIFIED,
        })
    }

    pub(crate) fn on_push(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        let Some(g) = self.group.as_ref() else {
            self.counters.pushes_unregistered += 1;
            return;
        };
        let (Some(kek), Some(verifier)) = (g.kek.clone(), g.verifier.as_ref()) else {
            self.counters.pushes_unregistered += 1;
            return;
        };
        let opened = match open_push(data, &kek, verifier, g.last_seq) {
            Ok(o) => o,
            Err(e) => {
                self.counters.count(e);
                self.out.event(GmEvent::PushRejected(e));
                return;
            }
        };
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
                Err(_) => {
                    self.counters.count(PushError::Malformed);
                    self.out.event(GmEvent::PushRejected(PushError::Malformed));
                    return;
                }
            }
        }
        let (Some(sa), Some(kd)) = (sa, kd) else {
            self.counters.count(PushError::Malformed);
            self.out.event(GmEvent::PushRejected(PushError::Malformed));
            return;
        };
        let Ok((keys, _)) = GroupKeys::from_pull(self.cfg.group_id, &sa, &kd, seq) else {
            self.counters.count(PushError::Malformed);
            self.out.event(GmEvent::PushRejected(PushError::Malformed));
            return;
        };
        let new_verifier = match verifier_for(keys.kek.as_ref()) {
            Ok(v) => v,
            Err(_) => {
                self.counters.count(PushError::Malformed);
                self.out.event(GmEvent::PushRejected(PushError::Malformed));
                return;
            }
        };
        let gap = sa.gap.as_ref();
        let atd_ms = gap
            .and_then(|g| g.activation_time_delay)
            .map_or(0, |s| u64::from(s) * 1000);
        let dtd_ms = gap
            .and_then(|g| g.deactivation_time_delay)
            .map(|s| u64::from(s) * 1000);
        let ack_policy = sa.kek.as_ref().map(|k| k.policy.ack_requested);
        let d3p = d3p_window_of(gap);
        let Some(g) = self.group.as_mut() else { return };
        g.d3p_window_ms = d3p;
        g.teks.retain(|t| !deleted.contains(&t.tek.spi));
        let mut installed = Vec::new();
        for t in &keys.teks {
            if g.teks.iter().any(|x| x.tek.spi == t.spi) {
                continue;
            }
            if let Some(d) = dtd_ms {
                for old in g.teks.iter_mut() {
                    old.expires_at = old.expires_at.min(now + d);
                }
            }
            installed.push(t.spi);
            g.teks.push(InstalledTek {
                tek: t.clone(),
                send_from: now + atd_ms,
                expires_at: now + u64::from(t.lifetime_secs) * 1000,
            });
        }
        let new_kek = keys.kek.as_ref().is_some_and(|k| k.spi != kek.spi);
        if keys.kek.is_some() {
            g.kek = keys.kek;
            g.verifier = new_verifier;
        }
        if let Some(a) = ack_policy {
            g.ack_requested = a;
        }
        g.last_seq = seq;
        let ack_requested = g.ack_requested;
        self.counters.pushes_accepted += 1;
        // ACK under the KEK that protected this push (its cookies name it).
        let me = self.ack_address();
        let ack = match ack_requested {
            Some(a) => seal_rfc8263_ack(&kek, a, seq, me).ok(),
            None if kek.is_unicast() => seal_unicast_ack(&kek, seq, me).ok(),
            None => None,
        };
        if let Some(payload) = ack {
            self.counters.acks_sent += 1;
            let t = Transmit { to: from, payload };
            if kek.is_unicast() || self.cfg.multicast_ack_jitter_ms == 0 {
                self.out.transmit(t);
            } else {
                let jitter =
                    u64::from(self.rng.next_u32()) % (self.cfg.multicast_ack_jitter_ms + 1);
                self.delayed.push((now + jitter, t));
            }
        }
        let renew_at = self.renew_at(now);
        self.set_renew_at(renew_at);
        self.out.event(GmEvent::Rekeyed {
            seq,
            installed,
            deleted,
            new_kek,
        });
    }
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
