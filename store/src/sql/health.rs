//! GM health: each GM's latest report, and the D3P error series (the rise
//! of each GM's error counters per minute, kept for
//! [`crate::D3P_ERRORS_KEPT_MS`]) with its buckets and spikes.

use super::{corrupt, u32_of, u64_of, Args, Backend, Col, Run, Sql, SqlStore};
use crate::model::{
    D3pErrorPoint, D3pSpike, GmHealth, Membership, ReplayCounters, Traffic, WindowSource,
};
use crate::{AgentFindings, HealthAdded, HealthStore, Result, StoreError};

/// The most D3P errors one GM's minute holds (2^40: far beyond any link,
/// and small enough that the series' sums never overflow).
const MAX_D3P_ERRORS_PER_MINUTE: i64 = 1 << 40;

/// A report's counter as stored (BIGINT).
fn big(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} is too large to store")))
}

/// How much a counter rose since the last report; a counter below the
/// last report's means the agent restarted: the whole value is new.
fn rise(now: i64, was: Option<i64>) -> i64 {
    match was {
        Some(w) if now >= w => now - w,
        _ => now,
    }
}

/// `gm_health.membership`: what agents of GKM 0.2 on add to a report.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    membership: Option<Membership>,
    traffic: Option<Traffic>,
}

/// A GM whose agent acknowledged exactly the last SEQ the key server sent
/// it, which the key server counts as missed (the round closed without
/// its ACK): the ACK was lost on the way. Once the agent acknowledges a
/// later rekey the two SEQs differ and the flag goes, without waiting for
/// that round's close. An agent can only claim it for its own GM (its
/// token is bound to it). Removed GMs count in no finding. `h` is
/// `gm_health`, `m` is `gms`.
const ACK_LOST: &str = "m.state <> 'removed' AND m.misses > 0 \
     AND h.acked_seq IS NOT NULL AND h.acked_seq = m.last_seq_sent \
     AND (m.last_seq_acked IS NULL OR m.last_seq_acked <> m.last_seq_sent)";

#[async_trait::async_trait]
impl<DB: Backend> HealthStore for SqlStore<DB> {
    async fn put_gm_health(&self, h: &GmHealth) -> Result<HealthAdded> {
        let c = &h.counters;
        let history =
            serde_json::to_string(&c.history).map_err(|e| corrupt(format!("history: {e}")))?;
        let membership = match (&h.membership, &h.traffic) {
            (None, None) => None,
            (m, tr) => Some(
                serde_json::to_string(&Stored {
                    membership: m.clone(),
                    traffic: *tr,
                })
                .map_err(|e| corrupt(format!("membership: {e}")))?,
            ),
        };
        let mut tx = self.pool.begin_with(DB::BEGIN).await?;
        // The GM's row locked (PostgreSQL; SQLite's BEGIN IMMEDIATE
        // already holds the write lock): two reports of one GM at once
        // count its error rise once.
        let lock = if DB::FOR_UPDATE.is_empty() {
            ""
        } else {
            " FOR UPDATE OF m"
        };
        let sql = format!(
            "SELECT m.group_id, g.name FROM gms m JOIN groups g ON g.id = m.group_id \
             WHERE g.identity = $1 AND m.identity = $2{lock}"
        );
        let Some(row) = Self::sql(&sql)
            .arg(i64::from(h.group))
            .arg(h.gm_identity.as_str())
            .optional(&mut *tx)
            .await?
        else {
            return Err(StoreError::NotFound(format!(
                "GM {:?} in group {}",
                h.gm_identity, h.group
            )));
        };
        let gid: i64 = row.col("group_id")?;
        let group_name: String = row.col("name")?;
        let before = Self::sql(
            "SELECT input_errors, output_errors FROM gm_health WHERE group_id = $1 AND identity = $2",
        )
        .arg(gid)
        .arg(h.gm_identity.as_str())
        .optional(&mut *tx)
        .await?;
        let (was_in, was_out): (Option<i64>, Option<i64>) = match &before {
            Some(r) => (r.col("input_errors")?, r.col("output_errors")?),
            None => (None, None),
        };
        let inp = big(c.input_errors, "input_errors")?;
        let out = big(c.output_errors, "output_errors")?;
        let (d_in, d_out) = (rise(inp, was_in), rise(out, was_out));
        Self::sql(
            "INSERT INTO gm_health (group_id, identity, received_at, agent_version, registered, \
             d3p_window_ms, d3p_window_source, agent_time_ms, input_packets, output_packets, \
             input_errors, output_errors, history, membership, acked_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (group_id, identity) DO UPDATE SET received_at = excluded.received_at, \
             agent_version = excluded.agent_version, registered = excluded.registered, \
             d3p_window_ms = excluded.d3p_window_ms, d3p_window_source = excluded.d3p_window_source, \
             agent_time_ms = excluded.agent_time_ms, input_packets = excluded.input_packets, \
             output_packets = excluded.output_packets, input_errors = excluded.input_errors, \
             output_errors = excluded.output_errors, history = excluded.history, \
             membership = excluded.membership, acked_seq = excluded.acked_seq",
        )
        .arg(gid)
        .arg(h.gm_identity.as_str())
        .arg(h.received_at)
        .arg(h.agent_version.as_str())
        .arg(h.registered)
        .arg(h.d3p_window_ms.map(i64::from))
        .arg(h.d3p_window_source.map(|s| s.as_str()))
        .arg(big(h.agent_time_ms, "agent_time_ms")?)
        .arg(big(c.input_packets, "input_packets")?)
        .arg(big(c.output_packets, "output_packets")?)
        .arg(inp)
        .arg(out)
        .arg(history)
        .arg(membership.as_deref())
        .arg(
            h.membership
                .as_ref()
                .and_then(|m| m.last_seq_acked)
                .map(i64::from),
        )
        .run(&mut *tx)
        .await?;
        if d_in > 0 || d_out > 0 {
            // One row per GM and minute: a GM reporting often adds to it.
            Self::sql(
                "INSERT INTO d3p_errors (group_id, identity, at, input_errors, output_errors) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, identity, at) DO UPDATE \
                 SET input_errors = CASE WHEN d3p_errors.input_errors + excluded.input_errors > $6 \
                 THEN $6 ELSE d3p_errors.input_errors + excluded.input_errors END, \
                 output_errors = CASE WHEN d3p_errors.output_errors + excluded.output_errors > $6 \
                 THEN $6 ELSE d3p_errors.output_errors + excluded.output_errors END",
            )
            .arg(gid)
            .arg(h.gm_identity.as_str())
            .arg(h.received_at / 60_000 * 60_000)
            .arg(d_in.min(MAX_D3P_ERRORS_PER_MINUTE))
            .arg(d_out.min(MAX_D3P_ERRORS_PER_MINUTE))
            .arg(MAX_D3P_ERRORS_PER_MINUTE)
            .run(&mut *tx)
            .await?;
            Self::sql("DELETE FROM d3p_errors WHERE group_id = $1 AND at < $2")
                .arg(gid)
                .arg(h.received_at.saturating_sub(crate::D3P_ERRORS_KEPT_MS))
                .run(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(HealthAdded {
            group_name,
            d3p_input_errors: u64_of(d_in, "input_errors")?,
        })
    }

    async fn agent_findings(&self, silent_before: i64) -> Result<Vec<AgentFindings>> {
        let sql = format!(
            "SELECT g.name, \
             CAST(COALESCE(SUM(CASE WHEN m.identity IS NOT NULL AND m.state <> 'removed' \
             AND h.received_at < $1 \
             THEN 1 ELSE 0 END), 0) AS BIGINT) AS silent, \
             CAST(COALESCE(SUM(CASE WHEN m.identity IS NOT NULL AND {ACK_LOST} \
             THEN 1 ELSE 0 END), 0) AS BIGINT) AS ack_lost \
             FROM groups g \
             LEFT JOIN gm_health h ON h.group_id = g.id \
             LEFT JOIN gms m ON m.group_id = h.group_id AND m.identity = h.identity \
             GROUP BY g.name ORDER BY g.name"
        );
        Self::sql(&sql)
            .arg(silent_before)
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(|r| {
                Ok(AgentFindings {
                    group: r.col("name")?,
                    silent: u64_of(r.col("silent")?, "silent agents")?,
                    ack_lost: u64_of(r.col("ack_lost")?, "ACKs lost")?,
                })
            })
            .collect()
    }

    async fn gm_health(&self, group: u32, gm_identity: &str) -> Result<Option<GmHealth>> {
        let sql = format!(
            "SELECT h.received_at, h.agent_version, h.registered, h.d3p_window_ms, \
             h.d3p_window_source, h.agent_time_ms, h.input_packets, h.output_packets, \
             h.input_errors, h.output_errors, h.history, h.membership, \
             CAST(CASE WHEN {ACK_LOST} THEN 1 ELSE 0 END AS BIGINT) AS ack_lost \
             FROM gm_health h JOIN groups g ON g.id = h.group_id \
             LEFT JOIN gms m ON m.group_id = h.group_id AND m.identity = h.identity \
             WHERE g.identity = $1 AND h.identity = $2"
        );
        let Some(r) = Self::sql(&sql)
            .arg(i64::from(group))
            .arg(gm_identity)
            .optional(&mut *self.conn().await?)
            .await?
        else {
            return Ok(None);
        };
        let count = |col: &str| -> Result<u64> { u64_of(r.col(col)?, col) };
        let history: String = r.col("history")?;
        let source: Option<String> = r.col("d3p_window_source")?;
        let window: Option<i64> = r.col("d3p_window_ms")?;
        let added: Option<String> = r.col("membership")?;
        let added: Stored = match added {
            Some(j) => serde_json::from_str(&j).map_err(|e| corrupt(format!("membership: {e}")))?,
            None => Stored {
                membership: None,
                traffic: None,
            },
        };
        let ack_lost: i64 = r.col("ack_lost")?;
        Ok(Some(GmHealth {
            group,
            gm_identity: gm_identity.to_owned(),
            received_at: r.col("received_at")?,
            agent_version: r.col("agent_version")?,
            registered: r.col("registered")?,
            d3p_window_ms: window.map(|w| u32_of(w, "d3p_window_ms")).transpose()?,
            d3p_window_source: source
                .map(|s| {
                    WindowSource::parse(&s).ok_or_else(|| corrupt(format!("window source {s}")))
                })
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
            membership: added.membership,
            traffic: added.traffic,
            ack_lost: ack_lost != 0,
        }))
    }

    async fn d3p_errors(
        &self,
        group: Option<u32>,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Vec<D3pErrorPoint>> {
        let bucket = bucket_ms.max(1);
        let mut q = Sql::new::<DB>("SELECT (e.at / ");
        q.int(bucket)
            .push(") * ")
            .int(bucket)
            .push(
                " AS b, CAST(SUM(e.input_errors) AS BIGINT) AS i, \
                 CAST(SUM(e.output_errors) AS BIGINT) AS o \
                 FROM d3p_errors e WHERE e.at >= ",
            )
            .int(since);
        if let Some(g) = group {
            q.push(" AND e.group_id = (SELECT id FROM groups WHERE identity = ")
                .int(i64::from(g))
                .push(")");
        }
        q.push(" GROUP BY b ORDER BY b LIMIT 10000");
        q.query::<DB>()
            .all(&mut *self.conn().await?)
            .await?
            .iter()
            .map(|r| {
                Ok(D3pErrorPoint {
                    at: r.col("b")?,
                    input_errors: u64_of(r.col("i")?, "D3P errors")?,
                    output_errors: u64_of(r.col("o")?, "D3P errors")?,
                })
            })
            .collect()
    }

    async fn d3p_spikes(&self, since: i64, min: u64, limit: u32) -> Result<Vec<D3pSpike>> {
        Self::sql(
            "SELECT g.identity AS gi, e.identity, CAST(SUM(e.input_errors) AS BIGINT) AS n \
             FROM d3p_errors e JOIN groups g ON g.id = e.group_id WHERE e.at >= $1 \
             GROUP BY g.identity, e.identity HAVING SUM(e.input_errors) >= $2 \
             ORDER BY n DESC, e.identity LIMIT $3",
        )
        .arg(since)
        .arg(i64::try_from(min).unwrap_or(i64::MAX))
        .arg(i64::from(limit.clamp(1, 1000)))
        .all(&mut *self.conn().await?)
        .await?
        .iter()
        .map(|r| {
            Ok(D3pSpike {
                group: u32_of(r.col("gi")?, "group identity")?,
                gm_identity: r.col("identity")?,
                input_errors: u64_of(r.col("n")?, "D3P errors")?,
            })
        })
        .collect()
    }
}
