//! The key servers of the deployment (the cooperative key servers' peer
//! rows), by name.

use gkm_model::clock::unix_ms_i64 as now_ms;

use super::{audit, corrupt, db, Args, Backend, Col, Run, SqlStore};
use crate::model::{KsRole, PeerKeyServer};
use crate::{Actor, KeyServerStore, Result, StoreError};

#[async_trait::async_trait]
impl<DB: Backend> KeyServerStore for SqlStore<DB> {
    async fn put_key_server(&self, actor: &Actor, ks: &PeerKeyServer) -> Result<()> {
        let now = now_ms();
        let role = match ks.role {
            KsRole::Primary => "primary",
            KsRole::Secondary => "secondary",
        };
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        Self::sql(
            "INSERT INTO key_servers (name, address, priority, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
             priority = excluded.priority, role = excluded.role, updated_at = excluded.updated_at",
        )
        .arg(ks.name.as_str())
        .arg(ks.address.to_string())
        .arg(i64::from(ks.priority))
        .arg(role)
        .arg(now)
        .run(&mut *tx)
        .await
        .map_err(|e| db(e, &format!("a key server at {}", ks.address)))?;
        let e = audit::entry(actor, "key_server.put", &ks.name, "{}".into());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_key_server(&self, actor: &Actor, name: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let r = Self::sql("DELETE FROM key_servers WHERE name = $1")
            .arg(name)
            .run(&mut *tx)
            .await?;
        if DB::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound(format!("key server {name:?}")));
        }
        let e = audit::entry(actor, "key_server.delete", name, "{}".into());
        Self::audit_tx(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn key_servers(&self) -> Result<Vec<PeerKeyServer>> {
        Self::sql(
            "SELECT name, address, priority, role FROM key_servers ORDER BY priority DESC, name",
        )
        .all(&mut *self.conn().await?)
        .await?
        .iter()
        .map(|r| {
            let address: String = r.col("address")?;
            let role: String = r.col("role")?;
            let priority: i64 = r.col("priority")?;
            Ok(PeerKeyServer {
                name: r.col("name")?,
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
}
