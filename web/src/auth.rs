//! Bearer API tokens: `gkm_` followed by 64 hex digits, stored only as
//! their SHA-256, each with a role.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::problem::Problem;
use crate::{ApiState, Role};

/// Prefix of every token (so a leaked one is recognisable in a scan).
pub const TOKEN_PREFIX: &str = "gkm_";

/// A fresh token and the hash to store.
pub fn new_token() -> Result<(String, Vec<u8>), Problem> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Problem::internal())?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(b));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name (the actor in the audit log).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The token's store id.
    pub token_id: i64,
    /// Agent tokens: the GM it reports for.
    pub gm: Option<gkm_store::model::TokenGm>,
    /// An enrolled agent's token: the agent's name.
    pub agent: Option<String>,
}

impl Caller {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> Result<(), Problem> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "token {:?} has role {}; this needs {}",
                self.name,
                self.role.as_str(),
                role.as_str()
            )))
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> gkm_store::Actor {
        gkm_store::Actor(format!("token:{}", self.name))
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(TOKEN_PREFIX))
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be Bearer gkm_...")
            })?;
        let t = state
            .store
            .token_by_hash(&token_hash(token))
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown or deleted token"))?;
        Ok(Self {
            name: t.name,
            role: t.role,
            token_id: t.id,
            gm: t.gm,
            agent: t.agent,
        })
    }
}
