//! `gkm-server`: the GKM key server.
//!
//! Owns (DESIGN.md): configuration, start-up, the UDP 848 driver around the
//! key-server engine, the rekey scheduler, the COOP driver, metrics, and
//! mounting `gkm-web`. This build registers group members (main mode +
//! GROUPKEY-PULL) for the groups in its configuration file; the REST API,
//! dashboard and rekeying land with their issues.

mod config;
mod gdoi;
mod keylog;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use gkm_proto::crypto::{certificates_from_pem, CertificateAuthority, RsaSigner};
use gkm_proto::group::GroupKeys;
use gkm_proto::ks::{Authorization, KsConfig, KsGroup, KsLimits};
use rand_core::OsRng;
use tracing::{info, warn};
use zeroize::Zeroizing;

use config::{prefix, ServerConfig};

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

/// Loads the rekey-signing key from the data directory, creating it (mode
/// 0600) on first run so that restarts keep the same key.
fn rekey_signer(data_dir: &Path) -> Result<RsaSigner> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let path = data_dir.join("rekey-signing-key.pem");
    if path.exists() {
        return RsaSigner::from_pkcs8_pem(&read(&path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let key =
        rsa::RsaPrivateKey::new(&mut OsRng, 2048).context("generating the rekey-signing key")?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the rekey-signing key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, pem.as_bytes())?;
    info!(path = %path.display(), "generated the rekey-signing key (RSA 2048)");
    RsaSigner::from_pkcs8_pem(&pem).map_err(|e| anyhow::anyhow!("{e}"))
}

fn build(
    cfg: &ServerConfig,
    identity: Ipv4Addr,
    data_dir: &Path,
    export_keys: bool,
) -> Result<KsConfig> {
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
            let cas = certificates_from_pem(&read(&pki.ca)?)
                .map_err(|e| anyhow::anyhow!("pki.ca: {e}"))?;
            let ca = CertificateAuthority::new(&cas).map_err(|e| anyhow::anyhow!("pki.ca: {e}"))?;
            let cert = certificates_from_pem(&read(&pki.cert)?)
                .map_err(|e| anyhow::anyhow!("pki.cert: {e}"))?
                .remove(0);
            let key = RsaSigner::from_pkcs8_pem(&read(&pki.key)?)
                .map_err(|e| anyhow::anyhow!("pki.key: {e}"))?;
            (Some(ca), Some((cert, key)))
        }
    };
    let signer = rekey_signer(data_dir)?;
    let spki = signer
        .public_spki_der()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bits = u16::try_from(signer.modulus_bits()).unwrap_or(u16::MAX);
    let mut groups = Vec::new();
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
        let keys = GroupKeys::generate(
            &mut OsRng,
            g.identity,
            &selectors,
            g.tek_lifetime,
            Some((
                identity,
                g.rekey_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                g.kek_lifetime,
                spki.clone(),
                bits,
            )),
        );
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
        });
    }
    Ok(KsConfig {
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
    let ks_config = build(&cfg, identity, &data_dir, key_log.is_some())?;
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
    gdoi::run(socket, ks_config, key_log).await
}
