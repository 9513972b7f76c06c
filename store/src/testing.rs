//! Test support (feature `testing`, for the test suites of this crate and
//! its users; never in a shipped build): a fresh PostgreSQL database per
//! test on the server `GKM_TEST_POSTGRES_URL` names (`scripts/test` starts
//! a throwaway PostgreSQL 15 and sets it).

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

static N: AtomicU32 = AtomicU32::new(0);

/// The URL of a new, empty database; an error says how to get a server.
pub async fn postgres_database() -> Result<String, String> {
    let admin = std::env::var("GKM_TEST_POSTGRES_URL").map_err(|_| {
        "GKM_TEST_POSTGRES_URL is not set: the PostgreSQL tests need a real PostgreSQL. \
         Run scripts/test (it starts a throwaway PostgreSQL 15), or point the variable \
         at a server where this user may CREATE DATABASE"
            .to_string()
    })?;
    let name = format!("gkm_test_{}", unique());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .map_err(|e| format!("{admin}: {e}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// A name no other test process on this machine uses now or used before:
/// the process id alone is reused across a long suite, so the clock and a
/// per-process counter stand beside it.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new, empty directory under the system's temporary directory, named
/// `gkm-{tag}-` and a unique suffix; a stale one of that name is removed
/// first.
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gkm-{tag}-{}", unique()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
