//! The PostgreSQL backend.

use sqlx::postgres::{PgPoolOptions, PgQueryResult};
use sqlx::Postgres;

use super::{Backend, SqlStore};
use crate::seal::MasterKey;
use crate::{BackendKind, Result};

impl Backend for Postgres {
    const KIND: BackendKind = BackendKind::Postgres;
    const BEGIN: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    // PostgreSQL's row protocol is cheaper than building JSON there.
    const JSON_PAGE: Option<&'static str> = None;

    const NUMBERED: bool = true;

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }
}

/// Connects and applies the PostgreSQL migrations.
pub async fn open(url: &str, master: MasterKey) -> Result<SqlStore<Postgres>> {
    // Twice the cores: each connection is a PostgreSQL process; more of
    // them than that only queue on the same CPUs (with 8 on 2 cores the
    // GM list's p99 was 22 ms, with 4 it was 7 ms; docs/BENCHMARKS.md).
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(2 * cores).unwrap_or(16).clamp(2, 16))
        .connect(url)
        .await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(pool, master))
}
