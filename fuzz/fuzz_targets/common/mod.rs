//! What the engine fuzz targets share: a small key server (one PSK group,
//! tight caps so the fuzzer reaches them, ECDSA rekey signatures for
//! speed) and a group member, both seeded, so every run replays the same
//! exchange and a recorded message of it stays valid.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_proto::crypto::{CbcCipher, DhBackend, RekeySigner};
use gkm_proto::gm::{GmAuth, GmConfig, GmIdentity, GroupMember};
use gkm_proto::group::{GroupKeys, Ipv4Prefix, KekParams};
use gkm_proto::ks::{
    Authorization, Credential, GroupAuth, KeyServer, KsConfig, KsEvent, KsGroup, KsLimits,
    PskEntry,
};
use gkm_proto::rekey::RekeyPolicy;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

pub const KS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 848);
pub const GM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 848);
pub const GROUP: u32 = 1234;
pub const PSK: &[u8] = b"fuzz-psk";
/// 2027-01-15, the engines' clock.
pub const T0: u64 = 1_800_000_000_000;

pub fn rng(seed: u64) -> Box<ChaCha20Rng> {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

fn prefix(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

/// The rekey-signing key, made once per process.
pub fn signer() -> RekeySigner {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let der = KEY.get_or_init(|| RekeySigner::generate_ecdsa_p256_pkcs8().unwrap());
    RekeySigner::ecdsa_p256_from_pkcs8(der).unwrap()
}

pub fn limits() -> KsLimits {
    KsLimits {
        max_half_open: 64,
        max_half_open_per_source: 8,
        half_open_timeout_ms: 30_000,
        pull_timeout_ms: 30_000,
    }
}

pub fn ks() -> KeyServer {
    let signer = signer();
    let params = KekParams {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::UNSPECIFIED,
        port: 848,
        lifetime_secs: 86_400,
        cipher: CbcCipher::Aes128,
        sig_algorithm: signer.algorithm(),
        sig_key_spki: signer.public_spki_der().unwrap(),
        sig_key_bits: 256,
    };
    let mut r = rng(1);
    let keys = GroupKeys::generate(
        r.as_mut(),
        GROUP,
        &[(prefix("10.1.0.0/16"), prefix("10.1.0.0/16"))],
        3600,
        Some(&params),
    );
    KeyServer::new(
        KsConfig {
            address: Ipv4Addr::new(10, 0, 0, 1),
            address_v6: None,
            groups: vec![KsGroup {
                name: "FUZZ".into(),
                keys,
                authorization: Authorization::default(),
                authentication: GroupAuth::Psk,
                // On, so that the legacy suites' paths are fuzzed too.
                legacy_phase1: true,
                rekey: RekeyPolicy::default(),
                resume: None,
                d3p_window_ms: Some(1000),
            }],
            psks: vec![PskEntry {
                credential: Credential::GroupPsk(GROUP),
                ranges: vec![prefix("10.0.0.0/8").into()],
                key: Zeroizing::new(PSK.to_vec()),
            }],
            ca: None,
            certificates: Vec::new(),
            asr9000: vec![],
            limits: limits(),
            max_phase1_life_secs: 86_400,
            export_keys: false,
            dh_backend: DhBackend::Seeded,
            rekey_signer: Some(signer),
            rekey_key_name: "fuzz".into(),
        },
        rng(2),
    )
}

pub fn gm() -> GroupMember {
    GroupMember::new(
        GmConfig {
            key_servers: vec![KS],
            ipsec_doi_key_servers: Vec::new(),
            legacy_phase1_key_servers: Vec::new(),
            phase1_suites: None,
            group_id: GROUP,
            identity: GmIdentity::Ipv4(Ipv4Addr::new(10, 0, 1, 1)),
            auth: GmAuth::Psk(Zeroizing::new(PSK.to_vec())),
            phase1_life_secs: 86_400,
            sender_ids: 1,
            reregister_before_ms: 60_000,
            retransmit_initial_ms: 1000,
            max_transmissions: 4,
            initial_contact: true,
            dh_backend: DhBackend::Seeded,
            ack_address: None,
            multicast_ack_jitter_ms: 500,
            extra_vendor_ids: Vec::new(),
        },
        rng(3),
    )
}

/// Releases every prepared rekey at once (the server persists first; here
/// there is nothing to persist).
pub fn release(ks: &mut KeyServer, now: u64) {
    while let Some(e) = ks.poll_event() {
        if let KsEvent::RekeyPrepared { group_id, seq, .. } = e {
            let _ = ks.rekey_persisted(now, group_id, seq);
        }
    }
}

/// Moves datagrams between `ks` and `gm` until quiet; returns the GM's
/// datagrams in order (what the KS received).
pub fn exchange(ks: &mut KeyServer, gm: &mut GroupMember, now: u64) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = gm.poll_transmit() {
            moved = true;
            if t.to == KS {
                ks.handle_datagram(now, GM, &t.payload);
                sent.push(t.payload);
            }
        }
        release(ks, now);
        while let Some(t) = ks.poll_transmit() {
            moved = true;
            if t.to == GM {
                gm.handle_datagram(now, KS, &t.payload);
            }
        }
        while gm.poll_event().is_some() {}
        if !moved {
            return sent;
        }
    }
}
