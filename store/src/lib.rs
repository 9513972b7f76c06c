//! `gkm-store`: GKM's persistence.
//!
//! Owns (DESIGN.md): one async `Store` trait with a SQLite backend (the
//! zero-setup default) and a PostgreSQL backend, chosen from the URL
//! scheme; migrations per dialect in `migrations/`; secrets sealed at rest
//! with AES-256-GCM. The trait and backends land with the controller-core
//! issue; backend selection, which every entry point shares, is here.

use core::fmt;

/// Which backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Embedded SQLite file (`sqlite://path` or a bare path).
    Sqlite,
    /// PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres,
}

/// A database URL whose scheme no backend serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScheme(pub String);

impl fmt::Display for UnknownScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database URL scheme {:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB",
            self.0
        )
    }
}

impl std::error::Error for UnknownScheme {}

impl BackendKind {
    /// Picks the backend from a URL; a plain path means a SQLite file.
    pub fn from_url(url: &str) -> Result<Self, UnknownScheme> {
        match url.split_once("://") {
            None => Ok(Self::Sqlite),
            Some(("sqlite", _)) => Ok(Self::Sqlite),
            Some(("postgres" | "postgresql", _)) => Ok(Self::Postgres),
            Some((scheme, _)) => Err(UnknownScheme(scheme.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_selects_backend() {
        assert_eq!(BackendKind::from_url("gkm.db"), Ok(BackendKind::Sqlite));
        assert_eq!(
            BackendKind::from_url("sqlite:///var/lib/gkm/gkm.db"),
            Ok(BackendKind::Sqlite)
        );
        assert_eq!(
            BackendKind::from_url("postgres://gkm@localhost/gkm"),
            Ok(BackendKind::Postgres)
        );
        assert_eq!(
            BackendKind::from_url("postgresql://h/db"),
            Ok(BackendKind::Postgres)
        );
        let e = BackendKind::from_url("mysql://x").unwrap_err();
        assert!(e.to_string().contains("mysql"));
    }
}
