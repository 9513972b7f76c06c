//! The registration's states: main mode, then GROUPKEY-PULL, then
//! registered until the TEKs near their end.

use crate::engine::Millis;
use crate::ike::initiator::MainModeInitiator;
use crate::ike::{Phase1Keys, Suite};

/// Where the registration is.
pub(crate) enum State {
    /// Waiting to start (or start again) at `at`.
    Idle { at: Millis },
    /// Main mode under way.
    MainMode(Box<MainModeInitiator>),
    /// PULL message 1 sent.
    Pull1(SentPull1),
    /// PULL message 3 sent.
    Pull3(SentPull3),
    /// Holding keys; register again at `renew_at` unless a rekey comes.
    Registered { renew_at: Millis },
}

/// GROUPKEY-PULL after message 1 was sent.
pub(crate) struct SentPull1 {
    pub p1: P1,
    pub mid: u32,
    pub ni: Vec<u8>,
    pub iv: [u8; 16],
}

/// GROUPKEY-PULL after message 3 was sent; `sa_plain` keeps message 2.
pub(crate) struct SentPull3 {
    pub p1: P1,
    pub mid: u32,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub sa_plain: zeroize::Zeroizing<Vec<u8>>,
    pub iv: [u8; 16],
}

/// An established phase 1 SA, as the PULL uses it.
pub(crate) struct P1 {
    pub suite: Suite,
    pub keys: Phase1Keys,
    pub rcky: [u8; 8],
    pub last_block: [u8; 16],
}
