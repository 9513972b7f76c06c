//! `gkm-proto`: GKM's sans-IO protocol engines and policy math.
//!
//! Owns (DESIGN.md): IKEv1 phase 1 main mode, GROUPKEY-PULL, GROUPKEY-PUSH,
//! RFC 8263 and GKM unicast ACKs, COOP, the key schedule, and the policy
//! math of the seed (ATD, D3P window, rekey timing, ACK matrices). Engines
//! take `now` and injected randomness on every call and never see sockets,
//! tokio or a database. The engines land with the registration and rekeying
//! issues; the policy math every crate shares is here already.

pub mod ack;
pub mod ack_policy;
pub mod ack_tracker;
pub mod crypto;
pub mod engine;
pub mod gm;
pub mod group;
pub mod identity;
pub mod ike;
pub mod ks;
pub mod policy;
pub mod push;
pub mod rekey;
