//! `gkm-server`: the GKM key server.
//!
//! Owns (DESIGN.md): configuration, start-up, the UDP 848 driver around the
//! key-server engine, the rekey scheduler, the COOP driver, metrics, and
//! mounting `gkm-web`. This build registers group members (main mode +
//! GROUPKEY-PULL) for the groups in its configuration file and keeps them
//! rekeyed (GROUPKEY-PUSH, ACKs, removal after 3 misses), persisting keys,
//! SEQ and the GM database in the data directory; the REST API and
//! dashboard land with their issues.

mod config;
mod gdoi;
mod keylog;
mod state;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use gkm_proto::ack_policy::AckOption;
use gkm_proto::crypto::{
    certificates_from_pem, CbcCipher, CertificateAuthority, RekeySigner, RsaSigner,
};
use gkm_proto::group::{GroupKeys, KekParams};
use gkm_proto::ks::{Authorization, KsConfig, KsGroup, KsLimits};
use gkm_proto::rekey::{RekeyPolicy, RekeyTransport};
use rand_core::OsRng;
use tracing::{info, warn};
use zeroize::Zeroizing;

use config::{prefix, ServerConfig, SignatureKind};

/// Command-line options; they override the configuration file.
#[derive(Debug, Parser)]
#[command(
    name = "gkm-server",
    version,
    about = "GKM group key server (GDOI, RFC 6407)"
)]
struct Args {
    /// Configuration file (TOML). Without one the server starts with no groups.
    #[arg(long, short, env = "GKM_CONFIG")]
    config: Option<PathBuf>,
    /// Address and port for GDOI (UDP). 848 is the registered GDOI port.
    #[arg(long, env = "GKM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the database, keys and logs.
    #[arg(long, env = "GKM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Write phase 1 keys and TEKs to this file for Wireshark. Secret material: off by default.
    #[arg(long, env = "GKM_KEYLOG")]
    key_log: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Creates `path` with mode 0600 and writes `data`; fails if it exists.
fn create_secret(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    Ok(())
}

/// Loads the rekey-signing key from the data directory, creating it (mode
/// 0600) on first run so that restarts keep the same key. RSA keys live in
/// `rekey-signing-key.pem`, ECDSA P-256 keys in `rekey-signing-key-p256.der`.
fn rekey_signer(data_dir: &Path, kind: SignatureKind) -> Result<RekeySigner> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let bad = |path: &Path, e: gkm_proto::crypto::SigError| anyhow!("{}: {e}", path.display());
    match kind {
        SignatureKind::Rsa => {
            let path = data_dir.join("rekey-signing-key.pem");
            if path.exists() {
                return RsaSigner::from_pkcs8_pem(&read(&path)?)
                    .map(|k| RekeySigner::Rsa(Box::new(k)))
                    .map_err(|e| bad(&path, e));
            }
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)
                .context("generating the rekey-signing key")?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .context("encoding the rekey-signing key")?;
            create_secret(&path, pem.as_bytes())?;
            info!(path = %path.display(), "generated the rekey-signing key (RSA 2048)");
            RsaSigner::from_pkcs8_pem(&pem)
                .map(|k| RekeySigner::Rsa(Box::new(k)))
                .map_err(|e| bad(&path, e))
        }
        SignatureKind::EcdsaP256 => {
            let path = data_dir.join("rekey-signing-key-p256.der");
            if path.exists() {
                let der = Zeroizing::new(std::fs::read(&path)?);
                return RekeySigner::ecdsa_p256_from_pkcs8(&der).map_err(|e| bad(&path, e));
            }
            let der = Zeroizing::new(
                RekeySigner::generate_ecdsa_p256_pkcs8().map_err(|e| bad(&path, e))?,
            );
            create_secret(&path, &der)?;
            info!(path = %path.display(), "generated the rekey-signing key (ECDSA P-256)");
            RekeySigner::ecdsa_p256_from_pkcs8(&der).map_err(|e| bad(&path, e))
        }
    }
}

/// What the key server starts with besides its engine configuration.
pub struct Startup {
    /// Engine configuration.
    pub ks: KsConfig,
    /// Policy fingerprint per group (persisted with its keys).
    pub policies: HashMap<u32, String>,
    /// Groups whose policy changed since their keys were persisted: they
    /// get a "rekey replace" at start.
    pub replace: Vec<u32>,
    /// Multicast rekey TTL per multicast group address.
    pub multicast_ttl: HashMap<Ipv4Addr, u8>,
}

fn build(
    cfg: &ServerConfig,
    identity: Ipv4Addr,
    data_dir: &Path,
    state: &state::StateDir,
    export_keys: bool,
) -> Result<Startup> {
    let mut psks = Vec::new();
    for (i, p) in cfg.psk.iter().enumerate() {
        let key = match (&p.key, &p.key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(f)) => read(f)?.trim_end().to_owned(),
            (None, None) => anyhow::bail!("psk[{i}]: no key"),
        };
        psks.push((
            prefix(&format!("psk[{i}].prefix"), &p.prefix)?,
            Zeroizing::new(key.into_bytes()),
        ));
    }
    let (ca, certificate) = match &cfg.pki {
        None => (None, None),
        Some(pki) => {
            let cas = certificates_from_pem(&read(&pki.ca)?).map_err(|e| anyhow!("pki.ca: {e}"))?;
            let ca = CertificateAuthority::new(&cas).map_err(|e| anyhow!("pki.ca: {e}"))?;
            let cert = certificates_from_pem(&read(&pki.cert)?)
                .map_err(|e| anyhow!("pki.cert: {e}"))?
                .remove(0);
            let key =
                RsaSigner::from_pkcs8_pem(&read(&pki.key)?).map_err(|e| anyhow!("pki.key: {e}"))?;
            (Some(ca), Some((cert, key)))
        }
    };
    let signer = rekey_signer(data_dir, cfg.rekey_signature)?;
    let spki = signer.public_spki_der().map_err(|e| anyhow!("{e}"))?;
    let spki_digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki));
    let mut groups = Vec::new();
    let mut policies = HashMap::new();
    let mut replace = Vec::new();
    let mut multicast_ttl = HashMap::new();
    for (i, g) in cfg.group.iter().enumerate() {
        let selectors = g
            .tek
            .iter()
            .enumerate()
            .map(|(j, t)| {
                Ok((
                    prefix(&format!("group[{i}].tek[{j}].src"), &t.src)?,
                    prefix(&format!("group[{i}].tek[{j}].dst"), &t.dst)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let r = &g.rekey;
        let transport = match g.rekey_address {
            Some(a) => {
                multicast_ttl.insert(a, r.multicast_ttl);
                RekeyTransport::Multicast {
                    group: SocketAddrV4::new(a, r.multicast_port),
                    ttl: r.multicast_ttl,
                }
            }
            None => RekeyTransport::Unicast {
                retransmits: r.retransmit_number,
                interval_ms: u64::from(r.retransmit_interval) * 1000,
            },
        };
        let rekey = RekeyPolicy {
            transport,
            ack: match &r.acknowledgement {
                Some(a) => a
                    .parse()
                    .map_err(|e| anyhow!("group[{i}].rekey.acknowledgement: {e}"))?,
                None => AckOption::default(),
            },
            tek_rekey_before_ms: u64::from(r.tek_rekey_before) * 1000,
            kek_rekey_before_ms: u64::from(r.kek_rekey_before) * 1000,
        };
        let kek_params = KekParams {
            src: identity,
            dst: g.rekey_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            port: r.multicast_port,
            lifetime_secs: g.kek_lifetime,
            cipher: CbcCipher::Aes128,
            sig_algorithm: signer.algorithm(),
            sig_key_spki: spki.clone(),
            sig_key_bits: signer.key_bits(),
        };
        // What the keys depend on: a change needs new keys and a rekey replace.
        let policy = format!(
            "teks={selectors:?};tek_life={};kek_life={};rekey_dst={};port={};sig={}",
            g.tek_lifetime, g.kek_lifetime, kek_params.dst, r.multicast_port, spki_digest
        );
        let fresh = GroupKeys::generate(
            &mut OsRng,
            g.identity,
            &selectors,
            g.tek_lifetime,
            Some(&kek_params),
        );
        let (keys, resume) = match state.load_group(g.identity)? {
            None => (fresh, None),
            Some(old) if old.policy == policy => {
                info!(group = %g.name, seq = old.state.keys.seq, "resuming persisted keys");
                (old.state.keys.clone(), Some(old.state))
            }
            Some(old) => {
                warn!(group = %g.name, "group policy changed since the keys were persisted: new keys, sent as a rekey replace at start");
                replace.push(g.identity);
                let mut previous = old.state.previous_teks.clone();
                previous.extend(
                    old.state
                        .keys
                        .teks
                        .iter()
                        .map(|t| (t.clone(), old.state.tek_expires_at)),
                );
                let keys = GroupKeys {
                    seq: old.state.keys.seq,
                    ..fresh
                };
                let now = gdoi::now_ms();
                let resume = gkm_proto::rekey::GroupState {
                    keys: keys.clone(),
                    push_kek: old.state.push_kek,
                    previous_teks: previous,
                    tek_expires_at: now + u64::from(g.tek_lifetime) * 1000,
                    kek_expires_at: now + u64::from(g.kek_lifetime) * 1000,
                    rekeys_sent: old.state.rekeys_sent,
                };
                (keys, Some(resume))
            }
        };
        policies.insert(g.identity, policy);
        let authorization = Authorization {
            addresses: g
                .authorization
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| prefix(&format!("group[{i}].authorization.addresses[{j}]"), a))
                .collect::<Result<_>>()?,
            identities: g.authorization.identities.clone(),
        };
        groups.push(KsGroup {
            name: g.name.clone(),
            keys,
            authorization,
            rekey,
            resume,
        });
    }
    let ks = KsConfig {
        identity,
        groups,
        psks,
        ca,
        certificate,
        asr9000: cfg
            .asr9000
            .iter()
            .enumerate()
            .map(|(i, a)| prefix(&format!("asr9000[{i}]"), a))
            .collect::<Result<_>>()?,
        limits: KsLimits::default(),
        max_phase1_life_secs: 86_400,
        export_keys,
        dh_backend: gkm_proto::crypto::DhBackend::Ring,
        rekey_signer: Some(signer),
        rekey_key_name: match cfg.rekey_signature {
            SignatureKind::Rsa => "rekey-signing-key.pem".into(),
            SignatureKind::EcdsaP256 => "rekey-signing-key-p256.der".into(),
        },
    };
    Ok(Startup {
        ks,
        policies,
        replace,
        multicast_ttl,
    })
}

// One thread: the GDOI engine is a single task, and a second worker
// thread only adds cross-thread wake-ups on a busy key server.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = match &args.config {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::default(),
    };
    let listen = args
        .listen
        .or(cfg.listen)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 848)));
    let data_dir = args
        .data_dir
        .clone()
        .or(cfg.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("gkm-data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let identity = cfg.identity.unwrap_or(match listen.ip() {
        IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => {
            if !cfg.group.is_empty() {
                warn!("identity not set while listening on all addresses: using 127.0.0.1 as the KS identity and rekey source; set `identity` in the configuration");
            }
            Ipv4Addr::LOCALHOST
        }
    });
    let key_log_path = args.key_log.clone().or(cfg.key_log.clone());
    let mut key_log = match &key_log_path {
        Some(p) => {
            warn!(path = %p.display(), "KEY LOG IS ON: phase 1 keys and TEKs are written to this file; anyone who reads it can decrypt group traffic");
            Some(keylog::KeyLog::open(p)?)
        }
        None => None,
    };
    let mut state = state::StateDir::open(&data_dir)?;
    let startup = build(&cfg, identity, &data_dir, &state, key_log.is_some())?;
    let members = state.load_gms()?;
    let ks_config = &startup.ks;
    if ks_config.groups.is_empty() {
        warn!("no groups configured: pass --config FILE (see docs/OPERATIONS.md); GMs will get INVALID-ID-INFORMATION");
    }
    if let Some(log) = key_log.as_mut() {
        for g in &ks_config.groups {
            log.teks(&g.keys)?;
        }
    }
    for g in &ks_config.groups {
        info!(group = %g.name, identity = g.keys.group_id, teks = g.keys.teks.len(), "serving group");
    }
    let socket = gdoi::bind(listen).await?;
    info!(listen = %socket.local_addr()?, data_dir = %data_dir.display(), "gkm-server {} serving GDOI", env!("CARGO_PKG_VERSION"));
    gdoi::run(socket, startup, members, state, key_log).await
}
