//! REST load generator for `scripts/bench-api`.
//!
//! `populate --database URL --data-dir DIR --gms N`: creates group BENCH
//! (identity 1234) and N GMs directly in the store (GMs reach the store from
//! registrations; this fills it without registering N agents).
//!
//! `load --url URL --token-file F --path P --rate R --secs S [--warmup W]`:
//! offers R requests per second for W (default 2) + S seconds, open loop
//! (each request has a scheduled start; latency is measured from it, so a
//! slow server cannot hide its queueing), over 64 keep-alive connections;
//! prints p50, p99, max and the throughput achieved over the S measured
//! seconds, and the p99 and max of the warm-up apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use gkm_store::model::{GmRow, GmState};
use gkm_store::seal::MasterKey;
use gkm_store::Actor;

fn arg(v: &[String], name: &str) -> String {
    v.iter()
        .position(|a| a == name)
        .and_then(|i| v.get(i + 1))
        .cloned()
        .unwrap_or_else(|| panic!("{name} is required"))
}

#[tokio::main]
async fn populate(v: &[String]) {
    let db = arg(v, "--database");
    let dir = std::path::PathBuf::from(arg(v, "--data-dir"));
    let n: u32 = arg(v, "--gms").parse().unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let (master, _) = MasterKey::load(&dir).unwrap();
    let store = gkm_store::open(&db, master).await.unwrap();
    let policy = serde_json::from_str(
        r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}],
            "authentication":{"method":"psk","psk":"bench-psk"}}"#,
    )
    .unwrap();
    if store.group("BENCH").await.unwrap().is_none() {
        store
            .create_group(&Actor("bench".into()), "BENCH", 1234, &policy)
            .await
            .unwrap();
    }
    let t = Instant::now();
    let mut batch = Vec::with_capacity(5000);
    for i in 0..n {
        batch.push(GmRow {
            group: 1234,
            gm_identity: format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
            address: format!("10.{}.{}.{}:848", i >> 16 & 255, i >> 8 & 255, i & 255),
            class: ["non-cisco", "cisco", "asr9000"][i as usize % 3].into(),
            version: Some("1.0.0".into()),
            features: if i % 10 == 0 { 0 } else { 7 },
            state: GmState::Registered,
            registered_at: 1_800_000_000_000 + i64::from(i),
            last_seq_sent: Some(5),
            last_seq_acked: Some(5),
            misses: 0,
            sids: vec![i + 1],
        });
        if batch.len() == 5000 {
            store.put_gms(&batch).await.unwrap();
            batch.clear();
        }
    }
    store.put_gms(&batch).await.unwrap();
    println!(
        "populated {n} GMs in {:.1} s ({:?})",
        t.elapsed().as_secs_f64(),
        store.kind()
    );
}

fn load(v: &[String]) {
    let url = arg(v, "--url");
    let token = std::fs::read_to_string(arg(v, "--token-file"))
        .unwrap()
        .trim()
        .to_owned();
    let path = arg(v, "--path");
    let rate: u64 = arg(v, "--rate").parse().unwrap();
    let secs: u64 = arg(v, "--secs").parse().unwrap();
    // The same load first runs for the warm-up and is reported apart: the
    // first requests open the connections and fault the database pages in.
    let warmup: u64 = v
        .iter()
        .position(|a| a == "--warmup")
        .and_then(|i| v.get(i + 1))
        .map_or(2, |w| w.parse().unwrap());
    let first = rate * warmup;
    let total = rate * (warmup + secs);
    let (tx, rx) = mpsc::channel::<(Instant, bool)>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let (done_tx, done_rx) = mpsc::channel::<(Duration, bool, bool)>();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let rx = rx.clone();
            let done = done_tx.clone();
            let full = format!("{url}{path}");
            let auth = format!("Bearer {token}");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                loop {
                    let Ok((at, measured)) = rx.lock().unwrap().recv() else {
                        return;
                    };
                    let ok = agent
                        .get(&full)
                        .header("authorization", &auth)
                        .call()
                        .ok()
                        .and_then(|mut r| {
                            let good = r.status().as_u16() == 200;
                            r.body_mut().read_to_vec().ok().map(|_| good)
                        })
                        .unwrap_or(false);
                    let _ = done.send((at.elapsed(), ok, measured));
                }
            })
        })
        .collect();
    drop(done_tx);
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    for i in 0..total {
        let at = start + interval * u32::try_from(i).unwrap();
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        tx.send((at, i >= first)).unwrap();
    }
    drop(tx);
    let mut lat: Vec<Duration> = Vec::with_capacity(total as usize);
    let mut cold: Vec<Duration> = Vec::with_capacity(first as usize);
    let mut errors = 0u64;
    for (d, ok, measured) in done_rx.iter() {
        if measured {
            lat.push(d);
        } else {
            cold.push(d);
        }
        if !ok {
            errors += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64() - warmup as f64;
    for w in workers {
        let _ = w.join();
    }
    lat.sort();
    cold.sort();
    let pct = |l: &[Duration], p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{path}: {} requests at {rate} req/s offered, {:.0} req/s done, p50={:.2} ms p99={:.2} ms max={:.2} ms, errors {errors} (after a {warmup} s warm-up: p99={:.2} ms max={:.2} ms)",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        pct(&cold, 0.99),
        pct(&cold, 1.0),
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

fn main() {
    let v: Vec<String> = std::env::args().skip(1).collect();
    match v.first().map(String::as_str) {
        Some("populate") => populate(&v),
        Some("load") => load(&v),
        _ => panic!("usage: gkm-apiload populate|load ..."),
    }
}
