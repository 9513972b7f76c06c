//! The enrollment pages: "Agents" (enrolled agents, their groups,
//! certificate expiry, last report; revoke) and "Setup keys" (list,
//! create, shown once; delete). Both read for viewers; changes need an
//! operator, as over the API (`crate::enroll`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use gkm_store::model::{NewSetupKey, Role};
use serde::Deserialize;

use super::login::CsrfForm;
use super::page::{fmt_time, render, Dashboard, Nav, OrPage, PageError, PageResult, SignedIn};
use crate::enroll;

/// One row of the agents table.
pub(super) struct AgentRow {
    name: String,
    groups: String,
    tags: String,
    cert_until: String,
    last_report: String,
    setup_key: String,
    revoked: bool,
    revoked_at: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
pub(super) struct AgentsPage {
    nav: Option<Nav>,
    csrf: String,
    can_change: bool,
    agents: Vec<AgentRow>,
    done: Option<String>,
    error: Option<String>,
}

/// Group names by identity number, for the tables.
async fn group_names(d: &Dashboard, s: &SignedIn, ids: &[u32]) -> Result<String, PageError> {
    let groups = d.api.store.groups().await.or_page(s.nav())?;
    Ok(ids
        .iter()
        .map(|id| {
            groups
                .iter()
                .find(|g| g.group_id == *id)
                .map_or_else(|| id.to_string(), |g| g.name.clone())
        })
        .collect::<Vec<_>>()
        .join(", "))
}

async fn agents_page(
    d: &Dashboard,
    s: &SignedIn,
    done: Option<String>,
    error: Option<String>,
) -> PageResult {
    let mut rows = Vec::new();
    for a in d.api.store.agents().await.or_page(s.nav())? {
        let mut last = None;
        for &g in &a.groups {
            if let Some(h) = d.api.store.gm_health(g, &a.name).await.or_page(s.nav())? {
                last = last.max(Some(h.received_at));
            }
        }
        rows.push(AgentRow {
            groups: group_names(d, s, &a.groups).await?,
            tags: a.tags.join(", "),
            cert_until: fmt_time(a.cert_not_after),
            last_report: last.map_or_else(|| "never".into(), fmt_time),
            setup_key: a.setup_key,
            revoked: a.revoked_at.is_some(),
            revoked_at: a.revoked_at.map(fmt_time).unwrap_or_default(),
            name: a.name,
        });
    }
    Ok(render(&AgentsPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        can_change: crate::can_mutate(s.user.role),
        agents: rows,
        done,
        error,
    }))
}

pub(super) async fn agents(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    agents_page(&d, &s, None, None).await
}

pub(super) async fn agent_revoke(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    match enroll::revoke(&d.api, &s.user.actor(), &name).await {
        Ok(a) => {
            let msg = format!(
                "{} revoked: its token is gone, its certificate is refused, it was ejected from {} and they were rekeyed",
                a.name,
                group_names(&d, &s, &a.groups).await?
            );
            agents_page(&d, &s, Some(msg), None).await
        }
        Err(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::CONFLICT);
            let mut r = agents_page(&d, &s, None, Some(p.detail)).await?;
            *r.status_mut() = status;
            Ok(r)
        }
    }
}

/// One row of the setup keys table.
pub(super) struct KeyRow {
    name: String,
    groups: String,
    tags: String,
    used: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "setup_keys.html")]
pub(super) struct SetupKeysPage {
    nav: Option<Nav>,
    csrf: String,
    can_change: bool,
    keys: Vec<KeyRow>,
    created: Option<String>,
    error: Option<String>,
}

async fn setup_keys_page(
    d: &Dashboard,
    s: &SignedIn,
    created: Option<String>,
    error: Option<String>,
) -> PageResult {
    let mut keys = Vec::new();
    for k in d.api.store.setup_keys().await.or_page(s.nav())? {
        keys.push(KeyRow {
            groups: group_names(d, s, &k.groups).await?,
            tags: k.tags.join(", "),
            used: match k.usage_limit {
                Some(l) => format!("{} of {l}", k.uses),
                None => format!("{} (no limit)", k.uses),
            },
            expires: fmt_time(k.expires_at),
            name: k.name,
        });
    }
    Ok(render(&SetupKeysPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        can_change: crate::can_mutate(s.user.role),
        keys,
        created,
        error,
    }))
}

pub(super) async fn setup_keys(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    setup_keys_page(&d, &s, None, None).await
}

/// The new-setup-key form.
#[derive(Debug, Deserialize)]
pub struct SetupKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Group names, comma-separated.
    #[serde(default)]
    groups: String,
    /// Tags, comma-separated.
    #[serde(default)]
    tags: String,
    #[serde(default)]
    reusable: Option<String>,
    #[serde(default)]
    usage_limit: String,
    #[serde(default)]
    expires_in_secs: String,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A number field: empty is none; anything else must be a number.
fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{field}: {v:?} is not a number"))
}

pub(super) async fn setup_key_create(
    State(d): State<Dashboard>,
    s: SignedIn,
    Form(f): Form<SetupKeyForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    let refused = |msg: String, status: StatusCode| {
        let (d, s) = (d.clone(), s.clone());
        async move {
            let mut r = setup_keys_page(&d, &s, None, Some(msg)).await?;
            *r.status_mut() = status;
            Ok(r)
        }
    };
    let (usage_limit, expires_in_secs) = match (
        number::<u32>("usage limit", &f.usage_limit),
        number::<u64>("valid for", &f.expires_in_secs),
    ) {
        (Ok(l), Ok(e)) => (l, e),
        (Err(m), _) | (_, Err(m)) => return refused(m, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let body = NewSetupKey {
        name: f.name.trim().to_owned(),
        groups: list(&f.groups),
        tags: list(&f.tags),
        reusable: f.reusable.is_some(),
        usage_limit,
        expires_in_secs,
    };
    match enroll::create_setup_key(&d.api, &s.user.actor(), &body).await {
        Ok(c) => setup_keys_page(&d, &s, Some(c.key), None).await,
        Err(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            refused(p.detail, status).await
        }
    }
}

pub(super) async fn setup_key_delete(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return Ok(r);
    }
    d.api
        .store
        .delete_setup_key(&s.user.actor(), &name)
        .await
        .or_page(s.nav())?;
    Ok(Redirect::to("/setup-keys").into_response())
}
