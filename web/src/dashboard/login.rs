//! The login page: local sign-in (throttled), OIDC sign-in and its callback, sign-out.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use gkm_store::model::{AuditEntry, Role};
use serde::Deserialize;

use super::page::session_id;
use super::page::{error_page, render, Dashboard, Nav, PageError, SignedIn};
use crate::local;
use crate::ops::now_ms;
use crate::problem::Problem;
use crate::session::{self, Login};
use crate::session::{Session, User};
use crate::signin;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    nav: Option<Nav>,
    csrf: String,
    oidc: bool,
    error: Option<String>,
}

pub(super) fn with_cookie(mut r: Response, value: &str) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The anonymous session of this browser, or a new one (with its cookie).
pub(super) fn anonymous(
    d: &Dashboard,
    parts_id: Option<String>,
) -> Result<(String, Session, bool), Problem> {
    if let Some(id) = parts_id {
        if let Some(s) = d.sessions.get(&id, now_ms()) {
            return Ok((id, s, false));
        }
    }
    let (id, s) = d.sessions.start(None, now_ms())?;
    Ok((id, s, true))
}

/// The request's session id, for handlers that take no [`SignedIn`].
pub struct MaybeSession(pub Option<String>);

impl FromRequestParts<Dashboard> for MaybeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _d: &Dashboard,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(Self(session_id(parts)))
    }
}

/// The login page with a fresh login form (token and the cookie binding
/// it to this browser; no server state).
pub(super) fn login_response(d: &Dashboard, error: Option<String>, status: StatusCode) -> Response {
    let (cookie, token) = match d.signin.login_form(now_ms()) {
        Ok(v) => v,
        Err(p) => return PageError::problem(&p, None).into_response(),
    };
    let mut r = render(&LoginPage {
        nav: None,
        csrf: token,
        oidc: d.oidc.is_some(),
        error,
    });
    *r.status_mut() = status;
    with_cookie(r, &signin::login_cookie(&cookie, d.secure_cookies))
}

pub(super) async fn login_page(
    State(d): State<Dashboard>,
    MaybeSession(sid): MaybeSession,
) -> Response {
    if let Some(s) = sid.as_deref().and_then(|id| d.sessions.get(id, now_ms())) {
        if s.user.is_some() {
            return Redirect::to("/").into_response();
        }
    }
    login_response(&d, None, StatusCode::OK)
}

/// The local sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    user: String,
    password: String,
}

/// The login form's cookie, for the handler that checks its token.
pub struct LoginCookie(pub Option<String>);

impl FromRequestParts<Dashboard> for LoginCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _d: &Dashboard,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(Self(session::cookie_of_request(
            &parts.headers,
            signin::login_cookie_of,
        )))
    }
}

/// The peer address of the connection (None when the server did not
/// record it, as in tests that call the router directly).
pub struct Source(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _s: &S,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

pub(super) async fn login_local(
    State(d): State<Dashboard>,
    MaybeSession(sid): MaybeSession,
    LoginCookie(cookie): LoginCookie,
    Source(source): Source,
    Form(f): Form<LoginForm>,
) -> Response {
    let now = now_ms();
    if !d.signin.login_form_valid(cookie.as_deref(), &f.csrf, now) {
        return login_response(
            &d,
            Some("the sign-in form expired; try again".into()),
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(wait_ms) = d.signin.locked(source, &f.user, now) {
        // Logged when the lockout began, not for each refusal (a flood of
        // attempts must not become a flood of log lines).
        let secs = (wait_ms + 999) / 1000;
        let mut r = login_response(
            &d,
            Some(format!(
                "too many failed sign-ins from this address or for this user: try again in {secs} s"
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let stored = match d.api.store.secret(local::SECRET).await {
        Ok(v) => v,
        Err(e) => return PageError::problem(&Problem::from(e), None).into_response(),
    };
    // PBKDF2 takes a few hundred ms by design: off the async workers, and
    // no more at once than the guard's slots.
    let ok = match (f.user == local::USER, stored) {
        (true, Some(h)) => match d.signin.verify(h.to_vec(), f.password.clone()).await {
            Ok(ok) => ok,
            Err(_) => {
                let mut r = login_response(
                    &d,
                    Some("sign-in is busy; try again in a few seconds".into()),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
                return r;
            }
        },
        _ => false,
    };
    if !ok {
        match d.signin.failed(source, &f.user, now) {
            None => {
                tracing::warn!(user = ?f.user, source = ?source, "dashboard: wrong user or password")
            }
            Some(ms) => tracing::warn!(
                user = ?f.user, source = ?source, locked_out_ms = ms,
                "dashboard: wrong user or password; sign-ins from this address and for this user locked out"
            ),
        }
        return login_response(
            &d,
            Some("wrong user or password".into()),
            StatusCode::UNAUTHORIZED,
        );
    }
    d.signin.succeeded(source, &f.user);
    let user = User {
        name: local::USER.into(),
        role: Role::Admin,
        login: Login::Local,
    };
    signed_in(&d, sid.as_deref(), user).await
}

pub(super) async fn signed_in(d: &Dashboard, old: Option<&str>, user: User) -> Response {
    tracing::info!(user = ?user.name, actor = ?user.actor().0, role = user.role.as_str(), "dashboard: signed in");
    let _ = d
        .api
        .store
        .append_audit(&AuditEntry {
            at: now_ms(),
            actor: user.actor().0,
            action: "session.login".into(),
            target: user.name.clone(),
            detail: format!(
                r#"{{"role":"{}","via":"{}"}}"#,
                user.role.as_str(),
                match user.login {
                    Login::Local => "local",
                    Login::Oidc { .. } => "oidc",
                }
            ),
        })
        .await;
    match d.sessions.sign_in(old, user, now_ms()) {
        Ok((id, _)) => with_cookie(
            Redirect::to("/").into_response(),
            &session::cookie(&id, d.secure_cookies),
        ),
        Err(p) => PageError::problem(&p, None).into_response(),
    }
}

pub(super) async fn login_oidc(
    State(d): State<Dashboard>,
    MaybeSession(sid): MaybeSession,
) -> Response {
    let Some(oidc) = d.oidc.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "OIDC sign-in is not configured",
        );
    };
    let (id, _, fresh) = match anonymous(&d, sid) {
        Ok(v) => v,
        Err(p) => return PageError::problem(&p, None).into_response(),
    };
    match oidc.begin().await {
        Ok((url, pending)) => {
            d.sessions.set_oidc(&id, Some(pending));
            let r = Redirect::to(&url).into_response();
            if fresh {
                with_cookie(r, &session::cookie(&id, d.secure_cookies))
            } else {
                r
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "OIDC");
            login_response(&d, Some(e.to_string()), StatusCode::BAD_GATEWAY)
        }
    }
}

/// The provider's redirect back.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub(super) async fn oidc_callback(
    State(d): State<Dashboard>,
    MaybeSession(sid): MaybeSession,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = d.oidc.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "OIDC sign-in is not configured",
        );
    };
    let session = sid.as_deref().and_then(|id| d.sessions.get(id, now_ms()));
    let Some(pending) = session.and_then(|s| s.oidc) else {
        return login_response(
            &d,
            Some("no sign-in in progress in this browser; start again".into()),
            StatusCode::BAD_REQUEST,
        );
    };
    if let Some(id) = sid.as_deref() {
        // One use only.
        d.sessions.set_oidc(id, None);
    }
    if let Some(e) = q.error {
        let msg = format!(
            "the identity provider refused: {e}{}",
            q.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        return login_response(&d, Some(msg), StatusCode::UNAUTHORIZED);
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return login_response(
            &d,
            Some("the sign-in response lacks code or state".into()),
            StatusCode::BAD_REQUEST,
        );
    };
    match oidc.finish(&pending, &code, &state).await {
        Ok(user) => signed_in(&d, sid.as_deref(), user).await,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC sign-in refused");
            let status = match e {
                crate::oidc::OidcError::NoRole { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_response(&d, Some(e.to_string()), status)
        }
    }
}

/// A form with only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) replace: Option<String>,
}

pub(super) async fn logout(
    State(d): State<Dashboard>,
    s: SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Viewer) {
        return r;
    }
    d.sessions.end(&s.id);
    with_cookie(
        Redirect::to("/login").into_response(),
        &session::cookie_clear(d.secure_cookies),
    )
}
