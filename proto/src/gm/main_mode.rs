//! Main mode with the key server, through the shared initiator
//! ([`crate::ike::initiator`]): each of its messages answered, and once
//! message 6 authenticates the key server, GROUPKEY-PULL message 1.

use gkm_wire::payload::{IdPayload, Nonce};
use gkm_wire::{Identity, IsakmpHeader, Payload};

use super::config::GmFailure;
use super::state::{SentPull1, State, P1};
use super::GroupMember;
use crate::crypto::rng;
use crate::engine::Millis;
use crate::ike::initiator::{MainModeInitiator, MmOutcome};
use crate::ike::phase2_iv;

impl GroupMember {
    pub(super) fn on_main_mode(
        &mut self,
        now: Millis,
        header: &IsakmpHeader,
        data: &[u8],
        mut mm: Box<MainModeInitiator>,
    ) -> State {
        let offers = self.offers();
        let ks = self.key_server();
        let params = super::initiator_params(&self.cfg, ks, self.contacted, &offers);
        let outcome = mm.handle(&params, now, header, data, self.rng.as_mut());
        match outcome {
            None => State::MainMode(mm),
            Some(MmOutcome::Send(out)) => {
                self.send(now, out);
                State::MainMode(mm)
            }
            Some(MmOutcome::Failed(why)) => self.failed(now, GmFailure::BadResponse(why)),
            Some(MmOutcome::Established(e)) => {
                self.contacted = true;
                self.pull1(
                    now,
                    P1 {
                        suite: e.suite,
                        keys: e.keys,
                        rcky: e.rcky,
                        last_block: e.last_block,
                    },
                )
            }
        }
    }

    /// GROUPKEY-PULL message 1: HASH(1), Ni, ID(group).
    fn pull1(&mut self, now: Millis, p1: P1) -> State {
        let mid = self.rng.next_u32() | 1;
        let ni = rng::bytes(self.rng.as_mut(), 32);
        let gid = self.cfg.group_id.to_be_bytes();
        let rest = [
            Payload::Nonce(Nonce(&ni)),
            Payload::Id(IdPayload {
                protocol: 0,
                port: 0,
                identity: Identity::KeyId(&gid),
            }),
        ];
        let iv = phase2_iv(p1.suite.cipher, p1.suite.prf, &p1.last_block, mid);
        let Some(next_iv) = self.send_pull(now, &p1, mid, &[], &rest, &iv) else {
            return State::Idle { at: now };
        };
        State::Pull1(SentPull1 {
            p1,
            mid,
            ni,
            iv: next_iv,
        })
    }
}
