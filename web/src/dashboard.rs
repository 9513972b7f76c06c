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
    feature_bit, AuditEntry, GmFilter, GmHealth, GmRow, GmState, Group, KeyServer, Page,
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

/// GMs per page in the group page's table.
pub const GM_PAGE: u32 = 50;

/// Rekeys shown in a group's history and chart.
pub const REKEY_HISTORY: u32 = 50;

/// Everything the dashboard's handlers share.
#[derive(Clone)]
pub struct Dashboard {
    /// Store and engine, as the API has them.
    pub api: ApiState,
    /// Signed-in sessions.
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
pub struct Signed {
    /// Session id.
    pub id: String,
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: User,
}

impl Signed {
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

impl FromRequestParts<Dashboard> for Signed {
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

fn problem_page(p: &Problem, nav: Option<Nav>) -> Response {
    error_page(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        nav,
        &p.detail,
    )
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

// ---- sign-in ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    csrf: String,
    oidc: bool,
    error: Option<String>,
}

fn with_cookie(mut r: Response, value: &str) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The anonymous session of this browser, or a new one (with its cookie).
fn anonymous(d: &Dashboard, parts_id: Option<String>) -> Result<(String, Session, bool), Problem> {
    if let Some(id) = parts_id {
        if let Some(s) = d.sessions.get(&id, now_ms()) {
            return Ok((id, s, false));
        }
    }
    let (id, s) = d.sessions.start(None, now_ms())?;
    Ok((id, s, true))
}

/// The request's session id, for handlers that take no [`Signed`].
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
fn login_response(d: &Dashboard, error: Option<String>, status: StatusCode) -> Response {
    let (cookie, token) = match d.signin.login_form(now_ms()) {
        Ok(v) => v,
        Err(p) => return problem_page(&p, None),
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

async fn login_page(State(d): State<Dashboard>, MaybeSession(sid): MaybeSession) -> Response {
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

async fn login_local(
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
        Err(e) => return problem_page(&Problem::from(e), None),
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

async fn signed_in(d: &Dashboard, old: Option<&str>, user: User) -> Response {
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
        Err(p) => problem_page(&p, None),
    }
}

async fn login_oidc(State(d): State<Dashboard>, MaybeSession(sid): MaybeSession) -> Response {
    let Some(oidc) = d.oidc.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "OIDC sign-in is not configured",
        );
    };
    let (id, _, fresh) = match anonymous(&d, sid) {
        Ok(v) => v,
        Err(p) => return problem_page(&p, None),
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

async fn oidc_callback(
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
    csrf: String,
    #[serde(default)]
    replace: Option<String>,
}

async fn logout(State(d): State<Dashboard>, s: Signed, Form(f): Form<CsrfForm>) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Viewer) {
        return r;
    }
    d.sessions.end(&s.id);
    with_cookie(
        Redirect::to("/login").into_response(),
        &session::cookie_clear(d.secure_cookies),
    )
}

// ---- overview -------------------------------------------------------------

/// One group's line on the overview.
#[derive(Debug, Clone)]
pub struct GroupLine {
    name: String,
    identity: u32,
    transport: &'static str,
    registered: u64,
    lagging: u64,
    removed: u64,
    last_rekey: String,
    ack_ratio: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Option<Nav>,
    alerts: Vec<String>,
    states_svg: String,
    d3p_svg: String,
    groups: Vec<GroupLine>,
    key_servers: Vec<KeyServerLine>,
}

/// A key server as shown.
#[derive(Debug, Clone)]
pub struct KeyServerLine {
    name: String,
    address: String,
    priority: u8,
    role: String,
}

fn ks_lines(v: Vec<KeyServer>) -> Vec<KeyServerLine> {
    v.into_iter()
        .map(|k| KeyServerLine {
            name: k.name,
            address: k.address.to_string(),
            priority: k.priority,
            role: format!("{:?}", k.role).to_lowercase(),
        })
        .collect()
}

fn transport_of(g: &Group) -> &'static str {
    match g.policy.rekey {
        RekeyTransport::Unicast { .. } => "Unicast",
        RekeyTransport::Multicast { .. } => "Multicast",
    }
}

async fn count(d: &Dashboard, group: u32, state: GmState) -> Result<u64, Problem> {
    Ok(d.api
        .store
        .count_gms(&GmFilter {
            group: Some(group),
            state: Some(state),
            ..GmFilter::default()
        })
        .await?)
}

/// The D3P error charts: 60 bars of 2 minutes (the last two hours).
const D3P_BUCKET_MS: i64 = 120_000;
const D3P_BUCKETS: usize = 60;
/// A D3P error spike: a GM reporting at least this many input D3P errors
/// within [`D3P_SPIKE_WINDOW_MS`] (a delayed path or a skewed clock).
pub const D3P_SPIKE_MIN: u64 = 10;
/// The window of [`D3P_SPIKE_MIN`].
pub const D3P_SPIKE_WINDOW_MS: i64 = 5 * 60_000;

async fn d3p_chart(d: &Dashboard, group: Option<u32>) -> Result<String, Problem> {
    let now = now_ms();
    let since = now / D3P_BUCKET_MS * D3P_BUCKET_MS - D3P_BUCKET_MS * (D3P_BUCKETS as i64 - 1);
    let points = d.api.store.d3p_errors(group, since, D3P_BUCKET_MS).await?;
    Ok(charts::d3p_errors(&points, now, D3P_BUCKET_MS, D3P_BUCKETS))
}

/// What the overview alerts on for one group, from its live status.
pub fn group_alerts(name: &str, status: Option<&GroupStatus>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(s) = status else {
        return out;
    };
    if s.rekey.gms_at_risk > 0 {
        out.push(format!(
            "{name}: {} GM(s) one missed rekey away from removal",
            s.rekey.gms_at_risk
        ));
    }
    if let Some(k) = &s.kek {
        // The KEK is rekeyed before it expires; one this close to expiry
        // means the rekeys are not going out.
        if k.original_lifetime_secs > 0 && k.remaining_lifetime_secs * 10 < k.original_lifetime_secs
        {
            out.push(format!(
                "{name}: KEK expires in {} s (under 10 % of its lifetime left)",
                k.remaining_lifetime_secs
            ));
        }
    }
    out
}

async fn overview(State(d): State<Dashboard>, s: Signed) -> Response {
    match overview_page(&d, &s).await {
        Ok(p) => render(&p),
        Err(p) => problem_page(&p, s.nav()),
    }
}

async fn overview_page(d: &Dashboard, s: &Signed) -> Result<OverviewPage, Problem> {
    let mut groups = Vec::new();
    let mut alerts = Vec::new();
    let (mut reg, mut lag, mut rem) = (0, 0, 0);
    let all = d.api.store.groups().await?;
    for spike in d
        .api
        .store
        .d3p_spikes(now_ms() - D3P_SPIKE_WINDOW_MS, D3P_SPIKE_MIN, 20)
        .await?
    {
        let name = all
            .iter()
            .find(|g| g.identity == spike.group)
            .map_or_else(|| spike.group.to_string(), |g| g.name.clone());
        alerts.push(format!(
            "{name}: GM {} reported {} IP-D3P input errors in the last {} min (delayed path or skewed clock?)",
            spike.identity,
            spike.input_errors,
            D3P_SPIKE_WINDOW_MS / 60_000
        ));
    }
    for g in all {
        let registered = count(d, g.identity, GmState::Registered).await?;
        let lagging = count(d, g.identity, GmState::Lagging).await?;
        let removed = count(d, g.identity, GmState::Removed).await?;
        reg += registered;
        lag += lagging;
        rem += removed;
        let last = d.api.store.rekeys(g.identity, 1).await?;
        let (last_rekey, ack_ratio) = match last.first() {
            Some(r) => (
                format!("SEQ {} at {}", r.seq, fmt_time(r.started_at)),
                if r.sent == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "{}/{} ({} %)",
                        r.acked,
                        r.sent,
                        u64::from(r.acked) * 100 / u64::from(r.sent)
                    )
                },
            ),
            None => ("none yet".into(), "-".into()),
        };
        let status = d.api.control.status(g.identity).await;
        alerts.extend(group_alerts(&g.name, status.as_ref()));
        groups.push(GroupLine {
            transport: transport_of(&g),
            name: g.name,
            identity: g.identity,
            registered,
            lagging,
            removed,
            last_rekey,
            ack_ratio,
        });
    }
    Ok(OverviewPage {
        nav: s.nav(),
        alerts,
        states_svg: charts::gm_states(reg, lag, rem),
        d3p_svg: d3p_chart(d, None).await?,
        groups,
        key_servers: ks_lines(d.api.store.key_servers().await?),
    })
}

// ---- group ------------------------------------------------------------------

/// A GM as a table row.
#[derive(Debug, Clone)]
pub struct GmLine {
    identity: String,
    address: String,
    class: String,
    version: String,
    state: &'static str,
    seq_sent: String,
    seq_acked: String,
    misses: u32,
    registered: String,
    sids: String,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

impl From<GmRow> for GmLine {
    fn from(m: GmRow) -> Self {
        Self {
            identity: m.identity,
            address: m.address,
            class: m.class,
            version: m.version.unwrap_or_else(|| "-".into()),
            state: m.state.as_str(),
            seq_sent: opt(m.last_seq_sent),
            seq_acked: opt(m.last_seq_acked),
            misses: m.misses,
            registered: fmt_time(m.registered_at),
            sids: if m.sids.is_empty() {
                "-".into()
            } else {
                m.sids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }
    }
}

/// A rekey as a table row.
#[derive(Debug, Clone)]
pub struct RekeyLine {
    seq: u32,
    reason: String,
    started: String,
    sent: u32,
    acked: u32,
    duration: String,
}

/// The group page's GM filters and cursor.
#[derive(Debug, Default, Deserialize)]
pub struct GmQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    lacking: String,
    #[serde(default)]
    after: String,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    nav: Option<Nav>,
    csrf: String,
    name: String,
    identity: u32,
    transport: &'static str,
    unicast: bool,
    d3p_shown: String,
    ack_shown: &'static str,
    teks: Vec<String>,
    status: Option<GroupStatus>,
    can_mutate: bool,
    form: PolicyForm,
    errors: FieldErrors,
    saved: Option<String>,
    chart: String,
    d3p_chart: String,
    rekeys: Vec<RekeyLine>,
    gm_total: u64,
    gms: Vec<GmLine>,
    next: Option<String>,
    filter_state: String,
    filter_class: String,
    filter_lacking: String,
}

fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

async fn group_page_of(
    d: &Dashboard,
    s: &Signed,
    g: Group,
    q: &GmQuery,
    form: Option<PolicyForm>,
    errors: FieldErrors,
    saved: Option<String>,
) -> Result<GroupPage, Problem> {
    let state = match q.state.as_str() {
        "" => None,
        w => Some(
            GmState::parse(w)
                .ok_or_else(|| ops::invalid("/state", "use registered, lagging or removed"))?,
        ),
    };
    let class = match q.class.as_str() {
        "" => None,
        c if ["cisco", "asr9000", "non-cisco"].contains(&c) => Some(c.to_owned()),
        _ => return Err(ops::invalid("/class", "use cisco, asr9000 or non-cisco")),
    };
    let feature = match q.lacking.as_str() {
        "" => None,
        f => Some((
            feature_bit(f).ok_or_else(|| ops::invalid("/lacking", "unknown feature"))?,
            false,
        )),
    };
    let filter = GmFilter {
        group: Some(g.identity),
        identity: None,
        state,
        class,
        feature,
    };
    let page = d
        .api
        .store
        .gms(
            &filter,
            &Page {
                after: (!q.after.is_empty()).then(|| (g.identity, q.after.clone())),
                limit: GM_PAGE,
            },
        )
        .await?;
    let gm_total = d.api.store.count_gms(&filter).await?;
    let next = page.next.map(|(_, id)| {
        format!(
            "/groups/{}?state={}&class={}&lacking={}&after={}",
            query_escape(&g.name),
            query_escape(&q.state),
            query_escape(&q.class),
            query_escape(&q.lacking),
            query_escape(&id)
        )
    });
    let rekeys = d.api.store.rekeys(g.identity, REKEY_HISTORY).await?;
    let status = d.api.control.status(g.identity).await;
    let d3p_shown = match g.policy.d3p_window {
        None => "disabled".to_owned(),
        Some(w) => format!("Type = POSIX-TIME-MSEC, Window-size = {} msec", w.as_msec()),
    };
    Ok(GroupPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        name: g.name.clone(),
        identity: g.identity,
        transport: transport_of(&g),
        unicast: matches!(g.policy.rekey, RekeyTransport::Unicast { .. }),
        d3p_shown,
        ack_shown: g.policy.acknowledgement_shown(),
        teks: g
            .policy
            .teks
            .iter()
            .map(|t| format!("{} → {} {} {} s", t.src, t.dst, t.transform, t.lifetime))
            .collect(),
        status,
        can_mutate: can_mutate(s.user.role),
        form: form.unwrap_or_else(|| PolicyForm::of(&g.policy, g.version)),
        errors,
        saved,
        chart: charts::ack_timeline(&rekeys),
        d3p_chart: d3p_chart(d, Some(g.identity)).await?,
        rekeys: rekeys
            .into_iter()
            .map(|r| RekeyLine {
                seq: r.seq,
                reason: r.reason,
                started: fmt_time(r.started_at),
                sent: r.sent,
                acked: r.acked,
                duration: opt(r.duration_ms.map(|ms| format!("{ms} ms"))),
            })
            .collect(),
        gm_total,
        gms: page.gms.into_iter().map(GmLine::from).collect(),
        next,
        filter_state: q.state.clone(),
        filter_class: q.class.clone(),
        filter_lacking: q.lacking.clone(),
    })
}

async fn group_page(
    State(d): State<Dashboard>,
    s: Signed,
    Path(name): Path<String>,
    q: Result<Query<GmQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, s.nav(), &e.body_text()),
    };
    let r = async {
        let g = ops::group_named(&d.api, &name).await?;
        group_page_of(&d, &s, g, &q, None, FieldErrors::new(), None).await
    }
    .await;
    match r {
        Ok(p) => render(&p),
        Err(p) => problem_page(&p, s.nav()),
    }
}

async fn group_save(
    State(d): State<Dashboard>,
    s: Signed,
    Path(name): Path<String>,
    Form(f): Form<PolicyForm>,
) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return r;
    }
    let r = async {
        let g = ops::group_named(&d.api, &name).await?;
        let (errors, saved) = match f.apply(&g.policy) {
            Err(errors) => (errors, None),
            Ok((policy, version)) => {
                match ops::update_policy(&d.api, &s.user.actor(), &name, &policy, Some(version))
                    .await
                {
                    Ok((_, replace)) => {
                        let msg = if replace {
                            "Saved; a rekey replace goes to the GMs (CMD ⇄ IP-D3P)."
                        } else {
                            "Saved."
                        };
                        let g = ops::group_named(&d.api, &name).await?;
                        let page = group_page_of(
                            &d,
                            &s,
                            g,
                            &GmQuery::default(),
                            None,
                            FieldErrors::new(),
                            Some(msg.into()),
                        )
                        .await?;
                        return Ok((StatusCode::OK, page));
                    }
                    Err(p) if p.status == 409 => (
                        FieldErrors::from([(
                            "_form",
                            "the group changed since this form was loaded; reload and edit again"
                                .to_owned(),
                        )]),
                        None,
                    ),
                    Err(p) if p.status == 422 => (
                        FieldErrors::from([(
                            crate::forms::field_of_path(p.field.as_deref().unwrap_or("")),
                            p.detail.clone(),
                        )]),
                        None,
                    ),
                    Err(p) => return Err(p),
                }
            }
        };
        let page = group_page_of(
            &d,
            &s,
            g,
            &GmQuery::default(),
            Some(f.clone()),
            errors,
            saved,
        )
        .await?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page))
    }
    .await;
    match r {
        Ok((status, p)) => {
            let mut resp = render(&p);
            *resp.status_mut() = status;
            resp
        }
        Err(p) => problem_page(&p, s.nav()),
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    csrf: String,
    title: String,
    message: String,
    action: String,
    back: String,
    replace: bool,
}

/// `?replace=1` on the rekey confirmation.
#[derive(Debug, Default, Deserialize)]
pub struct ReplaceQuery {
    #[serde(default)]
    replace: Option<String>,
}

async fn rekey_confirm(
    State(d): State<Dashboard>,
    s: Signed,
    Path(name): Path<String>,
    q: Result<Query<ReplaceQuery>, QueryRejection>,
) -> Response {
    if s.user.role < Role::Operator {
        return error_page(
            StatusCode::FORBIDDEN,
            s.nav(),
            "rekeys need the operator role",
        );
    }
    if let Err(p) = ops::group_named(&d.api, &name).await {
        return problem_page(&p, s.nav());
    }
    let replace = match q {
        Ok(Query(q)) => q.replace.is_some(),
        Err(e) => return error_page(StatusCode::BAD_REQUEST, s.nav(), &e.body_text()),
    };
    render(&ConfirmPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        title: if replace {
            "Rekey replace"
        } else {
            "Rekey now"
        }
        .into(),
        message: if replace {
            format!("Send group {name} new TEKs and KEK that replace the current ones at once (every GM must take them)?")
        } else {
            format!("Send group {name} a rekey now?")
        },
        action: format!("/groups/{}/rekey", query_escape(&name)),
        back: format!("/groups/{}", query_escape(&name)),
        replace,
    })
}

async fn rekey_do(
    State(d): State<Dashboard>,
    s: Signed,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return r;
    }
    match ops::rekey(&d.api, &s.user.actor(), &name, f.replace.is_some()).await {
        Ok(_) => Redirect::to(&format!("/groups/{}", query_escape(&name))).into_response(),
        Err(p) => problem_page(&p, s.nav()),
    }
}

#[derive(Template)]
#[template(path = "gm.html")]
struct GmPage {
    nav: Option<Nav>,
    group: String,
    gm: GmLine,
    features: Vec<(&'static str, &'static str)>,
    can_mutate: bool,
    health: Option<HealthView>,
}

/// A GM's latest health report as the GM page shows it (the seed's
/// `show crypto gkm gm replay` data).
struct HealthView {
    received: String,
    agent_version: String,
    registered: &'static str,
    window: String,
    clock_skew: String,
    input_packets: u64,
    output_packets: u64,
    input_errors: u64,
    output_errors: u64,
    /// src, my_time, peer_time, difference, window.
    history: Vec<(String, String, String, String, String)>,
}

impl From<GmHealth> for HealthView {
    fn from(h: GmHealth) -> Self {
        let c = h.counters;
        let signed = |ms: i128| format!("{ms:+} ms");
        Self {
            received: fmt_time(h.received_at),
            agent_version: h.agent_version,
            registered: if h.registered { "yes" } else { "no" },
            window: match (h.d3p_window_ms, h.d3p_window_source) {
                (None, _) => "IP-D3P off".into(),
                (Some(w), Some(WindowSource::Client)) => format!("{w} ms (client d3p window)"),
                (Some(w), _) => format!("{w} ms (from the key server)"),
            },
            clock_skew: signed(i128::from(h.agent_time_ms) - i128::from(h.received_at)),
            input_packets: c.input_packets,
            output_packets: c.output_packets,
            input_errors: c.input_errors,
            output_errors: c.output_errors,
            history: c
                .history
                .iter()
                .rev()
                .map(|e| {
                    (
                        e.src.to_string(),
                        e.my_time_ms.to_string(),
                        e.peer_time_ms.to_string(),
                        signed(i128::from(e.my_time_ms) - i128::from(e.peer_time_ms)),
                        format!("{} ms", e.window_ms),
                    )
                })
                .collect(),
        }
    }
}

async fn gm_row(d: &Dashboard, name: &str, identity: &str) -> Result<(Group, GmRow), Problem> {
    let g = ops::group_named(&d.api, name).await?;
    let page = d
        .api
        .store
        .gms(
            &GmFilter {
                group: Some(g.identity),
                identity: Some(identity.to_owned()),
                ..GmFilter::default()
            },
            &Page {
                after: None,
                limit: 1,
            },
        )
        .await?;
    let m = page
        .gms
        .into_iter()
        .next()
        .ok_or_else(|| Problem::not_found(format!("GM {identity:?} in group {name:?}")))?;
    Ok((g, m))
}

async fn gm_page(
    State(d): State<Dashboard>,
    s: Signed,
    Path((name, identity)): Path<(String, String)>,
) -> Response {
    match gm_row(&d, &name, &identity).await {
        Ok((g, m)) => {
            let features = FEATURES
                .iter()
                .map(|(n, b)| (*n, if m.features & b != 0 { "Yes" } else { "No" }))
                .collect();
            let health = match d.api.store.gm_health(g.identity, &m.identity).await {
                Ok(h) => h.map(HealthView::from),
                Err(e) => return problem_page(&Problem::from(e), s.nav()),
            };
            render(&GmPage {
                nav: s.nav(),
                group: g.name,
                gm: GmLine::from(m),
                features,
                can_mutate: can_mutate(s.user.role),
                health,
            })
        }
        Err(p) => problem_page(&p, s.nav()),
    }
}

async fn eject_confirm(
    State(d): State<Dashboard>,
    s: Signed,
    Path((name, identity)): Path<(String, String)>,
) -> Response {
    if s.user.role < Role::Operator {
        return error_page(
            StatusCode::FORBIDDEN,
            s.nav(),
            "ejecting needs the operator role",
        );
    }
    if let Err(p) = gm_row(&d, &name, &identity).await {
        return problem_page(&p, s.nav());
    }
    let base = format!(
        "/groups/{}/gms/{}",
        query_escape(&name),
        query_escape(&identity)
    );
    render(&ConfirmPage {
        nav: s.nav(),
        csrf: s.session.csrf.clone(),
        title: "Eject GM".into(),
        message: format!(
            "Remove {identity} from group {name}? It gets no more rekeys and loses the group's traffic when its keys expire, unless it registers again."
        ),
        action: format!("{base}/eject"),
        back: base,
        replace: false,
    })
}

async fn eject_do(
    State(d): State<Dashboard>,
    s: Signed,
    Path((name, identity)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Operator) {
        return r;
    }
    match ops::eject(&d.api, &s.user.actor(), &name, &identity).await {
        Ok(()) => Redirect::to(&format!("/groups/{}", query_escape(&name))).into_response(),
        Err(p) => problem_page(&p, s.nav()),
    }
}

// ---- features, key servers, audit, tokens ---------------------------------

/// One `show crypto gkm feature` table.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    feature: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "features.html")]
struct FeaturesPage {
    nav: Option<Nav>,
    lacking: bool,
    tables: Vec<FeatureTable>,
}

/// `?lacking=1`.
#[derive(Debug, Default, Deserialize)]
pub struct LackingQuery {
    #[serde(default)]
    lacking: Option<String>,
}

/// The seed's `show crypto gkm feature <name>` layout for one group.
pub use gkm_model::show::feature_table;

async fn features(
    State(d): State<Dashboard>,
    s: Signed,
    q: Result<Query<LackingQuery>, QueryRejection>,
) -> Response {
    let lacking = match q {
        Ok(Query(q)) => q.lacking.is_some(),
        Err(e) => return error_page(StatusCode::BAD_REQUEST, s.nav(), &e.body_text()),
    };
    let r = async {
        let groups = d.api.store.groups().await?;
        let mut tables = Vec::new();
        for feature in ["ip-d3p", "gdoi-interop-ack"] {
            let bit = feature_bit(feature).unwrap_or(0);
            let mut text = String::new();
            for g in &groups {
                let mut rows = Vec::new();
                let mut after = None;
                loop {
                    let page = d
                        .api
                        .store
                        .gms(
                            &GmFilter {
                                group: Some(g.identity),
                                feature: lacking.then_some((bit, false)),
                                ..GmFilter::default()
                            },
                            &Page { after, limit: 1000 },
                        )
                        .await?;
                    rows.extend(page.gms.into_iter().map(|m| {
                        (
                            m.identity,
                            m.version.unwrap_or_else(|| "-".into()),
                            m.features & bit != 0,
                        )
                    }));
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                let key_servers: Vec<(String, String, bool)> = d
                    .api
                    .control
                    .status(g.identity)
                    .await
                    .map(|st| st.key_servers)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|k| (k.identity, k.version, k.features & bit != 0))
                    .filter(|k| !(lacking && k.2))
                    .collect();
                text.push_str(&feature_table(&g.name, &key_servers, &rows));
                text.push('\n');
            }
            tables.push(FeatureTable { feature, text });
        }
        Ok::<_, Problem>(tables)
    }
    .await;
    match r {
        Ok(tables) => render(&FeaturesPage {
            nav: s.nav(),
            lacking,
            tables,
        }),
        Err(p) => problem_page(&p, s.nav()),
    }
}

#[derive(Template)]
#[template(path = "key_servers.html")]
struct KeyServersPage {
    nav: Option<Nav>,
    key_servers: Vec<KeyServerLine>,
}

async fn key_servers(State(d): State<Dashboard>, s: Signed) -> Response {
    match d.api.store.key_servers().await {
        Ok(v) => render(&KeyServersPage {
            nav: s.nav(),
            key_servers: ks_lines(v),
        }),
        Err(e) => problem_page(&Problem::from(e), s.nav()),
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<(String, AuditEntry)>,
}

async fn audit(State(d): State<Dashboard>, s: Signed) -> Response {
    if s.user.role < Role::Admin {
        return error_page(
            StatusCode::FORBIDDEN,
            s.nav(),
            "the audit log needs the admin role",
        );
    }
    match d.api.store.audit(500).await {
        Ok(v) => render(&AuditPage {
            nav: s.nav(),
            entries: v.into_iter().map(|e| (fmt_time(e.at), e)).collect(),
        }),
        Err(e) => problem_page(&Problem::from(e), s.nav()),
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    nav: Option<Nav>,
    csrf: String,
    tokens: Vec<(gkm_store::model::ApiToken, String)>,
    created: Option<String>,
    error: Option<String>,
}

async fn tokens_page(
    d: &Dashboard,
    s: &Signed,
    created: Option<String>,
    error: Option<String>,
) -> Response {
    match d.api.store.tokens().await {
        Ok(v) => render(&TokensPage {
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
        }),
        Err(e) => problem_page(&Problem::from(e), s.nav()),
    }
}

async fn tokens(State(d): State<Dashboard>, s: Signed) -> Response {
    if s.user.role < Role::Admin {
        return error_page(
            StatusCode::FORBIDDEN,
            s.nav(),
            "API tokens need the admin role",
        );
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
    /// Agent tokens: the GM's group (identity number) and phase 1 identity.
    #[serde(default)]
    gm_group: String,
    #[serde(default)]
    gm_identity: String,
}

async fn token_create(State(d): State<Dashboard>, s: Signed, Form(f): Form<TokenForm>) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Admin) {
        return r;
    }
    let Some(role) = Role::parse(&f.role) else {
        let mut r = tokens_page(
            &d,
            &s,
            None,
            Some("role: choose viewer, operator or admin".into()),
        )
        .await;
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return r;
    };
    let gm = if f.gm_group.trim().is_empty() && f.gm_identity.trim().is_empty() {
        None
    } else {
        match f.gm_group.trim().parse::<u32>() {
            Ok(group) => Some(gkm_store::model::TokenGm {
                group,
                identity: f.gm_identity.trim().to_owned(),
            }),
            Err(_) => {
                let mut r = tokens_page(
                    &d,
                    &s,
                    None,
                    Some("GM group: the group's identity number, 1-4294967295".into()),
                )
                .await;
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                return r;
            }
        }
    };
    match ops::create_token(&d.api, &s.user.actor(), &f.name, role, gm.as_ref()).await {
        Ok((_, secret)) => tokens_page(&d, &s, Some(secret), None).await,
        Err(p) => {
            let mut r = tokens_page(&d, &s, None, Some(p.detail.clone())).await;
            *r.status_mut() =
                StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            r
        }
    }
}

async fn token_delete(
    State(d): State<Dashboard>,
    s: Signed,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = s.refuse(&f.csrf, Role::Admin) {
        return r;
    }
    match d.api.store.delete_token(&s.user.actor(), &name).await {
        Ok(()) => Redirect::to("/tokens").into_response(),
        Err(e) => problem_page(&Problem::from(e), s.nav()),
    }
}

// ---- static -----------------------------------------------------------------

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/gkm.css"),
    )
        .into_response()
}

async fn live_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/live.js"),
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
        .route("/groups/{name}/gms/{identity}", get(gm_page))
        .route(
            "/groups/{name}/gms/{identity}/eject",
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
