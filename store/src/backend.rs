//! The two backends. The SQL is the same for both dialects (runtime
//! queries with `$N` placeholders, which SQLite reads as named parameters
//! numbered in order of appearance; dynamic filters go through sqlx's
//! `QueryBuilder`, which writes each dialect's own placeholders), so one
//! macro body implements [`Store`] for each pool type; the schema differs
//! per dialect and lives in `migrations/`.

use std::collections::HashMap;
use std::str::FromStr;

use gkm_model::clock::unix_ms_i64 as now_ms;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use zeroize::Zeroizing;

use crate::model::{
    ApiToken, AuditEntry, D3pErrorPoint, D3pSpike, GmFilter, GmHealth, GmRow, GmState, Group,
    GroupPolicy, KeyServer, KsRole, Page, RekeyRecord, ReplayCounters, Role, TokenGm, WindowSource,
};
use crate::seal::MasterKey;
use crate::{Actor, BackendKind, GmPage, Result, Store, StoreError};

/// A database error, with unique violations as conflicts.
fn db(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        _ => StoreError::Database(e),
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} {v}")))
}

fn psk_secret(group: &str) -> String {
    format!("group/{group}/psk")
}

/// The most D3P errors one GM's minute holds (2^40: far beyond any link,
/// and small enough that the series' sums never overflow).
const MAX_D3P_ERRORS_PER_MINUTE: i64 = 1 << 40;

const TOKEN_COLUMNS: &str = "id, name, role, created_at, gm_group, gm_identity";
const GROUP_COLUMNS: &str = "id, name, identity, policy, version, created_at, updated_at";
const GM_COLUMNS: &str = "g.identity AS group_identity, m.identity, m.address, m.class, m.version, m.features, m.state, m.registered_at, m.last_seq_sent, m.last_seq_acked, m.misses, m.sids";

fn group_of<R: Row>(r: &R) -> Result<Group>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let policy: String = r.try_get("policy")?;
    Ok(Group {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        identity: u32_of(r.try_get("identity")?, "group identity")?,
        policy: serde_json::from_str(&policy).map_err(|e| corrupt(format!("group policy: {e}")))?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn gm_of<R: Row>(r: &R) -> Result<GmRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.try_get("state")?;
    let opt = |v: Option<i64>, what: &str| v.map(|x| u32_of(x, what)).transpose();
    Ok(GmRow {
        group: u32_of(r.try_get("group_identity")?, "group identity")?,
        identity: r.try_get("identity")?,
        address: r.try_get("address")?,
        class: r.try_get("class")?,
        version: r.try_get("version")?,
        features: u32_of(r.try_get("features")?, "features")?,
        state: GmState::parse(&state).ok_or_else(|| corrupt(format!("GM state {state}")))?,
        registered_at: r.try_get("registered_at")?,
        last_seq_sent: opt(r.try_get("last_seq_sent")?, "last_seq_sent")?,
        last_seq_acked: opt(r.try_get("last_seq_acked")?, "last_seq_acked")?,
        misses: u32_of(r.try_get("misses")?, "misses")?,
        sids: sids_of(&r.try_get::<String, _>("sids")?)?,
    })
}

/// One GM as the JSON page query lists it (the columns of [`GM_COLUMNS`] in order).
type JsonGm = (
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    String,
);

/// A page of GMs from its JSON form.
fn gms_of_json(json: &str) -> Result<Vec<GmRow>> {
    let rows: Vec<JsonGm> =
        serde_json::from_str(json).map_err(|e| corrupt(format!("GM page: {e}")))?;
    let opt = |v: Option<i64>, what: &str| v.map(|x| u32_of(x, what)).transpose();
    rows.into_iter()
        .map(|r| {
            Ok(GmRow {
                group: u32_of(r.0, "group identity")?,
                identity: r.1,
                address: r.2,
                class: r.3,
                version: r.4,
                features: u32_of(r.5, "features")?,
                state: GmState::parse(&r.6).ok_or_else(|| corrupt(format!("GM state {}", r.6)))?,
                registered_at: r.7,
                last_seq_sent: opt(r.8, "last_seq_sent")?,
                last_seq_acked: opt(r.9, "last_seq_acked")?,
                misses: u32_of(r.10, "misses")?,
                sids: sids_of(&r.11)?,
            })
        })
        .collect()
}

/// Sender IDs as stored: comma-separated decimals.
fn sids_text(sids: &[u32]) -> String {
    sids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn sids_of(s: &str) -> Result<Vec<u32>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|x| {
            x.parse()
                .map_err(|_| corrupt(format!("GM sender IDs {s:?}")))
        })
        .collect()
}

fn token_of<R: Row>(r: &R) -> Result<ApiToken>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = r.try_get("role")?;
    let gm_group: Option<i64> = r.try_get("gm_group")?;
    let gm_identity: Option<String> = r.try_get("gm_identity")?;
    let gm = match (gm_group, gm_identity) {
        (Some(g), Some(identity)) => Some(TokenGm {
            group: u32_of(g, "token GM group")?,
            identity,
        }),
        (None, None) => None,
        _ => return Err(corrupt("token GM binding is half set")),
    };
    Ok(ApiToken {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("token role {role}")))?,
        created_at: r.try_get("created_at")?,
        gm,
    })
}

fn audit_of<R: Row>(r: &R) -> Result<AuditEntry>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AuditEntry {
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
    })
}

fn audit_entry(actor: &Actor, action: &str, target: &str, detail: String) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        actor: actor.0.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    }
}

/// The policy as stored: the PSK is never in it (it is sealed apart).
fn policy_json(p: &GroupPolicy) -> Result<String> {
    serde_json::to_string(p).map_err(|e| corrupt(format!("policy: {e}")))
}

fn psk_of(p: &GroupPolicy) -> Option<&str> {
    match &p.authentication {
        crate::model::Authentication::Psk { psk: Some(k) } => Some(k),
        _ => None,
    }
}

macro_rules! store_impl {
    ($name:ident, $db:ty, $kind:expr, $json_page:expr, $begin:expr, $for_update:expr) => {
        impl $name {
            async fn audit_tx(
                tx: &mut sqlx::Transaction<'_, $db>,
                e: &AuditEntry,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(e.at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.detail)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn put_secret_tx(
                &self,
                tx: &mut sqlx::Transaction<'_, $db>,
                name: &str,
                plain: &[u8],
            ) -> Result<()> {
                let sealed = self.master.seal(name, plain)?;
                sqlx::query(
                    "INSERT INTO secrets (name, sealed, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(sealed)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            fn filter<'a>(q: &mut QueryBuilder<'a, $db>, f: &'a GmFilter) {
                q.push(" WHERE 1 = 1");
                if let Some(g) = f.group {
                    // On the GM table's own key, so its index serves filter and order.
                    q.push(" AND m.group_id = (SELECT id FROM groups WHERE identity = ")
                        .push_bind(i64::from(g))
                        .push(")");
                }
                if let Some(id) = &f.identity {
                    q.push(" AND m.identity = ").push_bind(id.as_str());
                }
                if let Some(s) = f.state {
                    q.push(" AND m.state = ").push_bind(s.as_str());
                }
                if let Some(c) = &f.class {
                    q.push(" AND m.class = ").push_bind(c.as_str());
                }
                if let Some((bit, yes)) = f.feature {
                    q.push(" AND (m.features & ")
                        .push_bind(i64::from(bit))
                        .push(if yes { ") <> 0" } else { ") = 0" });
                }
            }
        }

        #[async_trait::async_trait]
        impl Store for $name {
            fn kind(&self) -> BackendKind {
                $kind
            }

            async fn create_group(
                &self,
                actor: &Actor,
                name: &str,
                identity: u32,
                policy: &GroupPolicy,
            ) -> Result<Group> {
                let now = now_ms();
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query(&format!(
                    "INSERT INTO groups (name, identity, policy, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, 1, $4, $4) RETURNING {GROUP_COLUMNS}"
                ))
                .bind(name)
                .bind(i64::from(identity))
                .bind(policy_json(policy)?)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db(e, &format!("a group named {name:?} or numbered {identity}")))?;
                let group = group_of(&row)?;
                if let Some(k) = psk_of(policy) {
                    self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes()).await?;
                }
                Self::audit_tx(
                    &mut tx,
                    &audit_entry(actor, "group.create", name, format!("{{\"identity\":{identity}}}")),
                )
                .await?;
                tx.commit().await?;
                Ok(group)
            }

            async fn update_group(
                &self,
                actor: &Actor,
                name: &str,
                policy: &GroupPolicy,
                expected_version: Option<i64>,
            ) -> Result<Group> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query(&format!(
                    "UPDATE groups SET policy = $1, version = version + 1, updated_at = $2 \
                     WHERE name = $3 AND ($4 IS NULL OR version = $4) RETURNING {GROUP_COLUMNS}"
                ))
                .bind(policy_json(policy)?)
                .bind(now_ms())
                .bind(name)
                .bind(expected_version)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    let exists = sqlx::query("SELECT 1 FROM groups WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    return Err(if exists {
                        StoreError::Conflict(format!(
                            "group {name:?} changed since version {}",
                            expected_version.unwrap_or(0)
                        ))
                    } else {
                        StoreError::NotFound(format!("group {name:?}"))
                    });
                };
                let group = group_of(&row)?;
                let psk = match &policy.authentication {
                    crate::model::Authentication::Psk { psk: Some(k) } => {
                        self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes()).await?;
                        ",\"psk\":\"rotated\""
                    }
                    crate::model::Authentication::Psk { psk: None } => "",
                    // Certificates now: the PSK is retired with the change.
                    crate::model::Authentication::Pki => {
                        let gone = sqlx::query("DELETE FROM secrets WHERE name = $1")
                            .bind(psk_secret(name))
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if gone > 0 { ",\"psk\":\"retired\"" } else { "" }
                    }
                };
                Self::audit_tx(
                    &mut tx,
                    &audit_entry(actor, "group.update", name, format!("{{\"version\":{}{psk}}}", group.version)),
                )
                .await?;
                tx.commit().await?;
                Ok(group)
            }

            async fn delete_group(&self, actor: &Actor, name: &str) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let id: Option<(i64, i64)> =
                    sqlx::query(&format!("SELECT id, identity FROM groups WHERE name = $1{}", $for_update))
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("identity")?)))
                        .transpose()?;
                let Some((id, identity)) = id else {
                    return Err(StoreError::NotFound(format!("group {name:?}")));
                };
                for table in ["gms", "rekeys", "gm_health", "d3p_errors"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                // Every secret of the group: its PSK and its keys and SEQ.
                sqlx::query("DELETE FROM secrets WHERE name = $1 OR name = $2")
                    .bind(psk_secret(name))
                    .bind(crate::group_state_secret(u32_of(identity, "group identity")?))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM groups WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Self::audit_tx(&mut tx, &audit_entry(actor, "group.delete", name, "{}".into())).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn group(&self, name: &str) -> Result<Option<Group>> {
                sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| group_of(&r))
                    .transpose()
            }

            async fn group_by_identity(&self, identity: u32) -> Result<Option<Group>> {
                sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE identity = $1"))
                    .bind(i64::from(identity))
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| group_of(&r))
                    .transpose()
            }

            async fn groups(&self) -> Result<Vec<Group>> {
                sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(group_of)
                    .collect()
            }

            async fn group_psk(&self, name: &str) -> Result<Option<Zeroizing<String>>> {
                match self.secret(&psk_secret(name)).await? {
                    None => Ok(None),
                    Some(b) => String::from_utf8(b.to_vec())
                        .map(|s| Some(Zeroizing::new(s)))
                        .map_err(|_| corrupt("PSK is not UTF-8")),
                }
            }

            async fn set_group_psk(&self, actor: &Actor, name: &str, psk: Option<&str>) -> Result<Group> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1{}", $for_update))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound(format!("group {name:?}")));
                };
                let group = group_of(&row)?;
                let action = match psk {
                    Some(k) => {
                        if group.policy.authentication == crate::model::Authentication::Pki {
                            return Err(StoreError::Conflict(format!(
                                "group {name:?} authenticates GMs with certificates: set authentication to psk to give it a PSK"
                            )));
                        }
                        self.put_secret_tx(&mut tx, &psk_secret(name), k.as_bytes()).await?;
                        "group.psk.rotate"
                    }
                    None => {
                        sqlx::query("DELETE FROM secrets WHERE name = $1")
                            .bind(psk_secret(name))
                            .execute(&mut *tx)
                            .await?;
                        "group.psk.clear"
                    }
                };
                Self::audit_tx(&mut tx, &audit_entry(actor, action, name, "{}".into())).await?;
                tx.commit().await?;
                Ok(group)
            }

            async fn put_key_server(&self, actor: &Actor, ks: &KeyServer) -> Result<()> {
                let now = now_ms();
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO key_servers (name, address, priority, role, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) \
                     ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
                     priority = excluded.priority, role = excluded.role, updated_at = excluded.updated_at",
                )
                .bind(&ks.name)
                .bind(ks.address.to_string())
                .bind(i64::from(ks.priority))
                .bind(match ks.role {
                    KsRole::Primary => "primary",
                    KsRole::Secondary => "secondary",
                })
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| db(e, &format!("a key server at {}", ks.address)))?;
                Self::audit_tx(&mut tx, &audit_entry(actor, "key_server.put", &ks.name, "{}".into()))
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_key_server(&self, actor: &Actor, name: &str) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let n = sqlx::query("DELETE FROM key_servers WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("key server {name:?}")));
                }
                Self::audit_tx(&mut tx, &audit_entry(actor, "key_server.delete", name, "{}".into()))
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn key_servers(&self) -> Result<Vec<KeyServer>> {
                sqlx::query("SELECT name, address, priority, role FROM key_servers ORDER BY priority DESC, name")
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let address: String = r.try_get("address")?;
                        let role: String = r.try_get("role")?;
                        let priority: i64 = r.try_get("priority")?;
                        Ok(KeyServer {
                            name: r.try_get("name")?,
                            address: address.parse().map_err(|_| corrupt("key server address"))?,
                            priority: u8::try_from(priority).map_err(|_| corrupt("priority"))?,
                            role: match role.as_str() {
                                "primary" => KsRole::Primary,
                                "secondary" => KsRole::Secondary,
                                _ => return Err(corrupt(format!("role {role}"))),
                            },
                        })
                    })
                    .collect()
            }

            async fn put_gms(&self, gms: &[GmRow]) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                for gm in gms {
                    let r = sqlx::query(
                        "INSERT INTO gms (group_id, identity, address, class, version, features, state, \
                         registered_at, last_seq_sent, last_seq_acked, misses, sids) \
                         SELECT id, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM groups WHERE identity = $12 \
                         ON CONFLICT (group_id, identity) DO UPDATE SET address = excluded.address, \
                         class = excluded.class, version = excluded.version, features = excluded.features, \
                         state = excluded.state, registered_at = excluded.registered_at, \
                         last_seq_sent = excluded.last_seq_sent, last_seq_acked = excluded.last_seq_acked, \
                         misses = excluded.misses, sids = excluded.sids",
                    )
                    .bind(&gm.identity)
                    .bind(&gm.address)
                    .bind(&gm.class)
                    .bind(gm.version.as_deref())
                    .bind(i64::from(gm.features))
                    .bind(gm.state.as_str())
                    .bind(gm.registered_at)
                    .bind(gm.last_seq_sent.map(i64::from))
                    .bind(gm.last_seq_acked.map(i64::from))
                    .bind(i64::from(gm.misses))
                    .bind(sids_text(&gm.sids))
                    .bind(i64::from(gm.group))
                    .execute(&mut *tx)
                    .await?;
                    if r.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("group {}", gm.group)));
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_gm_state(&self, group: u32, identity: &str, state: GmState) -> Result<()> {
                let n = sqlx::query(
                    "UPDATE gms SET state = $1 WHERE identity = $2 AND group_id = (SELECT id FROM groups WHERE identity = $3)",
                )
                .bind(state.as_str())
                .bind(identity)
                .bind(i64::from(group))
                .execute(&self.pool)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("GM {identity:?} in group {group}")));
                }
                Ok(())
            }

            async fn remove_gm(&self, actor: &Actor, group: u32, identity: &str) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let n = sqlx::query(
                    "DELETE FROM gms WHERE identity = $1 AND group_id = (SELECT id FROM groups WHERE identity = $2)",
                )
                .bind(identity)
                .bind(i64::from(group))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("GM {identity:?} in group {group}")));
                }
                sqlx::query(
                    "DELETE FROM gm_health WHERE identity = $1 AND group_id = (SELECT id FROM groups WHERE identity = $2)",
                )
                .bind(identity)
                .bind(i64::from(group))
                .execute(&mut *tx)
                .await?;
                Self::audit_tx(
                    &mut tx,
                    &audit_entry(actor, "gm.eject", identity, format!("{{\"group\":{group}}}")),
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn gms(&self, filter: &GmFilter, page: &Page) -> Result<GmPage> {
                let limit = page.limit.clamp(1, 1000);
                // On SQLite the page comes back as one JSON value (one row, not
                // one per GM: sqlx hands SQLite rows over one by one between
                // threads, which cost more than the query). PostgreSQL's row
                // protocol is cheaper than building JSON there.
                let json_page: Option<&str> = $json_page;
                let mut q: QueryBuilder<'_, $db> = QueryBuilder::new(format!(
                    "{}SELECT m.group_id AS gid, {GM_COLUMNS} FROM gms m JOIN groups g ON g.id = m.group_id",
                    json_page.unwrap_or("")
                ));
                Self::filter(&mut q, filter);
                if let Some((g, id)) = &page.after {
                    // Rows are in (group row id, GM identity) order, which the
                    // primary key index gives without sorting; the cursor names
                    // the group by its identity number.
                    q.push(" AND (m.group_id, m.identity) > ((SELECT id FROM groups WHERE identity = ")
                        .push_bind(i64::from(*g))
                        .push("), ")
                        .push_bind(id.as_str())
                        .push(")");
                }
                q.push(" ORDER BY m.group_id, m.identity LIMIT ")
                    .push_bind(i64::from(limit) + 1);
                let mut gms = if json_page.is_some() {
                    q.push(") p");
                    let json: Option<String> = q.build().fetch_one(&self.pool).await?.try_get("page")?;
                    gms_of_json(json.as_deref().unwrap_or("[]"))?
                } else {
                    let rows = q.build().fetch_all(&self.pool).await?;
                    rows.iter().map(gm_of).collect::<Result<Vec<_>>>()?
                };
                let next = if gms.len() > limit as usize {
                    gms.truncate(limit as usize);
                    gms.last().map(|g| (g.group, g.identity.clone()))
                } else {
                    None
                };
                Ok(GmPage { gms, next })
            }

            async fn live_gms(&self) -> Result<Vec<GmRow>> {
                let rows = sqlx::query(&format!(
                    "SELECT {GM_COLUMNS} FROM gms m JOIN groups g ON g.id = m.group_id \
                     WHERE m.state <> 'removed' ORDER BY m.group_id, m.identity"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(gm_of).collect()
            }

            async fn count_gms(&self, filter: &GmFilter) -> Result<u64> {
                let mut q: QueryBuilder<'_, $db> = QueryBuilder::new(
                    "SELECT COUNT(*) AS n FROM gms m JOIN groups g ON g.id = m.group_id",
                );
                Self::filter(&mut q, filter);
                let n: i64 = q.build().fetch_one(&self.pool).await?.try_get("n")?;
                u64::try_from(n).map_err(|_| corrupt("count"))
            }

            async fn put_gm_health(&self, h: &GmHealth) -> Result<()> {
                let c = &h.counters;
                let big = |v: u64, what: &str| {
                    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} is too large to store")))
                };
                let history = serde_json::to_string(&c.history)
                    .map_err(|e| corrupt(format!("history: {e}")))?;
                let mut tx = self.pool.begin_with($begin).await?;
                // The GM's row locked (PostgreSQL; SQLite's BEGIN IMMEDIATE
                // already holds the write lock): two reports of one GM at
                // once count its error rise once.
                let gid: Option<i64> = sqlx::query(&format!(
                    "SELECT m.group_id FROM gms m JOIN groups g ON g.id = m.group_id \
                     WHERE g.identity = $1 AND m.identity = $2{}",
                    if $for_update.is_empty() { "" } else { " FOR UPDATE OF m" }
                ))
                .bind(i64::from(h.group))
                .bind(&h.identity)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("group_id"))
                .transpose()?;
                let Some(gid) = gid else {
                    return Err(StoreError::NotFound(format!(
                        "GM {:?} in group {}",
                        h.identity, h.group
                    )));
                };
                let before: Option<(i64, i64)> = sqlx::query(
                    "SELECT input_errors, output_errors FROM gm_health WHERE group_id = $1 AND identity = $2",
                )
                .bind(gid)
                .bind(&h.identity)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get("input_errors")?, r.try_get("output_errors")?)))
                .transpose()?;
                let (inp, out) = (big(c.input_errors, "input_errors")?, big(c.output_errors, "output_errors")?);
                // A counter below the last report's: the agent restarted.
                let rise = |now: i64, was: Option<i64>| match was {
                    Some(w) if now >= w => now - w,
                    _ => now,
                };
                let (d_in, d_out) = (rise(inp, before.map(|b| b.0)), rise(out, before.map(|b| b.1)));
                sqlx::query(
                    "INSERT INTO gm_health (group_id, identity, received_at, agent_version, registered, \
                     d3p_window_ms, d3p_window_source, agent_time_ms, input_packets, output_packets, \
                     input_errors, output_errors, history) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (group_id, identity) DO UPDATE SET received_at = excluded.received_at, \
                     agent_version = excluded.agent_version, registered = excluded.registered, \
                     d3p_window_ms = excluded.d3p_window_ms, d3p_window_source = excluded.d3p_window_source, \
                     agent_time_ms = excluded.agent_time_ms, input_packets = excluded.input_packets, \
                     output_packets = excluded.output_packets, input_errors = excluded.input_errors, \
                     output_errors = excluded.output_errors, history = excluded.history",
                )
                .bind(gid)
                .bind(&h.identity)
                .bind(h.received_at)
                .bind(&h.agent_version)
                .bind(h.registered)
                .bind(h.d3p_window_ms.map(i64::from))
                .bind(h.d3p_window_source.map(|s| s.as_str()))
                .bind(big(h.agent_time_ms, "agent_time_ms")?)
                .bind(big(c.input_packets, "input_packets")?)
                .bind(big(c.output_packets, "output_packets")?)
                .bind(inp)
                .bind(out)
                .bind(history)
                .execute(&mut *tx)
                .await?;
                if d_in > 0 || d_out > 0 {
                    // One row per GM and minute: a GM reporting often adds to it.
                    sqlx::query(
                        "INSERT INTO d3p_errors (group_id, identity, at, input_errors, output_errors) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, identity, at) DO UPDATE \
                         SET input_errors = CASE WHEN d3p_errors.input_errors + excluded.input_errors > $6 \
                         THEN $6 ELSE d3p_errors.input_errors + excluded.input_errors END, \
                         output_errors = CASE WHEN d3p_errors.output_errors + excluded.output_errors > $6 \
                         THEN $6 ELSE d3p_errors.output_errors + excluded.output_errors END",
                    )
                    .bind(gid)
                    .bind(&h.identity)
                    .bind(h.received_at / 60_000 * 60_000)
                    .bind(d_in.min(MAX_D3P_ERRORS_PER_MINUTE))
                    .bind(d_out.min(MAX_D3P_ERRORS_PER_MINUTE))
                    .bind(MAX_D3P_ERRORS_PER_MINUTE)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM d3p_errors WHERE group_id = $1 AND at < $2")
                        .bind(gid)
                        .bind(h.received_at.saturating_sub(crate::D3P_ERRORS_KEPT_MS))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn gm_health(&self, group: u32, identity: &str) -> Result<Option<GmHealth>> {
                let Some(r) = sqlx::query(
                    "SELECT h.received_at, h.agent_version, h.registered, h.d3p_window_ms, \
                     h.d3p_window_source, h.agent_time_ms, h.input_packets, h.output_packets, \
                     h.input_errors, h.output_errors, h.history \
                     FROM gm_health h JOIN groups g ON g.id = h.group_id \
                     WHERE g.identity = $1 AND h.identity = $2",
                )
                .bind(i64::from(group))
                .bind(identity)
                .fetch_optional(&self.pool)
                .await?
                else {
                    return Ok(None);
                };
                let count = |col: &str| -> Result<u64> {
                    let v: i64 = r.try_get(col)?;
                    u64::try_from(v).map_err(|_| corrupt(format!("{col} {v}")))
                };
                let history: String = r.try_get("history")?;
                let source: Option<String> = r.try_get("d3p_window_source")?;
                let window: Option<i64> = r.try_get("d3p_window_ms")?;
                Ok(Some(GmHealth {
                    group,
                    identity: identity.to_owned(),
                    received_at: r.try_get("received_at")?,
                    agent_version: r.try_get("agent_version")?,
                    registered: r.try_get("registered")?,
                    d3p_window_ms: window.map(|w| u32_of(w, "d3p_window_ms")).transpose()?,
                    d3p_window_source: source
                        .map(|s| WindowSource::parse(&s).ok_or_else(|| corrupt(format!("window source {s}"))))
                        .transpose()?,
                    agent_time_ms: count("agent_time_ms")?,
                    counters: ReplayCounters {
                        input_packets: count("input_packets")?,
                        output_packets: count("output_packets")?,
                        input_errors: count("input_errors")?,
                        output_errors: count("output_errors")?,
                        history: serde_json::from_str(&history)
                            .map_err(|e| corrupt(format!("D3P history: {e}")))?,
                    },
                }))
            }

            async fn d3p_errors(
                &self,
                group: Option<u32>,
                since: i64,
                bucket_ms: i64,
            ) -> Result<Vec<D3pErrorPoint>> {
                let bucket = bucket_ms.max(1);
                let mut q: QueryBuilder<'_, $db> = QueryBuilder::new("SELECT (e.at / ");
                q.push_bind(bucket)
                    .push(") * ")
                    .push_bind(bucket)
                    .push(
                        " AS b, CAST(SUM(e.input_errors) AS BIGINT) AS i, CAST(SUM(e.output_errors) AS BIGINT) AS o \
                         FROM d3p_errors e WHERE e.at >= ",
                    )
                    .push_bind(since);
                if let Some(g) = group {
                    q.push(" AND e.group_id = (SELECT id FROM groups WHERE identity = ")
                        .push_bind(i64::from(g))
                        .push(")");
                }
                q.push(" GROUP BY b ORDER BY b LIMIT 10000");
                q.build()
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let n = |c: &str| -> Result<u64> {
                            let v: i64 = r.try_get(c)?;
                            u64::try_from(v).map_err(|_| corrupt(format!("D3P errors {v}")))
                        };
                        Ok(D3pErrorPoint { at: r.try_get("b")?, input_errors: n("i")?, output_errors: n("o")? })
                    })
                    .collect()
            }

            async fn d3p_spikes(&self, since: i64, min: u64, limit: u32) -> Result<Vec<D3pSpike>> {
                sqlx::query(
                    "SELECT g.identity AS gi, e.identity, CAST(SUM(e.input_errors) AS BIGINT) AS n \
                     FROM d3p_errors e JOIN groups g ON g.id = e.group_id WHERE e.at >= $1 \
                     GROUP BY g.identity, e.identity HAVING SUM(e.input_errors) >= $2 \
                     ORDER BY n DESC, e.identity LIMIT $3",
                )
                .bind(since)
                .bind(i64::try_from(min).unwrap_or(i64::MAX))
                .bind(i64::from(limit.clamp(1, 1000)))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    let n: i64 = r.try_get("n")?;
                    Ok(D3pSpike {
                        group: u32_of(r.try_get("gi")?, "group identity")?,
                        identity: r.try_get("identity")?,
                        input_errors: u64::try_from(n).map_err(|_| corrupt(format!("D3P errors {n}")))?,
                    })
                })
                .collect()
            }

            async fn put_rekey(&self, r: &RekeyRecord) -> Result<()> {
                let n = sqlx::query(
                    "INSERT INTO rekeys (group_id, seq, reason, started_at, sent, acked, duration_ms) \
                     SELECT id, $1, $2, $3, $4, $5, $6 FROM groups WHERE identity = $7 \
                     ON CONFLICT (group_id, seq) DO UPDATE SET reason = excluded.reason, \
                     started_at = excluded.started_at, sent = excluded.sent, acked = excluded.acked, \
                     duration_ms = excluded.duration_ms",
                )
                .bind(i64::from(r.seq))
                .bind(&r.reason)
                .bind(r.started_at)
                .bind(i64::from(r.sent))
                .bind(i64::from(r.acked))
                .bind(r.duration_ms)
                .bind(i64::from(r.group))
                .execute(&self.pool)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("group {}", r.group)));
                }
                Ok(())
            }

            async fn rekeys(&self, group: u32, limit: u32) -> Result<Vec<RekeyRecord>> {
                sqlx::query(
                    "SELECT r.seq, r.reason, r.started_at, r.sent, r.acked, r.duration_ms FROM rekeys r \
                     JOIN groups g ON g.id = r.group_id WHERE g.identity = $1 ORDER BY r.seq DESC LIMIT $2",
                )
                .bind(i64::from(group))
                .bind(i64::from(limit.clamp(1, 1000)))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| {
                    Ok(RekeyRecord {
                        group,
                        seq: u32_of(row.try_get("seq")?, "seq")?,
                        reason: row.try_get("reason")?,
                        started_at: row.try_get("started_at")?,
                        sent: u32_of(row.try_get("sent")?, "sent")?,
                        acked: u32_of(row.try_get("acked")?, "acked")?,
                        duration_ms: row.try_get("duration_ms")?,
                    })
                })
                .collect()
            }

            async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
                sqlx::query(
                    "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit.clamp(1, 10_000)))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(audit_of)
                .collect()
            }

            async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                Self::audit_tx(&mut tx, e).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_token(
                &self,
                actor: &Actor,
                name: &str,
                role: Role,
                token_hash: &[u8],
                gm: Option<&TokenGm>,
            ) -> Result<ApiToken> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query(&format!(
                    "INSERT INTO api_tokens (name, token_hash, role, created_at, gm_group, gm_identity) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
                ))
                .bind(name)
                .bind(token_hash)
                .bind(role.as_str())
                .bind(now_ms())
                .bind(gm.map(|g| i64::from(g.group)))
                .bind(gm.map(|g| g.identity.as_str()))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db(e, &format!("a token named {name:?}")))?;
                let t = token_of(&row)?;
                let detail = serde_json::json!({
                    "role": role.as_str(),
                    "gm": gm.map(|g| serde_json::json!({"group": g.group, "identity": g.identity})),
                });
                Self::audit_tx(&mut tx, &audit_entry(actor, "token.create", name, detail.to_string()))
                    .await?;
                tx.commit().await?;
                Ok(t)
            }

            async fn bind_token(&self, actor: &Actor, token_id: i64, gm: &TokenGm) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                let name: Option<String> = sqlx::query(
                    "UPDATE api_tokens SET gm_group = $1, gm_identity = $2 \
                     WHERE id = $3 AND gm_group IS NULL AND gm_identity IS NULL RETURNING name",
                )
                .bind(i64::from(gm.group))
                .bind(&gm.identity)
                .bind(token_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("name"))
                .transpose()?;
                let Some(name) = name else {
                    return Ok(false);
                };
                let detail = serde_json::json!({"gm": {"group": gm.group, "identity": gm.identity}});
                Self::audit_tx(&mut tx, &audit_entry(actor, "token.bind", &name, detail.to_string()))
                    .await?;
                tx.commit().await?;
                self.tokens.clear();
                Ok(true)
            }

            async fn token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>> {
                if let Some(t) = self.tokens.get(token_hash) {
                    return Ok(Some(t));
                }
                let t = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"))
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| token_of(&r))
                    .transpose()?;
                if let Some(t) = &t {
                    self.tokens.put(token_hash, t);
                }
                Ok(t)
            }

            async fn tokens(&self) -> Result<Vec<ApiToken>> {
                sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(token_of)
                    .collect()
            }

            async fn delete_token(&self, actor: &Actor, name: &str) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let n = sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("token {name:?}")));
                }
                Self::audit_tx(&mut tx, &audit_entry(actor, "token.delete", name, "{}".into())).await?;
                tx.commit().await?;
                self.tokens.clear();
                Ok(())
            }

            async fn put_secret(&self, name: &str, plain: &[u8]) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                self.put_secret_tx(&mut tx, name, plain).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
                let row = sqlx::query("SELECT sealed FROM secrets WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    None => Ok(None),
                    Some(r) => {
                        let sealed: Vec<u8> = r.try_get("sealed")?;
                        Ok(Some(self.master.open(name, &sealed)?))
                    }
                }
            }
        }
    };
}

/// Valid API tokens seen in the last [`TOKEN_CACHE_TTL`], by hash: every
/// API request authenticates, and a database round trip each time was a
/// third of the API's work. Only tokens that exist are kept (so the cache
/// is as small as the token table); deleting a token here empties it. A
/// token deleted through another key server sharing the database stays
/// usable here for at most the TTL.
#[derive(Default)]
struct TokenCache(std::sync::Mutex<HashMap<Vec<u8>, (ApiToken, std::time::Instant)>>);

/// How long a cached token is trusted without asking the database.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl TokenCache {
    fn get(&self, hash: &[u8]) -> Option<ApiToken> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(t, _)| t.clone())
    }

    fn put(&self, hash: &[u8], t: &ApiToken) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(hash.to_vec(), (t.clone(), std::time::Instant::now()));
    }

    fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// The SQLite backend: one file, WAL mode, `synchronous = FULL` (a
/// committed rekey SEQ survives power loss), foreign keys on.
pub struct SqliteStore {
    pool: SqlitePool,
    master: MasterKey,
    tokens: TokenCache,
}

impl SqliteStore {
    /// Opens (creating) the file and applies the SQLite migrations.
    pub async fn open(url: &str, master: MasterKey) -> Result<Self> {
        let opts = if url.contains("://") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(url)
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(5))
        // Keep the GM database's pages in memory: 64 MiB of cache per connection.
        .pragma("cache_size", "-65536")
        .pragma("mmap_size", "268435456");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            master,
            tokens: TokenCache::default(),
        })
    }
}

/// The PostgreSQL backend.
pub struct PgStore {
    pool: PgPool,
    master: MasterKey,
    tokens: TokenCache,
}

impl PgStore {
    /// Connects and applies the PostgreSQL migrations.
    pub async fn open(url: &str, master: MasterKey) -> Result<Self> {
        // Twice the cores: each connection is a PostgreSQL process; more of
        // them than that only queue on the same CPUs (with 8 on 2 cores the
        // GM list's p99 was 22 ms, with 4 it was 7 ms; docs/BENCHMARKS.md).
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(2 * cores).unwrap_or(16).clamp(2, 16))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            master,
            tokens: TokenCache::default(),
        })
    }
}

store_impl!(
    SqliteStore,
    sqlx::Sqlite,
    BackendKind::Sqlite,
    Some(
        "SELECT json_group_array(json_array(group_identity, identity, address, class, version, \
         features, state, registered_at, last_seq_sent, last_seq_acked, misses, sids) \
         ORDER BY gid, identity) AS page FROM ("
    ),
    // Every transaction here writes: take SQLite's write lock up front, so
    // concurrent writers wait (busy_timeout) instead of failing with
    // "database is locked" when a read would have to become a write.
    "BEGIN IMMEDIATE",
    ""
);
store_impl!(
    PgStore,
    sqlx::Postgres,
    BackendKind::Postgres,
    None,
    "BEGIN",
    " FOR UPDATE"
);
