//! API and agent tokens: only their hashes are stored; an agent token is
//! bound to one GM at its first report. Valid tokens are cached for a few
//! seconds ([`TokenCache`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use gkm_model::clock::unix_ms_i64 as now_ms;

use super::{audit, corrupt, db, u32_of, Args, Backend, Col, Run, SqlStore};
use crate::model::{ApiToken, Role, TokenGm};
use crate::{Actor, Result, StoreError, TokenStore};

const TOKEN_COLUMNS: &str = "id, name, role, created_at, gm_group, gm_identity, agent";

/// Valid API tokens seen in the last [`TOKEN_CACHE_TTL`], by hash: every
/// API request authenticates, and a database round trip each time was a
/// third of the API's work. Only tokens that exist are kept (so the cache
/// is as small as the token table); deleting a token here empties it. A
/// token deleted through another key server sharing the database stays
/// usable here for at most the TTL.
#[derive(Default)]
pub(super) struct TokenCache(Mutex<HashMap<Vec<u8>, (ApiToken, Instant)>>);

/// How long a cached token is trusted without asking the database.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

impl TokenCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (ApiToken, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, hash: &[u8]) -> Option<ApiToken> {
        self.map()
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(t, _)| t.clone())
    }

    fn put(&self, hash: &[u8], t: &ApiToken) {
        self.map()
            .insert(hash.to_vec(), (t.clone(), Instant::now()));
    }

    pub(super) fn clear(&self) {
        self.map().clear();
    }
}

impl<DB: Backend> SqlStore<DB> {
    fn token_of(r: &DB::Row) -> Result<ApiToken> {
        let role: String = r.col("role")?;
        let gm_group: Option<i64> = r.col("gm_group")?;
        let gm_identity: Option<String> = r.col("gm_identity")?;
        let gm = match (gm_group, gm_identity) {
            (Some(g), Some(gm_identity)) => Some(TokenGm {
                group: u32_of(g, "token GM group")?,
                gm_identity,
            }),
            (None, None) => None,
            _ => return Err(corrupt("token GM binding is half set")),
        };
        Ok(ApiToken {
            id: r.col("id")?,
            name: r.col("name")?,
            role: Role::parse(&role).ok_or_else(|| corrupt(format!("token role {role}")))?,
            created_at: r.col("created_at")?,
            gm,
            agent: r.col("agent")?,
        })
    }
}

#[async_trait::async_trait]
impl<DB: Backend> TokenStore for SqlStore<DB> {
    async fn create_token(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        token_hash: &[u8],
        gm: Option<&TokenGm>,
    ) -> Result<ApiToken> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "INSERT INTO api_tokens (name, token_hash, role, created_at, gm_group, gm_identity) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        ))
        .arg(name)
        .arg(token_hash)
        .arg(role.as_str())
        .arg(now_ms())
        .arg(gm.map(|g| i64::from(g.group)))
        .arg(gm.map(|g| g.gm_identity.as_str()))
        .one(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("a token named {name:?}")))?;
        let t = Self::token_of(&row)?;
        let detail = serde_json::json!({
            "role": role.as_str(),
            "gm": gm.map(|g| serde_json::json!({"group": g.group, "gm_identity": g.gm_identity})),
        });
        let e = audit::entry(actor, "token.create", name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(t)
    }

    async fn bind_token(&self, actor: &Actor, token_id: i64, gm: &TokenGm) -> Result<bool> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(
            "UPDATE api_tokens SET gm_group = $1, gm_identity = $2 \
             WHERE id = $3 AND gm_group IS NULL AND gm_identity IS NULL RETURNING name",
        )
        .arg(i64::from(gm.group))
        .arg(gm.gm_identity.as_str())
        .arg(token_id)
        .optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let name: String = row.col("name")?;
        let detail = serde_json::json!({"gm": {"group": gm.group, "gm_identity": gm.gm_identity}});
        let e = audit::entry(actor, "token.bind", &name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        self.tokens.clear();
        Ok(true)
    }

    async fn token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>> {
        if let Some(t) = self.tokens.get(token_hash) {
            return Ok(Some(t));
        }
        let t = Self::sql(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"
        ))
        .arg(token_hash)
        .optional(&mut *self.conn().await?)
        .await?
        .map(|r| Self::token_of(&r))
        .transpose()?;
        if let Some(t) = &t {
            self.tokens.put(token_hash, t);
        }
        Ok(t)
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>> {
        Self::sql(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
        ))
        .all(&mut *self.conn().await?)
        .await?
        .iter()
        .map(Self::token_of)
        .collect()
    }

    async fn delete_token(&self, actor: &Actor, name: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let r = Self::sql("DELETE FROM api_tokens WHERE name = $1")
            .arg(name)
            .run(&mut *tx)
            .await?;
        if DB::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound(format!("token {name:?}")));
        }
        let e = audit::entry(actor, "token.delete", name, "{}".into());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        self.tokens.clear();
        Ok(())
    }
}
