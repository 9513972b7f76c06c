//! The dashboard: server-rendered askama pages over the same store and
//! operations as the API ([`crate::ops`]). Usable without JavaScript. Every
//! form carries the session's CSRF token; every page needs a signed-in
//! session; edits need the operator role, tokens and the audit log admin.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use gkm_store::model::{
    feature_bit, AuditEntry, GmFilter, GmHealth, GmRow, GmState, Group, Page, PeerKeyServer,
    RekeyTransport, Role, WindowSource, FEATURES,
};
use serde::Deserialize;

use crate::charts;
use crate::forms::{FieldErrors, PolicyForm};
use crate::oidc::Oidc;
use crate::ops::{self, now_ms};
use crate::problem::Problem;
use crate::session::{self, Login, Session, Sessions, User};
use crate::signin::{self, SignIn};
use crate::{can_mutate, local, ApiState, GroupStatus};

mod admin;
mod features;
mod gm;
mod group;
mod key_servers;
mod login;
mod overview;

use self::gm::*;
pub use self::{admin::*, features::*, group::*, key_servers::*, login::*, overview::*};

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
    fn nav(&self) -> Option<Nav> {
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

fn session_id(parts: &Parts) -> Option<String> {
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

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn render(t: &impl Template) -> Response {
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

fn error_page(status: StatusCode, nav: Option<Nav>, message: &str) -> Response {
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
struct ConfirmPage {
    nav: Option<Nav>,
    csrf: String,
    title: String,
    message: String,
    action: String,
    back: String,
    replace: bool,
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
    fn new(status: StatusCode, nav: Option<Nav>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            nav,
        }
    }

    /// An API problem as a page: its status and detail.
    fn problem(p: &Problem, nav: Option<Nav>) -> Self {
        Self::new(
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            nav,
            p.detail.clone(),
        )
    }

    /// A refused query string (400, with what was wrong).
    fn query(e: &QueryRejection, nav: Option<Nav>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, nav, e.body_text())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.status, self.nav, &self.message)
    }
}

/// What a page handler returns.
type PageResult = Result<Response, PageError>;

/// A failure (a [`Problem`] or what becomes one) as a [`PageError`] shown
/// with `nav`.
trait OrPage<T> {
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
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/gkm.css"),
    )
        .into_response()
}

async fn live_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/live.js"),
    )
        .into_response()
}

/// Headers every dashboard answer carries: no framing, no sniffing, only
/// this origin's scripts and styles (the pages have no inline script).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    r
}

/// The host (and port) an `Origin` or `Referer` value names.
fn origin_host(v: &str) -> Option<&str> {
    let rest = v.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Refuses a dashboard POST whose `Origin` (or, without one, `Referer`)
/// names another host than the request's `Host`: a cross-site form post
/// fails here even before its CSRF token is looked at. A POST with
/// neither header (not a browser) is left to the CSRF token.
async fn same_origin_posts(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::POST {
        let h = req.headers();
        let text = |n| h.get(n).and_then(|v: &header::HeaderValue| v.to_str().ok());
        let claimed = text(header::ORIGIN).or_else(|| text(header::REFERER));
        if let Some(claimed) = claimed {
            let host = text(header::HOST);
            let same = match (origin_host(claimed), host) {
                (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
                _ => false,
            };
            if !same {
                tracing::warn!(origin = ?claimed, host = ?host, path = %req.uri().path(), "dashboard: cross-origin POST refused");
                return error_page(
                    StatusCode::FORBIDDEN,
                    None,
                    "this form was posted from another site (Origin/Referer does not match); reload the page and try again",
                );
            }
        }
    }
    next.run(req).await
}

/// The dashboard's routes (no fallback: merged beside the API's).
pub fn router(d: Dashboard) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login_local))
        .route("/login/oidc", get(login_oidc))
        .route("/login/oidc/callback", get(oidc_callback))
        .route("/logout", post(logout))
        .route("/groups/{name}", get(group_page).post(group_save))
        .route("/groups/{name}/rekey", get(rekey_confirm).post(rekey_do))
        .route("/groups/{name}/gms/{gm_identity}", get(gm_page))
        .route(
            "/groups/{name}/gms/{gm_identity}/eject",
            get(eject_confirm).post(eject_do),
        )
        .route("/features", get(features))
        .route("/key-servers", get(key_servers))
        .route("/audit", get(audit))
        .route("/tokens", get(tokens).post(token_create))
        .route("/tokens/{name}/delete", post(token_delete))
        .route("/static/gkm.css", get(css))
        .route("/static/live.js", get(live_js))
        .layer(axum::middleware::from_fn(same_origin_posts))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(d)
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

    #[test]
    fn query_escaping() {
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
        assert_eq!(query_escape("10.0.0.1"), "10.0.0.1");
    }
}
