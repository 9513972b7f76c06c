//! The admin pages: the audit log and API tokens (create, revoke).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use gkm_store::model::{AuditEntry, Role};
use serde::Deserialize;

use super::login::CsrfForm;
use super::page::{fmt_time, render, Dashboard, Nav, OrPage, PageError, PageResult, SignedIn};
use crate::ops::{self};

#[derive(Template)]
#[template(path = "audit.html")]
pub(super) struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<(String, AuditEntry)>,
}

pub(super) async fn audit(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    if s.user.role < Role::Admin {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            s.nav(),
            "the audit log needs the admin role",
        ));
    }
    let v = d.api.store.audit(500).await.or_page(s.nav())?;
    Ok(render(&AuditPage {
        nav: s.nav(),
        entries: v.into_iter().map(|e| (fmt_time(e.at), e)).collect(),
    }))
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub(super) struct TokensPage {
    nav: Option<Nav>,
    csrf: String,
    tokens: Vec<(gkm_store::model::ApiToken, String)>,
    created: Option<String>,
    error: Option<String>,
}

pub(super) async fn tokens_page(
    d: &Dashboard,
    s: &SignedIn,
    created: Option<String>,
    error: Option<String>,
) -> PageResult {
    let v = d.api.store.tokens().await.or_page(s.nav())?;
    Ok(render(&TokensPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        tokens: v
            .into_iter()
            .map(|t| {
                let at = fmt_time(t.created_at);
                (t, at)
            })
            .collect(),
        created,
        error,
    }))
}

/// The tokens page with `error` shown, and `status`.
async fn tokens_refused(
    d: &Dashboard,
    s: &SignedIn,
    error: String,
    status: StatusCode,
) -> PageResult {
    let mut r = tokens_page(d, s, None, Some(error)).await?;
    *r.status_mut() = status;
    Ok(r)
}

pub(super) async fn tokens(State(d): State<Dashboard>, s: SignedIn) -> PageResult {
    if s.user.role < Role::Admin {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            s.nav(),
            "API tokens need the admin role",
        ));
    }
    tokens_page(&d, &s, None, None).await
}

/// The new-token form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// Agent tokens: the GM's group (its group ID) and phase 1 identity.
    #[serde(default)]
    gm_group: String,
    #[serde(default)]
    gm_identity: String,
}

pub(super) async fn token_create(
    State(d): State<Dashboard>,
    s: SignedIn,
    Form(f): Form<TokenForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Admin) {
        return Ok(r);
    }
    let Some(role) = Role::parse(&f.role) else {
        return tokens_refused(
            &d,
            &s,
            "role: choose viewer, operator or admin".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let gm = if f.gm_group.trim().is_empty() && f.gm_identity.trim().is_empty() {
        None
    } else {
        match f.gm_group.trim().parse::<u32>() {
            Ok(group) => Some(gkm_store::model::TokenGm {
                group,
                gm_identity: f.gm_identity.trim().to_owned(),
            }),
            Err(_) => {
                return tokens_refused(
                    &d,
                    &s,
                    "GM group: the group ID, 1-4294967295".into(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        }
    };
    match ops::create_token(&d.api, &s.user.actor(), &f.name, role, gm.as_ref()).await {
        Ok((_, secret)) => tokens_page(&d, &s, Some(secret), None).await,
        Err(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            tokens_refused(&d, &s, p.detail, status).await
        }
    }
}

pub(super) async fn token_delete(
    State(d): State<Dashboard>,
    s: SignedIn,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    if let Some(r) = s.refuse(&f.csrf, Role::Admin) {
        return Ok(r);
    }
    d.api
        .store
        .delete_token(&s.user.actor(), &name)
        .await
        .or_page(s.nav())?;
    Ok(Redirect::to("/tokens").into_response())
}
