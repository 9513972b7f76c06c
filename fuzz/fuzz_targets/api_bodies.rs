//! The REST API's request bodies and queries, through the real router and
//! a real SQLite store (in /dev/shm when there is one): the first input
//! byte picks a route, the rest is its body (or query string).
//!
//! Checks: no panic and never a 500 (bad input is a 4xx problem naming
//! the field; good input is served); a refused request writes nothing
//! (the audit log grows only with a 2xx).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use gkm_store::model::{Group, Role};
use gkm_store::{Actor, Store};
use gkm_web::{ApiState, Control, GroupStatus, RekeyAccepted, RekeyRefused};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The engine, answering at once.
struct Engine;

#[async_trait::async_trait]
impl Control for Engine {
    async fn rekey(&self, group: u32, replace: bool) -> Result<RekeyAccepted, RekeyRefused> {
        Ok(RekeyAccepted { group, replace })
    }
    async fn eject(&self, _: u32, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn status(&self, _: u32) -> Option<GroupStatus> {
        None
    }
    async fn coop(&self, _: u32) -> Option<gkm_web::CoopView> {
        None
    }
    async fn group_changed(&self, _: u32, _: Option<&Group>, _: bool) {}
    async fn metrics(&self) -> String {
        String::new()
    }
    async fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
    async fn agents_changed(&self) {}
}

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    store: Arc<dyn Store>,
    token: String,
    runs: u32,
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/groups"),
    ("PUT", "/api/v1/groups/G"),
    ("PUT", "/api/v1/groups/G/psk"),
    ("POST", "/api/v1/groups/G/rekey"),
    ("POST", "/api/v1/gm-health"),
    ("PUT", "/api/v1/key-servers/ks1"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/gms?"),
    ("GET", "/api/v1/groups/G/coop?"),
    ("GET", "/api/v1/audit?"),
];

fn world() -> World {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
    .join(format!("gkm-fuzz-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (store, token) = rt.block_on(async {
        let store = gkm_store::open(
            dir.join("gkm.db").to_str().unwrap(),
            gkm_store::seal::MasterKey::from_hex(&"42".repeat(32)).unwrap(),
        )
        .await
        .unwrap();
        let (token, hash) = gkm_web::auth::new_token().unwrap();
        store
            .create_token(&Actor("fuzz".into()), "admin", Role::Admin, &hash, None)
            .await
            .unwrap();
        let policy = serde_json::from_str(
            r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}],"authentication":{"method":"psk","psk":"k"}}"#,
        )
        .unwrap();
        store
            .create_group(&Actor("fuzz".into()), "G", 1234, &policy)
            .await
            .unwrap();
        (store, token)
    });
    let router = gkm_web::api::router(ApiState::new(store.clone(), Arc::new(Engine)));
    World {
        rt,
        router,
        store,
        token,
        runs: 0,
    }
}

fn state() -> &'static std::sync::Mutex<World> {
    static W: OnceLock<std::sync::Mutex<World>> = OnceLock::new();
    W.get_or_init(|| std::sync::Mutex::new(world()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut w = state().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    w.runs += 1;
    if w.runs % 2000 == 0 {
        // Groups and tokens the fuzzer made pile up: start over.
        *w = world();
    }
    let (method, path) = ROUTES[usize::from(pick) % ROUTES.len()];
    let mut req = Request::builder()
        .method(method)
        .header("authorization", format!("Bearer {}", w.token));
    let req = if method == "GET" {
        let q: String = String::from_utf8_lossy(body)
            .chars()
            .filter(|c| !c.is_control() && *c != ' ' && *c != '#')
            .collect();
        req.uri(format!("{path}{q}")).body(Body::empty())
    } else {
        req = req.uri(path).header("content-type", "application/json");
        req.body(Body::from(body.to_vec()))
    };
    let Ok(req) = req else { return };
    let router = w.router.clone();
    let store = w.store.clone();
    let (status, audit_before, audit_after) = w.rt.block_on(async move {
        let newest = || async { store.audit(1).await.ok().and_then(|a| a.into_iter().next()) };
        let before = newest().await;
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let after = newest().await;
        (status, before, after)
    });
    assert_ne!(status.as_u16(), 500, "{method} {path}: a 500 for {:?}", String::from_utf8_lossy(body));
    if !status.is_success() {
        assert_eq!(audit_before, audit_after, "a refused request was written");
    }
});
