//! Cooperative key servers for the engine tests: key server `i` at
//! 10.0.0.i, its group keys drawn from its own generator (a secondary
//! must take its primary's), the group's GMs on the group PSK and each
//! peer key server on the pair PSK (COOP's credential).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_proto::crypto::RekeySigner;
use gkm_proto::ks::{
    Authorization, CoopGroupConfig, CoopPeerAuth, CoopPeerConfig, Credential, KsConfig, PskEntry,
};
use zeroize::Zeroizing;

use super::{ks_config, ks_group_life, ks_group_signed, prefix, GROUP};

/// The PSK every pair of key servers shares.
pub const PAIR_PSK: &[u8] = b"pair-psk-of-the-three-key-servers";
/// The group's PSK (its GMs' credential).
pub const GROUP_PSK: &[u8] = b"the-group-psk";
/// Primary refresh interval.
pub const REFRESH_MS: u64 = 10_000;
/// Secondary periodic check.
pub const CHECK_MS: u64 = 10_000;
/// Dead-peer threshold, in missed periods.
pub const DEAD_PERIODS: u8 = 3;

/// Key server `i`'s address, 10.0.0.i:848.
pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 848)
}

/// Key server `i`'s configuration: its address, and the group, whose
/// keys each key server makes on its own (a secondary must take its
/// primary's); all share the rekey-signing key, as docs/COOP.md asks.
pub fn coop_ks_config(i: u8) -> KsConfig {
    coop_ks_config_life(i, 3600)
}

/// As [`coop_ks_config`], the group's TEKs living `tek_life_secs`.
pub fn coop_ks_config_life(i: u8, tek_life_secs: u32) -> KsConfig {
    let mut cfg = ks_config(GROUP_PSK, Authorization::default());
    cfg.address = Ipv4Addr::new(10, 0, 0, i);
    cfg.groups = vec![ks_group_life(
        "GET",
        GROUP,
        10 + u64::from(i),
        Authorization::default(),
        tek_life_secs,
    )];
    cfg
}

/// As [`coop_ks_config_life`], rekeys signed with the process's ECDSA
/// P-256 key ([`super::ecdsa_rekey_pkcs8`]): ring signs in microseconds
/// where RSA-2048 takes milliseconds, for runs of thousands of rekeys.
pub fn coop_ks_config_ecdsa(i: u8, tek_life_secs: u32) -> KsConfig {
    let signer = RekeySigner::ecdsa_p256_from_pkcs8(super::ecdsa_rekey_pkcs8()).unwrap();
    let mut cfg = ks_config(GROUP_PSK, Authorization::default());
    cfg.address = Ipv4Addr::new(10, 0, 0, i);
    cfg.groups = vec![ks_group_signed(
        "GET",
        GROUP,
        10 + u64::from(i),
        Authorization::default(),
        tek_life_secs,
        &signer,
    )];
    cfg.rekey_signer = Some(signer);
    cfg
}

/// The PSK table: the group's GMs come from 10/8 with the group's own
/// PSK; each peer key server's address has the pair PSK.
pub fn coop_psks(peers: &[u8]) -> Vec<PskEntry> {
    std::iter::once(PskEntry {
        credential: Credential::GroupPsk(GROUP),
        ranges: vec![prefix("10.0.0.0/8").into()],
        key: Zeroizing::new(GROUP_PSK.to_vec()),
    })
    .chain(peers.iter().map(|&p| PskEntry {
        credential: Credential::CoopPeer(GROUP),
        ranges: vec![prefix(&format!("10.0.0.{p}/32")).into()],
        key: Zeroizing::new(PAIR_PSK.to_vec()),
    }))
    .collect()
}

/// Key server `i`'s COOP configuration with `peers`, each reached with `psk`.
pub fn coop_config(i: u8, priority: u8, peers: &[u8], psk: &[u8]) -> CoopGroupConfig {
    CoopGroupConfig {
        group_id: GROUP,
        priority,
        local_addr: addr(i).ip(),
        peers: peers
            .iter()
            .map(|&p| CoopPeerConfig {
                addr: addr(p),
                auth: CoopPeerAuth::Psk(Zeroizing::new(psk.to_vec())),
            })
            .collect(),
        refresh_ms: REFRESH_MS,
        check_ms: CHECK_MS,
        dead_periods: DEAD_PERIODS,
        persisted_epoch: 0,
        seq_start: 1,
    }
}
