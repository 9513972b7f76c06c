//! GKM's domain vocabulary: the types the key server's engine, the store,
//! the REST API, the dashboard, the agent and the CLI all speak, each
//! defined once (docs/ARCHITECTURE.md). Data and its validation only: no
//! I/O, no protocol state, no crypto. The seed behaviours they carry are
//! in docs/FEATURES.md.
//!
//! The `openapi` feature derives the REST API's schemas (utoipa); the
//! `api-client` feature adds [`api_client`], the TLS trust of the API's
//! clients.

#[cfg(feature = "api-client")]
pub mod api_client;
pub mod clock;
pub mod health;
pub mod invalid;
pub mod policy;
pub mod prefix;
pub mod show;
pub mod status;

pub use health::{
    AckKind, D3pError, GmHealth, Membership, PushesRefused, ReplayCounters, Traffic, WindowSource,
    MAX_HISTORY,
};
pub use invalid::Invalid;
pub use policy::{AckOption, D3pWindow, D3pWindowError, RekeyTransport, TekTransform};
pub use prefix::{IpPrefix, IpPrefixError, Ipv4Prefix, PrefixError};
pub use status::{CoopCounters, CoopPeerView, CoopView, KekPolicyStatus, RekeyStatus};
