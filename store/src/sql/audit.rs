//! The audit log: every mutation's entry is written in its own
//! transaction ([`SqlStore::audit_tx`]); actions that change no row append
//! one alone.

use gkm_model::clock::unix_ms_i64 as now_ms;
use sqlx::Transaction;

use super::{Args, Backend, Col, Run, SqlStore};
use crate::model::AuditEntry;
use crate::{Actor, AuditStore, Result};

/// An entry by `actor`, now.
pub(super) fn entry(actor: &Actor, action: &str, target: &str, detail: String) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        actor: actor.0.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    }
}

impl<DB: Backend> SqlStore<DB> {
    /// Writes `e` in the caller's transaction.
    pub(super) async fn audit_tx(tx: &mut Transaction<'_, DB>, e: &AuditEntry) -> Result<()> {
        Self::sql(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .arg(e.at)
        .arg(e.actor.as_str())
        .arg(e.action.as_str())
        .arg(e.target.as_str())
        .arg(e.detail.as_str())
        .run(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<DB: Backend> AuditStore for SqlStore<DB> {
    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        Self::sql("SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT $1")
            .arg(i64::from(limit.clamp(1, 10_000)))
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.col("at")?,
                    actor: r.col("actor")?,
                    action: r.col("action")?,
                    target: r.col("target")?,
                    detail: r.col("detail")?,
                })
            })
            .collect()
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        Self::audit_tx(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }
}
