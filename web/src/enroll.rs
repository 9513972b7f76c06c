//! Enrollment over `/api/v1` (docs/OPERATIONS.md, "Enrollment"): setup
//! keys (operators make them; each is shown once and stored hashed), the
//! enrollment an agent makes with one (its key pair stays with it: it
//! sends a certificate signing request, the internal CA signs it, and the
//! agent gets an agent token bound to its name), renewal with that token,
//! and revocation, which takes the token at once, refuses the agent's
//! certificate at its next phase 1 and ejects it from its groups with a
//! rekey.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gkm_store::model::enroll::check_agent_name;
use gkm_store::model::{Agent, NewSetupKey, Role, SetupKey, SetupKeyRefused};
use gkm_store::{Actor, StoreError};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{new_token, token_hash, Caller};
use crate::ca::{CaError, InternalCa};
use crate::extract::ApiJson;
use crate::ops::{self, check_name, invalid};
use crate::problem::Problem;
use crate::ApiState;

/// A setup key's prefix (so a leaked one is recognisable).
pub const SETUP_KEY_PREFIX: &str = "gkmsk_";
/// Default validity of an agent's certificate: 90 days.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// What enrollment needs from the key server: its CA, where agents
/// register, how long their certificates last.
#[derive(Debug)]
pub struct Enrollment {
    /// The internal CA.
    pub ca: InternalCa,
    /// The key servers' GDOI addresses, for the agents to register with.
    pub key_servers: Vec<SocketAddr>,
    /// Validity of the certificates it signs.
    pub cert_validity: Duration,
}

/// A setup key just made: the key itself is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupKeyCreated {
    /// The key as stored.
    pub setup_key: SetupKey,
    /// The key (`gkmsk_...`): give it to the host's `gkm-agent enroll`.
    pub key: String,
}

/// An agent's enrollment request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The setup key.
    pub setup_key: String,
    /// The name it asks for (a DNS name; default: one the controller makes).
    pub name: Option<String>,
    /// Its PKCS#10 certificate signing request, PEM, over its own ECDSA
    /// P-256 key.
    pub csr: String,
}

/// A group an agent joins.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentGroup {
    /// Name.
    pub name: String,
    /// Identity number.
    pub group_id: u32,
}

/// What an enrolled agent gets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    /// Its name: its GM identity (ID_FQDN) and its certificate's CN and DNS name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<AgentGroup>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its certificate, PEM.
    pub certificate: String,
    /// The CA that signed it (and the key servers' certificates), PEM.
    pub ca: String,
    /// Its agent token (shown only here).
    pub token: String,
    /// The key servers to register with (`address:port`).
    #[schema(value_type = Vec<String>)]
    pub key_servers: Vec<SocketAddr>,
    /// The certificate's end of validity, UNIX ms.
    pub cert_not_after: i64,
}

/// A renewal request (with the agent's own token).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// A certificate signing request over its (new or same) P-256 key.
    pub csr: String,
}

/// A renewed certificate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Renewed {
    /// The certificate, PEM.
    pub certificate: String,
    /// The CA, PEM.
    pub ca: String,
    /// Its end of validity, UNIX ms.
    pub cert_not_after: i64,
}

fn enrollment(s: &ApiState) -> Result<&Arc<Enrollment>, Problem> {
    s.enrollment
        .as_ref()
        .ok_or_else(|| Problem::unavailable("enrollment is not set up on this key server"))
}

fn csr_problem(e: CaError) -> Problem {
    match e {
        CaError::Csr(m) => match m.split_once(": ") {
            Some((field, msg)) => invalid(field, msg),
            None => invalid("/csr", m),
        },
        other => {
            tracing::error!(error = %other, "internal CA");
            Problem::internal()
        }
    }
}

/// Makes a setup key (operator): validated, its groups resolved by name,
/// stored hashed; the key is returned once.
pub async fn create_setup_key(
    s: &ApiState,
    actor: &Actor,
    body: &NewSetupKey,
) -> Result<SetupKeyCreated, Problem> {
    check_name("/name", &body.name)?;
    let (usage_limit, secs) = body.validate()?;
    let mut groups = Vec::new();
    for (i, name) in body.groups.iter().enumerate() {
        let g = s
            .store
            .group(name)
            .await?
            .ok_or_else(|| invalid(&format!("/groups/{i}"), format!("no group {name:?}")))?;
        if groups.contains(&g.group_id) {
            return Err(invalid(&format!("/groups/{i}"), "listed twice"));
        }
        groups.push(g.group_id);
    }
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Problem::internal())?;
    let key = format!("{SETUP_KEY_PREFIX}{}", hex::encode(b));
    let now = ops::now_ms();
    let row = SetupKey {
        id: 0,
        name: body.name.clone(),
        groups,
        tags: body.tags.clone(),
        usage_limit,
        uses: 0,
        expires_at: now
            .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)),
        created_at: now,
    };
    let setup_key = s
        .store
        .create_setup_key(actor, &row, &token_hash(&key))
        .await?;
    Ok(SetupKeyCreated { setup_key, key })
}

/// Enrolls an agent (no bearer token: the setup key is the credential).
pub async fn enroll(s: &ApiState, req: &EnrollRequest) -> Result<Enrolled, Problem> {
    let e = enrollment(s)?;
    if !req.setup_key.starts_with(SETUP_KEY_PREFIX) {
        return Err(invalid("/setup_key", "not a GKM setup key (gkmsk_...)"));
    }
    let refused = |r: SetupKeyRefused| match r {
        SetupKeyRefused::Unknown => Problem::unauthorized(r.to_string()),
        _ => Problem::forbidden(r.to_string()),
    };
    let key = s
        .store
        .setup_key_by_hash(&token_hash(&req.setup_key))
        .await?
        .ok_or_else(|| refused(SetupKeyRefused::Unknown))?;
    key.usable_at(ops::now_ms()).map_err(refused)?;
    let name = match &req.name {
        Some(n) => {
            check_agent_name("/name", n)?;
            n.clone()
        }
        None => {
            let mut b = [0u8; 6];
            SystemRandom::new()
                .fill(&mut b)
                .map_err(|_| Problem::internal())?;
            format!("agent-{}", hex::encode(b))
        }
    };
    if s.store.agent(&name).await?.is_some() {
        return Err(Problem::conflict(format!(
            "an agent named {name:?} is enrolled (or was, and is revoked)"
        )));
    }
    let issued =
        e.ca.sign_csr(&req.csr, &name, &key.groups, e.cert_validity)
            .map_err(csr_problem)?;
    let (token, hash) = new_token()?;
    let agent = Agent {
        id: 0,
        name: name.clone(),
        groups: key.groups.clone(),
        tags: key.tags.clone(),
        setup_key: key.name.clone(),
        cert_serial: issued.serial_hex.clone(),
        cert_not_after: issued.not_after_ms,
        enrolled_at: 0,
        renewed_at: None,
        revoked_at: None,
    };
    let agent = s
        .store
        .enroll_agent(
            key.id,
            ops::now_ms(),
            &agent,
            &format!("agent:{name}"),
            &hash,
        )
        .await
        .map_err(|err| match err {
            StoreError::Refused(r) => refused(r),
            other => other.into(),
        })?;
    tracing::info!(agent = %name, setup_key = %key.name, groups = ?agent.groups, "agent enrolled");
    s.control.agents_changed().await;
    Ok(Enrolled {
        groups: agent_groups(s, &agent.groups).await?,
        name,
        tags: agent.tags,
        certificate: issued.pem,
        ca: e.ca.cert_pem().to_owned(),
        token,
        key_servers: e.key_servers.clone(),
        cert_not_after: issued.not_after_ms,
    })
}

async fn agent_groups(s: &ApiState, ids: &[u32]) -> Result<Vec<AgentGroup>, Problem> {
    let mut out = Vec::new();
    for &id in ids {
        if let Some(g) = s.store.group_by_group_id(id).await? {
            out.push(AgentGroup {
                name: g.name,
                group_id: id,
            });
        }
    }
    Ok(out)
}

/// Revokes an agent (operator): its tokens go at once, its certificate
/// is refused at its next phase 1, it is ejected from each group, and
/// each group is rekeyed so that the keys it held are replaced.
pub async fn revoke(s: &ApiState, actor: &Actor, name: &str) -> Result<Agent, Problem> {
    let agent = s.store.revoke_agent(actor, name, ops::now_ms()).await?;
    s.control.agents_changed().await;
    for &group in &agent.groups {
        // The engine's GM database is the live one (the store follows it):
        // eject there whether or not the store has the row yet.
        match s.store.eject_gm(actor, group, name).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        s.control
            .eject(group, name)
            .await
            .map_err(Problem::unavailable)?;
        if let Err(e) = s.control.rekey(group, false).await {
            tracing::warn!(group, error = ?e, "rekey after revoking an agent");
        }
    }
    tracing::warn!(agent = %name, groups = ?agent.groups, "agent revoked");
    Ok(agent)
}

/// `POST /api/v1/setup-keys`: make one (operator).
#[utoipa::path(post, path = "/api/v1/setup-keys", request_body = NewSetupKey, responses((status = 201, body = SetupKeyCreated), (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn post_setup_key(
    State(s): State<ApiState>,
    c: Caller,
    ApiJson(body): ApiJson<NewSetupKey>,
) -> Result<(StatusCode, Json<SetupKeyCreated>), Problem> {
    c.require(Role::Operator)?;
    let created = create_setup_key(&s, &c.actor(), &body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/v1/setup-keys`: the setup keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/setup-keys", responses((status = 200, body = Vec<SetupKey>)), security(("bearer" = [])))]
pub async fn list_setup_keys(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<SetupKey>>, Problem> {
    c.require(Role::Viewer)?;
    Ok(Json(s.store.setup_keys().await?))
}

/// `DELETE /api/v1/setup-keys/{name}` (operator): no more enrollments
/// with it; its agents stay.
#[utoipa::path(delete, path = "/api/v1/setup-keys/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_setup_key(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    c.require(Role::Operator)?;
    s.store.delete_setup_key(&c.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/enroll`: an agent enrolls with a setup key.
#[utoipa::path(post, path = "/api/v1/enroll", request_body = EnrollRequest, responses((status = 201, body = Enrolled), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn post_enroll(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Enrolled>), Problem> {
    let r = enroll(&s, &req).await;
    if let Err(p) = &r {
        tracing::info!(status = p.status, detail = ?p.detail, "enrollment refused");
    }
    Ok((StatusCode::CREATED, Json(r?)))
}

/// `POST /api/v1/agents/renew`: an enrolled agent renews its certificate
/// with its own token (no setup key).
#[utoipa::path(post, path = "/api/v1/agents/renew", request_body = RenewRequest, responses((status = 200, body = Renewed), (status = 403, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn renew(
    State(s): State<ApiState>,
    c: Caller,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<Renewed>, Problem> {
    let e = enrollment(&s)?;
    let Some(name) = c.agent.clone() else {
        return Err(Problem::forbidden(format!(
            "token {:?} is not an enrolled agent's",
            c.name
        )));
    };
    let agent = s
        .store
        .agent(&name)
        .await?
        .filter(|a| a.revoked_at.is_none())
        .ok_or_else(|| Problem::forbidden(format!("agent {name:?} is revoked")))?;
    let issued =
        e.ca.sign_csr(&req.csr, &name, &agent.groups, e.cert_validity)
            .map_err(csr_problem)?;
    s.store
        .renew_agent(&c.actor(), &name, &issued.serial_hex, issued.not_after_ms)
        .await?;
    tracing::info!(agent = %name, "agent certificate renewed");
    Ok(Json(Renewed {
        certificate: issued.pem,
        ca: e.ca.cert_pem().to_owned(),
        cert_not_after: issued.not_after_ms,
    }))
}

/// `GET /api/v1/agents`: enrolled agents.
#[utoipa::path(get, path = "/api/v1/agents", responses((status = 200, body = Vec<Agent>)), security(("bearer" = [])))]
pub async fn list_agents(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<Agent>>, Problem> {
    c.require(Role::Viewer)?;
    Ok(Json(s.store.agents().await?))
}

/// `POST /api/v1/agents/{name}/revoke` (operator).
#[utoipa::path(post, path = "/api/v1/agents/{name}/revoke", params(("name" = String, Path)), responses((status = 200, body = Agent), (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn post_revoke(
    State(s): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<Agent>, Problem> {
    c.require(Role::Operator)?;
    Ok(Json(revoke(&s, &c.actor(), &name).await?))
}

/// The enrollment routes (merged into `/api/v1`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/setup-keys",
            get(list_setup_keys).post(post_setup_key),
        )
        .route(
            "/api/v1/setup-keys/{name}",
            axum::routing::delete(delete_setup_key),
        )
        .route("/api/v1/enroll", post(post_enroll))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/renew", post(renew))
        .route("/api/v1/agents/{name}/revoke", post(post_revoke))
}
