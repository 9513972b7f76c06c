//! Each group's rekey history: one row per (group, SEQ), updated as the
//! rekey's ACKs come in.

use super::{u32_of, Args, Backend, Col, Run, SqlStore};
use crate::model::RekeyRecord;
use crate::{RekeyStore, Result, StoreError};

#[async_trait::async_trait]
impl<DB: Backend> RekeyStore for SqlStore<DB> {
    async fn put_rekey(&self, r: &RekeyRecord) -> Result<()> {
        let done = Self::sql(
            "INSERT INTO rekeys (group_id, seq, reason, started_at, sent, acked, duration_ms) \
             SELECT id, $1, $2, $3, $4, $5, $6 FROM groups WHERE identity = $7 \
             ON CONFLICT (group_id, seq) DO UPDATE SET reason = excluded.reason, \
             started_at = excluded.started_at, sent = excluded.sent, acked = excluded.acked, \
             duration_ms = excluded.duration_ms",
        )
        .arg(i64::from(r.seq))
        .arg(r.reason.as_str())
        .arg(r.started_at)
        .arg(i64::from(r.sent))
        .arg(i64::from(r.acked))
        .arg(r.duration_ms)
        .arg(i64::from(r.group))
        .run(&mut *self.conn().await?)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("group {}", r.group)));
        }
        Ok(())
    }

    async fn rekeys(&self, group: u32, limit: u32) -> Result<Vec<RekeyRecord>> {
        Self::sql(
            "SELECT r.seq, r.reason, r.started_at, r.sent, r.acked, r.duration_ms FROM rekeys r \
             JOIN groups g ON g.id = r.group_id WHERE g.identity = $1 ORDER BY r.seq DESC LIMIT $2",
        )
        .arg(i64::from(group))
        .arg(i64::from(limit.clamp(1, 1000)))
        .all(&mut *self.conn().await?)
        .await?
        .iter()
        .map(|row| {
            Ok(RekeyRecord {
                group,
                seq: u32_of(row.col("seq")?, "seq")?,
                reason: row.col("reason")?,
                started_at: row.col("started_at")?,
                sent: u32_of(row.col("sent")?, "sent")?,
                acked: u32_of(row.col("acked")?, "acked")?,
                duration_ms: row.col("duration_ms")?,
            })
        })
        .collect()
    }
}
