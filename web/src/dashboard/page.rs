//! What every dashboard page shares: the handlers' state, the signed-in
//! request and its navigation bar, rendering, the HTML error page
//! ([`PageError`]) and the confirmation page.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gkm_store::model::Role;

use crate::oidc::Oidc;
use crate::ops::now_ms;
use crate::problem::Problem;
use crate::session::{self, Session, Sessions, User};
use crate::signin::SignIn;
use crate::ApiState;

/// GMs per page in the group page's table.
pub const GM_PAGE: u32 = 50;

/// Rekeys shown in a group's history and chart.
pub const REKEY_HISTORY: u32 = 50;

/// Everything the dashboard's handlers share.
#[derive(Clone)]
pub struct Dashboard {
    /// Store and engine, as the API has them.
    pub api: ApiState,
    /// SignedIn-in sessions.
    pub sessions: Arc<Sessions>,
    /// OIDC sign-in, when configured.
    pub oidc: Option<Arc<Oidc>>,
    /// Mark cookies `Secure` (served over TLS).
    pub secure_cookies: bool,
    /// The local sign-in's guard (login form tokens, throttling, PBKDF2 slots).
    pub signin: Arc<SignIn>,
}

/// The navigation bar's view of the user.
#[derive(Debug, Clone)]
pub struct Nav {
    /// Name.
    pub user: String,
    /// Role word.
    pub role: &'static str,
    /// The session's CSRF token.
    pub csrf: String,
    /// Admin pages shown.
    pub admin: bool,
}

/// A request from a signed-in session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Session id.
    pub id: String,
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: User,
}

impl SignedIn {
    pub(super) fn nav(&self) -> Option<Nav> {
        Some(Nav {
            user: self.user.name.clone(),
            role: self.user.role.as_str(),
            csrf: self.session.csrf.clone(),
            admin: self.user.role >= Role::Admin,
        })
    }

    /// The refusal of a form whose CSRF token is not this session's, or of
    /// a user below `role`; none when the request may go on.
    pub fn refuse(&self, csrf: &str, role: Role) -> Option<Response> {
        if !session::same_token(csrf, &self.session.csrf) {
            return Some(error_page(
                StatusCode::FORBIDDEN,
                None,
                "the form's CSRF token is missing or stale; reload the page and try again",
            ));
        }
        if self.user.role < role {
            return Some(error_page(
                StatusCode::FORBIDDEN,
                self.nav(),
                &format!(
                    "{} has role {}; this needs {}",
                    self.user.name,
                    self.user.role.as_str(),
                    role.as_str()
                ),
            ));
        }
        None
    }
}

pub(super) fn session_id(parts: &Parts) -> Option<String> {
    session::cookie_of_request(&parts.headers, session::id_of_cookie_header)
}

impl FromRequestParts<Dashboard> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, d: &Dashboard) -> Result<Self, Response> {
        let id = session_id(parts).ok_or_else(to_login)?;
        let session = d.sessions.get(&id, now_ms()).ok_or_else(to_login)?;
        let user = session.user.clone().ok_or_else(to_login)?;
        Ok(Self { id, session, user })
    }
}

pub(super) fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

pub(super) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Option<Nav>,
    status: String,
    message: &'a str,
}

pub(super) fn error_page(status: StatusCode, nav: Option<Nav>, message: &str) -> Response {
    let mut r = render(&ErrorPage {
        nav,
        status: status.to_string(),
        message,
    });
    *r.status_mut() = status;
    r
}

#[derive(Template)]
#[template(path = "confirm.html")]
/// The confirmation page of a rekey or an ejection.
pub(super) struct ConfirmPage {
    pub(super) nav: Option<Nav>,
    pub(super) csrf: String,
    pub(super) title: String,
    pub(super) message: String,
    pub(super) action: String,
    pub(super) back: String,
    pub(super) replace: bool,
}

/// A page that could not be served, rendered as the HTML error page with
/// its status (model: docs.rs `AxumNope`). Handlers return
/// `Result<Response, PageError>` and `?` a failure once it names the
/// navigation bar it is shown with ([`OrPage::or_page`]).
pub struct PageError {
    status: StatusCode,
    message: String,
    nav: Option<Nav>,
}

impl PageError {
    /// `status` with `message`.
    pub(super) fn new(status: StatusCode, nav: Option<Nav>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            nav,
        }
    }

    /// An API problem as a page: its status and detail.
    pub(super) fn problem(p: &Problem, nav: Option<Nav>) -> Self {
        Self::new(
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            nav,
            p.detail.clone(),
        )
    }

    /// A refused query string (400, with what was wrong).
    pub(super) fn query(e: &QueryRejection, nav: Option<Nav>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, nav, e.body_text())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.status, self.nav, &self.message)
    }
}

/// What a page handler returns.
pub(super) type PageResult = Result<Response, PageError>;

/// A failure (a [`Problem`] or what becomes one) as a [`PageError`] shown
/// with `nav`.
pub(super) trait OrPage<T> {
    /// The value, or the failure as a page.
    fn or_page(self, nav: Option<Nav>) -> Result<T, PageError>;
}

impl<T, E: Into<Problem>> OrPage<T> for Result<T, E> {
    fn or_page(self, nav: Option<Nav>) -> Result<T, PageError> {
        self.map_err(|e| PageError::problem(&e.into(), nav))
    }
}

/// UNIX ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn fmt_time(ms: i64) -> String {
    let (y, m, d, h, mi, s, _) = gkm_model::clock::civil(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_795_867_200_000), "2026-11-28 12:00:00 UTC");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
