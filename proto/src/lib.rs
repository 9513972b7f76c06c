//! `gkm-proto`: GKM's sans-IO protocol engines and policy math.
//!
//! Owns (DESIGN.md): IKEv1 phase 1 main mode, GROUPKEY-PULL, GROUPKEY-PUSH,
//! RFC 8263 and GKM unicast ACKs, the key schedule, and the policy math of
//! the seed (ATD, D3P window, rekey timing, ACK matrices). Engines take
//! `now` and injected randomness on every call and never see sockets,
//! tokio or a database. The key server ([`ks`]) and the group member
//! ([`gm`]) are composed of owned parts; docs/ARCHITECTURE.md says what
//! each owns.

pub mod ack;
pub mod ack_policy;
pub mod ack_tracker;
pub mod coop;
pub mod crypto;
pub mod engine;
pub mod gm;
pub mod group;
pub mod group_state;
pub mod identity;
pub mod ike;
pub mod ks;
pub mod policy;
pub mod push;
pub mod rekey;
