//! The dashboard: server-rendered askama pages over the same store and
//! operations as the API ([`crate::ops`]). Usable without JavaScript. Every
//! form carries the session's CSRF token; every page needs a signed-in
//! session; edits need the operator role, tokens and the audit log admin.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

mod admin;
mod agents;
mod features;
mod gm;
mod group;
mod key_servers;
mod login;
mod overview;
mod page;

use self::admin::{audit, token_create, token_delete, tokens};
use self::agents::{agent_revoke, agents, setup_key_create, setup_key_delete, setup_keys};
use self::features::features;
use self::gm::{eject_confirm, eject_do, gm_page};
use self::group::{group_page, group_save, rekey_confirm, rekey_do};
use self::key_servers::key_servers;
use self::login::{login_local, login_oidc, login_page, logout, oidc_callback};
use self::overview::overview;
use self::page::error_page;
pub use self::page::{fmt_time, Dashboard, Nav, PageError, SignedIn, GM_PAGE, REKEY_HISTORY};

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
        .route("/agents", get(agents))
        .route("/agents/{name}/revoke", post(agent_revoke))
        .route("/setup-keys", get(setup_keys).post(setup_key_create))
        .route("/setup-keys/{name}/delete", post(setup_key_delete))
        .route("/tokens", get(tokens).post(token_create))
        .route("/tokens/{name}/delete", post(token_delete))
        .route("/static/gkm.css", get(css))
        .route("/static/live.js", get(live_js))
        .layer(axum::middleware::from_fn(same_origin_posts))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(d)
}
