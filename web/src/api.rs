//! `/api/v1`: JSON resources for groups, GMs, key servers, tokens, status
//! and actions, described by the OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`. Every error is RFC 9457 problem+json; a request
//! that fails validation writes nothing.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gkm_store::model::{
    feature_bit, ApiToken, AuditEntry, GmFilter, GmHealth, GmRow, GmState, Group, GroupPolicy,
    Page, PeerKeyServer, Role, FEATURES,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::Caller;
use crate::ops::{self, check_name, group_named, invalid};
use crate::problem::Problem;
use crate::{can_mutate, ApiState, GroupStatus, RekeyAccepted};

/// Largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

pub use crate::extract::{ApiJson, ApiQuery};

fn mutate(caller: &Caller) -> Result<(), Problem> {
    if can_mutate(caller.role) {
        Ok(())
    } else {
        caller.require(Role::Operator)
    }
}

/// A group to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Name, 1-64 characters.
    pub name: String,
    /// Group ID: the GDOI group identity number, 1-4294967295. Accepted as
    /// `identity` (its name in GKM 0.1).
    #[serde(alias = "identity")]
    pub group_id: u32,
    /// Policy.
    pub policy: GroupPolicy,
}

/// A group's new policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    /// The new policy (replaces the old one).
    pub policy: GroupPolicy,
    /// Only if the group is still at this version (optimistic concurrency).
    pub version: Option<i64>,
}

/// A group as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// The group (its PSK is never shown).
    #[serde(flatten)]
    pub group: Group,
    /// `acknowledgement` as `show crypto gkm` prints it (`none` for multicast).
    pub acknowledgement: String,
    /// Whether a PSK is set.
    pub psk_set: bool,
    /// The peer key servers (`coop.peers`) that have a KS-to-KS PSK set,
    /// by address (their keys are never shown).
    pub coop_psk_set: Vec<String>,
    /// The weak algorithms the policy lets GMs use (`legacy_phase1`);
    /// empty when there is none.
    pub weak_algorithms: Vec<String>,
}

/// The answer to a policy change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupChanged {
    /// The group now.
    pub group: GroupView,
    /// Whether the change sends GMs a rekey replace: CMD <-> IP-D3P, or keys
    /// of another shape (TEK selectors, transforms, lifetimes; the KEK's
    /// algorithm or lifetime; the multicast rekey address).
    pub rekey_replace_scheduled: bool,
}

/// `POST /groups/{name}/rekey` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// Rekey replace instead of a TEK rekey.
    #[serde(default)]
    pub replace: bool,
}

/// GM listing query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GmQuery {
    /// Group identity number.
    pub group: Option<u32>,
    /// `registered`, `lagging` or `removed`.
    pub state: Option<String>,
    /// `cisco`, `asr9000` or `non-cisco`.
    pub class: Option<String>,
    /// `ip-d3p`, `gdoi-interop-ack` or `atd`, with `supported`.
    pub feature: Option<String>,
    /// `yes` or `no` (the seed's `| include no`).
    pub supported: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// Continue after this cursor (`next` of the previous page).
    pub after: Option<String>,
}

/// A page of GMs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GmList {
    /// The GMs.
    pub gms: Vec<GmRow>,
    /// Cursor of the next page, if any.
    pub next: Option<String>,
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Name, 1-64 characters.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Role agent only (and required there): the one GM the token reports for.
    #[serde(default)]
    pub gm: Option<gkm_store::model::TokenGm>,
}

/// A token just created: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The stored token.
    #[serde(flatten)]
    pub token: ApiToken,
    /// The bearer secret.
    pub secret: String,
}

/// Audit query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries, 1-10000 (default 100).
    pub limit: Option<u32>,
}

async fn view(state: &ApiState, g: Group) -> Result<GroupView, Problem> {
    let psk_set = state.store.group_psk(&g.name).await?.is_some();
    let coop_psk_set = if g.policy.coop.is_some() {
        state.store.coop_peers_with_psk(&g.name).await?
    } else {
        Vec::new()
    };
    Ok(GroupView {
        coop_psk_set,
        acknowledgement: g.policy.acknowledgement_shown().to_owned(),
        weak_algorithms: g.policy.weak_algorithms(),
        group: g,
        psk_set,
    })
}

/// List groups.
#[utoipa::path(get, path = "/api/v1/groups", responses((status = 200, body = [GroupView]), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn list_groups(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<GroupView>>, Problem> {
    c.require(Role::Viewer)?;
    let mut out = Vec::new();
    for g in s.store.groups().await? {
        out.push(view(&s, g).await?);
    }
    Ok(Json(out))
}

/// Create a group.
#[utoipa::path(post, path = "/api/v1/groups", request_body = NewGroup, responses((status = 201, body = GroupView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create_group(
    State(s): State<ApiState>,
    c: Caller,
    ApiJson(body): ApiJson<NewGroup>,
) -> Result<(StatusCode, Json<GroupView>), Problem> {
    mutate(&c)?;
    check_name("/name", &body.name)?;
    if body.group_id == 0 {
        return Err(invalid("/group_id", "0 is out of range: 1-4294967295"));
    }
    body.policy.validate()?;
    ops::check_psk_overlap(&s, &body.name, &body.policy).await?;
    let g = s
        .store
        .create_group(&c.actor(), &body.name, body.group_id, &body.policy)
        .await?;
    s.control.group_changed(g.group_id, Some(&g), false).await;
    Ok((StatusCode::CREATED, Json(view(&s, g).await?)))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/groups/{name}", params(("name" = String, Path)), responses((status = 200, body = GroupView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_group(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<GroupView>, Problem> {
    c.require(Role::Viewer)?;
    let g = group_named(&s, &name).await?;
    Ok(Json(view(&s, g).await?))
}

/// Replace a group's policy.
#[utoipa::path(put, path = "/api/v1/groups/{name}", params(("name" = String, Path)), request_body = GroupUpdate, responses((status = 200, body = GroupChanged), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn put_group(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<GroupUpdate>,
) -> Result<Json<GroupChanged>, Problem> {
    mutate(&c)?;
    let (g, replace) =
        ops::update_policy(&s, &c.actor(), &name, &body.policy, body.version).await?;
    Ok(Json(GroupChanged {
        group: view(&s, g).await?,
        rekey_replace_scheduled: replace,
    }))
}

/// Delete a group.
#[utoipa::path(delete, path = "/api/v1/groups/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_group(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    mutate(&c)?;
    let g = group_named(&s, &name).await?;
    s.store.delete_group(&c.actor(), &name).await?;
    s.control.group_changed(g.group_id, None, false).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /groups/{name}/psk` body: the group's new pre-shared key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PskRotation {
    /// The key, 1-512 characters (never shown again).
    pub psk: String,
}

/// Rotate a group's PSK: new phase 1 exchanges take the new key at once,
/// without a restart; the old key authenticates nothing from then on.
/// Phase 1 SAs made with the old key live out their lifetime.
#[utoipa::path(put, path = "/api/v1/groups/{name}/psk", params(("name" = String, Path)), request_body = PskRotation, responses((status = 200, body = GroupView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn rotate_psk(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PskRotation>,
) -> Result<Json<GroupView>, Problem> {
    mutate(&c)?;
    gkm_store::model::check_psk("/psk", &body.psk)?;
    let g = ops::set_psk(&s, &c.actor(), &name, Some(&body.psk)).await?;
    Ok(Json(view(&s, g).await?))
}

/// Clear a group's PSK: it then takes the configuration file's keyring
/// (docs/OPERATIONS.md, Security model), or admits nobody without one.
#[utoipa::path(delete, path = "/api/v1/groups/{name}/psk", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn clear_psk(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    mutate(&c)?;
    ops::set_psk(&s, &c.actor(), &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rekey now, or rekey replace.
#[utoipa::path(post, path = "/api/v1/groups/{name}/rekey", params(("name" = String, Path)), request_body = RekeyRequest, responses((status = 202, body = RekeyAccepted), (status = 404, body = Problem), (status = 503, body = Problem)), security(("bearer" = [])))]
pub async fn rekey(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RekeyRequest>,
) -> Result<(StatusCode, Json<RekeyAccepted>), Problem> {
    mutate(&c)?;
    let accepted = ops::rekey(&s, &c.actor(), &name, body.replace).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// A group's live status (`show crypto gkm ks rekey` and `ks policy`).
#[utoipa::path(get, path = "/api/v1/groups/{name}/status", params(("name" = String, Path)), responses((status = 200, body = GroupStatus), (status = 404, body = Problem), (status = 503, body = Problem)), security(("bearer" = [])))]
pub async fn status(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<GroupStatus>, Problem> {
    c.require(Role::Viewer)?;
    let g = group_named(&s, &name).await?;
    s.control.status(g.group_id).await.map(Json).ok_or_else(|| {
        Problem::unavailable(format!("the key server does not serve group {name:?} yet"))
    })
}

/// A group's cooperative key servers as this key server sees them
/// (`show crypto gkm ks coop`).
#[utoipa::path(get, path = "/api/v1/groups/{name}/coop", params(("name" = String, Path)), responses((status = 200, body = gkm_model::CoopView), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn coop(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<gkm_model::CoopView>, Problem> {
    c.require(Role::Viewer)?;
    let g = group_named(&s, &name).await?;
    if g.policy.coop.is_none() {
        return Err(Problem::not_found(format!(
            "group {name:?}: *NO* redundancy configured for this group"
        )));
    }
    s.control.coop(g.group_id).await.map(Json).ok_or_else(|| {
        Problem::not_found(format!(
            "group {name:?}: the key server runs no COOP for it (see its log: a peer without a pair PSK, or no ks_address_v6 for IPv6 peers)"
        ))
    })
}

fn gm_filter(q: &GmQuery) -> Result<GmFilter, Problem> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            GmState::parse(s).ok_or_else(|| invalid("/state", "use registered, lagging or removed"))
        })
        .transpose()?;
    if let Some(c) = &q.class {
        if !["cisco", "asr9000", "non-cisco"].contains(&c.as_str()) {
            return Err(invalid("/class", "use cisco, asr9000 or non-cisco"));
        }
    }
    let feature = match (&q.feature, &q.supported) {
        (None, None) => None,
        (Some(f), s) => {
            let bit = feature_bit(f).ok_or_else(|| {
                invalid(
                    "/feature",
                    format!(
                        "use one of {}",
                        FEATURES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            let yes = match s.as_deref() {
                None | Some("yes") => true,
                Some("no") => false,
                Some(_) => return Err(invalid("/supported", "use yes or no")),
            };
            Some((bit, yes))
        }
        (None, Some(_)) => return Err(invalid("/supported", "give feature with supported")),
    };
    Ok(GmFilter {
        group: q.group,
        gm_identity: None,
        state,
        class: q.class.clone(),
        feature,
    })
}

fn cursor_of(after: &Option<String>) -> Result<Option<(u32, String)>, Problem> {
    after
        .as_deref()
        .map(|c| {
            c.split_once(':')
                .and_then(|(g, id)| Some((g.parse().ok()?, id.to_owned())))
                .ok_or_else(|| invalid("/after", "not a cursor from a previous page"))
        })
        .transpose()
}

/// List GMs with filters and keyset pagination.
#[utoipa::path(get, path = "/api/v1/gms", params(GmQuery), responses((status = 200, body = GmList), (status = 400, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn list_gms(
    State(s): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<GmQuery>,
) -> Result<Response, Problem> {
    c.require(Role::Viewer)?;
    let filter = gm_filter(&q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid(
            "/limit",
            format!("{limit} is out of range: 1-1000"),
        ));
    }
    let page = Page {
        after: cursor_of(&q.after)?,
        limit,
    };
    // The generation before the read: a change committed meanwhile makes
    // the kept page stale (see `gm_pages`).
    let generation = s.store.gms_generation();
    if let Some(body) = s.gm_pages.get(&filter, &page, generation) {
        return Ok(json_bytes(body));
    }
    let rows = s.store.gms(&filter, &page).await?;
    let body = serde_json::to_vec(&GmList {
        gms: rows.gms,
        next: rows.next.map(|(g, id)| format!("{g}:{id}")),
    })
    .map(Bytes::from)
    .map_err(|e| {
        tracing::error!("encoding a GM page: {e}");
        Problem::internal()
    })?;
    s.gm_pages.put(filter, page, generation, body.clone());
    Ok(json_bytes(body))
}

/// An encoded JSON body, as `Json` would send it.
fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Eject a GM: removed from the GM database, no more rekeys.
#[utoipa::path(delete, path = "/api/v1/groups/{name}/gms/{gm_identity}", params(("name" = String, Path), ("gm_identity" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn eject_gm(
    State(s): State<ApiState>,
    c: Caller,
    Path((name, gm_identity)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    mutate(&c)?;
    ops::eject(&s, &c.actor(), &name, &gm_identity).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Report a GM's health (role agent or above). An agent token reports for
/// the one GM it is bound to: a report for any other gets 403 whether or
/// not that GM exists. The GM must be in the group's GM database (it
/// registered); the report replaces its last one.
#[utoipa::path(post, path = "/api/v1/gm-health", request_body = GmHealth, responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn report_health(
    State(s): State<ApiState>,
    c: Caller,
    ApiJson(h): ApiJson<GmHealth>,
) -> Result<StatusCode, Problem> {
    let r = accept_health(&s, c, h).await;
    s.metrics.agent_report(r.is_ok());
    r
}

async fn accept_health(s: &ApiState, c: Caller, mut h: GmHealth) -> Result<StatusCode, Problem> {
    c.require(Role::Agent)?;
    h.received_at = ops::now_ms();
    h.validate()?;
    let this = gkm_store::model::TokenGm {
        group: h.group,
        gm_identity: h.gm_identity.clone(),
    };
    if let Some(agent) = &c.agent {
        // An enrolled agent reports for itself, in its groups, while it is
        // not revoked (revoking deletes its token; this is the second lock).
        let a = s.store.agent(agent).await?;
        let ok = a.is_some_and(|a| {
            a.revoked_at.is_none() && a.name == h.gm_identity && a.groups.contains(&h.group)
        });
        if !ok {
            return Err(Problem::forbidden(format!(
                "token {:?} reports for agent {agent:?} in its own groups only",
                c.name
            )));
        }
    }
    match (&c.gm, c.role) {
        (Some(bound), _) if *bound == this => {}
        (Some(bound), _) => {
            return Err(Problem::forbidden(format!(
                "token {:?} reports for GM {:?} of group {} only",
                c.name, bound.gm_identity, bound.group
            )))
        }
        (None, Role::Agent) if c.agent.is_some() => {}
        (None, Role::Agent) => {
            // An agent token made before bindings existed: its first
            // report for a GM in the GM database binds it (audited, at
            // most once: the binding is a conditional update), and from
            // then on it reports for that GM only.
            let known = s
                .store
                .count_gms(&GmFilter {
                    group: Some(h.group),
                    gm_identity: Some(h.gm_identity.clone()),
                    ..GmFilter::default()
                })
                .await?;
            if known == 0 {
                return Err(Problem::not_found(format!(
                    "GM {:?} in group {}",
                    h.gm_identity, h.group
                )));
            }
            if !s.store.bind_token(&c.actor(), c.token_id, &this).await? {
                return Err(Problem::forbidden(format!(
                    "token {:?} was bound to another GM meanwhile",
                    c.name
                )));
            }
            tracing::info!(token = ?c.name, group = h.group, gm = ?h.gm_identity, "agent token bound to the GM of its first report");
        }
        (None, _) => {}
    }
    let added = s.store.put_gm_health(&h).await?;
    s.metrics
        .d3p_errors(&added.group_name, added.d3p_input_errors);
    Ok(StatusCode::NO_CONTENT)
}

/// A GM's latest health report.
#[utoipa::path(get, path = "/api/v1/groups/{name}/gms/{gm_identity}/health", params(("name" = String, Path), ("gm_identity" = String, Path)), responses((status = 200, body = GmHealth), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn gm_health(
    State(s): State<ApiState>,
    c: Caller,
    Path((name, gm_identity)): Path<(String, String)>,
) -> Result<Json<GmHealth>, Problem> {
    c.require(Role::Viewer)?;
    let g = group_named(&s, &name).await?;
    s.store
        .gm_health(g.group_id, &gm_identity)
        .await?
        .map(Json)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no health report from GM {gm_identity:?} in group {name:?}"
            ))
        })
}

/// List key servers.
#[utoipa::path(get, path = "/api/v1/key-servers", responses((status = 200, body = [PeerKeyServer])), security(("bearer" = [])))]
pub async fn list_key_servers(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<PeerKeyServer>>, Problem> {
    c.require(Role::Viewer)?;
    Ok(Json(s.store.key_servers().await?))
}

/// Create or replace a key server (admin).
#[utoipa::path(put, path = "/api/v1/key-servers/{name}", params(("name" = String, Path)), request_body = PeerKeyServer, responses((status = 200, body = PeerKeyServer), (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn put_key_server(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
    ApiJson(ks): ApiJson<PeerKeyServer>,
) -> Result<Json<PeerKeyServer>, Problem> {
    c.require(Role::Admin)?;
    if ks.name != name {
        return Err(invalid("/name", "must equal the name in the path"));
    }
    ks.validate()?;
    s.store.put_key_server(&c.actor(), &ks).await?;
    Ok(Json(ks))
}

/// Delete a key server (admin).
#[utoipa::path(delete, path = "/api/v1/key-servers/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_key_server(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    c.require(Role::Admin)?;
    s.store.delete_key_server(&c.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List API tokens (admin; secrets are never shown).
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = [ApiToken])), security(("bearer" = [])))]
pub async fn list_tokens(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<ApiToken>>, Problem> {
    c.require(Role::Admin)?;
    Ok(Json(s.store.tokens().await?))
}

/// Create an API token (admin); its secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken, responses((status = 201, body = CreatedToken), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn create_token(
    State(s): State<ApiState>,
    c: Caller,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    c.require(Role::Admin)?;
    let (token, secret) =
        ops::create_token(&s, &c.actor(), &body.name, body.role, body.gm.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

/// Delete an API token (admin).
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_token(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    c.require(Role::Admin)?;
    s.store.delete_token(&c.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery), responses((status = 200, body = [AuditEntry])), security(("bearer" = [])))]
pub async fn audit(
    State(s): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, Problem> {
    c.require(Role::Admin)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(invalid(
            "/limit",
            format!("{limit} is out of range: 1-10000"),
        ));
    }
    Ok(Json(s.store.audit(limit).await?))
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's OpenAPI 3.1 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "GKM controller API", version = "1", description = "GDOI key server control: groups, GMs, key servers, tokens, rekeys."),
    paths(
        list_groups, create_group, get_group, put_group, delete_group, rotate_psk, clear_psk, rekey, status, coop,
        list_gms, eject_gm, report_health, gm_health, list_key_servers, put_key_server, delete_key_server,
        list_tokens, create_token, delete_token, audit,
        crate::enroll::post_setup_key, crate::enroll::list_setup_keys, crate::enroll::delete_setup_key,
        crate::enroll::post_enroll, crate::enroll::renew, crate::enroll::list_agents, crate::enroll::post_revoke
    ),
    components(schemas(Problem, gkm_store::model::TokenGm)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

async fn fallback() -> Problem {
    Problem::not_found("no such API resource")
}

/// The `/api/v1` router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route(
            "/api/v1/groups/{name}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route(
            "/api/v1/groups/{name}/psk",
            axum::routing::put(rotate_psk).delete(clear_psk),
        )
        .route("/api/v1/groups/{name}/rekey", post(rekey))
        .route("/api/v1/groups/{name}/status", get(status))
        .route(
            "/api/v1/groups/{name}/gms/{gm_identity}",
            axum::routing::delete(eject_gm),
        )
        .route(
            "/api/v1/groups/{name}/gms/{gm_identity}/health",
            get(gm_health),
        )
        .route("/api/v1/groups/{name}/coop", get(coop))
        .route("/api/v1/gms", get(list_gms))
        .route("/api/v1/gm-health", post(report_health))
        .route("/api/v1/key-servers", get(list_key_servers))
        .route(
            "/api/v1/key-servers/{name}",
            axum::routing::put(put_key_server).delete(delete_key_server),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", axum::routing::delete(delete_token))
        .route("/api/v1/audit", get(audit))
        .merge(crate::enroll::routes())
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
