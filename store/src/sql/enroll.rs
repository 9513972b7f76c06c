//! Setup keys and enrolled agents ([`EnrollStore`]): a setup key's use
//! is counted, the agent stored and its token made in one transaction, so
//! a refused or failed enrollment changes nothing.

use super::{audit, corrupt, db, u32_of, Args, Backend, Col, Run, SqlStore};
use crate::model::{Agent, SetupKey, SetupKeyRefused};
use crate::{Actor, EnrollStore, Result, StoreError};

const KEY_COLUMNS: &str =
    "id, name, groups_json, tags_json, usage_limit, uses, expires_at, created_at";
const AGENT_COLUMNS: &str = "id, name, groups_json, tags_json, setup_key, cert_serial, \
     cert_not_after, enrolled_at, renewed_at, revoked_at";

fn json_of<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|_| corrupt(format!("{what}: {text:?}")))
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

impl<DB: Backend> SqlStore<DB> {
    fn setup_key_of(r: &DB::Row) -> Result<SetupKey> {
        let limit: Option<i64> = r.col("usage_limit")?;
        Ok(SetupKey {
            id: r.col("id")?,
            name: r.col("name")?,
            groups: json_of(&r.col::<String>("groups_json")?, "setup key groups")?,
            tags: json_of(&r.col::<String>("tags_json")?, "setup key tags")?,
            usage_limit: limit
                .map(|l| u32_of(l, "setup key usage limit"))
                .transpose()?,
            uses: u32_of(r.col("uses")?, "setup key uses")?,
            expires_at: r.col("expires_at")?,
            created_at: r.col("created_at")?,
        })
    }

    fn agent_of(r: &DB::Row) -> Result<Agent> {
        Ok(Agent {
            id: r.col("id")?,
            name: r.col("name")?,
            groups: json_of(&r.col::<String>("groups_json")?, "agent groups")?,
            tags: json_of(&r.col::<String>("tags_json")?, "agent tags")?,
            setup_key: r.col("setup_key")?,
            cert_serial: r.col("cert_serial")?,
            cert_not_after: r.col("cert_not_after")?,
            enrolled_at: r.col("enrolled_at")?,
            renewed_at: r.col("renewed_at")?,
            revoked_at: r.col("revoked_at")?,
        })
    }
}

#[async_trait::async_trait]
impl<DB: Backend> EnrollStore for SqlStore<DB> {
    async fn create_setup_key(
        &self,
        actor: &Actor,
        key: &SetupKey,
        key_hash: &[u8],
    ) -> Result<SetupKey> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "INSERT INTO setup_keys (name, key_hash, groups_json, tags_json, usage_limit, uses, \
             expires_at, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7) RETURNING {KEY_COLUMNS}"
        ))
        .arg(key.name.as_str())
        .arg(key_hash)
        .arg(json(&key.groups))
        .arg(json(&key.tags))
        .arg(key.usage_limit.map(i64::from))
        .arg(key.expires_at)
        .arg(key.created_at)
        .one(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("a setup key named {:?}", key.name)))?;
        let k = Self::setup_key_of(&row)?;
        let detail = serde_json::json!({
            "groups": k.groups, "tags": k.tags, "usage_limit": k.usage_limit,
            "expires_at": k.expires_at,
        });
        let e = audit::entry(actor, "setup_key.create", &k.name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(k)
    }

    async fn setup_keys(&self) -> Result<Vec<SetupKey>> {
        Self::sql(&format!(
            "SELECT {KEY_COLUMNS} FROM setup_keys ORDER BY name"
        ))
        .all(&mut *self.conn().await?)
        .await?
        .iter()
        .map(Self::setup_key_of)
        .collect()
    }

    async fn setup_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<SetupKey>> {
        Self::sql(&format!(
            "SELECT {KEY_COLUMNS} FROM setup_keys WHERE key_hash = $1"
        ))
        .arg(key_hash)
        .optional(&mut *self.conn().await?)
        .await?
        .map(|r| Self::setup_key_of(&r))
        .transpose()
    }

    async fn delete_setup_key(&self, actor: &Actor, name: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let r = Self::sql("DELETE FROM setup_keys WHERE name = $1")
            .arg(name)
            .run(&mut *tx)
            .await?;
        if DB::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound(format!("setup key {name:?}")));
        }
        let e = audit::entry(actor, "setup_key.delete", name, "{}".into());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enroll_agent(
        &self,
        key_id: i64,
        now_ms: i64,
        agent: &Agent,
        token_name: &str,
        token_hash: &[u8],
    ) -> Result<Agent> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let used = Self::sql(&format!(
            "UPDATE setup_keys SET uses = uses + 1 WHERE id = $1 AND expires_at > $2 \
             AND (usage_limit IS NULL OR uses < usage_limit) RETURNING {KEY_COLUMNS}"
        ))
        .arg(key_id)
        .arg(now_ms)
        .optional(&mut *tx)
        .await?;
        let key = match used {
            Some(r) => Self::setup_key_of(&r)?,
            None => {
                // Say which: it went, expired, or was used up meanwhile.
                let why = Self::sql(&format!(
                    "SELECT {KEY_COLUMNS} FROM setup_keys WHERE id = $1"
                ))
                .arg(key_id)
                .optional(&mut *tx)
                .await?
                .map(|r| Self::setup_key_of(&r))
                .transpose()?
                .map_or(SetupKeyRefused::Unknown, |k| {
                    k.usable_at(now_ms)
                        .err()
                        .unwrap_or(SetupKeyRefused::Exhausted)
                });
                return Err(StoreError::Refused(why));
            }
        };
        let row = Self::sql(&format!(
            "INSERT INTO agents (name, groups_json, tags_json, setup_key, cert_serial, \
             cert_not_after, enrolled_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING {AGENT_COLUMNS}"
        ))
        .arg(agent.name.as_str())
        .arg(json(&agent.groups))
        .arg(json(&agent.tags))
        .arg(key.name.as_str())
        .arg(agent.cert_serial.as_str())
        .arg(agent.cert_not_after)
        .arg(now_ms)
        .one(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("an agent named {:?}", agent.name)))?;
        let a = Self::agent_of(&row)?;
        Self::sql(
            "INSERT INTO api_tokens (name, token_hash, role, created_at, agent) \
             VALUES ($1, $2, 'agent', $3, $4)",
        )
        .arg(token_name)
        .arg(token_hash)
        .arg(now_ms)
        .arg(a.name.as_str())
        .run(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("a token named {token_name:?}")))?;
        let actor = Actor(format!("setup-key:{}", key.name));
        let detail = serde_json::json!({
            "agent": a.name, "uses": key.uses, "usage_limit": key.usage_limit,
        });
        let e = audit::entry(&actor, "setup_key.use", &key.name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        let detail = serde_json::json!({
            "groups": a.groups, "tags": a.tags, "cert_serial": a.cert_serial,
            "cert_not_after": a.cert_not_after, "token": token_name,
        });
        let e = audit::entry(&actor, "agent.enroll", &a.name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(a)
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        Self::sql(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(Self::agent_of)
            .collect()
    }

    async fn agent(&self, name: &str) -> Result<Option<Agent>> {
        Self::sql(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE name = $1"
        ))
        .arg(name)
        .optional(&mut *self.conn().await?)
        .await?
        .map(|r| Self::agent_of(&r))
        .transpose()
    }

    async fn renew_agent(
        &self,
        actor: &Actor,
        name: &str,
        cert_serial: &str,
        cert_not_after: i64,
    ) -> Result<Agent> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "UPDATE agents SET cert_serial = $1, cert_not_after = $2, renewed_at = $3 \
             WHERE name = $4 AND revoked_at IS NULL RETURNING {AGENT_COLUMNS}"
        ))
        .arg(cert_serial)
        .arg(cert_not_after)
        .arg(gkm_model::clock::unix_ms_i64())
        .arg(name)
        .optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent {name:?} (or it is revoked)")))?;
        let a = Self::agent_of(&row)?;
        let detail = serde_json::json!({
            "cert_serial": a.cert_serial, "cert_not_after": a.cert_not_after,
        });
        let e = audit::entry(actor, "agent.renew", name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(a)
    }

    async fn revoke_agent(&self, actor: &Actor, name: &str, now_ms: i64) -> Result<Agent> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let row = Self::sql(&format!(
            "UPDATE agents SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL \
             RETURNING {AGENT_COLUMNS}"
        ))
        .arg(now_ms)
        .arg(name)
        .optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists = Self::sql("SELECT id FROM agents WHERE name = $1")
                .arg(name)
                .optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!("agent {name:?} is already revoked"))
            } else {
                StoreError::NotFound(format!("agent {name:?}"))
            });
        };
        let a = Self::agent_of(&row)?;
        let r = Self::sql("DELETE FROM api_tokens WHERE agent = $1")
            .arg(name)
            .run(&mut *tx)
            .await?;
        let detail = serde_json::json!({
            "groups": a.groups, "tokens_deleted": DB::rows_affected(&r),
        });
        let e = audit::entry(actor, "agent.revoke", name, detail.to_string());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        self.tokens.clear();
        Ok(a)
    }
}
