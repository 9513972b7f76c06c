//! `gkm-web`: GKM's HTTP layer.
//!
//! Owns (DESIGN.md): the axum routers for `/api/v1` (JSON, OpenAPI 3.1,
//! RFC 9457 problems), the askama dashboard, auth (OIDC, bearer tokens,
//! roles, CSRF) and the audit log. It never sees `gkm-proto`: the server
//! hands it a small status/command trait, [`Control`].

pub mod api;
pub mod auth;
pub mod ca;
pub mod charts;
pub mod dashboard;
pub mod enroll;
pub mod extract;
pub mod forms;
pub mod gm_pages;
pub mod health;
pub mod local;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod problem;
pub mod session;
pub mod signin;

use std::sync::Arc;

use gkm_store::model::Group;
use gkm_store::Store;
use serde::{Deserialize, Serialize};

pub use gkm_store::model::Role;

/// Whether a role may change state (viewers may not).
pub fn can_mutate(role: Role) -> bool {
    role >= Role::Operator
}

pub use gkm_model::status::{CoopCounters, CoopPeerView, CoopView, KekPolicyStatus, RekeyStatus};

/// A key server serving a group, with what it supports (the `Key Server
/// ID` rows of `show crypto gkm feature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyServerFeatures {
    /// Its address (its phase 1 identity).
    pub address: String,
    /// GDOI version `major.minor.mini`.
    pub version: String,
    /// Feature bits (as a GM's `features`).
    pub features: u32,
}

/// A group's live status, from the key-server engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStatus {
    /// Rekey status.
    pub rekey: RekeyStatus,
    /// KEK policy status (absent when the group has no KEK).
    pub kek: Option<KekPolicyStatus>,
    /// The key servers serving the group: this one (cooperative peers
    /// join the list when COOP lands).
    pub key_servers: Vec<KeyServerFeatures>,
}

/// A rekey the engine took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RekeyAccepted {
    /// Group identity number.
    pub group: u32,
    /// Whether it is a rekey replace.
    pub replace: bool,
}

/// Why the engine did not take a rekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RekeyRefused {
    /// The group's previous rekey is still in flight (being prepared, or
    /// GMs have yet to acknowledge it), or one was asked for within the
    /// last second: a 409 for the caller to retry.
    InFlight(String),
    /// The engine cannot rekey the group (unknown, no KEK, not running).
    Unavailable(String),
}

impl std::fmt::Display for RekeyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InFlight(d) | Self::Unavailable(d) => f.write_str(d),
        }
    }
}

/// The key-server engine as the web layer sees it (implemented by the server).
#[async_trait::async_trait]
pub trait Control: Send + Sync {
    /// Rekey a group now, or send it a rekey replace.
    async fn rekey(&self, group: u32, replace: bool) -> Result<RekeyAccepted, RekeyRefused>;
    /// Remove a GM from the engine's GM database (it gets no more rekeys).
    async fn eject(&self, group: u32, gm_identity: &str) -> Result<(), String>;
    /// A group's live status, if the engine serves it.
    async fn status(&self, group: u32) -> Option<GroupStatus>;
    /// `show crypto gkm ks coop` of a group with cooperative key servers
    /// (None: it has none, or the engine does not serve it).
    async fn coop(&self, group: u32) -> Option<CoopView>;
    /// A group was created or changed (`replace`: GMs must get a rekey
    /// replace, e.g. on a switch between CMD and IP-D3P), or deleted (`None`).
    async fn group_changed(&self, group_id: u32, group: Option<&Group>, replace: bool);
    /// Every metric of the key server, in the Prometheus text format.
    async fn metrics(&self) -> String;
    /// What keeps the engine from serving (it does not answer, a COOP
    /// group's role is not known yet); empty when ready.
    async fn not_ready(&self) -> Vec<String>;
    /// Agents were enrolled or revoked: the engine reloads which groups
    /// each enrolled agent may join and which are revoked.
    async fn agents_changed(&self);
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The engine.
    pub control: Arc<dyn Control>,
    /// GM list pages as sent, while the GM database is unchanged.
    pub gm_pages: Arc<gm_pages::GmPageCache>,
    /// The HTTP layer's metrics.
    pub metrics: Arc<metrics::HttpMetrics>,
    /// Enrollment (the internal CA), when the key server set it up.
    pub enrollment: Option<Arc<enroll::Enrollment>>,
}

impl ApiState {
    /// The state over a store and an engine, with an empty page cache.
    pub fn new(store: Arc<dyn Store>, control: Arc<dyn Control>) -> Self {
        Self {
            store,
            control,
            gm_pages: Arc::default(),
            metrics: Arc::new(
                metrics::HttpMetrics::new()
                    .expect("the HTTP metrics' names are constant and valid"),
            ),
            enrollment: None,
        }
    }

    /// The state with enrollment set up.
    pub fn with_enrollment(mut self, e: enroll::Enrollment) -> Self {
        self.enrollment = Some(Arc::new(e));
        self
    }
}
