//! `gkm-store`: GKM's persistence.
//!
//! Owns (DESIGN.md): one async [`Store`] trait with a SQLite backend (the
//! zero-setup default: a file, WAL mode) and a PostgreSQL backend, chosen
//! from the URL scheme ([`open`]); a migration set per dialect in
//! `migrations/`; secrets sealed at rest with AES-256-GCM ([`seal`]). Both
//! backends are one generic implementation over sqlx's `Database`, a
//! module per aggregate (`sql/`), and run the same test suite. Every mutation writes its audit entry in the
//! same transaction; on any error nothing is written.

pub mod model;
pub mod seal;
#[cfg(feature = "testing")]
pub mod testing;

mod sql;

use std::sync::Arc;

use model::{
    ApiToken, AuditEntry, D3pErrorPoint, D3pSpike, GmFilter, GmHealth, GmRow, Group, GroupPolicy,
    Page, PeerKeyServer, RekeyRecord, Role,
};

/// How long D3P error rows are kept, ms (7 days).
pub const D3P_ERRORS_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// A store error. Conflicts and missing rows are typed so the API can
/// answer 409 and 404; anything else is the database's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name or number is taken, or the version did not match.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No such row.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored value could not be read back (a bug or a damaged database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Sealing or opening a secret failed.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A setup key that does not enroll (checked again inside the
    /// enrolling transaction).
    #[error("{0}")]
    Refused(model::SetupKeyRefused),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Result of a store call.
pub type Result<T> = core::result::Result<T, StoreError>;

/// Who did something, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// GMs listed, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmPage {
    /// The rows.
    pub gms: Vec<GmRow>,
    /// Pass as `Page::after` for the next page; none on the last page.
    pub next: Option<(u32, String)>,
}

/// The secret that holds a group's keys and SEQ (sealed, named by the
/// group's identity number); deleted with the group.
pub fn group_state_secret(group_id: u32) -> String {
    format!("group-state/{group_id}")
}

/// The secret that holds a group's COOP epoch (docs/COOP.md); deleted with
/// the group.
pub fn coop_epoch_secret(group_id: u32) -> String {
    format!("coop-epoch/{group_id}")
}

/// Everything the controller persists: one trait per aggregate, each
/// implemented once for both dialects (`sql/`). Code holds an
/// `Arc<dyn Store>` and calls any aggregate's methods on it (a trait
/// object's supertraits' methods need no import).
pub trait Store:
    GroupStore
    + KeyServerStore
    + GmStore
    + HealthStore
    + RekeyStore
    + AuditStore
    + TokenStore
    + EnrollStore
    + SecretStore
    + Send
    + Sync
{
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
}

/// Groups: policy, version, the sealed PSK; deleting one deletes all it owns.
#[async_trait::async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group; `psk` (if any) is sealed into the secrets table.
    async fn create_group(
        &self,
        actor: &Actor,
        name: &str,
        group_id: u32,
        policy: &GroupPolicy,
    ) -> Result<Group>;
    /// Replaces a group's policy; with `expected_version`, only if it still matches.
    async fn update_group(
        &self,
        actor: &Actor,
        name: &str,
        policy: &GroupPolicy,
        expected_version: Option<i64>,
    ) -> Result<Group>;
    /// Deletes a group with its GMs, rekey history and secrets.
    async fn delete_group(&self, actor: &Actor, name: &str) -> Result<()>;
    /// One group by name.
    async fn group(&self, name: &str) -> Result<Option<Group>>;
    /// One group by its group ID.
    async fn group_by_group_id(&self, group_id: u32) -> Result<Option<Group>>;
    /// All groups, by name.
    async fn groups(&self) -> Result<Vec<Group>>;
    /// A group's PSK, opened.
    async fn group_psk(&self, name: &str) -> Result<Option<zeroize::Zeroizing<String>>>;
    /// The sealed KS-to-KS pre-shared key of the group's peer key server
    /// at `address`, opened.
    async fn coop_peer_psk(
        &self,
        name: &str,
        address: &str,
    ) -> Result<Option<zeroize::Zeroizing<String>>>;
    /// The addresses (canonical text) of the group's peer key servers
    /// that have a pre-shared key set.
    async fn coop_peers_with_psk(&self, name: &str) -> Result<Vec<String>>;
    /// Rotates (`Some`) or clears (`None`) a group's PSK, audited. A group
    /// whose authentication is `pki` takes no PSK (a conflict).
    async fn set_group_psk(&self, actor: &Actor, name: &str, psk: Option<&str>) -> Result<Group>;
}

/// The deployment's key servers (the cooperative key servers' peer rows).
#[async_trait::async_trait]
pub trait KeyServerStore: Send + Sync {
    /// Creates or replaces a key server by name.
    async fn put_key_server(&self, actor: &Actor, ks: &PeerKeyServer) -> Result<()>;
    /// Deletes a key server.
    async fn delete_key_server(&self, actor: &Actor, name: &str) -> Result<()>;
    /// All key servers, by priority (highest first).
    async fn key_servers(&self) -> Result<Vec<PeerKeyServer>>;
}

/// The GM database the key-server engine keeps.
#[async_trait::async_trait]
pub trait GmStore: Send + Sync {
    /// Inserts or updates GMs (the KS engine's GM database).
    async fn put_gms(&self, gms: &[GmRow]) -> Result<()>;
    /// Sets a GM's state (e.g. removed after 3 missed rekeys).
    async fn set_gm_state(
        &self,
        group: u32,
        gm_identity: &str,
        state: model::GmState,
    ) -> Result<()>;
    /// Ejects a GM (the operator's action: its row and health report go; a GM
    /// the engine drops after 3 missed rekeys is `removed`, a state); audited.
    async fn eject_gm(&self, actor: &Actor, group: u32, gm_identity: &str) -> Result<()>;
    /// GMs matching `filter`, ordered by group (creation order) then identity.
    async fn gms(&self, filter: &GmFilter, page: &Page) -> Result<GmPage>;
    /// Every GM the key-server engine serves (all but removed ones), for a restart.
    async fn live_gms(&self) -> Result<Vec<GmRow>>;
    /// How many GMs match `filter`.
    async fn count_gms(&self, filter: &GmFilter) -> Result<u64>;
    /// A number that changes after every change this store commits to the
    /// GM database (rows written, states set, GMs ejected, groups deleted),
    /// never before the change is visible: a page read after reading `g`
    /// is current while this still returns `g`. Changes other processes
    /// make to a shared database do not move it.
    fn gms_generation(&self) -> u64;
}

/// GM health reports and the D3P error series.
#[async_trait::async_trait]
pub trait HealthStore: Send + Sync {
    /// Stores a GM's health report (replacing its previous one) and, when
    /// its D3P error counters rose, the increase in the D3P error series
    /// (a counter below the previous report's means the agent restarted:
    /// the whole value is new). Rows older than [`D3P_ERRORS_KEPT_MS`] go.
    /// `NotFound` unless the GM is in the group's GM database.
    async fn put_gm_health(&self, h: &GmHealth) -> Result<HealthAdded>;
    /// A GM's latest health report.
    async fn gm_health(&self, group: u32, gm_identity: &str) -> Result<Option<GmHealth>>;
    /// D3P errors reported since `since` (UNIX ms) in buckets of `bucket_ms`,
    /// oldest first, empty buckets left out; one group's or all groups'.
    async fn d3p_errors(
        &self,
        group: Option<u32>,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Vec<D3pErrorPoint>>;
    /// GMs whose input D3P errors since `since` add up to at least `min`,
    /// most first, at most `limit`.
    async fn d3p_spikes(&self, since: i64, min: u64, limit: u32) -> Result<Vec<D3pSpike>>;
    /// Per group (every group, in name order), what the agents' reports
    /// say of the GMs still in the GM database: agents gone silent (latest
    /// report before `silent_before`, UNIX ms) and ACKs lost on the way.
    /// GMs whose agent never reported count in neither (not every GM runs
    /// an agent).
    async fn agent_findings(&self, silent_before: i64) -> Result<Vec<AgentFindings>>;
}

/// One group's findings from its agents' reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFindings {
    /// The group's name.
    pub group: String,
    /// GMs whose agent has not reported since the silent time.
    pub silent: u64,
    /// GMs whose agent acknowledged a rekey the key server counts as
    /// missed (the ACK was lost between them).
    pub ack_lost: u64,
}

/// What storing a health report added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAdded {
    /// The GM's group's name.
    pub group_name: String,
    /// Input D3P errors new since the GM's previous report.
    pub d3p_input_errors: u64,
}

/// Each group's rekey history.
#[async_trait::async_trait]
pub trait RekeyStore: Send + Sync {
    /// Records a rekey, or updates it by (group, SEQ).
    async fn put_rekey(&self, r: &RekeyRecord) -> Result<()>;
    /// A group's latest rekeys, newest first.
    async fn rekeys(&self, group: u32, limit: u32) -> Result<Vec<RekeyRecord>>;
}

/// The audit log (mutations write theirs in their own transaction).
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// The latest audit entries, newest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Appends an audit entry on its own (actions that change no row).
    async fn append_audit(&self, e: &AuditEntry) -> Result<()>;
}

/// API and agent tokens (hashes only).
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new API token's hash with its role.
    async fn create_token(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        token_hash: &[u8],
        gm: Option<&model::TokenGm>,
    ) -> Result<ApiToken>;
    /// Binds an unbound agent token to `gm` (audited); false when the
    /// token is already bound (to anything) or gone.
    async fn bind_token(&self, actor: &Actor, token_id: i64, gm: &model::TokenGm) -> Result<bool>;
    /// The token with this hash.
    async fn token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>>;
    /// All tokens (without hashes).
    async fn tokens(&self) -> Result<Vec<ApiToken>>;
    /// Deletes a token.
    async fn delete_token(&self, actor: &Actor, name: &str) -> Result<()>;
}

/// Enrollment: setup keys (hashes only) and enrolled agents.
#[async_trait::async_trait]
pub trait EnrollStore: Send + Sync {
    /// Stores a new setup key's hash (audited).
    async fn create_setup_key(
        &self,
        actor: &Actor,
        key: &model::SetupKey,
        key_hash: &[u8],
    ) -> Result<model::SetupKey>;
    /// All setup keys (without hashes), by name.
    async fn setup_keys(&self) -> Result<Vec<model::SetupKey>>;
    /// The setup key with this hash.
    async fn setup_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<model::SetupKey>>;
    /// Deletes a setup key (agents enrolled with it stay).
    async fn delete_setup_key(&self, actor: &Actor, name: &str) -> Result<()>;
    /// Enrolls `agent` with setup key `key_id` at `now_ms`, in one
    /// transaction: the key's use is counted only if it is still unexpired
    /// and under its limit ([`StoreError::Refused`] otherwise), the agent's
    /// name must be free ([`StoreError::Conflict`]), and its agent token
    /// (`token_name`, `token_hash`) is stored naming it. Audited.
    async fn enroll_agent(
        &self,
        key_id: i64,
        now_ms: i64,
        agent: &model::Agent,
        token_name: &str,
        token_hash: &[u8],
    ) -> Result<model::Agent>;
    /// All agents, by name.
    async fn agents(&self) -> Result<Vec<model::Agent>>;
    /// One agent.
    async fn agent(&self, name: &str) -> Result<Option<model::Agent>>;
    /// Records a renewed certificate of an agent that is not revoked.
    async fn renew_agent(
        &self,
        actor: &Actor,
        name: &str,
        cert_serial: &str,
        cert_not_after: i64,
    ) -> Result<model::Agent>;
    /// Revokes an agent at `now_ms`: marks it, deletes its tokens
    /// (audited). Revoking a revoked agent is [`StoreError::Conflict`].
    async fn revoke_agent(&self, actor: &Actor, name: &str, now_ms: i64) -> Result<model::Agent>;
}

/// Secrets, sealed with the master key.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Seals and stores a secret under `name`.
    async fn put_secret(&self, name: &str, plain: &[u8]) -> Result<()>;
    /// Opens a secret.
    async fn secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>>;
}

/// Opens the store a URL names (a bare path or `sqlite://PATH` is a SQLite
/// file, created on first use; `postgres://...` a PostgreSQL database) and
/// applies its migrations.
pub async fn open(url: &str, master: seal::MasterKey) -> Result<Arc<dyn Store>> {
    match BackendKind::from_url(url).map_err(|e| StoreError::NotFound(e.to_string()))? {
        BackendKind::Sqlite => Ok(Arc::new(sql::open_sqlite(url, master).await?)),
        BackendKind::Postgres => Ok(Arc::new(sql::open_postgres(url, master).await?)),
    }
}

use core::fmt;

/// Which backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Embedded SQLite file (`sqlite://path` or a bare path).
    Sqlite,
    /// PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres,
}

/// A database URL whose scheme no backend serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScheme(pub String);

impl fmt::Display for UnknownScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database URL scheme {:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB",
            self.0
        )
    }
}

impl std::error::Error for UnknownScheme {}

impl BackendKind {
    /// Picks the backend from a URL; a plain path means a SQLite file.
    pub fn from_url(url: &str) -> core::result::Result<Self, UnknownScheme> {
        match url.split_once("://") {
            None => Ok(Self::Sqlite),
            Some(("sqlite", _)) => Ok(Self::Sqlite),
            Some(("postgres" | "postgresql", _)) => Ok(Self::Postgres),
            Some((scheme, _)) => Err(UnknownScheme(scheme.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_selects_backend() {
        assert_eq!(BackendKind::from_url("gkm.db"), Ok(BackendKind::Sqlite));
        assert_eq!(
            BackendKind::from_url("sqlite:///var/lib/gkm/gkm.db"),
            Ok(BackendKind::Sqlite)
        );
        assert_eq!(
            BackendKind::from_url("postgres://gkm@localhost/gkm"),
            Ok(BackendKind::Postgres)
        );
        assert_eq!(
            BackendKind::from_url("postgresql://h/db"),
            Ok(BackendKind::Postgres)
        );
        let e = BackendKind::from_url("mysql://x").unwrap_err();
        assert!(e.to_string().contains("mysql"));
    }
}
