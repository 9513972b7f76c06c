//! The SQLite backend: one file, WAL mode, `synchronous = FULL` (a
//! committed rekey SEQ survives power loss), foreign keys on.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::Sqlite;

use super::{Backend, SqlStore};
use crate::seal::MasterKey;
use crate::{BackendKind, Result};

impl Backend for Sqlite {
    const KIND: BackendKind = BackendKind::Sqlite;
    // Every transaction here writes: take SQLite's write lock up front, so
    // concurrent writers wait (busy_timeout) instead of failing with
    // "database is locked" when a read would have to become a write.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const FOR_UPDATE: &'static str = "";
    // One row, not one per GM: sqlx hands SQLite rows over one by one
    // between threads, which cost more than the query.
    const JSON_PAGE: Option<&'static str> = Some(
        "SELECT json_group_array(json_array(group_identity, identity, address, class, version, \
         features, state, registered_at, last_seq_sent, last_seq_acked, misses, sids) \
         ORDER BY gid, identity) AS page FROM (",
    );

    const NUMBERED: bool = false;

    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }
}

/// Opens (creating) the file and applies the SQLite migrations.
pub async fn open(url: &str, master: MasterKey) -> Result<SqlStore<Sqlite>> {
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
    Ok(SqlStore::new(pool, master))
}
