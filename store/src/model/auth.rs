//! How a phase 1 peer authenticates (a pre-shared key or certificates),
//! shared by a group's GMs and its cooperative key servers.

use serde::{Deserialize, Serialize};

use gkm_model::Invalid;

/// How GMs authenticate in phase 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Authentication {
    /// Pre-shared key. Write-only: the API never returns it (it is sealed
    /// at rest; responses show `psk_set`).
    Psk {
        /// The key (on input only).
        #[serde(default, skip_serializing)]
        psk: Option<String>,
    },
    /// X.509 certificates from the configured CAs.
    Pki,
}

impl Default for Authentication {
    fn default() -> Self {
        Self::Psk { psk: None }
    }
}

/// A pre-shared key: 1-512 characters.
pub fn check_psk(field: &str, k: &str) -> Result<(), Invalid> {
    if k.is_empty() || k.len() > 512 {
        return Err(Invalid::new(
            field,
            "the pre-shared key must be 1-512 characters",
        ));
    }
    Ok(())
}
