//! Secrets, sealed with the master key before they reach the database
//! (named: the name is the seal's associated data).

use gkm_model::clock::unix_ms_i64 as now_ms;
use sqlx::Transaction;

use zeroize::Zeroizing;

use super::{Args, Backend, Col, Run, SqlStore};
use crate::{Result, SecretStore};

impl<DB: Backend> SqlStore<DB> {
    /// Seals `plain` and stores it under `name` in the caller's transaction.
    pub(super) async fn put_secret_tx(
        &self,
        tx: &mut Transaction<'_, DB>,
        name: &str,
        plain: &[u8],
    ) -> Result<()> {
        let sealed = self.master.seal(name, plain)?;
        Self::sql(
            "INSERT INTO secrets (name, sealed, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .arg(name)
        .arg(sealed)
        .arg(now_ms())
        .run(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<DB: Backend> SecretStore for SqlStore<DB> {
    async fn secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let row = Self::sql("SELECT sealed FROM secrets WHERE name = $1")
            .arg(name)
            .optional(&mut *self.conn().await?)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let sealed: Vec<u8> = r.col("sealed")?;
                Ok(Some(self.master.open(name, &sealed)?))
            }
        }
    }

    async fn put_secret(&self, name: &str, plain: &[u8]) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        self.put_secret_tx(&mut tx, name, plain).await?;
        tx.commit().await?;
        Ok(())
    }
}
