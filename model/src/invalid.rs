//! A validation failure that names its field.

use serde::Serialize;

/// One validation failure: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Path of the failing field, e.g. `/d3p_window/msec`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Invalid {
    /// A failure of `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
