//! The GM database: one row per (group, GM identity), what the key-server
//! engine knows of each GM (address, version, features, state, the rekey
//! SEQs sent and acknowledged, misses, sender IDs), paged by
//! (group, identity).

use std::collections::HashMap;

use super::{audit, corrupt, u32_of, Args, Backend, Col, Run, Sql, SqlStore};
use crate::model::{GmFilter, GmRow, GmState, Page};
use crate::{Actor, GmPage, GmStore, Result, StoreError};

/// GM rows one upsert statement writes at most (12 arguments each: far
/// below either dialect's limit on arguments).
const GMS_PER_STATEMENT: usize = 200;

const GM_COLUMNS: &str = "g.identity AS group_identity, m.identity, m.address, m.class, m.version, m.features, m.state, m.registered_at, m.last_seq_sent, m.last_seq_acked, m.misses, m.sids";

/// One GM as the JSON page lists it (the columns of [`GM_COLUMNS`] in order).
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

fn state_of(s: &str) -> Result<GmState> {
    GmState::parse(s).ok_or_else(|| corrupt(format!("GM state {s}")))
}

fn seq_of(v: Option<i64>, what: &str) -> Result<Option<u32>> {
    v.map(|x| u32_of(x, what)).transpose()
}

/// A page of GMs from its JSON form (SQLite's [`Backend::JSON_PAGE`]).
fn gms_of_json(json: &str) -> Result<Vec<GmRow>> {
    let rows: Vec<JsonGm> =
        serde_json::from_str(json).map_err(|e| corrupt(format!("GM page: {e}")))?;
    rows.into_iter()
        .map(|r| {
            Ok(GmRow {
                group: u32_of(r.0, "group identity")?,
                gm_identity: r.1,
                address: r.2,
                class: r.3,
                version: r.4,
                features: u32_of(r.5, "features")?,
                state: state_of(&r.6)?,
                registered_at: r.7,
                last_seq_sent: seq_of(r.8, "last_seq_sent")?,
                last_seq_acked: seq_of(r.9, "last_seq_acked")?,
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

/// Appends `filter`'s conditions (after a `WHERE 1 = 1`).
fn filter<'a>(q: &mut Sql<'a>, f: &'a GmFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(g) = f.group {
        // On the GM table's own key, so its index serves filter and order.
        q.push(" AND m.group_id = (SELECT id FROM groups WHERE identity = ")
            .int(i64::from(g))
            .push(")");
    }
    if let Some(id) = &f.gm_identity {
        q.push(" AND m.identity = ").text(id);
    }
    if let Some(s) = f.state {
        q.push(" AND m.state = ").text(s.as_str());
    }
    if let Some(c) = &f.class {
        q.push(" AND m.class = ").text(c);
    }
    if let Some((bit, yes)) = f.feature {
        q.push(" AND (m.features & ")
            .int(i64::from(bit))
            .push(if yes { ") <> 0" } else { ") = 0" });
    }
}

impl<DB: Backend> SqlStore<DB> {
    fn gm_of(r: &DB::Row) -> Result<GmRow> {
        let state: String = r.col("state")?;
        Ok(GmRow {
            group: u32_of(r.col("group_identity")?, "group identity")?,
            gm_identity: r.col("identity")?,
            address: r.col("address")?,
            class: r.col("class")?,
            version: r.col("version")?,
            features: u32_of(r.col("features")?, "features")?,
            state: state_of(&state)?,
            registered_at: r.col("registered_at")?,
            last_seq_sent: seq_of(r.col("last_seq_sent")?, "last_seq_sent")?,
            last_seq_acked: seq_of(r.col("last_seq_acked")?, "last_seq_acked")?,
            misses: u32_of(r.col("misses")?, "misses")?,
            sids: sids_of(&r.col::<String>("sids")?)?,
        })
    }
}

impl<DB: Backend> SqlStore<DB> {
    /// Marks the GM database changed: called after the change commits.
    pub(super) fn gms_changed(&self) {
        self.gms_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

#[async_trait::async_trait]
impl<DB: Backend> GmStore for SqlStore<DB> {
    fn gms_generation(&self) -> u64 {
        self.gms_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    async fn put_gms(&self, gms: &[GmRow]) -> Result<()> {
        // The last row of each GM only: one statement may not change a row
        // twice (PostgreSQL refuses it).
        let mut last: HashMap<(u32, &str), usize> = HashMap::new();
        for (i, gm) in gms.iter().enumerate() {
            last.insert((gm.group, gm.gm_identity.as_str()), i);
        }
        let mut rows: Vec<&GmRow> = gms
            .iter()
            .enumerate()
            .filter(|(i, gm)| last.get(&(gm.group, gm.gm_identity.as_str())) == Some(i))
            .map(|(_, gm)| gm)
            .collect();
        rows.sort_by_key(|gm| (gm.group, gm.gm_identity.as_str()));
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        for chunk in rows.chunks(GMS_PER_STATEMENT) {
            let sids: Vec<String> = chunk.iter().map(|gm| sids_text(&gm.sids)).collect();
            let mut q = Sql::new::<DB>(
                "INSERT INTO gms (group_id, identity, address, class, version, features, state, \
                 registered_at, last_seq_sent, last_seq_acked, misses, sids) \
                 SELECT g.id, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
                 v.column8, v.column9, v.column10, v.column11, v.column12 FROM (VALUES ",
            );
            for (i, (gm, sids)) in chunk.iter().zip(&sids).enumerate() {
                q.push(if i == 0 { "(" } else { ", (" })
                    .int(i64::from(gm.group))
                    .push(", ")
                    .text(&gm.gm_identity)
                    .push(", ")
                    .text(&gm.address)
                    .push(", ")
                    .text(&gm.class)
                    .push(", ")
                    .maybe_text(gm.version.as_deref())
                    .push(", ")
                    .int(i64::from(gm.features))
                    .push(", ")
                    .text(gm.state.as_str())
                    .push(", ")
                    .int(gm.registered_at)
                    .push(", ")
                    .maybe_int(gm.last_seq_sent.map(i64::from))
                    .push(", ")
                    .maybe_int(gm.last_seq_acked.map(i64::from))
                    .push(", ")
                    .int(i64::from(gm.misses))
                    .push(", ")
                    .text(sids)
                    .push(")");
            }
            // `WHERE true`: SQLite's upsert after a SELECT needs a WHERE.
            q.push(
                ") AS v JOIN groups g ON g.identity = v.column1 WHERE true \
                 ON CONFLICT (group_id, identity) DO UPDATE SET address = excluded.address, \
                 class = excluded.class, version = excluded.version, features = excluded.features, \
                 state = excluded.state, registered_at = excluded.registered_at, \
                 last_seq_sent = excluded.last_seq_sent, last_seq_acked = excluded.last_seq_acked, \
                 misses = excluded.misses, sids = excluded.sids",
            );
            let r = q.query::<DB>().run(&mut *tx).await?;
            if DB::rows_affected(&r) < chunk.len() as u64 {
                // A GM of a group that does not exist: name it (nothing is written).
                for gm in chunk {
                    let known = Self::sql("SELECT 1 FROM groups WHERE identity = $1")
                        .arg(i64::from(gm.group))
                        .optional(&mut *tx)
                        .await?;
                    if known.is_none() {
                        return Err(StoreError::NotFound(format!("group {}", gm.group)));
                    }
                }
                return Err(corrupt("GM rows not written"));
            }
        }
        tx.commit().await?;
        self.gms_changed();
        Ok(())
    }

    async fn set_gm_state(&self, group: u32, gm_identity: &str, state: GmState) -> Result<()> {
        let r = Self::sql(
            "UPDATE gms SET state = $1 WHERE identity = $2 \
             AND group_id = (SELECT id FROM groups WHERE identity = $3)",
        )
        .arg(state.as_str())
        .arg(gm_identity)
        .arg(i64::from(group))
        .run(&mut *self.conn().await?)
        .await?;
        if DB::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound(format!(
                "GM {gm_identity:?} in group {group}"
            )));
        }
        self.gms_changed();
        Ok(())
    }

    /// Ejects a GM: its row and its health report go, audited.
    async fn eject_gm(&self, actor: &Actor, group: u32, gm_identity: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        let r = Self::sql(
            "DELETE FROM gms WHERE identity = $1 \
             AND group_id = (SELECT id FROM groups WHERE identity = $2)",
        )
        .arg(gm_identity)
        .arg(i64::from(group))
        .run(&mut *tx)
        .await?;
        if DB::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound(format!(
                "GM {gm_identity:?} in group {group}"
            )));
        }
        Self::sql(
            "DELETE FROM gm_health WHERE identity = $1 \
             AND group_id = (SELECT id FROM groups WHERE identity = $2)",
        )
        .arg(gm_identity)
        .arg(i64::from(group))
        .run(&mut *tx)
        .await?;
        let detail = format!("{{\"group\":{group}}}");
        Self::audit_tx(
            &mut tx,
            &audit::entry(actor, "gm.eject", gm_identity, detail),
        )
        .await?;
        tx.commit().await?;
        self.gms_changed();
        Ok(())
    }

    async fn gms(&self, f: &GmFilter, page: &Page) -> Result<GmPage> {
        let limit = page.limit.clamp(1, 1000);
        let mut q = Sql::new::<DB>(format!(
            "{}SELECT m.group_id AS gid, {GM_COLUMNS} FROM gms m JOIN groups g ON g.id = m.group_id",
            DB::JSON_PAGE.unwrap_or("")
        ));
        filter(&mut q, f);
        if let Some((g, id)) = &page.after {
            // Rows are in (group row id, GM identity) order, which the
            // primary key index gives without sorting; the cursor names
            // the group by its identity number.
            q.push(" AND (m.group_id, m.identity) > ((SELECT id FROM groups WHERE identity = ")
                .int(i64::from(*g))
                .push("), ")
                .text(id)
                .push(")");
        }
        q.push(" ORDER BY m.group_id, m.identity LIMIT ")
            .int(i64::from(limit) + 1);
        let mut gms = if DB::JSON_PAGE.is_some() {
            q.push(") p");
            let row = q.query::<DB>().one(&mut *self.conn().await?).await?;
            let json: Option<String> = row.col("page")?;
            gms_of_json(json.as_deref().unwrap_or("[]"))?
        } else {
            let rows = q.query::<DB>().all(&mut *self.conn().await?).await?;
            rows.iter().map(Self::gm_of).collect::<Result<Vec<_>>>()?
        };
        let next = if gms.len() > limit as usize {
            gms.truncate(limit as usize);
            gms.last().map(|g| (g.group, g.gm_identity.clone()))
        } else {
            None
        };
        Ok(GmPage { gms, next })
    }

    async fn live_gms(&self) -> Result<Vec<GmRow>> {
        let rows = Self::sql(&format!(
            "SELECT {GM_COLUMNS} FROM gms m JOIN groups g ON g.id = m.group_id \
             WHERE m.state <> 'removed' ORDER BY m.group_id, m.identity"
        ))
        .all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(Self::gm_of).collect()
    }

    async fn count_gms(&self, f: &GmFilter) -> Result<u64> {
        let mut q =
            Sql::new::<DB>("SELECT COUNT(*) AS n FROM gms m JOIN groups g ON g.id = m.group_id");
        filter(&mut q, f);
        let n: i64 = q
            .query::<DB>()
            .one(&mut *self.conn().await?)
            .await?
            .col("n")?;
        u64::try_from(n).map_err(|_| corrupt("count"))
    }
}
