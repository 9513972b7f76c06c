//! What the web tests share: a recording stand-in for the key-server
//! engine, and a fresh store on either backend: every web test runs on
//! SQLite and on a real PostgreSQL ([`on_both_backends`]).
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};

use gkm_store::model::Group;
use gkm_store::seal::MasterKey;
use gkm_store::Store;
use gkm_web::{Control, GroupStatus, RekeyAccepted, RekeyStatus};

#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<String>>,
    /// Answer rekeys with "the previous one is in flight".
    pub busy: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Control for Recorder {
    async fn rekey(
        &self,
        group: u32,
        replace: bool,
    ) -> Result<RekeyAccepted, gkm_web::RekeyRefused> {
        if self.busy.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(gkm_web::RekeyRefused::InFlight(format!(
                "group {group}: the previous rekey is still in flight"
            )));
        }
        self.calls
            .lock()
            .unwrap()
            .push(format!("rekey {group} {replace}"));
        Ok(RekeyAccepted { group, replace })
    }
    async fn agents_changed(&self) {
        self.calls.lock().unwrap().push("agents changed".into());
    }
    async fn eject(&self, group: u32, gm_identity: &str) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("eject {group} {gm_identity}"));
        Ok(())
    }
    async fn status(&self, group: u32) -> Option<GroupStatus> {
        (group == 1234).then(|| GroupStatus {
            rekey: RekeyStatus {
                ack_type_in_use: "Cisco".into(),
                rekeys_sent: 3,
                seq: 3,
                gms: 2,
                gms_at_risk: 0,
            },
            kek: None,
            key_servers: vec![gkm_web::KeyServerFeatures {
                address: "10.0.8.1".into(),
                version: "1.0.0".into(),
                features: 2,
            }],
        })
    }
    async fn coop(&self, group: u32) -> Option<gkm_web::CoopView> {
        // A fixed view for group 1234, for rendering (the real engine's
        // view is tested end to end, tests/tests/coop_e2e.rs).
        (group == 1234).then(|| gkm_web::CoopView {
            local_address: "10.0.8.1".into(),
            local_priority: 120,
            local_role: "Secondary".into(),
            local_version: "1.0.0".into(),
            epoch: 3,
            primary: Some("10.0.8.2".into()),
            refresh_secs: 20,
            check_secs: 30,
            dead_periods: 3,
            remaining_secs: 12,
            antireplay_seq: 1_800_000_000_000_000,
            invalid_ann_received: 1,
            new_gm_blocking: false,
            not_a_peer: 0,
            mismatches: vec!["%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: IP-D3P configuration between Primary KS and Secondary KS are mismatched".into()],
            peers: vec![gkm_web::CoopPeerView {
                address: "10.0.8.2:848".into(),
                version: "1.0.0".into(),
                priority: Some(200),
                role: Some("Primary".into()),
                status: "Alive".into(),
                antireplay_seq: Some(42),
                epoch: Some(3),
                ike_status: "Established".into(),
                counters: gkm_web::CoopCounters {
                    ann_sent: 7,
                    ann_received: 9,
                    ..Default::default()
                },
                gm_sync_held: 5,
                gm_sync_acked: 4,
            }],
            gm_journal: 5,
            gm_sync_gaps: 0,
            refused: [("replayed".to_owned(), 2)].into_iter().collect(),
        })
    }
    async fn group_changed(&self, group_id: u32, group: Option<&Group>, replace: bool) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("changed {group_id} {} {replace}", group.is_some()));
    }
    async fn metrics(&self) -> String {
        // The real key server's metrics are tested against a real
        // gkm-server (tests/tests/metrics.rs); one line stands for them.
        "gkm_build_info{version=\"test\"} 1\n".into()
    }
    async fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Which database a test's store is on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// A SQLite file in a directory named after the test.
    Sqlite,
    /// A fresh database on the PostgreSQL of `GKM_TEST_POSTGRES_URL`.
    Postgres,
}

/// A fresh, empty store on `backend`.
pub async fn store(tag: &str, backend: Backend) -> Arc<dyn Store> {
    let url = match backend {
        Backend::Sqlite => {
            let dir = gkm_store::testing::fresh_dir(&format!("web-{tag}"));
            dir.join("gkm.db").to_str().unwrap().to_owned()
        }
        Backend::Postgres => gkm_store::testing::postgres_database().await.unwrap(),
    };
    gkm_store::open(&url, MasterKey::from_hex(&"07".repeat(32)).unwrap())
        .await
        .unwrap()
}

/// Each named test body (an `async fn(Backend)` of the calling file) as
/// two tests, `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Postgres).await
            })*
        }
    };
}
pub(crate) use on_both_backends;
