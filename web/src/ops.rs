//! The state-changing operations the API and the dashboard share: one
//! place validates, writes (store first, with its audit entry) and tells
//! the key-server engine, whatever the caller speaks (JSON or forms).

use gkm_store::model::{
    ApiToken, AuditEntry, Authentication, Group, GroupPolicy, Invalid, IpPrefix, Role, TokenGm,
};
use gkm_store::Actor;

use crate::auth::new_token;
use crate::problem::Problem;
use crate::{ApiState, RekeyAccepted, RekeyRefused};

/// Now, UNIX ms.
pub use gkm_model::clock::unix_ms_i64 as now_ms;

/// A 422 problem for one field.
pub fn invalid(field: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(Invalid::new(field, message))
}

/// Names of groups, tokens and key servers (the model's rule) as a 422.
pub fn check_name(field: &str, name: &str) -> Result<(), Problem> {
    gkm_store::model::check_name(field, name).map_err(Problem::invalid)
}

/// Most PSK groups whose address ranges may cover one source address: the
/// key server tries at most this many pre-shared keys for a source in
/// main mode (`gkm_proto::ks::MAX_PSK_CANDIDATES`, which a server test
/// keeps equal), so a group that would make more is refused here.
pub const MAX_PSK_GROUPS_PER_SOURCE: usize = 16;

/// Refuses a PSK policy for group `name` that would put more than
/// [`MAX_PSK_GROUPS_PER_SOURCE`] PSK groups on one source address (a group
/// without address ranges covers every source). Groups may share ranges
/// up to that: the key server tries each candidate PSK.
pub async fn check_psk_overlap(
    state: &ApiState,
    name: &str,
    policy: &GroupPolicy,
) -> Result<(), Problem> {
    let ranges = |p: &GroupPolicy| -> Vec<IpPrefix> {
        let v: Vec<IpPrefix> = p
            .authorization
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if v.is_empty() {
            IpPrefix::any().to_vec()
        } else {
            v
        }
    };
    let is_psk = |p: &GroupPolicy| matches!(p.authentication, Authentication::Psk { .. });
    if !is_psk(policy) {
        return Ok(());
    }
    let mut groups: Vec<(String, Vec<IpPrefix>)> = state
        .store
        .groups()
        .await?
        .into_iter()
        .filter(|g| g.name != name && is_psk(&g.policy))
        .map(|g| (g.name, ranges(&g.policy)))
        .collect();
    groups.push((name.to_owned(), ranges(policy)));
    // The deepest overlap is at the most specific prefix of some group:
    // count the groups with a range covering each prefix of each group.
    for (_, rs) in &groups {
        for p in rs {
            let over: Vec<&str> = groups
                .iter()
                .filter(|(_, qs)| qs.iter().any(|q| q.covers(p)))
                .map(|(n, _)| n.as_str())
                .collect();
            if over.len() > MAX_PSK_GROUPS_PER_SOURCE {
                return Err(Problem {
                    field: Some("/authorization/addresses".into()),
                    ..Problem::conflict(format!(
                        "group {name:?} would make {} PSK groups cover {}/{} ({}); the key server tries at most {MAX_PSK_GROUPS_PER_SOURCE} pre-shared keys per source: give the group narrower authorization addresses",
                        over.len(),
                        p.network(),
                        p.prefix_len(),
                        over.join(", ")
                    ))
                });
            }
        }
    }
    Ok(())
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
/// stored group and whether GMs get a rekey replace (a CMD ⇄ IP-D3P switch,
/// which the engine is told to force, or keys of another shape, which it
/// replaces by itself).
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
    check_psk_overlap(state, name, policy).await?;
    let replace = old.policy.needs_replace_for(policy);
    let g = state
        .store
        .update_group(actor, name, policy, version)
        .await?;
    state
        .control
        .group_changed(g.group_id, Some(&g), replace)
        .await;
    let reshaped = old.policy.key_shape_differs(policy);
    Ok((g, replace || reshaped))
}

/// Rotates (`Some`) or clears (`None`) a group's PSK (audited), then hands
/// the engine the group's new key set: new phase 1 exchanges use it at once.
pub async fn set_psk(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    psk: Option<&str>,
) -> Result<Group, Problem> {
    let g = state.store.set_group_psk(actor, name, psk).await?;
    state
        .control
        .group_changed(g.group_id, Some(&g), false)
        .await;
    Ok(g)
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
        .rekey(g.group_id, replace)
        .await
        .map_err(|e| match e {
            RekeyRefused::InFlight(d) => Problem::conflict(d),
            RekeyRefused::Unavailable(d) => Problem::unavailable(d),
        })?;
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
    state.store.eject_gm(actor, g.group_id, identity).await?;
    state
        .control
        .eject(g.group_id, identity)
        .await
        .map_err(Problem::unavailable)
}

/// Creates an API token; its secret is returned here only. An agent token
/// is bound to the one GM it reports for; no other role takes a binding.
pub async fn create_token(
    state: &ApiState,
    actor: &Actor,
    name: &str,
    role: Role,
    gm: Option<&TokenGm>,
) -> Result<(ApiToken, String), Problem> {
    check_name("/name", name)?;
    match (role, gm) {
        (Role::Agent, Some(g)) => g.validate()?,
        (Role::Agent, None) => {
            return Err(invalid(
                "/gm",
                "an agent token is bound to the GM it reports for: give gm {group, identity}",
            ))
        }
        (_, Some(_)) => return Err(invalid("/gm", "only agent tokens are bound to a GM")),
        (_, None) => {}
    }
    let (secret, hash) = new_token()?;
    let token = state
        .store
        .create_token(actor, name, role, &hash, gm)
        .await?;
    Ok((token, secret))
}
