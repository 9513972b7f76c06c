//! The simulated-clock harness shared by the engine scenario tests: a key
//! server and group members exchanging datagrams in memory, time advanced
//! to the next deadline when nothing is in flight.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod coop;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_proto::crypto::{
    certificates_from_pem, CbcCipher, CertificateAuthority, Phase1Signer, RekeySigner, RsaSigner,
};
use gkm_proto::gm::{CertAuth, GmAuth, GmConfig, GmEvent, GmIdentity, GroupMember};
use gkm_proto::group::{GroupKeys, Ipv4Prefix, KekParams};
use gkm_proto::ks::{
    Authorization, Credential, GroupAuth, KeyServer, KsConfig, KsEvent, KsGroup, KsLimits, PskEntry,
};
use gkm_proto::rekey::RekeyPolicy;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

pub const KS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 848);
/// The same key server's IPv6 address, [fd00::1]:848.
pub const KS_ADDR6: SocketAddr = SocketAddr::new(
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    848,
);
pub const GROUP: u32 = 1234;
/// 2027-01-15: inside the test certificates' validity.
pub const T0: u64 = 1_800_000_000_000;

pub fn rng(seed: u64) -> Box<ChaCha20Rng> {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

pub fn prefix(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

/// A group with fresh keys from generator `seed`: two TEKs (10.1/16 and
/// 10.2/16) and a KEK signed with the test rekey key.
pub fn ks_group(name: &str, id: u32, seed: u64, authorization: Authorization) -> KsGroup {
    ks_group_life(name, id, seed, authorization, 3600)
}

/// As [`ks_group`], its TEKs living `tek_life_secs`.
pub fn ks_group_life(
    name: &str,
    id: u32,
    seed: u64,
    authorization: Authorization,
    tek_life_secs: u32,
) -> KsGroup {
    let signer = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("../data/ks-rekey.pem")).unwrap(),
    ));
    ks_group_signed(name, id, seed, authorization, tek_life_secs, &signer)
}

/// As [`ks_group_life`], its KEK naming `signer`'s key.
pub fn ks_group_signed(
    name: &str,
    id: u32,
    seed: u64,
    authorization: Authorization,
    tek_life_secs: u32,
    signer: &RekeySigner,
) -> KsGroup {
    let params = KekParams {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::UNSPECIFIED,
        port: 848,
        lifetime_secs: 86_400,
        cipher: CbcCipher::Aes128,
        sig_algorithm: signer.algorithm(),
        sig_key_spki: signer.public_spki_der().unwrap(),
        sig_key_bits: signer.key_bits(),
    };
    let mut r = rng(seed);
    let keys = GroupKeys::generate(
        r.as_mut(),
        id,
        &[
            (prefix("10.1.0.0/16"), prefix("10.1.0.0/16")),
            (prefix("10.2.0.0/16"), prefix("10.2.0.0/16")),
        ],
        tek_life_secs,
        Some(&params),
    );
    KsGroup {
        name: name.into(),
        keys,
        authorization,
        authentication: GroupAuth::Psk,
        legacy_phase1: false,
        rekey: RekeyPolicy::default(),
        resume: None,
        d3p_window_ms: None,
    }
}

/// One ECDSA P-256 rekey-signing key for the whole test process (every
/// cooperating key server must sign with the same key).
pub fn ecdsa_rekey_pkcs8() -> &'static [u8] {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
}

pub fn ks_config(psk: &[u8], authorization: Authorization) -> KsConfig {
    let signer = RsaSigner::from_pkcs8_pem(include_str!("../data/ks-rekey.pem")).unwrap();
    KsConfig {
        address: Ipv4Addr::new(10, 0, 0, 1),
        address_v6: None,
        groups: vec![ks_group("GET", GROUP, 1, authorization)],
        psks: vec![PskEntry {
            credential: Credential::Keyring(0),
            ranges: vec![prefix("10.0.0.0/8").into()],
            key: Zeroizing::new(psk.to_vec()),
        }],
        ca: None,
        certificates: Vec::new(),
        asr9000: vec![prefix("10.9.0.0/16")],
        limits: KsLimits::default(),
        max_phase1_life_secs: 86_400,
        export_keys: false,
        dh_backend: gkm_proto::crypto::DhBackend::Seeded,
        rekey_signer: Some(RekeySigner::Rsa(Box::new(signer))),
        rekey_key_name: "ks-rekey".into(),
    }
}

pub fn ks(psk: &[u8], authorization: Authorization) -> KeyServer {
    KeyServer::new(ks_config(psk, authorization), rng(2))
}

/// A KS that also accepts certificates from the test CA.
pub fn ks_with_pki() -> KeyServer {
    let mut cfg = ks_config(b"unused", Authorization::default());
    cfg.groups[0].authentication = GroupAuth::Certificate;
    let ca = certificates_from_pem(include_str!("../data/ca.pem")).unwrap();
    cfg.ca = Some(CertificateAuthority::new(&ca).unwrap());
    let cert = certificates_from_pem(include_str!("../data/ks.pem"))
        .unwrap()
        .remove(0);
    cfg.certificates = vec![(
        cert,
        Phase1Signer::from_pkcs8_pem(include_str!("../data/ks.key")).unwrap(),
    )];
    KeyServer::new(cfg, rng(2))
}

pub fn gm_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 0x100 + i)), 848)
}

pub fn base_config(i: u32, group: u32, identity: GmIdentity, auth: GmAuth) -> GmConfig {
    GmConfig {
        key_servers: vec![KS_ADDR],
        ipsec_doi_key_servers: Vec::new(),
        legacy_phase1_key_servers: Vec::new(),
        phase1_suites: None,
        group_id: group,
        identity,
        auth,
        phase1_life_secs: 86_400,
        sender_ids: if i % 2 == 0 { 1 } else { 0 },
        reregister_before_ms: 60_000,
        retransmit_initial_ms: 1000,
        max_transmissions: 4,
        initial_contact: true,
        dh_backend: gkm_proto::crypto::DhBackend::Seeded,
        ack_address: None,
        multicast_ack_jitter_ms: 500,
        extra_vendor_ids: Vec::new(),
    }
}

pub fn gm(i: u32, psk: &[u8], group: u32) -> GroupMember {
    gm_at(i, gm_addr(i), psk, group)
}

/// A PSK GM whose phase 1 identity is `addr`'s address; `i` seeds its generator.
pub fn gm_at(i: u32, addr: SocketAddr, psk: &[u8], group: u32) -> GroupMember {
    let IpAddr::V4(a) = addr.ip() else { panic!() };
    let cfg = base_config(
        i,
        group,
        GmIdentity::Ipv4(a),
        GmAuth::Psk(Zeroizing::new(psk.to_vec())),
    );
    GroupMember::new(cfg, rng(1000 + u64::from(i)))
}

/// A GM authenticating with a certificate: `which` is "gm" (issued by the
/// test CA, SAN 10.0.1.1) or "rogue-gm" (same names, another CA).
pub fn gm_with_cert(i: u32, which: &str) -> GroupMember {
    gm_with_cert_to(i, which, GROUP)
}

/// [`gm_with_cert`] asking for `group`.
pub fn gm_with_cert_to(i: u32, which: &str, group: u32) -> GroupMember {
    let (cert_pem, key_pem) = match which {
        "gm" => (
            include_str!("../data/gm.pem"),
            include_str!("../data/gm.key"),
        ),
        _ => (
            include_str!("../data/rogue-gm.pem"),
            include_str!("../data/rogue-gm.key"),
        ),
    };
    let cert = certificates_from_pem(cert_pem).unwrap().remove(0);
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let dn = parsed.subject().as_raw().to_vec();
    let ca =
        CertificateAuthority::new(&certificates_from_pem(include_str!("../data/ca.pem")).unwrap())
            .unwrap();
    let auth = GmAuth::Certificate(Box::new(CertAuth {
        cert,
        key: Phase1Signer::from_pkcs8_pem(key_pem).unwrap(),
        ca,
    }));
    GroupMember::new(
        base_config(i, group, GmIdentity::Dn(dn), auth),
        rng(2000 + u64::from(i)),
    )
}

/// Keys each GM got, the KS's events, the GMs' events.
pub type Outcome = (
    HashMap<SocketAddr, GroupKeys>,
    Vec<KsEvent>,
    Vec<(SocketAddr, GmEvent)>,
);

/// Direction of a datagram in the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// GM to KS.
    Up,
    /// KS to GM.
    Down,
}

/// Runs from `T0` until quiet or `until`.
pub fn run(ks: &mut KeyServer, gms: &mut [(SocketAddr, GroupMember)], until: u64) -> Outcome {
    run_with(ks, gms, T0, until, |_, _| true)
}

/// Runs from `start` until quiet or `until`; `hook` sees every datagram
/// and may change it, or drop it by returning false.
pub fn run_with(
    ks: &mut KeyServer,
    gms: &mut [(SocketAddr, GroupMember)],
    start: u64,
    until: u64,
    mut hook: impl FnMut(Dir, &mut Vec<u8>) -> bool,
) -> Outcome {
    let mut now = start;
    let mut got = HashMap::new();
    let mut ks_events = Vec::new();
    let mut gm_events = Vec::new();
    let index: HashMap<SocketAddr, usize> =
        gms.iter().enumerate().map(|(i, (a, _))| (*a, i)).collect();
    for (_, g) in gms.iter_mut() {
        g.handle_timeout(now);
    }
    loop {
        let mut moved = false;
        for (addr, g) in gms.iter_mut() {
            while let Some(mut t) = g.poll_transmit() {
                // Datagrams to any other key server are lost: nobody is there.
                if (t.to == KS_ADDR || t.to == KS_ADDR6) && hook(Dir::Up, &mut t.payload) {
                    ks.handle_datagram(now, *addr, &t.payload);
                }
                moved = true;
            }
        }
        while let Some(mut t) = ks.poll_transmit() {
            if let Some(i) = index.get(&t.to) {
                if hook(Dir::Down, &mut t.payload) {
                    let from = if t.to.is_ipv6() { KS_ADDR6 } else { KS_ADDR };
                    gms[*i].1.handle_datagram(now, from, &t.payload);
                }
                moved = true;
            }
        }
        for (addr, g) in gms.iter_mut() {
            while let Some(e) = g.poll_event() {
                if let GmEvent::Registered { keys, .. } = &e {
                    got.insert(*addr, keys.clone());
                }
                gm_events.push((*addr, e));
            }
        }
        while let Some(e) = ks.poll_event() {
            ks_events.push(e);
        }
        if moved {
            continue;
        }
        let next = gms
            .iter()
            .filter(|(_, g)| !g.is_registered())
            .filter_map(|(_, g)| g.poll_timeout())
            .chain(ks.poll_timeout())
            .min();
        match next {
            Some(t) if t <= until => {
                now = t.max(now);
                ks.handle_timeout(now);
                for (_, g) in gms.iter_mut() {
                    if !g.is_registered() {
                        g.handle_timeout(now);
                    }
                }
            }
            _ => break,
        }
    }
    (got, ks_events, gm_events)
}
