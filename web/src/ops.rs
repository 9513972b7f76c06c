//! The state-changing operations the API and the dashboard share: one
//! place validates, writes (store first, with its audit entry) and tells
//! the key-server engine, whatever the caller speaks (JSON or forms).

use gkm_store::model::{ApiToken, AuditEntry, Group, GroupPolicy, Invalid, Role};
use gkm_store::Actor;

use crate::auth::new_token;
use crate::problem::Problem;
use crate::{ApiState, RekeyAccepted};

/// Now, UNIX ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A 422 problem for one field.
pub fn invalid(field: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(Invalid {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// Names of groups, tokens and key servers: 1-64 letters, digits, space, `-_.`.
pub fn check_name(field: &str, name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1-64 characters: letters, digits, space, '-', '_', '.'",
        ))
    }
}

/// The group called `name`, or 404.
pub async fn group_named(state: &ApiState, name: &str) -> Result<Group, Problem> {
    state
        .store
        .group(name)
        .await?
        .ok_or_else(|| Problem::not_found(format!("group {name:?}")))
}

/// Replaces a group's policy if `version` (when given) is still current. Returns the
/// stored group and whether GMs get a rekey replace (a CMD ⇄ IP-D3P switch).
/// Nothing is written when validation fails.
pub async fn update_policy(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    policy: &GroupPolicy,
    version: Option<i64>,
) -> Result<(Group, bool), Problem> {
    policy.validate()?;
    let old = group_named(state, name).await?;
    let replace = old.policy.needs_replace_for(policy);
    let g = state
        .store
        .update_group(actor, name, policy, version)
        .await?;
    state
        .control
        .group_changed(g.identity, Some(&g), replace)
        .await;
    Ok((g, replace))
}

/// Rekey now (or rekey replace), audited.
pub async fn rekey(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    replace: bool,
) -> Result<RekeyAccepted, Problem> {
    let g = group_named(state, name).await?;
    let accepted = state
        .control
        .rekey(g.identity, replace)
        .await
        .map_err(Problem::unavailable)?;
    state
        .store
        .append_audit(&AuditEntry {
            at: now_ms(),
            actor: actor.0.clone(),
            action: if replace {
                "rekey.replace"
            } else {
                "rekey.now"
            }
            .into(),
            target: name.to_owned(),
            detail: "{}".into(),
        })
        .await?;
    Ok(accepted)
}

/// Ejects a GM: out of the GM database (audited), then out of the engine.
pub async fn eject(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    identity: &str,
) -> Result<(), Problem> {
    let g = group_named(state, name).await?;
    state.store.remove_gm(actor, g.identity, identity).await?;
    state
        .control
        .eject(g.identity, identity)
        .await
        .map_err(Problem::unavailable)
}

/// Creates an API token; its secret is returned here only.
pub async fn create_token(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    role: Role,
) -> Result<(ApiToken, String), Problem> {
    check_name("/name", name)?;
    let (secret, hash) = new_token()?;
    let token = state.store.create_token(actor, name, role, &hash).await?;
    Ok((token, secret))
}
