//! The dashboard over a real SQLite store: sign-in (local admin), session
//! cookies and expiry, CSRF refusal on every form, roles, and every form's
//! validation errors (nothing written on error). OIDC sign-in runs for real
//! in `scripts/e2e-browser`; its role mapping is unit-tested in `oidc.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{Backend, Recorder};
use gkm_store::model::{
    Authentication, D3pError, GmHealth, GmRow, GmState, GroupPolicy, ReplayCounters, Role,
    WindowSource,
};
use gkm_store::{Actor, Store};
use gkm_web::dashboard::{self, Dashboard};
use gkm_web::session::{Login, Sessions, User};
use gkm_web::{local, ApiState};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Ui {
    router: axum::Router,
    store: Arc<dyn Store>,
    control: Arc<Recorder>,
    sessions: Arc<Sessions>,
    signin: Arc<gkm_web::signin::SignIn>,
}

struct Answer {
    status: StatusCode,
    location: String,
    set_cookie: String,
    csp: String,
    body: String,
}

const PASSWORD: &str = "dashboard-test-password";

fn policy() -> GroupPolicy {
    serde_json::from_str(r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}]}"#).unwrap()
}

async fn ui(tag: &str, idle_ms: i64, secure: bool, backend: Backend) -> Ui {
    let store = common::store(tag, backend).await;
    store
        .put_secret(local::SECRET, &local::hash(PASSWORD).unwrap())
        .await
        .unwrap();
    store
        .create_group(&Actor("test".into()), "G1", 1234, &policy())
        .await
        .unwrap();
    store
        .put_gms(&[GmRow {
            group: 1234,
            gm_identity: "10.0.0.7".into(),
            address: "10.0.0.7:848".into(),
            class: "non-cisco".into(),
            version: Some("1.0.11".into()),
            features: 1,
            state: GmState::Registered,
            registered_at: 0,
            last_seq_sent: Some(3),
            last_seq_acked: Some(2),
            misses: 1,
            sids: vec![5],
        }])
        .await
        .unwrap();
    let control = Arc::new(Recorder::default());
    let sessions = Arc::new(Sessions::new(idle_ms, 3_600_000));
    let signin = Arc::new(gkm_web::signin::SignIn::new().unwrap());
    let router = dashboard::router(Dashboard {
        api: ApiState::new(store.clone(), control.clone()),
        sessions: sessions.clone(),
        oidc: None,
        secure_cookies: secure,
        signin: signin.clone(),
    });
    Ui {
        router,
        store,
        control,
        sessions,
        signin,
    }
}

fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn csrf_in(body: &str) -> String {
    let at = body
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    body[at..at + 64].to_owned()
}

impl Ui {
    async fn call(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Answer {
        self.call_with(method, path, cookie, form, &[], None).await
    }

    /// [`Ui::call`] with extra headers and the peer address the server
    /// would record for the connection.
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
        headers: &[(&str, &str)],
        source: Option<std::net::SocketAddr>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req
            .body(Body::from(form.unwrap_or_default().to_owned()))
            .unwrap();
        if let Some(a) = source {
            req.extensions_mut().insert(axum::extract::ConnectInfo(a));
        }
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (location, set_cookie, csp) = {
            let h = |n| {
                resp.headers()
                    .get(n)
                    .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            (
                h(header::LOCATION),
                h(header::SET_COOKIE),
                h(header::CONTENT_SECURITY_POLICY),
            )
        };
        let status = resp.status();
        let body = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        Answer {
            status,
            location,
            set_cookie,
            csp,
            body,
        }
    }

    /// A session for `role`, as a sign-in would leave it: (cookie, csrf).
    fn session(&self, name: &str, role: Role) -> (String, String) {
        let (id, s) = self
            .sessions
            .sign_in(
                None,
                User {
                    name: name.into(),
                    role,
                    login: Login::Oidc {
                        issuer: "https://idp.test".into(),
                        subject: format!("sub-{name}"),
                    },
                },
                gkm_web::ops::now_ms(),
            )
            .unwrap();
        (format!("{}={id}", gkm_web::session::COOKIE), s.csrf)
    }

    async fn version(&self) -> i64 {
        self.store.group("G1").await.unwrap().unwrap().version
    }
}

fn policy_form(csrf: &str, version: i64, changes: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("csrf", csrf.to_owned()),
        ("version", version.to_string()),
        ("d3p", "off".into()),
        ("d3p_value", String::new()),
        ("acknowledgement", "cisco".into()),
        ("retransmit_interval", "10".into()),
        ("retransmit_number", "2".into()),
        ("tek_lifetime", "3600".into()),
        ("kek_lifetime", "86400".into()),
        ("tek_rekey_before", "90".into()),
        ("kek_rekey_before", "90".into()),
    ];
    for (k, v) in changes {
        match fields.iter_mut().find(|(f, _)| f == k) {
            Some(f) => f.1 = (*v).to_owned(),
            None => fields.push((k, (*v).to_owned())),
        }
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

async fn anonymous_requests_go_to_the_login_page_and_cookies_are_strict(backend: Backend) {
    let u = ui("anon", 60_000, false, backend).await;
    for (m, p) in [
        ("GET", "/"),
        ("GET", "/groups/G1"),
        ("GET", "/audit"),
        ("POST", "/groups/G1/rekey"),
    ] {
        let a = u.call(m, p, None, Some("csrf=x")).await;
        assert_eq!(
            (a.status, a.location.as_str()),
            (StatusCode::SEE_OTHER, "/login"),
            "{m} {p}"
        );
    }
    let a = u.call("GET", "/login", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    // The login form's cookie (no session: the form's token is stateless).
    assert!(a.set_cookie.starts_with("gkm_login="), "{}", a.set_cookie);
    assert!(a.set_cookie.contains("Path=/login"), "{}", a.set_cookie);
    assert!(a.set_cookie.contains("HttpOnly") && a.set_cookie.contains("SameSite=Lax"));
    assert!(!a.set_cookie.contains("Secure"));
    assert!(
        a.csp.contains("frame-ancestors 'none'") && a.csp.contains("script-src 'self'"),
        "{}",
        a.csp
    );
    let tls = ui("anon-tls", 60_000, true, backend).await;
    let a = tls.call("GET", "/login", None, None).await;
    assert!(a.set_cookie.contains("; Secure"), "{}", a.set_cookie);
    // A cookie that names no session is a new visitor.
    let a = u
        .call(
            "GET",
            "/",
            Some(&format!("gkm_session={}", "ab".repeat(32))),
            None,
        )
        .await;
    assert_eq!(a.location, "/login");
}

async fn the_local_admin_signs_in_with_a_fresh_session_id(backend: Backend) {
    let u = ui("local", 60_000, false, backend).await;
    let a = u.call("GET", "/login", None, None).await;
    let anon = cookie_of(&a.set_cookie);
    let csrf = csrf_in(&a.body);
    let wrong = u
        .call(
            "POST",
            "/login",
            Some(&anon),
            Some(&format!("csrf={csrf}&user=admin&password=nope")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong user or password"));
    let forged = u
        .call(
            "POST",
            "/login",
            Some(&anon),
            Some(&format!(
                "csrf={}&user=admin&password={PASSWORD}",
                "0".repeat(64)
            )),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "login CSRF");
    let other_user = u
        .call(
            "POST",
            "/login",
            Some(&anon),
            Some(&format!("csrf={csrf}&user=root&password={PASSWORD}")),
        )
        .await;
    assert_eq!(other_user.status, StatusCode::UNAUTHORIZED);
    let ok = u
        .call(
            "POST",
            "/login",
            Some(&anon),
            Some(&format!("csrf={csrf}&user=admin&password={PASSWORD}")),
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_str()),
        (StatusCode::SEE_OTHER, "/")
    );
    let signed = cookie_of(&ok.set_cookie);
    assert!(signed.starts_with("gkm_session="), "{}", ok.set_cookie);
    assert!(ok.set_cookie.contains("HttpOnly") && ok.set_cookie.contains("SameSite=Lax"));
    assert_ne!(signed, anon, "sign-in issues a new session id");
    let home = u.call("GET", "/", Some(&signed), None).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("admin (admin)"));
    assert_eq!(
        u.call("GET", "/", Some(&anon), None).await.location,
        "/login",
        "the anonymous id is gone"
    );
    let audit = u.store.audit(10).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "session.login" && e.actor == "local:admin"));
    // Sign out needs the CSRF token too, and ends the session.
    let csrf = csrf_in(&home.body);
    let bad = u
        .call("POST", "/logout", Some(&signed), Some("csrf="))
        .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    let out = u
        .call(
            "POST",
            "/logout",
            Some(&signed),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(out.location, "/login");
    assert!(out.set_cookie.contains("Max-Age=0"));
    assert_eq!(
        u.call("GET", "/", Some(&signed), None).await.location,
        "/login"
    );
}

async fn sessions_expire_when_idle(backend: Backend) {
    let u = ui("expiry", 300, false, backend).await;
    let (cookie, _) = u.session("alice", Role::Admin);
    assert_eq!(
        u.call("GET", "/", Some(&cookie), None).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let a = u.call("GET", "/", Some(&cookie), None).await;
    assert_eq!(
        (a.status, a.location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert!(u.sessions.is_empty(), "the expired session was dropped");
}

async fn every_form_refuses_a_missing_or_wrong_csrf_token(backend: Backend) {
    let u = ui("csrf", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("alice", Role::Admin);
    let v = u.version().await;
    let audit_before = u.store.audit(1000).await.unwrap().len();
    let posts = [
        (
            "/groups/G1",
            policy_form("", v, &[("d3p", "sec"), ("d3p_value", "5")]),
        ),
        ("/groups/G1/rekey", String::new()),
        ("/groups/G1/gms/10.0.0.7/eject", String::new()),
        ("/tokens", "name=t1&role=viewer".to_owned()),
        ("/tokens/admin/delete", String::new()),
        ("/setup-keys", "name=k1&groups=G1".to_owned()),
        ("/setup-keys/k1/delete", String::new()),
        ("/agents/gm1.branch/revoke", String::new()),
        ("/logout", String::new()),
    ];
    for (path, body) in &posts {
        for token in ["", "0000", &"f".repeat(64)] {
            let form = if body.is_empty() {
                format!("csrf={token}")
            } else if body.starts_with("csrf=") {
                body.replacen("csrf=", &format!("csrf={token}"), 1)
            } else {
                format!("csrf={token}&{body}")
            };
            let a = u.call("POST", path, Some(&cookie), Some(&form)).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{path} with csrf {token:?}"
            );
            assert!(a.body.contains("CSRF"), "{path}");
        }
    }
    assert_eq!(u.version().await, v, "the policy did not change");
    assert!(
        u.control.calls.lock().unwrap().is_empty(),
        "the engine was not told anything"
    );
    assert_eq!(u.store.audit(1000).await.unwrap().len(), audit_before);
    assert_eq!(
        u.call("GET", "/", Some(&cookie), None).await.status,
        StatusCode::OK,
        "still signed in"
    );
    // The right token works.
    let a = u
        .call(
            "POST",
            "/groups/G1/rekey",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(
        (a.status, a.location.as_str()),
        (StatusCode::SEE_OTHER, "/groups/G1")
    );
    assert_eq!(
        u.control.calls.lock().unwrap().as_slice(),
        ["rekey 1234 false"]
    );
}

async fn roles_decide_what_a_user_sees_and_may_do(backend: Backend) {
    let u = ui("roles", 60_000, false, backend).await;
    let v = u.version().await;
    let (viewer, vcsrf) = u.session("bob", Role::Viewer);
    let page = u.call("GET", "/groups/G1", Some(&viewer), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("policy-form") && !page.body.contains("rekey-now"));
    assert!(page.body.contains("10.0.0.7"), "the GM table is shown");
    for p in [
        "/audit",
        "/tokens",
        "/groups/G1/rekey",
        "/groups/G1/gms/10.0.0.7/eject",
    ] {
        assert_eq!(
            u.call("GET", p, Some(&viewer), None).await.status,
            StatusCode::FORBIDDEN,
            "{p}"
        );
    }
    let forged = policy_form(&vcsrf, v, &[("d3p", "sec"), ("d3p_value", "5")]);
    assert_eq!(
        u.call("POST", "/groups/G1", Some(&viewer), Some(&forged))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for p in ["/groups/G1/rekey", "/groups/G1/gms/10.0.0.7/eject"] {
        let a = u
            .call("POST", p, Some(&viewer), Some(&format!("csrf={vcsrf}")))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{p}");
    }
    assert_eq!(u.version().await, v);
    assert!(u.control.calls.lock().unwrap().is_empty());

    let (operator, ocsrf) = u.session("olivia", Role::Operator);
    let page = u.call("GET", "/groups/G1", Some(&operator), None).await;
    assert!(page.body.contains("policy-form") && page.body.contains("rekey-now"));
    assert!(
        !page.body.contains("/audit"),
        "no admin links for an operator"
    );
    let ok = u
        .call(
            "POST",
            "/groups/G1",
            Some(&operator),
            Some(&policy_form(
                &ocsrf,
                v,
                &[("d3p", "msec"), ("d3p_value", "2500")],
            )),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("Window-size = 2500 msec"));
    assert_eq!(u.version().await, v + 1);
    let tokens = u
        .call(
            "POST",
            "/tokens",
            Some(&operator),
            Some(&format!("csrf={ocsrf}&name=x&role=viewer")),
        )
        .await;
    assert_eq!(tokens.status, StatusCode::FORBIDDEN, "tokens need admin");
    let eject = u
        .call(
            "POST",
            "/groups/G1/gms/10.0.0.7/eject",
            Some(&operator),
            Some(&format!("csrf={ocsrf}")),
        )
        .await;
    assert_eq!(eject.status, StatusCode::SEE_OTHER);
    let audit = u.store.audit(10).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.actor == "oidc:https://idp.test/sub-olivia" && e.action == "group.update"));
    assert_eq!(
        u.control.calls.lock().unwrap().as_slice(),
        ["changed 1234 true false", "eject 1234 10.0.0.7"]
    );
    // Ticking legacy phase 1 saves it and marks the group as weak, on its
    // page and on the overview; unticking clears both.
    assert!(!ok.body.contains("weak-algorithms"), "strong by default");
    for (tick, weak) in [(true, true), (false, false)] {
        let v = u.version().await;
        let mut changes = vec![("d3p", "msec"), ("d3p_value", "2500")];
        if tick {
            changes.push(("legacy_phase1", "on"));
        }
        let page = u
            .call(
                "POST",
                "/groups/G1",
                Some(&operator),
                Some(&policy_form(&ocsrf, v, &changes)),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(
            page.body.contains("id=\"weak-algorithms\""),
            weak,
            "{}",
            page.body
        );
        assert_eq!(page.body.contains("HMAC-SHA-1"), weak);
        let stored = u.store.group("G1").await.unwrap().unwrap();
        assert_eq!(stored.policy.legacy_phase1, tick);
        let overview = u.call("GET", "/", Some(&operator), None).await;
        assert_eq!(overview.body.contains("weak algorithms"), weak);
    }
}

async fn the_policy_form_reports_each_error_next_to_its_field_and_saves_nothing(backend: Backend) {
    let u = ui("policy", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("alice", Role::Admin);
    let v = u.version().await;
    type Changes<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Changes, &str, &str)] = &[
        (
            &[("d3p", "sec"), ("d3p_value", "101")],
            "d3p_value-error",
            "101 is out of range: sec must be 1-100",
        ),
        (
            &[("d3p", "sec"), ("d3p_value", "0")],
            "d3p_value-error",
            "0 is out of range: sec must be 1-100",
        ),
        (
            &[("d3p", "msec"), ("d3p_value", "99")],
            "d3p_value-error",
            "99 is out of range: msec must be 100-10000",
        ),
        (
            &[("d3p", "msec"), ("d3p_value", "10001")],
            "d3p_value-error",
            "out of range",
        ),
        (
            &[("d3p", "sec"), ("d3p_value", "abc")],
            "d3p_value-error",
            "is not a whole number",
        ),
        (
            &[
                ("d3p", "sec"),
                ("d3p_value", "5"),
                ("cmd_inline_tagging", "on"),
            ],
            "d3p_value-error",
            "CMD inline tagging",
        ),
        (
            &[("retransmit_interval", "0")],
            "field-error",
            "0 is out of range: 1-60 seconds",
        ),
        (
            &[("retransmit_number", "11")],
            "field-error",
            "11 is out of range: 0-10",
        ),
        (
            &[("tek_lifetime", "299")],
            "field-error",
            "299 is out of range: 300-86400 seconds",
        ),
        (
            &[("kek_lifetime", "604801")],
            "field-error",
            "604801 is out of range: 300-604800 seconds",
        ),
        (
            &[("tek_rekey_before", "1800")],
            "field-error",
            "under half the shortest TEK lifetime",
        ),
        (
            &[("kek_rekey_before", "5")],
            "field-error",
            "must be at least 10",
        ),
        (
            &[("acknowledgement", "bogus")],
            "field-error",
            "choose cisco, interoperable or any",
        ),
        (&[("version", "x")], "error", "reload the page"),
        (
            &[("version", "999")],
            "error",
            "the group changed since this form was loaded",
        ),
    ];
    for (changes, class, message) in cases {
        let a = u
            .call(
                "POST",
                "/groups/G1",
                Some(&cookie),
                Some(&policy_form(&csrf, v, changes)),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{changes:?}");
        assert!(a.body.contains(class), "{changes:?}: no {class}");
        assert!(
            a.body.contains(message),
            "{changes:?}: no {message:?} in the page"
        );
        assert_eq!(u.version().await, v, "{changes:?}: nothing saved");
    }
    assert!(u.control.calls.lock().unwrap().is_empty());
    let ok = u
        .call(
            "POST",
            "/groups/G1",
            Some(&cookie),
            Some(&policy_form(
                &csrf,
                v,
                &[("d3p", "sec"), ("d3p_value", "5")],
            )),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.contains("Saved."));
    let g = u.store.group("G1").await.unwrap().unwrap();
    assert_eq!(
        g.policy.d3p_window,
        Some(gkm_store::model::D3pWindow::Sec(5))
    );
}

async fn the_group_page_shows_coop_peers_and_a_policy_save_keeps_them(backend: Backend) {
    let u = ui("coop", 60_000, false, backend).await;
    let mut p = policy();
    p.coop = Some(
        serde_json::from_str(
            r#"{"priority":180,"peers":[
                {"address":"10.0.0.2","authentication":{"method":"psk","psk":"pair-secret"}},
                {"address":"10.0.0.3","identity":"CN=ks3","authentication":{"method":"pki"}},
                {"address":"10.0.0.4"}]}"#,
        )
        .unwrap(),
    );
    u.store
        .update_group(&Actor("test".into()), "G1", &p, None)
        .await
        .unwrap();
    let (cookie, csrf) = u.session("alice", Role::Operator);
    let page = u.call("GET", "/groups/G1", Some(&cookie), None).await;
    assert_eq!(page.status, StatusCode::OK);
    let coop = &page.body[page.body.find("id=\"coop\"").expect("COOP section")..];
    assert!(coop.contains("<dd id=\"coop-priority\">180</dd>"), "{coop}");
    for row in [
        "<td>10.0.0.2</td><td>-</td><td>PSK set</td>",
        "<td>10.0.0.3</td><td>CN=ks3</td><td>certificate</td>",
        "<td>10.0.0.4</td><td>-</td><td>PSK not set</td>",
    ] {
        assert!(coop.contains(row), "{row} in {coop}");
    }
    assert!(!page.body.contains("pair-secret"));
    // The overview alerts on the engine's mismatch; the key-servers page
    // shows this key server's COOP view with its peers.
    let overview = u.call("GET", "/", Some(&cookie), None).await;
    assert!(
        overview.body.contains("<li class=\"alert\">G1: %GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched</li>"),
        "{}",
        overview.body
    );
    let ks = u.call("GET", "/key-servers", Some(&cookie), None).await;
    assert_eq!(ks.status, StatusCode::OK);
    let coop = &ks.body[ks.body.find("id=\"coop-G1\"").expect("G1's COOP")..];
    assert!(
        coop.contains("<dd class=\"coop-role\">Secondary</dd>"),
        "{coop}"
    );
    assert!(
        coop.contains("<td>10.0.8.2:848</td><td>1.0.0</td><td>200</td><td>Primary</td><td>Alive</td><td>Established</td><td>7 / 9</td>"),
        "{coop}"
    );
    assert!(
        coop.contains("<dd class=\"coop-refused\">replayed 2</dd>"),
        "{coop}"
    );
    assert!(!ks.body.contains("id=\"no-coop\""));
    // Saving the policy form changes what it edits and keeps COOP with the
    // peer's key.
    let v = u.version().await;
    let ok = u
        .call(
            "POST",
            "/groups/G1",
            Some(&cookie),
            Some(&policy_form(
                &csrf,
                v,
                &[
                    COOP_FIELDS.as_slice(),
                    &[
                        ("retransmit_number", "3"),
                        COOP_ON,
                        ("coop_priority", "180"),
                    ],
                ]
                .concat(),
            )),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let g = u.store.group("G1").await.unwrap().unwrap();
    assert_eq!(
        g.policy.coop.as_ref().map(|c| (c.priority, c.peers.len())),
        Some((180, 3))
    );
    assert_eq!(
        g.policy.coop,
        p.coop.clone().map(|mut c| {
            for peer in &mut c.peers {
                if let Authentication::Psk { psk } = &mut peer.authentication {
                    *psk = None;
                }
            }
            c
        })
    );
    assert_eq!(
        u.store
            .coop_peer_psk("G1", "10.0.0.2")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "pair-secret"
    );
}

/// The COOP fields as the group page fills them for the policy of
/// [`the_group_page_shows_coop_peers_and_a_policy_save_keeps_them`].
const COOP_ON: (&str, &str) = ("coop", "on");
const COOP_FIELDS: [(&str, &str); 5] = [
    ("coop_refresh", "20"),
    ("coop_check", "30"),
    ("coop_dead", "3"),
    (
        "coop_peers",
        "10.0.0.2%0A10.0.0.3 pki identity%3DCN%3Dks3%0A10.0.0.4",
    ),
    ("coop_psk", ""),
];

async fn the_policy_form_edits_coop_and_names_each_wrong_field(backend: Backend) {
    let u = ui("coop-form", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("alice", Role::Operator);
    let post = |changes: Vec<(&'static str, &'static str)>, v: i64| {
        let form = policy_form(&csrf, v, &[COOP_FIELDS.as_slice(), &changes].concat());
        let u = &u;
        let cookie = cookie.clone();
        async move {
            u.call("POST", "/groups/G1", Some(&cookie), Some(&form))
                .await
        }
    };
    // Turned on from the form: three peers, a pair PSK for the PSK ones.
    let v = u.version().await;
    let ok = post(
        vec![
            COOP_ON,
            ("coop_priority", "200"),
            ("coop_psk", "pair-from-form"),
        ],
        v,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let g = u.store.group("G1").await.unwrap().unwrap();
    let c = g.policy.coop.clone().expect("coop on");
    assert_eq!(
        (c.priority, c.refresh_secs, c.check_secs, c.dead_periods),
        (200, 20, 30, 3)
    );
    assert_eq!(c.peers[1].identity.as_deref(), Some("CN=ks3"));
    assert_eq!(c.peers[1].authentication, Authentication::Pki);
    for a in ["10.0.0.2", "10.0.0.4"] {
        let k = u.store.coop_peer_psk("G1", a).await.unwrap().unwrap();
        assert_eq!(k.as_str(), "pair-from-form", "{a}");
    }
    assert!(u
        .store
        .coop_peer_psk("G1", "10.0.0.3")
        .await
        .unwrap()
        .is_none());
    // The page shows the form filled back, the PSK never.
    let page = u.call("GET", "/groups/G1", Some(&cookie), None).await;
    assert!(
        page.body.contains("10.0.0.3 pki identity=CN=ks3"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("pair-from-form"));
    // Each wrong value is named next to its field and changes nothing.
    let v = u.version().await;
    for (changes, field, says) in [
        (
            vec![COOP_ON, ("coop_priority", "0")],
            "coop_priority",
            "1-255",
        ),
        (
            vec![COOP_ON, ("coop_priority", "x")],
            "coop_priority",
            "not a whole number",
        ),
        (
            vec![COOP_ON, ("coop_priority", "100"), ("coop_refresh", "9")],
            "coop_refresh",
            "10-300",
        ),
        (
            vec![COOP_ON, ("coop_priority", "100"), ("coop_dead", "11")],
            "coop_dead",
            "2-10",
        ),
        (
            vec![
                COOP_ON,
                ("coop_priority", "100"),
                ("coop_check", "10"),
                ("coop_refresh", "20"),
            ],
            "coop_check",
            "under refresh_secs",
        ),
        (
            vec![
                COOP_ON,
                ("coop_priority", "100"),
                ("coop_peers", "10.0.0.2 port=0"),
            ],
            "coop_peers",
            "not 1-65535",
        ),
        (
            vec![
                COOP_ON,
                ("coop_priority", "100"),
                ("coop_peers", "10.0.0.2 psk=x"),
            ],
            "coop_peers",
            "is not port=N",
        ),
        (
            vec![
                COOP_ON,
                ("coop_priority", "100"),
                ("coop_peers", "not-an-address"),
            ],
            "coop_peers",
            "not-an-address",
        ),
        (
            vec![COOP_ON, ("coop_priority", "100"), ("coop_peers", "")],
            "coop_peers",
            "at least one peer",
        ),
    ] {
        let bad = post(changes.clone(), v).await;
        assert_eq!(
            bad.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{changes:?}: {}",
            bad.body
        );
        let at = bad
            .body
            .find(&format!("id=\"{field}-error\""))
            .unwrap_or_else(|| panic!("{changes:?}: no {field} error in {}", bad.body));
        assert!(
            bad.body[at..].contains(says),
            "{changes:?}: {}",
            &bad.body[at..at + 300.min(bad.body.len() - at)]
        );
        assert_eq!(
            u.store.group("G1").await.unwrap().unwrap().policy,
            g.policy,
            "{changes:?}"
        );
    }
    // Unticked: the group has no COOP any more.
    let off = post(vec![("coop_priority", "200")], v).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert!(u
        .store
        .group("G1")
        .await
        .unwrap()
        .unwrap()
        .policy
        .coop
        .is_none());
}

async fn the_token_form_validates_and_shows_a_secret_once(backend: Backend) {
    let u = ui("tokens", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("alice", Role::Admin);
    for (form, message) in [
        (
            format!("csrf={csrf}&name=&role=viewer"),
            "must be 1-64 characters",
        ),
        (
            format!("csrf={csrf}&name=bad%2Fname&role=viewer"),
            "must be 1-64 characters",
        ),
        (
            format!("csrf={csrf}&name=ok&role=root"),
            "choose viewer, operator or admin",
        ),
        (
            format!("csrf={csrf}&name=h1&role=agent"),
            "bound to the GM it reports for",
        ),
        (
            format!("csrf={csrf}&name=h1&role=agent&gm_group=x&gm_identity=10.0.0.1"),
            "the group ID, 1-4294967295",
        ),
        (
            format!("csrf={csrf}&name=v1&role=viewer&gm_group=1234&gm_identity=10.0.0.1"),
            "only agent tokens are bound",
        ),
    ] {
        let a = u.call("POST", "/tokens", Some(&cookie), Some(&form)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{form}");
        assert!(a.body.contains(message), "{form}");
    }
    assert!(u.store.tokens().await.unwrap().is_empty());
    let a = u
        .call(
            "POST",
            "/tokens",
            Some(&cookie),
            Some(&format!("csrf={csrf}&name=ci&role=operator")),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let at = a.body.find("gkm_").unwrap();
    let secret = &a.body[at..at + 68];
    let list = u.call("GET", "/tokens", Some(&cookie), None).await;
    assert!(
        list.body.contains("ci") && !list.body.contains(secret),
        "shown once"
    );
    let agent = u
        .call(
            "POST",
            "/tokens",
            Some(&cookie),
            Some(&format!(
                "csrf={csrf}&name=h1&role=agent&gm_group=1234&gm_identity=10.0.0.1"
            )),
        )
        .await;
    assert_eq!(agent.status, StatusCode::OK, "{}", agent.body);
    assert!(
        agent.body.contains("10.0.0.1 in group 1234"),
        "{}",
        agent.body
    );
    let dup = u
        .call(
            "POST",
            "/tokens",
            Some(&cookie),
            Some(&format!("csrf={csrf}&name=ci&role=viewer")),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let del = u
        .call(
            "POST",
            "/tokens/ci/delete",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(del.location, "/tokens");
    let left: Vec<String> = u
        .store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(left, ["h1"], "ci deleted, the agent token stays");
}

async fn pages_render_and_bad_queries_are_refused(backend: Backend) {
    let u = ui("pages", 60_000, false, backend).await;
    let (cookie, _) = u.session("alice", Role::Admin);
    for p in [
        "/",
        "/groups/G1",
        "/groups/G1/gms/10.0.0.7",
        "/features",
        "/features?lacking=1",
        "/key-servers",
        "/audit",
        "/tokens",
        "/groups/G1/rekey?replace=1",
    ] {
        let a = u.call("GET", p, Some(&cookie), None).await;
        assert_eq!(a.status, StatusCode::OK, "{p}: {}", a.body);
    }
    let ks = u.call("GET", "/key-servers", Some(&cookie), None).await;
    assert!(ks.body.contains("id=\"no-coop\""), "{}", ks.body);
    let gm = u
        .call("GET", "/groups/G1/gms/10.0.0.7", Some(&cookie), None)
        .await;
    assert!(gm.body.contains("1.0.11") && gm.body.contains("(removed at 3)"));
    for (p, status) in [
        ("/groups/NOPE", StatusCode::NOT_FOUND),
        ("/groups/G1/gms/10.9.9.9", StatusCode::NOT_FOUND),
        ("/groups/G1?state=sleepy", StatusCode::UNPROCESSABLE_ENTITY),
        ("/groups/G1?class=juniper", StatusCode::UNPROCESSABLE_ENTITY),
        ("/groups/G1?lacking=warp", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        assert_eq!(
            u.call("GET", p, Some(&cookie), None).await.status,
            status,
            "{p}"
        );
    }
    let lacking = u
        .call("GET", "/features?lacking=1", Some(&cookie), None)
        .await;
    // The GM reports ip-d3p (bit 1) but not gdoi-interop-ack.
    let d3p = &lacking.body[lacking.body.find("feature-ip-d3p").unwrap()
        ..lacking.body.find("feature-gdoi-interop-ack").unwrap()];
    assert!(
        !d3p.contains("10.0.0.7"),
        "lacking-only hides a GM that has the feature"
    );
    assert!(
        lacking.body[lacking.body.find("feature-gdoi-interop-ack").unwrap()..].contains("10.0.0.7")
    );
    // The key server's own row (ip-d3p off in the stand-in engine's status).
    assert!(d3p.contains("10.0.8.1          1.0.0     No"), "{d3p}");
    assert!(
        !lacking.body[lacking.body.find("feature-gdoi-interop-ack").unwrap()..]
            .contains("10.0.8.1")
    );
    let all = u.call("GET", "/features", Some(&cookie), None).await;
    assert!(
        all.body.contains("10.0.8.1          1.0.0     Yes"),
        "{}",
        all.body
    );
}

async fn health_reports_show_on_the_gm_page_and_spikes_alert(backend: Backend) {
    let u = ui("health", 60_000, false, backend).await;
    let (cookie, _) = u.session("alice", Role::Viewer);
    let gm = u
        .call("GET", "/groups/G1/gms/10.0.0.7", Some(&cookie), None)
        .await;
    assert!(gm.body.contains(r#"id="no-health""#), "{}", gm.body);
    let overview = u.call("GET", "/", Some(&cookie), None).await;
    assert!(overview.body.contains("0 input D3P errors"));
    assert!(!overview.body.contains("IP-D3P input errors in the last"));
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let report = |errors: u64, at: i64| GmHealth {
        group: 1234,
        gm_identity: "10.0.0.7".into(),
        received_at: at,
        agent_version: "0.1.0".into(),
        registered: true,
        d3p_window_ms: Some(1000),
        d3p_window_source: Some(WindowSource::Client),
        agent_time_ms: u64::try_from(at + 5000).unwrap(),
        counters: ReplayCounters {
            input_packets: 500,
            output_packets: 400,
            input_errors: errors,
            output_errors: 0,
            history: vec![D3pError {
                src: "10.0.0.9".parse().unwrap(),
                my_time_ms: 1_700_000_001_500,
                peer_time_ms: 1_700_000_000_000,
                window_ms: 1000,
            }]
            .into(),
        },
        membership: None,
        traffic: None,
        ack_lost: false,
    };
    // 9 errors: below the spike threshold; then 14 more within 5 minutes.
    u.store
        .put_gm_health(&report(9, now - 60_000))
        .await
        .unwrap();
    let overview = u.call("GET", "/", Some(&cookie), None).await;
    assert!(!overview.body.contains("IP-D3P input errors in the last"));
    assert!(
        overview.body.contains("9 input D3P errors"),
        "{}",
        overview.body
    );
    u.store.put_gm_health(&report(23, now)).await.unwrap();
    let overview = u.call("GET", "/", Some(&cookie), None).await;
    assert!(
        overview
            .body
            .contains("G1: GM 10.0.0.7 reported 23 IP-D3P input errors in the last 5 min"),
        "{}",
        overview.body
    );
    let group = u.call("GET", "/groups/G1", Some(&cookie), None).await;
    assert!(group.body.contains("23 input D3P errors"), "{}", group.body);
    let gm = u
        .call("GET", "/groups/G1/gms/10.0.0.7", Some(&cookie), None)
        .await;
    for want in [
        r#"<td id="d3p-input-errors">23</td>"#,
        "1000 ms (client d3p window)",
        "+5000 ms from the key server",
        "<td>10.0.0.9</td><td>1700000001500</td><td>1700000000000</td><td>+1500 ms</td><td>1000 ms</td>",
    ] {
        assert!(gm.body.contains(want), "{want}: {}", gm.body);
    }
}

/// A fresh login form: (login cookie, token).
async fn login_form(u: &Ui) -> (String, String) {
    let a = u.call("GET", "/login", None, None).await;
    (cookie_of(&a.set_cookie), csrf_in(&a.body))
}

async fn failed_sign_ins_are_throttled_per_source_and_per_user(backend: Backend) {
    // Issue 16 item 7.
    let u = ui("throttle", 60_000, false, backend).await;
    let (cookie, csrf) = login_form(&u).await;
    let from = |i: u8| Some(std::net::SocketAddr::from(([192, 0, 2, i], 40_000)));
    let attempt = |password: &str, src: Option<std::net::SocketAddr>, user: &str| {
        let form = format!("csrf={csrf}&user={user}&password={password}");
        let cookie = cookie.clone();
        let u = &u;
        async move {
            u.call_with("POST", "/login", Some(&cookie), Some(&form), &[], src)
                .await
        }
    };
    // Five free failures from one source, then a lockout: the right
    // password is refused (429, Retry-After) without a PBKDF2 run.
    for _ in 0..gkm_web::signin::FREE_FAILURES + 1 {
        assert_eq!(
            attempt("nope", from(1), "admin").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = attempt(PASSWORD, from(1), "admin").await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.body
    );
    assert!(locked.body.contains("try again in 1 s"), "{}", locked.body);
    // The user is locked from any source; another user from that source too.
    assert_eq!(
        attempt(PASSWORD, from(2), "admin").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("x", from(1), "alice").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // After the window the user signs in.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let ok = attempt(PASSWORD, from(2), "admin").await;
    assert_eq!(
        (ok.status, ok.location.as_str()),
        (StatusCode::SEE_OTHER, "/")
    );
    // A success clears the user's failures.
    assert_eq!(
        attempt("nope", from(3), "admin").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn parallel_sign_ins_cannot_take_more_than_the_pbkdf2_slots(backend: Backend) {
    let u = ui("pbkdf2", 60_000, false, backend).await;
    let (cookie, csrf) = login_form(&u).await;
    let u = Arc::new(u);
    // 20 attempts at once, each from its own source (no lockout applies
    // before the first fails).
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let u = u.clone();
            let (cookie, form) = (
                cookie.clone(),
                format!("csrf={csrf}&user=admin&password=wrong{i}"),
            );
            tokio::spawn(async move {
                let src = std::net::SocketAddr::from(([198, 51, 100, i + 1], 40_000));
                u.call_with("POST", "/login", Some(&cookie), Some(&form), &[], Some(src))
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&s),
            "{s}"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let peak = u.signin.peak_concurrent_checks();
    assert!(
        peak >= 1 && peak <= (cores / 2).max(1),
        "peak {peak} checks at once on {cores} CPUs"
    );
}

async fn a_login_form_survives_a_flood_of_anonymous_requests(backend: Backend) {
    // Issue 16 item 10: the login form keeps no server state, so 12,000
    // anonymous visits evict nothing and the first form still works.
    let u = ui("login-flood", 60_000, false, backend).await;
    let (cookie, csrf) = login_form(&u).await;
    for _ in 0..12_000 {
        let a = u.call("GET", "/login", None, None).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(u.sessions.len(), 0, "no session per login page");
    let ok = u
        .call(
            "POST",
            "/login",
            Some(&cookie),
            Some(&format!("csrf={csrf}&user=admin&password={PASSWORD}")),
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_str()),
        (StatusCode::SEE_OTHER, "/")
    );
    // Another browser's cookie does not carry this token.
    let (other, _) = login_form(&u).await;
    let forged = u
        .call(
            "POST",
            "/login",
            Some(&other),
            Some(&format!("csrf={csrf}&user=admin&password={PASSWORD}")),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

async fn cross_origin_posts_are_refused_before_the_csrf_token(backend: Backend) {
    // Issue 16 item 15.
    let u = ui("origin", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("olivia", Role::Operator);
    let rekey = |headers: Vec<(&'static str, String)>| {
        let cookie = cookie.clone();
        let form = format!("csrf={csrf}");
        let u = &u;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            u.call_with(
                "POST",
                "/groups/G1/rekey",
                Some(&cookie),
                Some(&form),
                &h,
                None,
            )
            .await
        }
    };
    for evil in [
        vec![
            ("host", "gkm.example:8443".into()),
            ("origin", "https://evil.example".into()),
        ],
        vec![
            ("host", "gkm.example:8443".into()),
            ("referer", "https://evil.example/x".into()),
        ],
        vec![
            ("host", "gkm.example:8443".into()),
            ("origin", "null".into()),
        ],
        vec![("origin", "https://gkm.example:8443".into())],
    ] {
        let a = rekey(evil.clone()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{evil:?}");
        assert!(a.body.contains("another site"), "{evil:?}: {}", a.body);
    }
    assert!(
        u.control.calls.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );
    let same = rekey(vec![
        ("host", "gkm.example:8443".into()),
        ("origin", "https://gkm.example:8443".into()),
    ])
    .await;
    assert_eq!(same.status, StatusCode::SEE_OTHER, "{}", same.body);
    assert_eq!(u.control.calls.lock().unwrap().len(), 1);
    // The engine says the previous rekey is in flight: 409, shown.
    u.control
        .busy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let busy = rekey(vec![]).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert!(busy.body.contains("in flight"), "{}", busy.body);
}

async fn the_setup_key_and_agent_pages_validate_show_the_key_once_and_revoke(backend: Backend) {
    let u = ui("enroll-pages", 60_000, false, backend).await;
    let (cookie, csrf) = u.session("olga", Role::Operator);
    for (form, message) in [
        (
            format!("csrf={csrf}&name=k1&groups=NOPE"),
            "/groups/0: no group &#34;NOPE&#34;",
        ),
        (
            format!("csrf={csrf}&name=k1&groups="),
            "a setup key binds 1-64 groups",
        ),
        (
            format!("csrf={csrf}&name=k1&groups=G1&usage_limit=2"),
            "single-use key is used once",
        ),
        (
            format!("csrf={csrf}&name=k1&groups=G1&expires_in_secs=5"),
            "5 is out of range",
        ),
        (
            format!("csrf={csrf}&name=k1&groups=G1&usage_limit=x"),
            "usage limit: ",
        ),
        (
            format!("csrf={csrf}&name=k1&groups=G1&tags=bad%20tag"),
            "a tag is 1-64",
        ),
    ] {
        let a = u
            .call("POST", "/setup-keys", Some(&cookie), Some(&form))
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{form}: {}",
            a.body
        );
        assert!(a.body.contains(message), "{form}: {}", a.body);
    }
    assert!(u.store.setup_keys().await.unwrap().is_empty());
    // A viewer sees the pages but neither form nor button, and cannot post.
    let (vcookie, vcsrf) = u.session("vic", Role::Viewer);
    let page = u.call("GET", "/setup-keys", Some(&vcookie), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("New setup key"));
    let no = u
        .call(
            "POST",
            "/setup-keys",
            Some(&vcookie),
            Some(&format!("csrf={vcsrf}&name=k1&groups=G1")),
        )
        .await;
    assert_eq!(no.status, StatusCode::FORBIDDEN);
    let made = u
        .call(
            "POST",
            "/setup-keys",
            Some(&cookie),
            Some(&format!(
                "csrf={csrf}&name=k1&groups=G1&tags=asr9000&reusable=on&usage_limit=3"
            )),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let at = made.body.find("gkmsk_").expect("the key");
    let key = made.body[at..at + 70].to_owned();
    let list = u.call("GET", "/setup-keys", Some(&cookie), None).await;
    assert!(list.body.contains("0 of 3") && list.body.contains("asr9000"));
    assert!(!list.body.contains(&key), "shown once");
    // An agent enrolled with it shows with its group's name; revoking it
    // through the page ejects it, rekeys the group and tells the engine.
    let k = u.store.setup_keys().await.unwrap().remove(0);
    let agent = gkm_store::model::Agent {
        id: 0,
        name: "gm1.branch".into(),
        groups: vec![1234],
        tags: k.tags.clone(),
        setup_key: k.name.clone(),
        cert_serial: "01".into(),
        cert_not_after: 4_000_000_000_000,
        enrolled_at: 0,
        renewed_at: None,
        revoked_at: None,
    };
    u.store
        .enroll_agent(k.id, 1, &agent, "agent:gm1.branch", &[9u8; 32])
        .await
        .unwrap();
    let page = u.call("GET", "/agents", Some(&vcookie), None).await;
    assert!(
        page.body.contains("gm1.branch") && page.body.contains("<td>G1</td>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("never") && !page.body.contains(">Revoke<"),
        "{}",
        page.body
    );
    let gone = u
        .call(
            "POST",
            "/agents/gm1.branch/revoke",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    assert!(gone.body.contains("gm1.branch revoked"), "{}", gone.body);
    let calls = u.control.calls.lock().unwrap().clone();
    for want in [
        "agents changed",
        "eject 1234 gm1.branch",
        "rekey 1234 false",
    ] {
        assert!(calls.iter().any(|c| c == want), "{want}: {calls:?}");
    }
    assert!(u.store.token_by_hash(&[9u8; 32]).await.unwrap().is_none());
    let again = u
        .call(
            "POST",
            "/agents/gm1.branch/revoke",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let del = u
        .call(
            "POST",
            "/setup-keys/k1/delete",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(del.status, StatusCode::SEE_OTHER);
    assert!(u.store.setup_keys().await.unwrap().is_empty());
}

common::on_both_backends!(
    the_group_page_shows_coop_peers_and_a_policy_save_keeps_them,
    the_policy_form_edits_coop_and_names_each_wrong_field,
    anonymous_requests_go_to_the_login_page_and_cookies_are_strict,
    the_local_admin_signs_in_with_a_fresh_session_id,
    sessions_expire_when_idle,
    every_form_refuses_a_missing_or_wrong_csrf_token,
    roles_decide_what_a_user_sees_and_may_do,
    the_policy_form_reports_each_error_next_to_its_field_and_saves_nothing,
    the_token_form_validates_and_shows_a_secret_once,
    the_setup_key_and_agent_pages_validate_show_the_key_once_and_revoke,
    pages_render_and_bad_queries_are_refused,
    health_reports_show_on_the_gm_page_and_spikes_alert,
    failed_sign_ins_are_throttled_per_source_and_per_user,
    parallel_sign_ins_cannot_take_more_than_the_pbkdf2_slots,
    a_login_form_survives_a_flood_of_anonymous_requests,
    cross_origin_posts_are_refused_before_the_csrf_token,
);
