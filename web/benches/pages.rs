//! Server time of the dashboard's overview and group pages with 10,000 GMs
//! in a SQLite store (the default): the request through the router, the
//! store queries and the template (issue 6 target: at most 50 ms).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use gkm_store::model::{
    GmHealth, GmRow, GmState, Group, GroupPolicy, RekeyRecord, ReplayCounters, Role, WindowSource,
};
use gkm_store::seal::MasterKey;
use gkm_store::Actor;
use gkm_web::dashboard::{self, Dashboard};
use gkm_web::session::{Login, Sessions, User};
use gkm_web::{ApiState, Control, GroupStatus, RekeyAccepted};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// GMs in the benchmark's group.
const GMS: u32 = 10_000;

struct Idle;

#[async_trait::async_trait]
impl Control for Idle {
    async fn rekey(
        &self,
        group: u32,
        replace: bool,
    ) -> Result<RekeyAccepted, gkm_web::RekeyRefused> {
        Ok(RekeyAccepted { group, replace })
    }
    async fn eject(&self, _: u32, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn status(&self, _: u32) -> Option<GroupStatus> {
        None
    }
    async fn coop(&self, _: u32) -> Option<gkm_model::CoopView> {
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

fn pages(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("gkm-bench-pages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (router, cookie) = rt.block_on(async {
        let store = gkm_store::open(
            dir.join("gkm.db").to_str().unwrap(),
            MasterKey::from_hex(&"07".repeat(32)).unwrap(),
        )
        .await
        .unwrap();
        let policy: GroupPolicy =
            serde_json::from_str(r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}]}"#).unwrap();
        store
            .create_group(&Actor("bench".into()), "G1", 1234, &policy)
            .await
            .unwrap();
        let rows: Vec<GmRow> = (0..GMS)
            .map(|i| GmRow {
                group: 1234,
                gm_identity: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                address: format!("10.{}.{}.{}:848", i >> 16, (i >> 8) & 255, i & 255),
                class: ["cisco", "asr9000", "non-cisco"][(i % 3) as usize].into(),
                version: Some("1.0.11".into()),
                features: i % 4,
                state: if i % 50 == 0 {
                    GmState::Lagging
                } else {
                    GmState::Registered
                },
                registered_at: 1_795_000_000_000,
                last_seq_sent: Some(40),
                last_seq_acked: Some(39 + i % 2),
                misses: i % 2,
                sids: vec![i],
            })
            .collect();
        store.put_gms(&rows).await.unwrap();
        // Every GM has a health report; every fifth reported D3P errors
        // three times over the last two hours (6,000 rows in the series).
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        for (i, m) in rows.iter().enumerate() {
            let reports: &[(i64, u64)] = if i % 5 == 0 {
                &[
                    (7_000_000, 0),
                    (5_000_000, 4),
                    (3_000_000, 9),
                    (120_000, 30),
                ]
            } else {
                &[(600_000, 0)]
            };
            for (ago, errors) in reports {
                store
                    .put_gm_health(&GmHealth {
                        group: 1234,
                        gm_identity: m.gm_identity.clone(),
                        received_at: now - ago,
                        agent_version: "0.1.0".into(),
                        registered: true,
                        d3p_window_ms: Some(1000),
                        d3p_window_source: Some(WindowSource::Ks),
                        agent_time_ms: u64::try_from(now - ago).unwrap(),
                        counters: ReplayCounters {
                            input_packets: 1000,
                            output_packets: 1000,
                            input_errors: *errors,
                            ..ReplayCounters::default()
                        },
                        membership: None,
                        traffic: None,
                        ack_lost: false,
                    })
                    .await
                    .unwrap();
            }
        }
        for seq in 1..=50 {
            store
                .put_rekey(&RekeyRecord {
                    group: 1234,
                    seq,
                    reason: "scheduled".into(),
                    started_at: 1_795_000_000_000 + i64::from(seq) * 3_600_000,
                    sent: GMS,
                    acked: GMS - seq,
                    duration_ms: Some(900),
                })
                .await
                .unwrap();
        }
        let sessions = Arc::new(Sessions::new(3_600_000, 3_600_000));
        let (id, _) = sessions
            .sign_in(
                None,
                User {
                    name: "bench".into(),
                    role: Role::Admin,
                    login: Login::Local,
                },
                gkm_web::ops::now_ms(),
            )
            .unwrap();
        let router = dashboard::router(Dashboard {
            api: ApiState::new(store, Arc::new(Idle)),
            sessions,
            oidc: None,
            secure_cookies: false,
            signin: std::sync::Arc::new(gkm_web::signin::SignIn::new().unwrap()),
        });
        (router, format!("gkm_session={id}"))
    });
    let rt = &rt;
    let get = |path: &'static str| {
        let router = router.clone();
        let cookie = cookie.clone();
        move || {
            let req = Request::builder()
                .uri(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap();
            rt.block_on(async {
                let r = router.clone().oneshot(req).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.into_body().collect().await.unwrap().to_bytes().len()
            })
        }
    };
    let mut g = c.benchmark_group("dashboard_10k_gms");
    g.sample_size(30);
    let overview = get("/");
    g.bench_function("overview", |b| b.iter(&overview));
    let group = get("/groups/G1");
    g.bench_function("group", |b| b.iter(&group));
    let filtered = get("/groups/G1?state=lagging&lacking=ip-d3p");
    g.bench_function("group_filtered", |b| b.iter(&filtered));
    let gm = get("/groups/G1/gms/10.0.0.0");
    g.bench_function("gm", |b| b.iter(&gm));
    g.finish();
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pages);
criterion_main!(benches);
