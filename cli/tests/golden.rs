//! Golden tests for the `show crypto gkm ...` layouts: fixed API answers in,
//! the exact text out (`GKM_WRITE_GOLDEN=1` rewrites the files after a
//! deliberate change). The feature layout is the seed's own example.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use gkmctl::show;
use serde_json::{json, Value};

fn golden(name: &str, got: &str) {
    let path = format!("{}/tests/golden/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("GKM_WRITE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("golden file; GKM_WRITE_GOLDEN=1 writes it");
    assert_eq!(got, want, "{name} layout changed");
}

fn fixture() -> (Vec<Value>, Vec<Value>) {
    let g = json!({
        "name": "GET", "group_id": 1234, "acknowledgement": "interoperable",
        "policy": {"kek": {"lifetime": 86400}, "rekey": {"transport": "unicast"},
                   "d3p_window": {"msec": 5000}}
    });
    let m = json!({
        "name": "MCAST", "group_id": 77, "acknowledgement": "none",
        "policy": {"kek": {"lifetime": 3600}, "rekey": {"transport": "multicast"}}
    });
    let st = json!({
        "rekey": {"ack_type_in_use": "Interoperable", "rekeys_sent": 12, "seq": 12, "gms": 3, "gms_at_risk": 0},
        "kek": {"teks": 1, "seq": 12, "transport": "Unicast", "spi": "00112233445566778899aabbccddeeff",
                "management_algorithm": "disabled", "encryption_algorithm": "AES", "iv_len": 16,
                "key_size_bits": 128, "original_lifetime_secs": 86400, "remaining_lifetime_secs": 80000,
                "time_to_rekey_secs": 3000, "sig_hash_algorithm": "SHA256", "sig_algorithm": "RSA",
                "sig_key_bits": 2048, "sig_size": 256, "sig_key_name": "gkm-rekey-rsa2048",
                "acknowledgement": "interoperable"}
    });
    let mst = json!({
        "rekey": {"ack_type_in_use": "None", "rekeys_sent": 0, "seq": 0, "gms": 0, "gms_at_risk": 0},
        "kek": {"teks": 2, "seq": 0, "transport": "Multicast", "spi": "ffeeddccbbaa99887766554433221100",
                "management_algorithm": "disabled", "encryption_algorithm": "AES", "iv_len": 16,
                "key_size_bits": 256, "original_lifetime_secs": 3600, "remaining_lifetime_secs": 3599,
                "time_to_rekey_secs": 3509, "sig_hash_algorithm": "SHA256", "sig_algorithm": "ECDSA-256",
                "sig_key_bits": 256, "sig_size": 64, "sig_key_name": "gkm-rekey-p256",
                "acknowledgement": "none"}
    });
    (vec![g, m], vec![st, mst])
}

#[test]
fn show_crypto_gkm_layouts() {
    let (g, s) = fixture();
    golden("gkm", &show::gkm(&g, &s));
    golden("ks", &show::ks(&g, &s));
    golden("ks_rekey", &show::ks_rekey(&g, &s));
    golden("ks_policy", &show::ks_policy(&g, &s));
    golden("ks_replay", &show::ks_replay(&g));
}

#[test]
fn feature_layout_is_the_seeds_example() {
    let ks = vec![
        ("10.0.8.1".to_owned(), "1.0.11".to_owned(), true),
        ("10.0.9.1".to_owned(), "1.0.10".to_owned(), false),
    ];
    let gms = vec![
        ("10.0.3.1".to_owned(), "1.0.11".to_owned(), true),
        ("10.65.9.2".to_owned(), "1.0.10".to_owned(), false),
    ];
    let want = "Group Name: GET VPN1\n\n\
Key Server ID     Version   Feature Supported\n\
10.0.8.1          1.0.11    Yes\n\
10.0.9.1          1.0.10    No\n\
\n\
Group Member ID   Version   Feature Supported\n\
10.0.3.1          1.0.11    Yes\n\
10.65.9.2         1.0.10    No\n";
    assert_eq!(show::feature("GET VPN1", &ks, &gms), want);
}

#[test]
fn gm_replay_layout_is_the_seeds_example() {
    use gkm_model::health::{D3pError, GroupReplay, ReplayCounters, WindowSource};
    let g = GroupReplay {
        group: 1234,
        name: "GET".into(),
        d3p_window_ms: Some(10_000),
        d3p_window_source: Some(WindowSource::Ks),
        posix_time_ms: 502_764_170,
        counters: ReplayCounters {
            input_packets: 5,
            output_packets: 5,
            input_errors: 5,
            output_errors: 0,
            history: [D3pError {
                src: "5.0.0.2".parse().unwrap(),
                my_time_ms: 502_729_950,
                peer_time_ms: 33_460,
                window_ms: 10_000,
            }]
            .into(),
        },
    };
    // The seed's example, its `<timestamp>` being the receiver's time.
    assert_eq!(
        show::gm_replay(std::slice::from_ref(&g)),
        "Anti-replay Information For Group GET:\n\
         IP-D3P:\n\
         Posix-time-msec : 502764.17\n\
         Input Packets : 5 Output Packets : 5\n\
         Input Error Packets : 5 Output Error Packets : 0\n\
         IP-D3P Error History (sampled at 10pak/min):\n\
         502729.95: src=5.0.0.2; my_time=502729.95; peer_time=33.46; win=10\n\n"
    );
    let off = GroupReplay {
        d3p_window_ms: None,
        d3p_window_source: None,
        counters: ReplayCounters::default(),
        ..g
    };
    golden("gm_replay_off", &show::gm_replay(&[off]));
}
