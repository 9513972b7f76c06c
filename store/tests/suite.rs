//! The store suite, run on both backends: SQLite in a temporary file and a
//! real PostgreSQL (a fresh database per test on the server named by
//! `GKM_TEST_POSTGRES_URL`, which `scripts/test` starts; without it the
//! test fails with instructions, it is never skipped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::sync::Arc;

use gkm_store::model::{
    AckKind, AuditEntry, Authentication, D3pError, GmFilter, GmHealth, GmRow, GmState, GroupPolicy,
    KsRole, Membership, Page, PeerKeyServer, RekeyRecord, ReplayCounters, Role, Traffic,
    WindowSource,
};
use gkm_store::seal::MasterKey;
use gkm_store::{open, Actor, BackendKind, Store, StoreError};

fn master() -> MasterKey {
    MasterKey::from_hex(&"42".repeat(32)).unwrap()
}

async fn backends() -> Vec<Arc<dyn Store>> {
    let dir = gkm_store::testing::fresh_dir("store");
    let sqlite = open(dir.join("gkm.db").to_str().unwrap(), master())
        .await
        .unwrap();
    let pg = open(
        &gkm_store::testing::postgres_database().await.unwrap(),
        master(),
    )
    .await
    .unwrap();
    assert_eq!(
        (sqlite.kind(), pg.kind()),
        (BackendKind::Sqlite, BackendKind::Postgres)
    );
    vec![sqlite, pg]
}

fn policy() -> GroupPolicy {
    serde_json::from_str(
        r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}],
            "authentication":{"method":"psk","psk":"group-secret"}}"#,
    )
    .unwrap()
}

fn admin() -> Actor {
    Actor("admin-token".into())
}

fn gm(group: u32, i: u32, class: &str, features: u32, state: GmState) -> GmRow {
    GmRow {
        group,
        gm_identity: format!("10.0.{}.{}", i / 256, i % 256),
        address: format!("10.0.{}.{}:848", i / 256, i % 256),
        class: class.into(),
        version: Some("1.0.11".into()),
        features,
        state,
        registered_at: 1_700_000_000_000 + i64::from(i),
        last_seq_sent: Some(3),
        last_seq_acked: Some(3),
        misses: 0,
        sids: if i % 2 == 0 { vec![i + 1] } else { Vec::new() },
    }
}

#[tokio::test]
async fn groups_crud_with_versions_conflicts_and_sealed_psk() {
    for s in backends().await {
        let k = s.kind();
        let g = s
            .create_group(&admin(), "GET", 1234, &policy())
            .await
            .unwrap();
        assert_eq!(
            (g.name.as_str(), g.group_id, g.version),
            ("GET", 1234, 1),
            "{k:?}"
        );
        // The stored policy carries no PSK; the PSK is sealed apart.
        let back = s.group("GET").await.unwrap().unwrap();
        assert_eq!(
            back.policy.authentication,
            Authentication::Psk { psk: None }
        );
        assert_eq!(
            s.group_psk("GET").await.unwrap().unwrap().as_str(),
            "group-secret"
        );
        assert_eq!(
            s.group_by_group_id(1234).await.unwrap().unwrap().name,
            "GET"
        );
        // Name and number are unique.
        assert!(matches!(
            s.create_group(&admin(), "GET", 1, &policy()).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.create_group(&admin(), "OTHER", 1234, &policy()).await,
            Err(StoreError::Conflict(_))
        ));
        // Optimistic concurrency.
        let mut p = policy();
        p.gm_error_detection = true;
        let g2 = s.update_group(&admin(), "GET", &p, Some(1)).await.unwrap();
        assert_eq!(g2.version, 2);
        assert!(g2.policy.gm_error_detection);
        assert!(matches!(
            s.update_group(&admin(), "GET", &p, Some(1)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.update_group(&admin(), "NOPE", &p, None).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.update_group(&admin(), "GET", &p, None)
                .await
                .unwrap()
                .version,
            3
        );
        s.create_group(&admin(), "A-FIRST", 7, &policy())
            .await
            .unwrap();
        let names: Vec<String> = s
            .groups()
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["A-FIRST", "GET"]);
        // Delete takes the GMs, history and PSK with it.
        s.put_gms(&[gm(1234, 1, "cisco", 0, GmState::Registered)])
            .await
            .unwrap();
        s.delete_group(&admin(), "GET").await.unwrap();
        assert!(s.group("GET").await.unwrap().is_none());
        assert!(s.group_psk("GET").await.unwrap().is_none());
        assert_eq!(s.count_gms(&GmFilter::default()).await.unwrap(), 0);
        assert!(matches!(
            s.delete_group(&admin(), "GET").await,
            Err(StoreError::NotFound(_))
        ));
        // Every mutation is in the audit log, newest first.
        let actions: Vec<String> = s
            .audit(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                "group.delete",
                "group.create",
                "group.update",
                "group.update",
                "group.create"
            ],
            "{k:?}"
        );
    }
}

#[tokio::test]
async fn gm_listing_filters_and_pages_by_keyset() {
    for s in backends().await {
        let k = s.kind();
        s.create_group(&admin(), "G1", 1, &policy()).await.unwrap();
        s.create_group(&admin(), "G2", 2, &policy()).await.unwrap();
        let mut rows = Vec::new();
        for i in 0..250 {
            let class = ["cisco", "asr9000", "non-cisco"][i as usize % 3];
            let state = if i % 10 == 0 {
                GmState::Lagging
            } else {
                GmState::Registered
            };
            rows.push(gm(
                1 + i % 2,
                i,
                class,
                if i % 4 == 0 { 0b10 } else { 0b01 },
                state,
            ));
        }
        s.put_gms(&rows).await.unwrap();
        // Upsert: the same key updates.
        let mut again = rows[0].clone();
        again.misses = 2;
        s.put_gms(&[again.clone()]).await.unwrap();
        assert_eq!(s.count_gms(&GmFilter::default()).await.unwrap(), 250);
        // One GM twice in a batch: the later row is the one kept.
        let mut later = rows[1].clone();
        later.misses = 1;
        s.put_gms(&[rows[1].clone(), later.clone()]).await.unwrap();
        rows[1] = later.clone();
        // A batch naming a group that does not exist writes nothing.
        let mut stray = rows[3].clone();
        stray.group = 99;
        let mut changed = rows[5].clone();
        changed.misses = 2;
        let e = s.put_gms(&[changed, stray]).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::NotFound(m) if m.contains("group 99")),
            "{k:?} {e}"
        );
        // What a restarted KS loads: every GM but removed ones, with its SIDs.
        let mut two = rows[2].clone();
        two.sids = vec![7, 8, 4_000_000_000];
        s.put_gms(&[two.clone()]).await.unwrap();
        s.set_gm_state(two.group, &two.gm_identity, GmState::Removed)
            .await
            .unwrap();
        let live = s.live_gms().await.unwrap();
        assert_eq!(live.len(), 249, "{k:?}");
        assert!(!live.iter().any(|g| g.gm_identity == two.gm_identity));
        assert_eq!(
            live.iter().find(|g| g.gm_identity == again.gm_identity),
            Some(&again)
        );
        assert!(live.contains(&later), "{k:?}: the later row of the two");
        assert!(
            live.contains(&rows[5]),
            "{k:?}: the refused batch wrote nothing"
        );
        s.set_gm_state(two.group, &two.gm_identity, GmState::Registered)
            .await
            .unwrap();
        let back = s.live_gms().await.unwrap();
        let two_back = back
            .iter()
            .find(|g| g.gm_identity == two.gm_identity)
            .unwrap();
        assert_eq!(two_back.sids, vec![7, 8, 4_000_000_000], "{k:?}");
        let f = |group, state, class: Option<&str>, feature| GmFilter {
            group,
            gm_identity: None,
            state,
            class: class.map(str::to_owned),
            feature,
        };
        let one = GmFilter {
            group: Some(1),
            gm_identity: Some(two.gm_identity.clone()),
            ..GmFilter::default()
        };
        assert_eq!(s.count_gms(&one).await.unwrap(), 1, "{k:?}");
        let none = GmFilter {
            gm_identity: Some("no-such-gm".into()),
            ..GmFilter::default()
        };
        assert_eq!(s.count_gms(&none).await.unwrap(), 0, "{k:?}");
        assert_eq!(
            s.count_gms(&f(Some(1), None, None, None)).await.unwrap(),
            125
        );
        assert_eq!(
            s.count_gms(&f(None, Some(GmState::Lagging), None, None))
                .await
                .unwrap(),
            25
        );
        assert_eq!(
            s.count_gms(&f(None, None, Some("asr9000"), None))
                .await
                .unwrap(),
            83
        );
        let with = s
            .count_gms(&f(None, None, None, Some((0b10, true))))
            .await
            .unwrap();
        let without = s
            .count_gms(&f(None, None, None, Some((0b10, false))))
            .await
            .unwrap();
        assert_eq!((with, without), (63, 187));
        // Keyset pages cover everything once, in order.
        let (mut seen, mut paged) = (Vec::new(), Vec::new());
        let mut after = None;
        loop {
            let p = s
                .gms(
                    &GmFilter::default(),
                    &Page {
                        after: after.clone(),
                        limit: 40,
                    },
                )
                .await
                .unwrap();
            assert!(p.gms.len() <= 40);
            seen.extend(p.gms.iter().map(|g| (g.group, g.gm_identity.clone())));
            paged.extend(p.gms);
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        // SQLite's pages come as one JSON value: they hold what the rows
        // hold (read apart, column by column).
        assert_eq!(paged, s.live_gms().await.unwrap(), "{k:?}");
        // A page that ends exactly at the last row has no next page.
        let whole = s
            .gms(
                &f(Some(1), None, None, None),
                &Page {
                    after: None,
                    limit: 125,
                },
            )
            .await
            .unwrap();
        assert_eq!((whole.gms.len(), whole.next), (125, None), "{k:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 250, "no GM twice");
        // Groups in creation order (G1 first), identities in order within each.
        assert!(seen[..125].iter().all(|(g, _)| *g == 1));
        assert!(seen[..125].windows(2).all(|w| w[0].1 < w[1].1));
        let first = s
            .gms(
                &f(Some(1), None, None, None),
                &Page {
                    after: None,
                    limit: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(first.gms[0], again, "the row reads back as written");
        // State changes (removed after 3 misses) keep the row.
        s.set_gm_state(1, &again.gm_identity, GmState::Removed)
            .await
            .unwrap();
        assert_eq!(
            s.count_gms(&f(None, Some(GmState::Removed), None, None))
                .await
                .unwrap(),
            1
        );
        assert!(matches!(
            s.set_gm_state(1, "nobody", GmState::Removed).await,
            Err(StoreError::NotFound(_))
        ));
        // Eject.
        s.eject_gm(&admin(), 1, &again.gm_identity).await.unwrap();
        assert!(matches!(
            s.eject_gm(&admin(), 1, &again.gm_identity).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.count_gms(&GmFilter::default()).await.unwrap(), 249);
        // A GM of a group that does not exist is refused, and nothing of the batch is written.
        let r = s
            .put_gms(&[
                gm(1, 999, "cisco", 0, GmState::Registered),
                gm(77, 1, "cisco", 0, GmState::Registered),
            ])
            .await;
        assert!(matches!(r, Err(StoreError::NotFound(_))));
        assert_eq!(s.count_gms(&GmFilter::default()).await.unwrap(), 249);
    }
}

#[tokio::test]
async fn tokens_key_servers_rekeys_audit_and_secrets() {
    for s in backends().await {
        let t = s
            .create_token(&admin(), "ci", Role::Operator, &[7u8; 32], None)
            .await
            .unwrap();
        assert_eq!((t.name.as_str(), t.role), ("ci", Role::Operator));
        assert_eq!(
            s.token_by_hash(&[7u8; 32]).await.unwrap().unwrap().name,
            "ci"
        );
        assert!(s.token_by_hash(&[8u8; 32]).await.unwrap().is_none());
        assert!(matches!(
            s.create_token(&admin(), "ci", Role::Viewer, &[9u8; 32], None)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.tokens().await.unwrap().len(), 1);
        s.delete_token(&admin(), "ci").await.unwrap();
        assert!(s.token_by_hash(&[7u8; 32]).await.unwrap().is_none());

        let ks = |name: &str, last: u8, priority| PeerKeyServer {
            name: name.into(),
            address: std::net::Ipv4Addr::new(10, 0, 8, last),
            priority,
            role: KsRole::Secondary,
        };
        s.put_key_server(&admin(), &ks("ks1", 1, 100))
            .await
            .unwrap();
        s.put_key_server(&admin(), &ks("ks2", 2, 200))
            .await
            .unwrap();
        s.put_key_server(&admin(), &ks("ks1", 1, 250))
            .await
            .unwrap();
        let names: Vec<String> = s
            .key_servers()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["ks1", "ks2"], "highest priority first");
        assert!(matches!(
            s.put_key_server(&admin(), &ks("ks3", 2, 1)).await,
            Err(StoreError::Conflict(_))
        ));
        s.delete_key_server(&admin(), "ks2").await.unwrap();

        s.create_group(&admin(), "G", 5, &policy()).await.unwrap();
        for seq in 1..=3 {
            s.put_rekey(&RekeyRecord {
                group: 5,
                seq,
                reason: "manual".into(),
                started_at: 1000 * i64::from(seq),
                sent: 10,
                acked: 0,
                duration_ms: None,
            })
            .await
            .unwrap();
        }
        s.put_rekey(&RekeyRecord {
            group: 5,
            seq: 3,
            reason: "manual".into(),
            started_at: 3000,
            sent: 10,
            acked: 10,
            duration_ms: Some(42),
        })
        .await
        .unwrap();
        let r = s.rekeys(5, 2).await.unwrap();
        assert_eq!(r.iter().map(|x| x.seq).collect::<Vec<_>>(), [3, 2]);
        assert_eq!((r[0].acked, r[0].duration_ms), (10, Some(42)));

        s.append_audit(&AuditEntry {
            at: 1,
            actor: "op".into(),
            action: "rekey.now".into(),
            target: "G".into(),
            detail: "{}".into(),
        })
        .await
        .unwrap();
        assert_eq!(s.audit(1).await.unwrap()[0].action, "rekey.now");

        s.put_secret("ks/signing", b"key material").await.unwrap();
        assert_eq!(
            s.secret("ks/signing").await.unwrap().unwrap().as_slice(),
            b"key material"
        );
        assert!(s.secret("absent").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn secrets_need_the_same_master_key_and_a_sqlite_file_survives_reopening() {
    let dir = gkm_store::testing::fresh_dir("store-reopen");
    let path = dir.join("gkm.db");
    let url = format!("sqlite://{}", path.display());
    let s = open(&url, master()).await.unwrap();
    s.create_group(&admin(), "G", 5, &policy()).await.unwrap();
    drop(s);
    let s = open(&url, master()).await.unwrap();
    assert_eq!(
        s.group_psk("G").await.unwrap().unwrap().as_str(),
        "group-secret"
    );
    drop(s);
    let wrong = MasterKey::from_hex(&"43".repeat(32)).unwrap();
    let s = open(&url, wrong).await.unwrap();
    assert!(matches!(s.group_psk("G").await, Err(StoreError::Seal(_))));
    // The file holds no PSK in the clear.
    let raw = std::fs::read(&path).unwrap();
    assert!(!raw.windows(12).any(|w| w == b"group-secret"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn health(group: u32, identity: &str, at: i64, input_errors: u64) -> GmHealth {
    GmHealth {
        group,
        gm_identity: identity.into(),
        received_at: at,
        agent_version: "0.1.0".into(),
        registered: true,
        d3p_window_ms: Some(1000),
        d3p_window_source: Some(WindowSource::Ks),
        agent_time_ms: u64::try_from(at).unwrap() + 7,
        counters: ReplayCounters {
            input_packets: 100 + input_errors,
            output_packets: 50,
            input_errors,
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
    }
}

#[tokio::test]
async fn gm_health_reports_d3p_series_spikes_and_cleanup() {
    for s in backends().await {
        let k = s.kind();
        s.create_group(&admin(), "G1", 1, &policy()).await.unwrap();
        s.create_group(&admin(), "G2", 2, &policy()).await.unwrap();
        s.put_gms(&[
            gm(1, 1, "non-cisco", 0, GmState::Registered),
            gm(1, 2, "non-cisco", 0, GmState::Registered),
            gm(2, 3, "non-cisco", 0, GmState::Registered),
        ])
        .await
        .unwrap();
        let (a, b, c) = ("10.0.0.1", "10.0.0.2", "10.0.0.3");
        // Only a GM of the group's GM database may report; nothing is written.
        assert!(
            matches!(
                s.put_gm_health(&health(2, a, 1000, 5)).await,
                Err(StoreError::NotFound(_))
            ),
            "{k:?}"
        );
        assert_eq!(s.gm_health(2, a).await.unwrap(), None, "{k:?}");
        assert_eq!(s.gm_health(1, a).await.unwrap(), None, "{k:?}");
        // Reports: a's errors 0 -> 5 -> 12 -> (agent restart) 3; b 20 at once.
        let t0 = 1_700_000_040_000i64; // a multiple of 120 s
        let mut added = Vec::new();
        for (at, n) in [
            (t0, 0),
            (t0 + 60_000, 5),
            (t0 + 120_000, 12),
            (t0 + 180_000, 3),
        ] {
            let r = s.put_gm_health(&health(1, a, at, n)).await.unwrap();
            assert_eq!(r.group_name, "G1", "{k:?}");
            added.push(r.d3p_input_errors);
        }
        assert_eq!(added, [0, 5, 7, 3], "{k:?}: each report's new errors");
        s.put_gm_health(&health(1, b, t0 + 130_000, 20))
            .await
            .unwrap();
        s.put_gm_health(&health(2, c, t0 + 130_000, 40))
            .await
            .unwrap();
        // Silent since t0 + 150 s: b and c (last heard at t0 + 130 s), not
        // a (t0 + 180 s); every group is listed, a group without a silent
        // agent at 0; a GM without an agent is never silent.
        let silent = |v: Vec<gkm_store::AgentFindings>| {
            v.into_iter()
                .map(|f| format!("{}={}", f.group, f.silent))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            silent(s.agent_findings(t0 + 150_000).await.unwrap()),
            ["G1=1", "G2=1"],
            "{k:?}"
        );
        assert_eq!(
            silent(s.agent_findings(t0 + 100_000).await.unwrap()),
            ["G1=0", "G2=0"],
            "{k:?}"
        );
        assert_eq!(
            silent(s.agent_findings(t0 + 200_000).await.unwrap()),
            ["G1=2", "G2=1"],
            "{k:?}"
        );
        let h = s.gm_health(1, a).await.unwrap().unwrap();
        assert_eq!(
            h,
            health(1, a, t0 + 180_000, 3),
            "{k:?}: the latest report, whole"
        );
        // Buckets of 2 minutes: [t0: 5 (a)], [t0+120 s: 7 (a) + 20 (b) + 3 (a, restarted)].
        let pts = s.d3p_errors(Some(1), t0, 120_000).await.unwrap();
        let got: Vec<(i64, u64)> = pts.iter().map(|p| (p.at - t0, p.input_errors)).collect();
        assert_eq!(got, vec![(0, 5), (120_000, 30)], "{k:?}");
        let all: u64 = s
            .d3p_errors(None, t0, 120_000)
            .await
            .unwrap()
            .iter()
            .map(|p| p.input_errors)
            .sum();
        assert_eq!(all, 75, "{k:?}: every group");
        assert!(s
            .d3p_errors(Some(1), t0 + 200_000, 60_000)
            .await
            .unwrap()
            .is_empty());
        // Spikes since t0 + 100 s with at least 10: c (40), b (20), a has 10 exactly.
        let spikes = s.d3p_spikes(t0 + 100_000, 10, 10).await.unwrap();
        let got: Vec<(u32, &str, u64)> = spikes
            .iter()
            .map(|x| (x.group, x.gm_identity.as_str(), x.input_errors))
            .collect();
        assert_eq!(got, vec![(2, c, 40), (1, b, 20), (1, a, 10)], "{k:?}");
        assert_eq!(s.d3p_spikes(t0 + 100_000, 11, 10).await.unwrap().len(), 2);
        // However often a GM reports, its errors take one row per minute,
        // and a hostile counter saturates instead of overflowing.
        for (i, n) in [5u64, 0, (i64::MAX - 100) as u64, 0, (i64::MAX - 100) as u64]
            .iter()
            .enumerate()
        {
            let at = t0 + 190_000 + i64::try_from(i).unwrap();
            s.put_gm_health(&health(1, b, at, *n)).await.unwrap();
        }
        let minute = s.d3p_errors(Some(1), t0 + 180_000, 60_000).await.unwrap();
        assert_eq!(minute.len(), 1, "{k:?}: {minute:?}");
        assert_eq!(
            minute[0].input_errors,
            3 + (1 << 40),
            "{k:?}: a's 3, b's saturated"
        );
        // A week later the old rows go when the GM reports new errors.
        let later = t0 + gkm_store::D3P_ERRORS_KEPT_MS + 200_000;
        s.put_gm_health(&health(1, a, later, 4)).await.unwrap();
        let pts = s.d3p_errors(Some(1), 0, 1000).await.unwrap();
        assert_eq!(pts.len(), 1, "{k:?}: {pts:?}");
        // An ejected GM's report goes with it; a deleted group's all go.
        s.eject_gm(&admin(), 1, b).await.unwrap();
        assert_eq!(s.gm_health(1, b).await.unwrap(), None, "{k:?}");
        assert_eq!(
            silent(s.agent_findings(i64::MAX).await.unwrap()),
            ["G1=1", "G2=1"],
            "{k:?}: an ejected GM is not silent"
        );
        s.delete_group(&admin(), "G2").await.unwrap();
        assert!(s
            .d3p_spikes(0, 1, 10)
            .await
            .unwrap()
            .iter()
            .all(|x| x.group != 2));
    }
}

#[tokio::test]
async fn psk_rotation_retirement_and_deletion_leave_no_secret_behind() {
    for s in backends().await {
        let g = s.create_group(&admin(), "P", 77, &policy()).await.unwrap();
        let state = gkm_store::group_state_secret(g.group_id);
        s.put_secret(&state, b"keys and SEQ").await.unwrap();
        // Rotate, then clear, each audited, the key never in the audit log.
        s.set_group_psk(&admin(), "P", Some("rotated-secret"))
            .await
            .unwrap();
        assert_eq!(
            s.group_psk("P").await.unwrap().unwrap().as_str(),
            "rotated-secret"
        );
        s.set_group_psk(&admin(), "P", None).await.unwrap();
        assert!(s.group_psk("P").await.unwrap().is_none());
        s.set_group_psk(&admin(), "P", Some("again")).await.unwrap();
        // psk -> pki retires the sealed PSK.
        let mut pki = policy();
        pki.authentication = Authentication::Pki;
        s.update_group(&admin(), "P", &pki, None).await.unwrap();
        assert!(s.group_psk("P").await.unwrap().is_none(), "{:?}", s.kind());
        // A certificate group takes no PSK.
        assert!(matches!(
            s.set_group_psk(&admin(), "P", Some("x")).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.group_psk("P").await.unwrap().is_none());
        assert!(matches!(
            s.set_group_psk(&admin(), "nope", Some("x")).await,
            Err(StoreError::NotFound(_))
        ));
        let audit = s.audit(100).await.unwrap();
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        assert!(actions.contains(&"group.psk.rotate") && actions.contains(&"group.psk.clear"));
        assert!(audit
            .iter()
            .any(|e| e.action == "group.update" && e.detail.contains("retired")));
        assert!(!format!("{audit:?}").contains("rotated-secret"));
        // Deleting the group deletes every secret of it.
        s.update_group(&admin(), "P", &policy(), None)
            .await
            .unwrap();
        assert!(s.group_psk("P").await.unwrap().is_some());
        s.delete_group(&admin(), "P").await.unwrap();
        assert!(
            s.secret(&state).await.unwrap().is_none(),
            "group state left behind"
        );
        assert!(
            s.secret("group/P/psk").await.unwrap().is_none(),
            "PSK left behind"
        );
        // A new group of that name starts clean.
        let mut bare = policy();
        bare.authentication = Authentication::Psk { psk: None };
        s.create_group(&admin(), "P", 77, &bare).await.unwrap();
        assert!(s.group_psk("P").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn coop_peer_psks_are_sealed_apart_kept_rotated_retired_and_deleted() {
    let with_peers = |peers: &str| -> GroupPolicy {
        let mut p = policy();
        p.coop = Some(
            serde_json::from_str(&format!(r#"{{"priority":120,"peers":[{peers}]}}"#)).unwrap(),
        );
        p
    };
    for s in backends().await {
        let p = with_peers(
            r#"{"address":"10.0.0.2","authentication":{"method":"psk","psk":"ks2-secret"}},
               {"address":"2001:DB8::3","authentication":{"method":"psk","psk":"ks3-secret"}},
               {"address":"10.0.0.4","authentication":{"method":"pki"}}"#,
        );
        let g = s.create_group(&admin(), "C", 88, &p).await.unwrap();
        // The stored policy keeps the peers, never their keys.
        let stored = serde_json::to_string(&g.policy).unwrap();
        assert!(
            stored.contains("10.0.0.2") && !stored.contains("ks2-secret"),
            "{stored}"
        );
        let again = s.group("C").await.unwrap().unwrap();
        assert!(!serde_json::to_string(&again.policy)
            .unwrap()
            .contains("secret"));
        assert_eq!(again.policy.coop.as_ref().unwrap().priority, 120);
        assert_eq!(
            s.coop_peers_with_psk("C").await.unwrap(),
            ["10.0.0.2", "2001:db8::3"]
        );
        // Looked up by any spelling of the address.
        assert_eq!(
            s.coop_peer_psk("C", "2001:db8:0::3")
                .await
                .unwrap()
                .unwrap()
                .as_str(),
            "ks3-secret"
        );
        assert!(s.coop_peer_psk("C", "10.0.0.4").await.unwrap().is_none());
        // Not the group's PSK, and the group's PSK opens no peer.
        assert_eq!(
            s.group_psk("C").await.unwrap().unwrap().as_str(),
            "group-secret"
        );
        // An update that lists a peer with psk but no key keeps its key;
        // a peer gone and a peer now on certificates lose theirs; a new key
        // replaces the old.
        let next = with_peers(
            r#"{"address":"10.0.0.2","authentication":{"method":"psk"}},
               {"address":"10.0.0.5","authentication":{"method":"psk","psk":"ks5-secret"}},
               {"address":"10.0.0.4","authentication":{"method":"psk","psk":"ks4-secret"}}"#,
        );
        s.update_group(&admin(), "C", &next, None).await.unwrap();
        assert_eq!(
            s.coop_peers_with_psk("C").await.unwrap(),
            ["10.0.0.2", "10.0.0.4", "10.0.0.5"]
        );
        assert_eq!(
            s.coop_peer_psk("C", "10.0.0.2")
                .await
                .unwrap()
                .unwrap()
                .as_str(),
            "ks2-secret"
        );
        assert!(
            s.coop_peer_psk("C", "2001:db8::3").await.unwrap().is_none(),
            "retired"
        );
        let audit = s.audit(100).await.unwrap();
        let text = format!("{audit:?}");
        assert!(
            text.contains("retired 2001:db8::3") && text.contains("set 10.0.0.5"),
            "{text}"
        );
        assert!(!text.contains("ks5-secret") && !text.contains("ks2-secret"));
        // A group whose name is a prefix of this one's has secrets of its own.
        let other =
            with_peers(r#"{"address":"10.0.0.9","authentication":{"method":"psk","psk":"o"}}"#);
        s.create_group(&admin(), "C2", 89, &other).await.unwrap();
        // Removing COOP retires every peer key; deleting the group too.
        s.update_group(&admin(), "C", &policy(), None)
            .await
            .unwrap();
        assert!(s.coop_peers_with_psk("C").await.unwrap().is_empty());
        s.update_group(&admin(), "C", &next, None).await.unwrap();
        assert_eq!(
            s.coop_peers_with_psk("C").await.unwrap(),
            ["10.0.0.4", "10.0.0.5"]
        );
        s.put_secret(&gkm_store::coop_epoch_secret(88), &7u64.to_be_bytes())
            .await
            .unwrap();
        s.delete_group(&admin(), "C").await.unwrap();
        assert!(s.coop_peers_with_psk("C").await.unwrap().is_empty());
        assert!(
            s.secret(&gkm_store::coop_epoch_secret(88))
                .await
                .unwrap()
                .is_none(),
            "the COOP epoch goes with the group"
        );
        assert!(s.coop_peer_psk("C", "10.0.0.5").await.unwrap().is_none());
        assert_eq!(
            s.coop_peers_with_psk("C2").await.unwrap(),
            ["10.0.0.9"],
            "{:?}",
            s.kind()
        );
    }
}

#[tokio::test]
async fn concurrent_writers_never_fail() {
    // Issue 16 item 5: 8 writers at once deleting the same group, and 8
    // reporting health for one GM, on both backends: every call answers
    // (deleted once, then not found), none fails with a lock error, and
    // no report is lost.
    for s in backends().await {
        for round in 0..20u32 {
            let name = format!("D{round}");
            s.create_group(&admin(), &name, 900 + round, &policy())
                .await
                .unwrap();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    let name = name.clone();
                    tokio::spawn(async move { s.delete_group(&admin(), &name).await })
                })
                .collect();
            let mut deleted = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) => deleted += 1,
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("{:?}: concurrent delete failed: {e}", s.kind()),
                }
            }
            assert_eq!(deleted, 1, "{:?}", s.kind());
        }
        s.create_group(&admin(), "H", 1234, &policy())
            .await
            .unwrap();
        s.put_gms(&[gm(1234, 1, "non-cisco", 0, GmState::Registered)])
            .await
            .unwrap();
        let identity = gm(1234, 1, "non-cisco", 0, GmState::Registered).gm_identity;
        let tasks: Vec<_> = (0..400u64)
            .map(|i| {
                let s = s.clone();
                let identity = identity.clone();
                tokio::spawn(async move {
                    // The same counter each time: the rise is counted once.
                    s.put_gm_health(&health(
                        1234,
                        &identity,
                        1_700_000_000_000 + i64::try_from(i).unwrap(),
                        5,
                    ))
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{:?}: concurrent report failed: {e}", s.kind()));
        }
        let pts = s.d3p_errors(Some(1234), 0, i64::MAX).await.unwrap();
        let total: u64 = pts.iter().map(|p| p.input_errors).sum();
        assert_eq!(total, 5, "{:?}: reports raced", s.kind());
    }
}

#[tokio::test]
async fn an_ack_the_agent_sent_and_the_key_server_never_saw_is_found() {
    for s in backends().await {
        let k = s.kind();
        s.create_group(&admin(), "G1", 1, &policy()).await.unwrap();
        let a = "10.0.0.1";
        // The key server's record: SEQ 5 sent, 4 acknowledged, one miss.
        let row = |acked: u32, misses: u32| GmRow {
            last_seq_sent: Some(5),
            last_seq_acked: Some(acked),
            misses,
            ..gm(1, 1, "cisco", 0, GmState::Registered)
        };
        s.put_gms(&[row(4, 1)]).await.unwrap();
        let report = |acked: Option<u32>| GmHealth {
            membership: Some(Membership {
                key_server: Some("10.0.0.100:848".into()),
                kek_spi: Some("00112233445566778899aabbccddeeff".into()),
                last_seq_received: Some(5),
                last_seq_accepted: Some(5),
                last_seq_acked: acked,
                ack_kind: Some(AckKind::Cisco),
                registrations: 2,
                failovers: 1,
                ..Membership::default()
            }),
            traffic: Some(Traffic {
                bytes_in: 1000,
                bytes_out: 2000,
                esp_rx_queue_drops: 3,
            }),
            ..health(1, a, 1_700_000_000_000, 0)
        };
        let lost = |v: Vec<gkm_store::AgentFindings>| v.iter().map(|f| f.ack_lost).sum::<u64>();
        // The agent acknowledged 5: lost on the way.
        s.put_gm_health(&report(Some(5))).await.unwrap();
        let h = s.gm_health(1, a).await.unwrap().unwrap();
        assert!(h.ack_lost, "{k:?}");
        assert_eq!(
            h.membership,
            report(Some(5)).membership,
            "{k:?}: kept whole"
        );
        assert_eq!(h.traffic, report(Some(5)).traffic, "{k:?}");
        assert_eq!(lost(s.agent_findings(0).await.unwrap()), 1, "{k:?}");
        // A SEQ the key server never sent proves nothing.
        s.put_gm_health(&report(Some(9))).await.unwrap();
        assert!(!s.gm_health(1, a).await.unwrap().unwrap().ack_lost, "{k:?}");
        // It acknowledged 4 only: the push was lost, not the ACK.
        s.put_gm_health(&report(Some(4))).await.unwrap();
        assert!(!s.gm_health(1, a).await.unwrap().unwrap().ack_lost, "{k:?}");
        assert_eq!(lost(s.agent_findings(0).await.unwrap()), 0, "{k:?}");
        // The next ACK got through: no miss, nothing lost.
        s.put_gm_health(&report(Some(5))).await.unwrap();
        s.put_gms(&[row(5, 0)]).await.unwrap();
        assert!(!s.gm_health(1, a).await.unwrap().unwrap().ack_lost, "{k:?}");
        // A removed GM counts in no finding, silent or lost.
        s.put_gms(&[GmRow {
            state: GmState::Removed,
            ..row(4, 3)
        }])
        .await
        .unwrap();
        s.put_gm_health(&report(Some(5))).await.unwrap();
        let f = s.agent_findings(i64::MAX).await.unwrap();
        assert_eq!((f[0].silent, f[0].ack_lost), (0, 0), "{k:?}: {f:?}");
        // An old agent's report (no membership) finds nothing.
        s.put_gms(&[row(4, 1)]).await.unwrap();
        s.put_gm_health(&health(1, a, 1_700_000_000_000, 0))
            .await
            .unwrap();
        let h = s.gm_health(1, a).await.unwrap().unwrap();
        assert!(!h.ack_lost && h.membership.is_none(), "{k:?}");
    }
}

#[tokio::test]
async fn setup_keys_enroll_once_within_their_limits_and_revocation_takes_the_token() {
    use gkm_store::model::{Agent, SetupKey, SetupKeyRefused};
    for s in backends().await {
        let k = s.kind();
        let key = |name: &str, limit: Option<u32>, expires_at: i64| SetupKey {
            id: 0,
            name: name.into(),
            groups: vec![1, 2],
            tags: vec!["asr9000".into()],
            usage_limit: limit,
            uses: 0,
            expires_at,
            created_at: 1,
        };
        let once = s
            .create_setup_key(&admin(), &key("once", Some(1), 10_000), &[1u8; 32])
            .await
            .unwrap();
        assert_eq!((once.groups.clone(), once.uses), (vec![1, 2], 0), "{k:?}");
        assert!(matches!(
            s.create_setup_key(&admin(), &key("once", None, 10_000), &[2u8; 32])
                .await,
            Err(StoreError::Conflict(_))
        ));
        let found = s.setup_key_by_hash(&[1u8; 32]).await.unwrap().unwrap();
        assert_eq!(found, once, "{k:?}");
        let agent = |name: &str| Agent {
            id: 0,
            name: name.into(),
            groups: vec![1, 2],
            tags: vec!["asr9000".into()],
            setup_key: String::new(),
            cert_serial: "0a".into(),
            cert_not_after: 99_000,
            enrolled_at: 0,
            renewed_at: None,
            revoked_at: None,
        };
        let a = s
            .enroll_agent(once.id, 5_000, &agent("gm1"), "agent-gm1", &[11u8; 32])
            .await
            .unwrap();
        assert_eq!(
            (a.setup_key.as_str(), a.enrolled_at),
            ("once", 5_000),
            "{k:?}"
        );
        let t = s.token_by_hash(&[11u8; 32]).await.unwrap().unwrap();
        assert_eq!(
            (t.role, t.agent.as_deref()),
            (Role::Agent, Some("gm1")),
            "{k:?}"
        );
        // Used once: the second enrollment is refused and writes nothing.
        let again = s
            .enroll_agent(once.id, 5_001, &agent("gm2"), "agent-gm2", &[12u8; 32])
            .await;
        assert!(
            matches!(again, Err(StoreError::Refused(SetupKeyRefused::Exhausted))),
            "{k:?} {again:?}"
        );
        assert!(s.agent("gm2").await.unwrap().is_none());
        assert!(s.token_by_hash(&[12u8; 32]).await.unwrap().is_none());
        // Expired, and a name taken: refused, the key's use not counted.
        let many = s
            .create_setup_key(&admin(), &key("many", None, 10_000), &[3u8; 32])
            .await
            .unwrap();
        assert!(matches!(
            s.enroll_agent(many.id, 10_000, &agent("gm3"), "agent-gm3", &[13u8; 32])
                .await,
            Err(StoreError::Refused(SetupKeyRefused::Expired))
        ));
        assert!(matches!(
            s.enroll_agent(many.id, 9_000, &agent("gm1"), "agent-gm1b", &[14u8; 32])
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.setup_key_by_hash(&[3u8; 32]).await.unwrap().unwrap().uses,
            0
        );
        s.enroll_agent(many.id, 9_000, &agent("gm3"), "agent-gm3", &[13u8; 32])
            .await
            .unwrap();
        // Renewal, then revocation: the token goes at once, the row stays.
        let r = s.renew_agent(&admin(), "gm1", "0b", 199_000).await.unwrap();
        assert_eq!((r.cert_serial.as_str(), r.cert_not_after), ("0b", 199_000));
        let rev = s.revoke_agent(&admin(), "gm1", 7_000).await.unwrap();
        assert_eq!(rev.revoked_at, Some(7_000), "{k:?}");
        assert!(s.token_by_hash(&[11u8; 32]).await.unwrap().is_none());
        assert!(matches!(
            s.revoke_agent(&admin(), "gm1", 7_001).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.revoke_agent(&admin(), "nobody", 7_001).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.renew_agent(&admin(), "gm1", "0c", 299_000).await,
            Err(StoreError::NotFound(_))
        ));
        let names: Vec<_> = s
            .agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["gm1", "gm3"], "{k:?}");
        let actions: Vec<_> = s
            .audit(20)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        for want in [
            "setup_key.create",
            "setup_key.use",
            "agent.enroll",
            "agent.renew",
            "agent.revoke",
        ] {
            assert!(
                actions.iter().any(|a| a == want),
                "{k:?} {want} {actions:?}"
            );
        }
        s.delete_setup_key(&admin(), "once").await.unwrap();
        assert!(s.setup_key_by_hash(&[1u8; 32]).await.unwrap().is_none());
    }
}
