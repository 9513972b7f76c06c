//! `/api/v1` over a real SQLite store: every endpoint, every validation
//! rule of the seed, bad JSON, unknown fields, missing and wrong tokens and
//! roles. The key-server engine is a recording stand-in here; the server's
//! scenario tests drive the real one.
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
use axum::http::{Request, StatusCode};
use common::{Backend, Recorder};
use gkm_store::model::{GmRow, GmState, Role};
use gkm_store::{Actor, Store};
use gkm_web::auth::{new_token, token_hash};
use gkm_web::{api, ApiState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    store: Arc<dyn Store>,
    control: Arc<Recorder>,
    admin: String,
    operator: String,
    viewer: String,
    agent: String,
}

async fn api(tag: &str, backend: Backend) -> Api {
    let store = common::store(tag, backend).await;
    let mut tokens = Vec::new();
    for role in [Role::Admin, Role::Operator, Role::Viewer, Role::Agent] {
        let (secret, hash) = new_token().unwrap();
        store
            .create_token(&Actor("bootstrap".into()), role.as_str(), role, &hash, None)
            .await
            .unwrap();
        tokens.push(secret);
    }
    let control = Arc::new(Recorder::default());
    let router = api::router(ApiState::new(store.clone(), control.clone()));
    Api {
        router,
        store,
        control,
        admin: tokens[0].clone(),
        operator: tokens[1].clone(),
        viewer: tokens[2].clone(),
        agent: tokens[3].clone(),
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, String, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ctype, v)
    }

    /// A request with any content type.
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, String, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::new(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let b = body.map(|b| b.to_string());
        let (s, _, v) = self
            .call(method, path, Some(&self.admin), b.as_deref())
            .await;
        (s, v)
    }
}

fn group_body(name: &str, group_id: u32, policy: Value) -> Value {
    json!({"name": name, "group_id": group_id, "policy": policy})
}

fn policy() -> Value {
    json!({"teks": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8"}],
           "authentication": {"method": "psk", "psk": "s3cret-psk"}})
}

/// Asserts a problem+json answer with this status naming this field.
fn problem(got: (StatusCode, String, Value), status: StatusCode, field: Option<&str>) -> Value {
    assert_eq!(got.0, status, "{}", got.2);
    assert_eq!(got.1, "application/problem+json");
    assert_eq!(got.2["status"], status.as_u16());
    assert!(got.2["type"].as_str().unwrap().starts_with("https://"));
    assert!(!got.2["detail"].as_str().unwrap().is_empty());
    if let Some(f) = field {
        assert_eq!(got.2["field"], f, "{}", got.2);
    }
    got.2
}

async fn group_crud_and_the_psk_never_comes_back(backend: Backend) {
    let a = api("crud", backend).await;
    let (s, v) = a
        .admin(
            "POST",
            "/api/v1/groups",
            Some(group_body("GET", 1234, policy())),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "GET");
    assert_eq!(v["version"], 1);
    assert_eq!(v["acknowledgement"], "cisco");
    assert_eq!(v["psk_set"], true);
    assert_eq!(
        v["policy"]["legacy_phase1"], false,
        "strong suites only by default"
    );
    assert_eq!(v["weak_algorithms"], json!([]));
    assert!(!v.to_string().contains("s3cret"), "{v}");
    let (s, v) = a.admin("GET", "/api/v1/groups/GET", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!v.to_string().contains("s3cret"));
    let (_, v) = a.admin("GET", "/api/v1/groups", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Update with the version; a stale version is a conflict.
    let mut p = policy();
    p["acknowledgement"] = json!("interoperable");
    p["legacy_phase1"] = json!(true);
    // A TEK for peers without GCM (issue 18 item 3) is a policy value, and
    // GMs may be authorised by IPv6 prefix (item 6).
    p["teks"][0]["transform"] = json!("aes-cbc-128-hmac-sha256");
    p["authorization"] = json!({"addresses": ["10.0.0.0/8", "fd00:1::/64"]});
    let (s, v) = a
        .admin(
            "PUT",
            "/api/v1/groups/GET",
            Some(json!({"policy": p, "version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["group"]["acknowledgement"], "interoperable");
    // legacy_phase1 on: the group is marked as using weak algorithms.
    assert_eq!(
        v["group"]["weak_algorithms"],
        json!([
            "phase 1 cipher 3DES-CBC",
            "phase 1 hash HMAC-SHA-1",
            "phase 1 DH group 2 (MODP-1024)",
            "phase 1 DH group 5 (MODP-1536)"
        ])
    );
    let (_, shown) = a.admin("GET", "/api/v1/groups/GET", None).await;
    assert_eq!(shown["policy"]["legacy_phase1"], true);
    assert_eq!(
        shown["policy"]["authorization"]["addresses"],
        json!(["10.0.0.0/8", "fd00:1::/64"])
    );
    assert_eq!(
        shown["policy"]["teks"][0]["transform"],
        "aes-cbc-128-hmac-sha256"
    );
    assert_eq!(shown["weak_algorithms"], v["group"]["weak_algorithms"]);
    // A new TEK transform is a new key shape: GMs get a rekey replace.
    assert_eq!(v["rekey_replace_scheduled"], true);
    let stale = a
        .call(
            "PUT",
            "/api/v1/groups/GET",
            Some(&a.admin),
            Some(&json!({"policy": p, "version": 1}).to_string()),
        )
        .await;
    problem(stale, StatusCode::CONFLICT, None);
    let dup = a
        .call(
            "POST",
            "/api/v1/groups",
            Some(&a.admin),
            Some(&group_body("GET", 9, policy()).to_string()),
        )
        .await;
    problem(dup, StatusCode::CONFLICT, None);
    let (s, _) = a.admin("DELETE", "/api/v1/groups/GET", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let gone = a
        .call("GET", "/api/v1/groups/GET", Some(&a.viewer), None)
        .await;
    problem(gone, StatusCode::NOT_FOUND, None);
    let calls = a.control.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "changed 1234 true false",
            "changed 1234 true false",
            "changed 1234 false false"
        ]
    );
    // Every mutation is audited with the token's name.
    let (_, v) = a.admin("GET", "/api/v1/audit?limit=10", None).await;
    let actions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        &actions[..3],
        ["group.delete", "group.update", "group.create"]
    );
    assert_eq!(v[0]["actor"], "token:admin");
}

async fn coop_peers_are_configured_and_their_psks_never_come_back(backend: Backend) {
    let a = api("coop", backend).await;
    let mut p = policy();
    p["coop"] = json!({"priority": 150, "refresh_secs": 10, "check_secs": 15, "dead_periods": 2,
    "peers": [
        {"address": "10.0.0.2", "authentication": {"method": "psk", "psk": "ks2-pair-secret"}},
        {"address": "10.0.0.3", "identity": "CN=ks3,O=GKM", "authentication": {"method": "pki"}}
    ]});
    let (s, v) = a
        .admin("POST", "/api/v1/groups", Some(group_body("C", 5, p)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = a.admin("GET", "/api/v1/groups/C", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("ks2-pair-secret"), "{v}");
    let coop = &v["policy"]["coop"];
    assert_eq!(
        (
            &coop["priority"],
            &coop["refresh_secs"],
            &coop["check_secs"],
            &coop["dead_periods"]
        ),
        (&json!(150), &json!(10), &json!(15), &json!(2))
    );
    assert_eq!(coop["peers"][1]["identity"], "CN=ks3,O=GKM");
    assert_eq!(v["coop_psk_set"], json!(["10.0.0.2"]));
    // `show crypto gkm ks coop` through the API: the stand-in engine runs
    // no COOP for group 5 (a 404 saying so); a group without coop and an
    // unknown group are 404s too.
    let p = problem(
        a.call("GET", "/api/v1/groups/C/coop", Some(&a.viewer), None)
            .await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert!(
        p["detail"].as_str().unwrap().contains("runs no COOP"),
        "{p}"
    );
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("ALONE", 6, policy())),
    )
    .await;
    let p = problem(
        a.call("GET", "/api/v1/groups/ALONE/coop", Some(&a.viewer), None)
            .await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert!(
        p["detail"].as_str().unwrap().contains("*NO* redundancy"),
        "{p}"
    );
    problem(
        a.call("GET", "/api/v1/groups/NOPE/coop", Some(&a.viewer), None)
            .await,
        StatusCode::NOT_FOUND,
        None,
    );
    // A viewer reads the configuration, never a key; the audit entry names
    // the peer whose key was set, not the key.
    let (_, _, seen) = a
        .call("GET", "/api/v1/groups/C", Some(&a.viewer), None)
        .await;
    assert!(!seen.to_string().contains("ks2-pair-secret"));
    let (_, audit) = a.admin("GET", "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("set 10.0.0.2"), "{audit}");
    assert!(!audit.to_string().contains("ks2-pair-secret"));
    // A viewer may not change it.
    let (s, _, _) = a
        .call(
            "PUT",
            "/api/v1/groups/C",
            Some(&a.viewer),
            Some(r#"{"policy":{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}]}}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = a.admin("GET", "/api/v1/groups/C", None).await;
    assert_eq!(
        v["coop_psk_set"],
        json!(["10.0.0.2"]),
        "the refused change changed nothing"
    );
    assert_eq!(
        a.store
            .coop_peer_psk("C", "10.0.0.2")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "ks2-pair-secret"
    );
}

async fn every_seed_validation_rule_is_a_problem_naming_the_field_and_writes_nothing(
    backend: Backend,
) {
    let a = api("validation", backend).await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut p = policy();
        f(&mut p);
        group_body("G", 1, p).to_string()
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            with(&|p| p["teks"][0]["transform"] = json!("3des-hmac-sha1")),
            "/teks/0/transform",
            "RFC 8221",
        ),
        (
            with(&|p| p["authorization"] = json!({"addresses": ["fd00::/129"]})),
            "/authorization/addresses/0",
            "not an IP prefix",
        ),
        (
            with(&|p| p["teks"][0]["transform"] = json!("aes-cbc-256")),
            "/teks/0/transform",
            "aes-cbc-256-hmac-sha256",
        ),
        (
            with(&|p| p["coop"] = json!({"priority": 0, "peers": [{"address": "10.0.0.2"}]})),
            "/coop/priority",
            "1-255",
        ),
        (
            with(&|p| p["coop"] = json!({"refresh_secs": 301, "peers": [{"address": "10.0.0.2"}]})),
            "/coop/refresh_secs",
            "10-300",
        ),
        (
            with(&|p| p["coop"] = json!({"dead_periods": 1, "peers": [{"address": "10.0.0.2"}]})),
            "/coop/dead_periods",
            "2-10",
        ),
        (
            with(&|p| {
                p["coop"] = json!({"peers": [{"address": "10.0.0.2"}, {"address": "10.0.0.2"}]})
            }),
            "/coop/peers/1/address",
            "listed twice",
        ),
        (
            with(&|p| p["coop"] = json!({"peers": []})),
            "/coop/peers",
            "at least one peer",
        ),
        (
            with(&|p| p["d3p_window"] = json!({"sec": 0})),
            "/d3p_window/sec",
            "1-100",
        ),
        (
            with(&|p| p["d3p_window"] = json!({"sec": 101})),
            "/d3p_window/sec",
            "1-100",
        ),
        (
            with(&|p| p["d3p_window"] = json!({"msec": 99})),
            "/d3p_window/msec",
            "100-10000",
        ),
        (
            with(&|p| p["d3p_window"] = json!({"msec": 10001})),
            "/d3p_window/msec",
            "100-10000",
        ),
        (
            with(&|p| {
                p["d3p_window"] = json!({"msec": 500});
                p["gm_error_detection"] = json!(true);
            }),
            "/d3p_window",
            "GM error detection",
        ),
        (
            with(&|p| {
                p["d3p_window"] = json!({"msec": 500});
                p["cmd_inline_tagging"] = json!(true);
            }),
            "/d3p_window",
            "CMD",
        ),
        (
            with(&|p| {
                p["rekey"] = json!({"transport": "multicast", "address": "239.1.1.1"});
                p["acknowledgement"] = json!("any");
            }),
            "/acknowledgement",
            "requires unicast rekey",
        ),
        (
            with(&|p| {
                p["rekey"] = json!({"transport": "multicast", "address": "239.1.1.1"});
                p["activation_time_delay"] = json!(true);
            }),
            "/activation_time_delay",
            "unicast",
        ),
        (
            with(&|p| {
                p["teks"] = json!([{"src": "10.0.0.0/8", "dst": "10.0.0.0/8"}, {"src": "10.1.0.0/16", "dst": "10.1.0.0/16"}]);
                p["activation_time_delay"] = json!(true);
            }),
            "/activation_time_delay",
            "single TEK",
        ),
        (with(&|p| p["teks"] = json!([])), "/teks", "at least one"),
        (
            with(&|p| p["teks"][0]["src"] = json!("10.0.0.0/40")),
            "/teks/0/src",
            "prefix",
        ),
        (
            with(&|p| p["teks"][0]["lifetime"] = json!(10)),
            "/teks/0/lifetime",
            "300-86400",
        ),
        (
            with(&|p| p["kek"] = json!({"lifetime": 1})),
            "/kek/lifetime",
            "300-604800",
        ),
        (
            with(&|p| p["rekey"] = json!({"transport": "unicast", "retransmit_interval": 61})),
            "/rekey/retransmit_interval",
            "1-60",
        ),
        (
            with(&|p| p["rekey"] = json!({"transport": "multicast", "address": "10.1.1.1"})),
            "/rekey/address",
            "multicast",
        ),
        (group_body("", 1, policy()).to_string(), "/name", "1-64"),
        (
            group_body("G", 0, policy()).to_string(),
            "/group_id",
            "out of range",
        ),
    ];
    for (body, field, words) in cases {
        let got = a
            .call("POST", "/api/v1/groups", Some(&a.operator), Some(&body))
            .await;
        let p = problem(got, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
        assert!(
            p["detail"].as_str().unwrap().contains(words),
            "{field}: {p}"
        );
    }
    // Bad JSON, unknown fields, wrong types: 400 problems naming the cause.
    for (body, words) in [
        ("{", "EOF"),
        (
            r#"{"name":"G","group_id":1,"policy":{"teks":[]},"extra":1}"#,
            "extra",
        ),
        (
            r#"{"name":"G","group_id":1,"policy":{"teks":[],"d3p_window":{"minutes":5}}}"#,
            "minutes",
        ),
        (
            r#"{"name":"G","group_id":"one","policy":{"teks":[]}}"#,
            "group_id",
        ),
        (
            r#"{"name":"G","group_id":1,"policy":{"teks":[],"rekey":{"transport":"carrier-pigeon"}}}"#,
            "carrier-pigeon",
        ),
    ] {
        let got = a
            .call("POST", "/api/v1/groups", Some(&a.operator), Some(body))
            .await;
        let p = problem(got, StatusCode::BAD_REQUEST, None);
        assert!(p["detail"].as_str().unwrap().contains(words), "{body}: {p}");
    }
    // Nothing was written, and the engine was told nothing.
    assert!(a.store.groups().await.unwrap().is_empty());
    assert!(a.control.calls.lock().unwrap().is_empty());
    // An update that fails validation leaves the group as it was.
    a.admin("POST", "/api/v1/groups", Some(group_body("G", 1, policy())))
        .await;
    let mut bad = policy();
    bad["d3p_window"] = json!({"sec": 500});
    let got = a
        .call(
            "PUT",
            "/api/v1/groups/G",
            Some(&a.operator),
            Some(&json!({"policy": bad}).to_string()),
        )
        .await;
    problem(
        got,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/d3p_window/sec"),
    );
    assert_eq!(a.store.group("G").await.unwrap().unwrap().version, 1);
}

async fn switching_between_cmd_and_d3p_schedules_a_rekey_replace(backend: Backend) {
    let a = api("cmd-d3p", backend).await;
    let mut cmd = policy();
    cmd["cmd_inline_tagging"] = json!(true);
    a.admin("POST", "/api/v1/groups", Some(group_body("G", 7, cmd)))
        .await;
    let mut d3p = policy();
    d3p["d3p_window"] = json!({"msec": 1000});
    let (s, v) = a
        .admin("PUT", "/api/v1/groups/G", Some(json!({"policy": d3p})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rekey_replace_scheduled"], true);
    assert_eq!(
        a.control.calls.lock().unwrap().last().unwrap(),
        "changed 7 true true"
    );
}

async fn tokens_and_roles(backend: Backend) {
    let a = api("roles", backend).await;
    // Missing, malformed and unknown tokens.
    problem(
        a.call("GET", "/api/v1/groups", None, None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    problem(
        a.call("GET", "/api/v1/groups", Some("not-a-token"), None)
            .await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    let (unknown, _) = new_token().unwrap();
    problem(
        a.call("GET", "/api/v1/groups", Some(&unknown), None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    // A viewer reads but cannot change anything.
    let (s, _, _) = a.call("GET", "/api/v1/groups", Some(&a.viewer), None).await;
    assert_eq!(s, StatusCode::OK);
    let body = group_body("G", 1, policy()).to_string();
    problem(
        a.call("POST", "/api/v1/groups", Some(&a.viewer), Some(&body))
            .await,
        StatusCode::FORBIDDEN,
        None,
    );
    a.admin("POST", "/api/v1/groups", Some(group_body("G", 1, policy())))
        .await;
    for (m, path, body) in [
        (
            "PUT",
            "/api/v1/groups/G",
            Some(json!({"policy": policy()}).to_string()),
        ),
        ("DELETE", "/api/v1/groups/G", None),
        ("POST", "/api/v1/groups/G/rekey", Some("{}".to_owned())),
        ("DELETE", "/api/v1/groups/G/gms/10.0.0.1", None),
    ] {
        let got = a.call(m, path, Some(&a.viewer), body.as_deref()).await;
        problem(got, StatusCode::FORBIDDEN, None);
    }
    // Tokens, key servers and the audit log are the admin's.
    for (m, path, body) in [
        ("GET", "/api/v1/tokens", None),
        (
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name":"x","role":"viewer"}"#),
        ),
        ("DELETE", "/api/v1/tokens/viewer", None),
        ("GET", "/api/v1/audit", None),
        (
            "PUT",
            "/api/v1/key-servers/ks1",
            Some(r#"{"name":"ks1","address":"10.0.8.1","priority":100,"role":"primary"}"#),
        ),
        ("DELETE", "/api/v1/key-servers/ks1", None),
    ] {
        problem(
            a.call(m, path, Some(&a.operator), body).await,
            StatusCode::FORBIDDEN,
            None,
        );
    }
    // The admin makes a token; its secret is shown once and works; only its hash is stored.
    let (s, v) = a
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "operator"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("gkm_") && secret.len() == 68);
    assert_eq!(
        a.store
            .token_by_hash(&token_hash(&secret))
            .await
            .unwrap()
            .unwrap()
            .name,
        "ci"
    );
    let (s, _, _) = a
        .call(
            "POST",
            "/api/v1/groups/G/rekey",
            Some(&secret),
            Some(r#"{"replace":true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, v) = a.admin("GET", "/api/v1/tokens", None).await;
    assert!(!v.to_string().contains(&secret[4..]));
    let (s, _) = a.admin("DELETE", "/api/v1/tokens/ci", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    problem(
        a.call("GET", "/api/v1/groups", Some(&secret), None).await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    let bad_role = a
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&a.admin),
            Some(r#"{"name":"y","role":"root"}"#),
        )
        .await;
    problem(bad_role, StatusCode::BAD_REQUEST, None);
}

async fn gms_list_filters_pages_and_eject(backend: Backend) {
    let a = api("gms", backend).await;
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("G", 1234, policy())),
    )
    .await;
    let rows: Vec<GmRow> = (0..30u32)
        .map(|i| GmRow {
            group: 1234,
            gm_identity: format!("10.0.0.{i:02}"),
            address: format!("10.0.0.{i}:848"),
            class: if i % 2 == 0 { "non-cisco" } else { "cisco" }.into(),
            version: Some("1.0.11".into()),
            features: if i % 3 == 0 { 0 } else { 1 },
            state: GmState::Registered,
            registered_at: 0,
            last_seq_sent: None,
            last_seq_acked: None,
            misses: 0,
            sids: Vec::new(),
        })
        .collect();
    a.store.put_gms(&rows).await.unwrap();
    let mut seen = 0;
    let mut url = "/api/v1/gms?group=1234&limit=7".to_owned();
    loop {
        let (s, _, v) = a.call("GET", &url, Some(&a.viewer), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen += v["gms"].as_array().unwrap().len();
        match v["next"].as_str() {
            Some(n) => url = format!("/api/v1/gms?group=1234&limit=7&after={n}"),
            None => break,
        }
    }
    assert_eq!(seen, 30);
    let count = |q: &'static str| {
        let a = &a;
        async move {
            let (s, _, v) = a
                .call(
                    "GET",
                    &format!("/api/v1/gms?limit=1000&{q}"),
                    Some(&a.viewer),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            v["gms"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("class=cisco").await, 15);
    assert_eq!(count("feature=ip-d3p&supported=no").await, 10);
    assert_eq!(count("feature=ip-d3p&supported=yes").await, 20);
    assert_eq!(count("state=lagging").await, 0);
    for (q, field) in [
        ("state=asleep", Some("/state")),
        ("class=juniper", Some("/class")),
        ("feature=teleport", Some("/feature")),
        ("feature=ip-d3p&supported=maybe", Some("/supported")),
        ("supported=no", Some("/supported")),
        ("limit=0", Some("/limit")),
        ("after=garbage", Some("/after")),
    ] {
        let got = a
            .call("GET", &format!("/api/v1/gms?{q}"), Some(&a.viewer), None)
            .await;
        problem(got, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    problem(
        a.call("GET", "/api/v1/gms?color=red", Some(&a.viewer), None)
            .await,
        StatusCode::BAD_REQUEST,
        None,
    );
    problem(
        a.call("GET", "/api/v1/gms?limit=many", Some(&a.viewer), None)
            .await,
        StatusCode::BAD_REQUEST,
        None,
    );
    // Pages are kept while the GM database is unchanged: every change
    // through the store shows on the next read of the same page.
    assert_eq!(count("group=1234").await, 30);
    assert_eq!(count("state=lagging").await, 0);
    let mut lagging = rows[3].clone();
    lagging.state = GmState::Lagging;
    a.store.put_gms(&[lagging]).await.unwrap();
    assert_eq!(count("state=lagging").await, 1, "a GM row written");
    a.store
        .set_gm_state(1234, "10.0.0.04", GmState::Lagging)
        .await
        .unwrap();
    assert_eq!(count("state=lagging").await, 2, "a GM state set");
    // Eject: gone from the store, and the engine was told.
    let (s, _, _) = a
        .call(
            "DELETE",
            "/api/v1/groups/G/gms/10.0.0.05",
            Some(&a.operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(count("group=1234").await, 29);
    assert!(a
        .control
        .calls
        .lock()
        .unwrap()
        .contains(&"eject 1234 10.0.0.05".to_owned()));
    problem(
        a.call(
            "DELETE",
            "/api/v1/groups/G/gms/10.0.0.05",
            Some(&a.operator),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        None,
    );
    // Deleting the group deletes its GMs: the kept page goes with them.
    let (s, _) = a.admin("DELETE", "/api/v1/groups/G", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(count("group=1234").await, 0);
}

async fn key_servers_status_rekey_and_openapi(backend: Backend) {
    let a = api("misc", backend).await;
    let ks = r#"{"name":"ks1","address":"10.0.8.1","priority":100,"role":"primary"}"#;
    let (s, _, _) = a
        .call("PUT", "/api/v1/key-servers/ks1", Some(&a.admin), Some(ks))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, v) = a
        .call("GET", "/api/v1/key-servers", Some(&a.viewer), None)
        .await;
    assert_eq!(v[0]["address"], "10.0.8.1");
    problem(
        a.call("PUT", "/api/v1/key-servers/other", Some(&a.admin), Some(ks))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/name"),
    );
    problem(
        a.call(
            "PUT",
            "/api/v1/key-servers/ks2",
            Some(&a.admin),
            Some(r#"{"name":"ks2","address":"10.0.8.2","priority":0,"role":"primary"}"#),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/priority"),
    );
    let (s, _, _) = a
        .call("DELETE", "/api/v1/key-servers/ks1", Some(&a.admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Status comes from the engine; a group it does not serve is 503.
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("GET", 1234, policy())),
    )
    .await;
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("IDLE", 99, policy())),
    )
    .await;
    let (s, _, v) = a
        .call("GET", "/api/v1/groups/GET/status", Some(&a.viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["rekey"]["ack_type_in_use"], "Cisco");
    problem(
        a.call("GET", "/api/v1/groups/IDLE/status", Some(&a.viewer), None)
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
    );
    problem(
        a.call(
            "POST",
            "/api/v1/groups/GET/rekey",
            Some(&a.operator),
            Some(r#"{"now":true}"#),
        )
        .await,
        StatusCode::BAD_REQUEST,
        None,
    );
    let (s, _, v) = a
        .call(
            "POST",
            "/api/v1/groups/GET/rekey",
            Some(&a.operator),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (s, v["replace"].as_bool()),
        (StatusCode::ACCEPTED, Some(false))
    );
    problem(
        a.call("GET", "/api/v1/nothing", Some(&a.viewer), None)
            .await,
        StatusCode::NOT_FOUND,
        None,
    );
    // The OpenAPI document is 3.1 and matches the committed copy.
    let (s, ctype, doc) = a.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!((s, ctype.as_str()), (StatusCode::OK, "application/json"));
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/api/v1/groups",
        "/api/v1/gms",
        "/api/v1/groups/{name}/rekey",
        "/api/v1/tokens",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    if std::env::var_os("GKM_WRITE_OPENAPI").is_some() {
        std::fs::write(path, api::openapi_json() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(path)
            .expect("docs/openapi.json is committed; regenerate it with GKM_WRITE_OPENAPI=1"),
    )
    .unwrap();
    // Not assert_eq: the documents are too long to be worth printing.
    assert!(
        committed == doc,
        "docs/openapi.json is stale: run GKM_WRITE_OPENAPI=1 cargo test -p gkm-web --test api"
    );
}

fn report(gm_identity: &str, input_errors: u64) -> Value {
    json!({
        "group": 1234, "gm_identity": gm_identity, "agent_version": "0.1.0", "registered": true,
        "d3p_window_ms": 1000, "d3p_window_source": "ks", "agent_time_ms": 1_700_000_000_000u64,
        "counters": {"input_packets": 10, "output_packets": 20, "input_errors": input_errors,
                     "output_errors": 0,
                     "history": [{"src": "10.0.0.9", "my_time_ms": 1_700_000_001_500u64,
                                  "peer_time_ms": 1_700_000_000_000u64, "window_ms": 1000}]}
    })
}

async fn agents_report_health_and_read_nothing(backend: Backend) {
    let a = api("health", backend).await;
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("G", 1234, policy())),
    )
    .await;
    a.store.put_gms(&[registered("10.0.0.1")]).await.unwrap();
    let post = |body: Value, token: &str| {
        let body = body.to_string();
        let token = token.to_owned();
        let a = &a;
        async move {
            a.call("POST", "/api/v1/gm-health", Some(&token), Some(&body))
                .await
        }
    };
    let health = "/api/v1/groups/G/gms/10.0.0.1/health";
    // Before any report: 404 with a problem.
    problem(
        a.call("GET", health, Some(&a.viewer), None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    // Refusals write nothing: bad values name the field, unknown GM or group 404,
    // unknown fields and bad JSON 400, no token 401.
    let mut big = report("10.0.0.1", 0);
    big["counters"]["input_errors"] = json!(u64::MAX);
    problem(
        post(big, &a.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/counters/input_errors"),
    );
    let mut long = report("10.0.0.1", 0);
    long["counters"]["history"] = json!(vec![long["counters"]["history"][0].clone(); 101]);
    problem(
        post(long, &a.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/counters/history"),
    );
    // The membership fields (GKM 0.2 agents): each bad one named; the
    // controller's own finding cannot be sent.
    for (field, value, named) in [
        ("key_server", json!("ks1"), "/membership/key_server"),
        ("kek_spi", json!("00ff"), "/membership/kek_spi"),
        ("failovers", json!(3), "/membership/failovers"),
    ] {
        let mut bad = report("10.0.0.1", 0);
        bad["membership"] = json!({"registrations": 1});
        bad["membership"][field] = value;
        problem(
            post(bad, &a.agent).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(named),
        );
    }
    let mut forged = report("10.0.0.1", 0);
    forged["ack_lost"] = json!(true);
    problem(post(forged, &a.agent).await, StatusCode::BAD_REQUEST, None);
    let mut window = report("10.0.0.1", 0);
    window["d3p_window_ms"] = json!(99);
    problem(
        post(window, &a.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/d3p_window_ms"),
    );
    let mut version = report("10.0.0.1", 0);
    version["agent_version"] = json!("");
    problem(
        post(version, &a.agent).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("/agent_version"),
    );
    problem(
        post(report("10.0.0.2", 0), &a.agent).await,
        StatusCode::NOT_FOUND,
        None,
    );
    let mut other = report("10.0.0.1", 0);
    other["group"] = json!(99);
    problem(post(other, &a.agent).await, StatusCode::NOT_FOUND, None);
    let mut extra = report("10.0.0.1", 0);
    extra["keys"] = json!("x");
    problem(post(extra, &a.agent).await, StatusCode::BAD_REQUEST, None);
    let mut stamped = report("10.0.0.1", 0);
    stamped["received_at"] = json!(1); // the controller's to set
    problem(post(stamped, &a.agent).await, StatusCode::BAD_REQUEST, None);
    let mut src = report("10.0.0.1", 0);
    src["counters"]["history"][0]["src"] = json!("not-an-address");
    problem(post(src, &a.agent).await, StatusCode::BAD_REQUEST, None);
    problem(
        a.call(
            "POST",
            "/api/v1/gm-health",
            None,
            Some(&report("10.0.0.1", 0).to_string()),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        None,
    );
    problem(
        a.call("GET", health, Some(&a.viewer), None).await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert!(a
        .store
        .d3p_errors(None, 0, 60_000)
        .await
        .unwrap()
        .is_empty());
    // Accepted: 204, then readable by a viewer with the controller's time.
    let (st, _, v) = post(report("10.0.0.1", 12), &a.agent).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, _, v) = a.call("GET", health, Some(&a.viewer), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["counters"]["input_errors"], 12);
    assert_eq!(v["counters"]["history"][0]["src"], "10.0.0.9");
    assert_eq!(v["d3p_window_source"], "ks");
    assert!(v["received_at"].as_i64().unwrap() > 1_700_000_000_000);
    let pts = a.store.d3p_errors(Some(1234), 0, 60_000).await.unwrap();
    assert_eq!(pts.iter().map(|p| p.input_errors).sum::<u64>(), 12);
    // An operator may report too (roles are ordered); an agent reads nothing.
    let (st, _, _) = post(report("10.0.0.1", 13), &a.operator).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for path in [
        "/api/v1/groups",
        "/api/v1/groups/G",
        "/api/v1/groups/G/status",
        "/api/v1/gms",
        "/api/v1/key-servers",
        health,
        "/api/v1/tokens",
        "/api/v1/audit",
    ] {
        problem(
            a.call("GET", path, Some(&a.agent), None).await,
            StatusCode::FORBIDDEN,
            None,
        );
    }
    problem(
        a.call("POST", "/api/v1/groups/G/rekey", Some(&a.agent), Some("{}"))
            .await,
        StatusCode::FORBIDDEN,
        None,
    );
    // Reports are not audited (they change no configuration).
    let (_, v) = a.admin("GET", "/api/v1/audit", None).await;
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] != "gm.health"));
}

fn registered(identity: &str) -> GmRow {
    GmRow {
        group: 1234,
        gm_identity: identity.into(),
        address: format!("{identity}:848"),
        class: "non-cisco".into(),
        version: None,
        features: 0,
        state: GmState::Registered,
        registered_at: 0,
        last_seq_sent: None,
        last_seq_acked: None,
        misses: 0,
        sids: Vec::new(),
    }
}

async fn an_agent_token_reports_for_its_own_gm_only(backend: Backend) {
    // Issue 16 item 6: one stolen agent token must not forge reports for
    // other GMs, nor tell which GMs exist.
    let a = api("token-binding", backend).await;
    a.admin(
        "POST",
        "/api/v1/groups",
        Some(group_body("G", 1234, policy())),
    )
    .await;
    a.store
        .put_gms(&[registered("10.0.0.1"), registered("10.0.0.2")])
        .await
        .unwrap();
    // An agent token is created bound; other roles take no binding.
    let (st, v) = a
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "h1", "role": "agent"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "/gm");
    let (st, v) = a
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "v", "role": "viewer", "gm": {"group": 1234, "gm_identity": "10.0.0.1"}})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = a
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "h1", "role": "agent", "gm": {"group": 1234, "gm_identity": "10.0.0.1"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["gm"]["gm_identity"], "10.0.0.1");
    let h1 = v["secret"].as_str().unwrap().to_owned();
    let post = |identity: &str, token: &str| {
        let body = report(identity, 3).to_string();
        let token = token.to_owned();
        let a = &a;
        async move {
            a.call("POST", "/api/v1/gm-health", Some(&token), Some(&body))
                .await
        }
    };
    let (st, _, v) = post("10.0.0.1", &h1).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    // The attack: another GM, existing or not, gets the same 403.
    let other = problem(post("10.0.0.2", &h1).await, StatusCode::FORBIDDEN, None);
    let ghost = problem(post("10.0.0.99", &h1).await, StatusCode::FORBIDDEN, None);
    assert_eq!(
        other, ghost,
        "the refusal must not tell whether the GM exists"
    );
    let mut g99 = report("10.0.0.1", 3);
    g99["group"] = json!(99);
    problem(
        a.call(
            "POST",
            "/api/v1/gm-health",
            Some(&h1),
            Some(&g99.to_string()),
        )
        .await,
        StatusCode::FORBIDDEN,
        None,
    );
    assert!(a.store.gm_health(1234, "10.0.0.2").await.unwrap().is_none());
    // An agent token made before bindings existed is bound by its first
    // accepted report, then holds to that GM.
    let (st, _, v) = post("10.0.0.2", &a.agent).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    problem(
        post("10.0.0.1", &a.agent).await,
        StatusCode::FORBIDDEN,
        None,
    );
    let (_, tokens) = a.admin("GET", "/api/v1/tokens", None).await;
    let legacy = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "agent" && t["name"] == "agent")
        .unwrap();
    assert_eq!(
        legacy["gm"],
        json!({"group": 1234, "gm_identity": "10.0.0.2"})
    );
    let (_, audit) = a.admin("GET", "/api/v1/audit", None).await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "token.bind" && e["target"] == "agent"));
}

async fn every_400_names_the_failing_field_and_key_server_names_are_checked(backend: Backend) {
    // Issue 16 items 11 and 12.
    let a = api("bad-bodies", backend).await;
    let send = |method: &'static str, path: &'static str, body: String| {
        let a = &a;
        async move { a.call(method, path, Some(&a.admin), Some(&body)).await }
    };
    let group = |policy: Value| json!({"name": "G", "group_id": 7, "policy": policy}).to_string();
    for (method, path, body, field) in [
        // Wrong type, deep inside.
        (
            "POST",
            "/api/v1/groups",
            group(json!({"teks": [{"src": 10, "dst": "10.0.0.0/8"}]})),
            "/policy/teks/0/src",
        ),
        // Unknown field.
        (
            "POST",
            "/api/v1/groups",
            group(json!({"teks": [], "keys": 1})),
            "/policy/keys",
        ),
        // A switch that is not a boolean is no silent default.
        (
            "POST",
            "/api/v1/groups",
            group(json!({"teks": [], "legacy_phase1": "yes"})),
            "/policy/legacy_phase1",
        ),
        // Overflow of the member's type.
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "G", "group_id": 4_294_967_296u64, "policy": {"teks": []}}).to_string(),
            "/group_id",
        ),
        (
            "POST",
            "/api/v1/groups",
            group(
                json!({"teks": [], "rekey": {"transport": "unicast", "retransmit_interval": -1}}),
            ),
            "/policy/rekey/retransmit_interval",
        ),
        // A missing member.
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "G", "policy": {"teks": []}}).to_string(),
            "/group_id",
        ),
        // Malformed JSON: the whole body.
        ("POST", "/api/v1/groups", "{\"name\": ".to_owned(), "/name"),
        (
            "POST",
            "/api/v1/groups",
            r#"{"name":"G","group_id":7,"policy":{"teks":[]}} trailing"#.to_owned(),
            "",
        ),
        (
            "POST",
            "/api/v1/tokens",
            json!({"name": "t", "role": "root"}).to_string(),
            "/role",
        ),
        (
            "POST",
            "/api/v1/tokens",
            json!({"name": "t", "role": "agent", "gm": {"group": 1, "gm_identity": "x", "k": 1}})
                .to_string(),
            "/gm/k",
        ),
        (
            "PUT",
            "/api/v1/key-servers/ks1",
            json!({"name": "ks1", "address": "10.0.0.1", "priority": 256, "role": "primary"})
                .to_string(),
            "/priority",
        ),
        (
            "POST",
            "/api/v1/gm-health",
            json!({"group": 1}).to_string(),
            "/gm_identity",
        ),
    ] {
        let got = send(method, path, body.clone()).await;
        let p = problem(got, StatusCode::BAD_REQUEST, Some(field));
        assert!(p["detail"].as_str().unwrap().len() > 3, "{body}: {p}");
    }
    // Queries too.
    for (path, field) in [
        ("/api/v1/gms?limit=x", "/limit"),
        ("/api/v1/gms?group=-1", "/group"),
        ("/api/v1/gms?bogus=1", "/bogus"),
        ("/api/v1/audit?limit=99999999999", "/limit"),
    ] {
        let got = a.call("GET", path, Some(&a.admin), None).await;
        problem(got, StatusCode::BAD_REQUEST, Some(field));
    }
    // A body that is not JSON at all.
    let (st, _, v) = a
        .call_raw("POST", "/api/v1/groups", &a.admin, "text/plain", "x")
        .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    // Key-server names take the group-name rule: no NUL, control or bidi
    // characters, no markup; nothing is written.
    for name in ["ks\u{0}1", "ks\n1", "ks\u{202e}1", "<b>ks</b>", ""] {
        let body = json!({"name": name, "address": "10.0.0.1", "priority": 10, "role": "primary"});
        let path = format!(
            "/api/v1/key-servers/{}",
            name.bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        );
        let got = a
            .call("PUT", &path, Some(&a.admin), Some(&body.to_string()))
            .await;
        assert!(
            got.0 == StatusCode::UNPROCESSABLE_ENTITY
                || got.0 == StatusCode::NOT_FOUND
                || got.0 == StatusCode::METHOD_NOT_ALLOWED,
            "{name:?}: {}",
            got.2
        );
        if got.0 == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(got.2["field"], "/name");
        }
    }
    assert!(a.store.key_servers().await.unwrap().is_empty());
}

async fn names_of_gkm_0_1_are_accepted_on_input(backend: Backend) {
    // Issue 17 item 3: `identity` became `group_id` (a group) and
    // `gm_identity` (a GM). Clients and agents written against the old
    // names keep working on input; output carries the new names only.
    let a = api("old-names", backend).await;
    let (st, g) = a
        .admin(
            "POST",
            "/api/v1/groups",
            Some(json!({"name": "OLD", "identity": 77, "policy": policy()})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{g}");
    assert_eq!(g["group_id"], 77, "{g}");
    assert!(g.get("identity").is_none(), "{g}");
    // Both names at once is a duplicate field, refused naming it.
    let both = json!({"name": "TWO", "identity": 78, "group_id": 78, "policy": policy()});
    let v = problem(
        a.call(
            "POST",
            "/api/v1/groups",
            Some(&a.admin),
            Some(&both.to_string()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        None,
    );
    assert!(v["detail"].as_str().unwrap().contains("group_id"), "{v}");
    assert!(a.store.group("TWO").await.unwrap().is_none());
    let (st, t) = a
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "old-agent", "role": "agent", "gm": {"group": 77, "identity": "10.0.0.1"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(
        t["gm"],
        json!({"group": 77, "gm_identity": "10.0.0.1"}),
        "{t}"
    );
    let mut gm = registered("10.0.0.1");
    gm.group = 77;
    a.store.put_gms(&[gm]).await.unwrap();
    let mut old = report("10.0.0.1", 0);
    old["group"] = json!(77);
    let old = old.to_string().replace("\"gm_identity\"", "\"identity\"");
    let (st, _, v) = a
        .call(
            "POST",
            "/api/v1/gm-health",
            t["secret"].as_str(),
            Some(&old),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let h = a.store.gm_health(77, "10.0.0.1").await.unwrap().unwrap();
    assert_eq!(h.gm_identity, "10.0.0.1");
    // The attack: the old name does not slip past the token's binding.
    let mut gm = registered("10.0.0.2");
    gm.group = 77;
    a.store.put_gms(&[gm]).await.unwrap();
    let other = old.replace("10.0.0.1", "10.0.0.2");
    problem(
        a.call(
            "POST",
            "/api/v1/gm-health",
            t["secret"].as_str(),
            Some(&other),
        )
        .await,
        StatusCode::FORBIDDEN,
        None,
    );
    assert!(a.store.gm_health(77, "10.0.0.2").await.unwrap().is_none());
}

common::on_both_backends!(
    group_crud_and_the_psk_never_comes_back,
    coop_peers_are_configured_and_their_psks_never_come_back,
    every_seed_validation_rule_is_a_problem_naming_the_field_and_writes_nothing,
    switching_between_cmd_and_d3p_schedules_a_rekey_replace,
    tokens_and_roles,
    gms_list_filters_pages_and_eject,
    key_servers_status_rekey_and_openapi,
    agents_report_health_and_read_nothing,
    an_agent_token_reports_for_its_own_gm_only,
    every_400_names_the_failing_field_and_key_server_names_are_checked,
    names_of_gkm_0_1_are_accepted_on_input,
);
