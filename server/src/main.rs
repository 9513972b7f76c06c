//! `gkm-server`: the GKM key server.
//!
//! Owns (DESIGN.md): configuration, start-up, the UDP 848 driver around the
//! key-server engine (registration, rekeys, ACKs), the store writer, the
//! HTTP listener (REST API and dashboard from `gkm-web`, with its
//! connection limits), and the demo mode.

mod config;
mod conns;
mod control;
mod coop;
mod demo;
mod enrollment;
mod gdoi;
mod groups;
mod http;
mod keylog;
mod logthrottle;
mod metrics;
mod signing_key;
mod state;
mod syslog;
mod udp;
mod views;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use gkm_proto::crypto::{PkiCredentials, RekeySigner};
use gkm_proto::group::GroupKeys;
use gkm_proto::ks::{Credential, KsConfig, KsLimits, PskEntry};
use tracing::{info, warn};
use zeroize::Zeroizing;

use config::{ip_prefix, prefix, ServerConfig};

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
    /// Default [::]:848, one socket for IPv4 and IPv6 (0.0.0.0:848 on a
    /// host without IPv6).
    #[arg(long, env = "GKM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the database, keys and logs.
    #[arg(long, env = "GKM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: `sqlite://PATH` (default: gkm.db in the data directory) or `postgres://...`.
    #[arg(long, env = "GKM_DATABASE_URL", conflicts_with = "database_url_file")]
    database: Option<String>,
    /// A file holding the store URL (a PostgreSQL URL with its password,
    /// mounted from a secret).
    #[arg(long, env = "GKM_DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
    /// This key server's address (its phase 1 identity, rekey source and
    /// COOP address), in place of the file's `ks_address`: a pod's address
    /// from its orchestrator.
    #[arg(long, env = "GKM_KS_ADDRESS")]
    ks_address: Option<Ipv4Addr>,
    /// Its IPv6 address, in place of the file's `ks_address_v6`.
    #[arg(long, env = "GKM_KS_ADDRESS_V6")]
    ks_address_v6: Option<Ipv6Addr>,
    /// Address for the REST API (HTTP), default 127.0.0.1:8080.
    #[arg(long, env = "GKM_HTTP")]
    http: Option<SocketAddr>,
    /// Write phase 1 keys and TEKs to this file for Wireshark. Secret material: off by default.
    #[arg(long, env = "GKM_KEYLOG")]
    key_log: Option<PathBuf>,
    /// Demo: create group DEMO and run simulated GMs inside the server over
    /// loopback, with a rekey every 30 s, so the dashboard comes alive. Not
    /// for production (the demo group's PSK is public).
    #[arg(long)]
    demo: bool,
    /// Also serve `/metrics`, `/healthz` and `/readyz` without a token on
    /// this address (plain HTTP; for a scraper on a trusted network). On
    /// the API listener `/metrics` needs a token of role viewer or above.
    #[arg(long, env = "GKM_METRICS")]
    metrics: Option<SocketAddr>,
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, env = "GKM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Simulated GMs with --demo (1-250).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(1..=250))]
    demo_gms: u8,
    #[command(flatten)]
    web: http::HttpArgs,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line (tracing's JSON formatter).
    Json,
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

/// A group as the store holds it: policy, PSK, and persisted keys and SEQ.
pub struct StoredGroup {
    /// The group.
    pub group: gkm_store::model::Group,
    /// Its PSK.
    pub psk: Option<Zeroizing<String>>,
    /// Its keys and SEQ from the last run, taken when the engine is built.
    pub saved: Option<state::Resumed>,
    /// Its cooperative key servers, if any.
    pub coop: Option<coop::CoopLoaded>,
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
    /// Makes engine groups from the model (for groups changed at run time).
    pub maker: groups::KeyMaker,
    /// The configuration file's keyring.
    pub config_psks: Vec<PskEntry>,
    /// Each PSK group's key and the GM ranges it applies to.
    pub group_psks: HashMap<u32, PskEntry>,
    /// The groups with cooperative key servers: as stored, and as the
    /// engine is configured with them.
    pub coop: Vec<(coop::CoopLoaded, gkm_proto::ks::CoopGroupConfig)>,
    /// Each COOP group's pair PSK entries.
    pub coop_psks: HashMap<u32, Vec<PskEntry>>,
    /// The key server's own addresses (IPv4, IPv6).
    pub own: (Ipv4Addr, Option<Ipv6Addr>),
    /// The syslog collector, if configured.
    pub syslog: Option<SocketAddr>,
}

/// The PSK table the engine uses: the configuration file's keyring, then
/// each PSK group's key on its authorization ranges (any source when it
/// has none), then each COOP group's pair PSKs (each on its peer's
/// address), in group ID order.
pub fn psk_table(
    config: &[PskEntry],
    groups: &HashMap<u32, PskEntry>,
    coop: &HashMap<u32, Vec<PskEntry>>,
) -> Vec<PskEntry> {
    let mut ids: Vec<&u32> = groups.keys().collect();
    ids.sort();
    let mut coop_ids: Vec<&u32> = coop.keys().collect();
    coop_ids.sort();
    config
        .iter()
        .cloned()
        .chain(ids.into_iter().filter_map(|id| groups.get(id).cloned()))
        .chain(
            coop_ids
                .into_iter()
                .filter_map(|id| coop.get(id))
                .flatten()
                .cloned(),
        )
        .collect()
}

/// A group's entry for [`psk_table`]: only a group whose authentication is
/// `psk` has one (a certificate group's old PSK authenticates nothing).
pub fn group_psk(g: &gkm_store::model::Group, psk: &str) -> Option<PskEntry> {
    if !matches!(
        g.policy.authentication,
        gkm_store::model::Authentication::Psk { .. }
    ) {
        return None;
    }
    let ranges = g
        .policy
        .authorization
        .addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    Some(PskEntry {
        credential: Credential::GroupPsk(g.group_id),
        ranges,
        key: Zeroizing::new(psk.as_bytes().to_vec()),
    })
}

/// The key server's own addresses: its phase 1 identities (IPv4, and IPv6
/// for IPv6 peers) and rekey source.
#[derive(Debug, Clone, Copy)]
struct OwnAddresses {
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
}

fn build(
    cfg: &ServerConfig,
    own: OwnAddresses,
    signer: RekeySigner,
    export_keys: bool,
    stored: &mut [StoredGroup],
) -> Result<Startup> {
    let mut config_psks = Vec::new();
    for (i, p) in cfg.psk.iter().enumerate() {
        let key = match (&p.key, &p.key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(f)) => read(f)?.trim_end().to_owned(),
            (None, None) => anyhow::bail!("psk[{i}]: no key"),
        };
        config_psks.push(PskEntry {
            credential: Credential::Keyring(i),
            ranges: vec![ip_prefix(&format!("psk[{i}].prefix"), &p.prefix)?],
            key: Zeroizing::new(key.into_bytes()),
        });
    }
    let (ca, certificates) = match &cfg.pki {
        None => (None, Vec::new()),
        Some(pki) => {
            let PkiCredentials { ca, cert, key } =
                PkiCredentials::from_pem(&read(&pki.ca)?, &read(&pki.cert)?, &read(&pki.key)?)?;
            (Some(ca), vec![(cert, key)])
        }
    };
    let maker = groups::KeyMaker::new(own.v4, &signer)?;
    let mut ks_groups = Vec::new();
    let mut policies = HashMap::new();
    let mut replace = Vec::new();
    let mut multicast_ttl = HashMap::new();
    let mut group_psks = HashMap::new();
    let mut coop = Vec::new();
    let mut coop_psks = HashMap::new();
    for StoredGroup {
        group: g,
        psk,
        saved,
        coop: stored_coop,
    } in stored.iter_mut()
    {
        if let Some(l) = stored_coop.take() {
            let mut skipped = Vec::new();
            match coop::engine_config(
                g.group_id,
                &l,
                (own.v4, own.v6),
                cfg.pki.is_some(),
                gdoi::now_ms(),
                &mut skipped,
            ) {
                Ok((cfg, entries)) => {
                    for why in skipped {
                        warn!(group = %g.name, peer = %why, "COOP peer not reached");
                    }
                    coop_psks.insert(g.group_id, entries);
                    coop.push((l, cfg));
                }
                Err(e) => {
                    tracing::error!(group = %g.name, error = %format!("{e:#}"), "COOP not started")
                }
            }
        }
        let made = maker.make(&g.name, g.group_id, &g.policy)?;
        if let Some((a, ttl)) = made.multicast {
            multicast_ttl.insert(a, ttl);
        }
        if let Some(entry) = psk.as_deref().and_then(|k| group_psk(g, k)) {
            group_psks.insert(g.group_id, entry);
        }
        let mut group = made.group;
        let policy = made.fingerprint;
        let fresh = group.keys.clone();
        let (keys, resume) = match saved.take() {
            None => (fresh, None),
            Some(old) if old.policy == policy => {
                info!(group = %g.name, seq = old.state.keys.seq, "resuming persisted keys");
                (old.state.keys.clone(), Some(old.state))
            }
            Some(old) => {
                warn!(group = %g.name, "group policy changed since the keys were persisted: new keys, sent as a rekey replace at start");
                replace.push(g.group_id);
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
                let tek_life = g
                    .policy
                    .teks
                    .iter()
                    .map(|t| t.lifetime)
                    .min()
                    .unwrap_or(3600);
                let resume = gkm_proto::rekey::GroupState {
                    keys: keys.clone(),
                    push_kek: old.state.push_kek,
                    previous_teks: previous,
                    tek_expires_at: now + u64::from(tek_life) * 1000,
                    kek_expires_at: now + u64::from(g.policy.kek.lifetime) * 1000,
                    rekeys_sent: old.state.rekeys_sent,
                };
                (keys, Some(resume))
            }
        };
        policies.insert(g.group_id, policy);
        group.keys = keys;
        group.resume = resume;
        ks_groups.push(group);
    }
    let ks = KsConfig {
        address: own.v4,
        address_v6: own.v6,
        groups: ks_groups,
        psks: psk_table(&config_psks, &group_psks, &coop_psks),
        ca,
        certificates,
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
        rekey_key_name: signing_key::signing_key_name(cfg.rekey_signature).into(),
    };
    Ok(Startup {
        ks,
        policies,
        replace,
        multicast_ttl,
        maker,
        config_psks,
        group_psks,
        coop,
        coop_psks,
        own: (own.v4, own.v6),
        syslog: cfg.syslog,
    })
}

/// Creates the data directory mode 0700, or narrows an existing one to
/// 0700 (it holds the master key and, by default, the database).
fn private_data_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 0700)", dir.display()))?;
        warn!(dir = %dir.display(), was = format!("{mode:o}"), "data directory was open to other users: now 0700");
    }
    Ok(())
}

/// Narrows a SQLite store's database, WAL and shared-memory files to 0600
/// (an earlier version or another umask may have made them wider).
fn private_sqlite_files(url: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(p) => p,
        None if !url.contains("://") => url,
        None => return Ok(()),
    };
    let path = path.split('?').next().unwrap_or(path);
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{path}{suffix}"));
        if let Ok(m) = std::fs::metadata(&f) {
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private (chmod 0600)", f.display()))?;
            }
        }
    }
    Ok(())
}

/// On first start (no API token yet), creates the bootstrap admin token and
/// writes it to `admin-token` in the data directory, mode 0600.
async fn bootstrap_token(store: &dyn gkm_store::Store, data_dir: &Path) -> Result<()> {
    if !store.tokens().await?.is_empty() {
        return Ok(());
    }
    let (secret, hash) = gkm_web::auth::new_token().map_err(|p| anyhow!(p.detail))?;
    let path = data_dir.join("admin-token");
    let _ = std::fs::remove_file(&path);
    create_secret(&path, format!("{secret}\n").as_bytes())?;
    store
        .create_token(
            &gkm_store::Actor("bootstrap".into()),
            "admin",
            gkm_store::model::Role::Admin,
            &hash,
            None,
        )
        .await?;
    info!(path = %path.display(), "created the bootstrap admin API token (role admin); gkmctl reads it from there");
    Ok(())
}

/// Groups of the configuration file enter the store the first time they
/// are seen; afterwards the store (the API) is the source of truth.
async fn import_config_groups(store: &dyn gkm_store::Store, cfg: &ServerConfig) -> Result<()> {
    for g in &cfg.group {
        let known = store.group(&g.name).await?.is_some()
            || store.group_by_group_id(g.group_id).await?.is_some();
        if known {
            continue;
        }
        let policy = groups::policy_from_config(g)?;
        store
            .create_group(
                &gkm_store::Actor("config".into()),
                &g.name,
                g.group_id,
                &policy,
            )
            .await?;
        info!(group = %g.name, group_id = g.group_id, "group imported from the configuration file");
    }
    Ok(())
}

/// Two runtimes: the GDOI engine runs alone on the main thread (one
/// task: a second worker would only add cross-thread wake-ups on a busy
/// key server), the REST API and the store on their own two-thread runtime,
/// so neither waits for the other; they talk over channels.
fn main() -> Result<()> {
    let api = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gkm-api")
        .enable_all()
        .build()
        .context("starting the API runtime")?;
    let gdoi_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the GDOI runtime")?;
    gdoi_rt.block_on(serve(api.handle().clone()))
}

async fn serve(api: tokio::runtime::Handle) -> Result<()> {
    // Take over SIGUSR1/SIGUSR2 (rekey now / replace) before anything else:
    // their default action terminates the process, and tokio keeps its
    // handler installed for the life of the process, so one arriving during
    // start-up is ignored instead of killing the server; the GDOI loop
    // listens for them once it runs. SIGTERM keeps its default until then.
    {
        use tokio::signal::unix::{signal, SignalKind};
        for kind in [SignalKind::user_defined1(), SignalKind::user_defined2()] {
            drop(signal(kind).context("installing signal handlers")?);
        }
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    // Everything the server creates (database, WAL, key log, secrets) is
    // its own: no group or other access.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let fd_limit = http::raise_nofile_limit();
    let own_override = config::OwnOverride {
        v4: args.ks_address,
        v6: args.ks_address_v6,
    };
    let cfg = match &args.config {
        Some(p) => ServerConfig::load(p, own_override)?,
        None => ServerConfig {
            ks_address: own_override.v4,
            ks_address_v6: own_override.v6,
            ..ServerConfig::default()
        },
    };
    let listen = args.listen.or(cfg.listen);
    let listen_ip = listen.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |l| l.ip());
    let data_dir = args
        .data_dir
        .clone()
        .or(cfg.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("gkm-data"));
    private_data_dir(&data_dir)?;
    let ks_address_v6 = cfg.ks_address_v6.or(match listen_ip {
        IpAddr::V6(a) if !a.is_unspecified() && a.to_ipv4_mapped().is_none() => Some(a),
        _ => None,
    });
    let ks_address = cfg.ks_address.unwrap_or_else(|| match listen_ip {
        IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => {
            if !cfg.group.is_empty() {
                warn!("ks_address not set while listening on all addresses: using 127.0.0.1 as the KS address (its phase 1 identity and rekey source); set `ks_address` in the configuration");
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
    let db_url_file = match &args.database_url_file {
        Some(f) => Some(read(f)?.trim_end().to_owned()),
        None => None,
    };
    let db_url = args
        .database
        .clone()
        .or(db_url_file)
        .or(cfg.database.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("gkm.db").display()));
    let (master, created) = gkm_store::seal::MasterKey::load(&data_dir)?;
    if let Some(path) = created {
        info!(path = %path.display(), "generated the master key that seals keys and PSKs at rest; back it up");
    }
    // The store lives on the API runtime (its connections belong to that reactor).
    let kind = cfg.rekey_signature;
    let signing_key_file = cfg.rekey_signing_key.clone();
    let enroll_cfg = cfg.enrollment.clone();
    let (store, mut stored, members, signer, enroll) = {
        let data_dir = data_dir.clone();
        let demo = args.demo;
        let groups_cfg = ServerConfig {
            group: cfg.group.clone(),
            ..ServerConfig::default()
        };
        api.spawn(async move {
            let store = gkm_store::open(&db_url, master)
                .await
                .with_context(|| format!("cannot open the store {db_url}"))?;
            private_sqlite_files(&db_url)?;
            info!(backend = ?store.kind(), "store open");
            bootstrap_token(store.as_ref(), &data_dir).await?;
            http::bootstrap_admin_password(
                store.as_ref(),
                &data_dir,
                std::env::var("GKM_ADMIN_PASSWORD").ok(),
            )
            .await?;
            import_config_groups(store.as_ref(), &groups_cfg).await?;
            if demo {
                demo::prepare(store.as_ref()).await?;
            }
            let mut stored = Vec::new();
            for g in store.groups().await? {
                let psk = store.group_psk(&g.name).await?;
                let saved = match store.secret(&state::secret_name(g.group_id)).await? {
                    Some(plain) => Some(state::decode_group(g.group_id, &plain)?),
                    None => None,
                };
                let coop = coop::load(store.as_ref(), &g).await?;
                stored.push(StoredGroup {
                    group: g,
                    psk,
                    saved,
                    coop,
                });
            }
            let mut members = Vec::new();
            for row in store.live_gms().await? {
                match state::gm_record(&row) {
                    Ok(r) => members.push(r),
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "GM row not restored: it registers again when its keys run out")
                    }
                }
            }
            let signer =
                signing_key::rekey_signer(store.as_ref(), &data_dir, kind, signing_key_file.as_deref()).await?;
            let enroll = enrollment::setup(store.as_ref(), &enroll_cfg, ks_address).await?;
            Ok::<_, anyhow::Error>((store, stored, members, signer, enroll))
        })
        .await
        .context("the API runtime stopped")??
    };
    let own = OwnAddresses {
        v4: ks_address,
        v6: ks_address_v6,
    };
    let mut startup = build(&cfg, own, signer, key_log.is_some(), &mut stored)?;
    // Phase 1 also trusts the internal CA, and answers ECDSA-256 with the
    // key server's certificate from it (unless [pki] has a P-256 one).
    let mut anchors = match &cfg.pki {
        Some(p) => gkm_proto::crypto::certificates_from_pem(&read(&p.ca)?)?,
        None => Vec::new(),
    };
    anchors.push(enroll.ca.cert_der().to_vec());
    startup.ks.ca = Some(gkm_proto::crypto::CertificateAuthority::new(&anchors)?);
    let ecdsa = gkm_proto::crypto::KeyKind::EcdsaP256;
    if !startup
        .ks
        .certificates
        .iter()
        .any(|(_, k)| k.kind() == ecdsa)
    {
        startup.ks.certificates.push(enroll.own);
    }
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
        info!(group = %g.name, group_id = g.keys.group_id, teks = g.keys.teks.len(), "serving group");
    }
    let socket = match listen {
        Some(addr) => udp::bind(addr).await?,
        None => udp::bind_default(848).await?,
    };
    info!(listen = %socket.local_addr()?, data_dir = %data_dir.display(), "gkm-server {} serving GDOI", env!("CARGO_PKG_VERSION"));
    let http = args
        .http
        .or(cfg.http)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (write_tx, write_rx) = tokio::sync::mpsc::unbounded_channel();
    let control = std::sync::Arc::new(control::ControlHandle {
        tx: cmd_tx,
        store: store.clone(),
    });
    args.web.check_listen(http)?;
    if args.demo {
        let engine: std::sync::Arc<dyn gkm_web::Control> = control.clone();
        api.spawn(demo::run(
            socket.local_addr()?,
            args.demo_gms,
            engine,
            store.clone(),
        ));
    }
    let agents_control: std::sync::Arc<dyn gkm_web::Control> = control.clone();
    let mut api_state = gkm_web::ApiState::new(store.clone(), control).with_enrollment(
        gkm_web::enroll::Enrollment {
            ca: enroll.ca,
            key_servers: vec![SocketAddr::new(
                IpAddr::V4(ks_address),
                socket.local_addr()?.port(),
            )],
            cert_validity: cfg.enrollment.cert_validity()?,
        },
    );
    api.spawn(enrollment::keep_engine_current(agents_control));
    api_state.metrics = std::sync::Arc::new(gkm_web::metrics::HttpMetrics::with_agent_silent_secs(
        args.web.agent_silent_secs,
    )?);
    let metrics = std::sync::Arc::new(metrics::Metrics::new(env!("CARGO_PKG_VERSION"))?);
    if let Some(addr) = args.metrics {
        // Bound here (an error stops the start), served on the API runtime.
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        listener.set_nonblocking(true)?;
        info!(metrics = %listener.local_addr()?, "serving /metrics, /healthz and /readyz without a token");
        let open = gkm_web::metrics::open_router(api_state.clone())
            .merge(gkm_web::health::router(api_state.clone()));
        api.spawn(async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => axum::serve(l, open).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let dashboard = gkm_web::dashboard::Dashboard {
        api: api_state.clone(),
        sessions: std::sync::Arc::new(gkm_web::session::Sessions::new(
            i64::from(args.web.session_idle_secs) * 1000,
            i64::from(args.web.session_max_secs) * 1000,
        )),
        oidc: args.web.oidc(http)?,
        secure_cookies: args.web.tls(),
        signin: std::sync::Arc::new(gkm_web::signin::SignIn::new().map_err(|p| anyhow!(p.detail))?),
    };
    let router = gkm_web::api::router(api_state.clone())
        .merge(gkm_web::dashboard::router(dashboard))
        .merge(gkm_web::metrics::router(api_state.clone()))
        .merge(gkm_web::health::router(api_state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            api_state,
            gkm_web::metrics::track,
        ));
    let listener = std::net::TcpListener::bind(http)
        .with_context(|| format!("cannot listen for HTTP on {http}: pass --http ADDR:PORT"))?;
    let scheme = if args.web.tls() { "https" } else { "http" };
    let bound = listener.local_addr()?;
    info!(http = %bound, "serving the REST API at /api/v1");
    info!("dashboard at {scheme}://{bound}/ (user admin; password in the data directory's admin-password)");
    let limits = args.web.limits(fd_limit);
    info!(
        max_connections = limits.max_connections,
        header_timeout_secs = limits.header_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        "HTTP connection limits"
    );
    let web_args = args.web.clone();
    api.spawn(async move {
        if let Err(e) = http::serve(listener, router, &web_args, limits).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    api.spawn(control::store_writer(
        store.clone(),
        write_rx,
        metrics.clone(),
    ));
    gdoi::run(
        socket,
        startup,
        members,
        key_log,
        gdoi::Channels {
            commands: cmd_rx,
            writes: write_tx,
        },
        metrics,
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_apis_psk_group_bound_is_the_engines_candidate_bound() {
        assert_eq!(
            gkm_web::ops::MAX_PSK_GROUPS_PER_SOURCE,
            gkm_proto::ks::MAX_PSK_CANDIDATES
        );
    }
}
