//! `gkm-agent`: the GKM group member.
//!
//! Owns (DESIGN.md): the UDP driver around the group-member engine, the
//! encrypting dataplane it starts ([`gkm_agent::dataplane`]) and keys
//! ([`gkm_agent::session`]), the local status socket and health reports
//! to the controller. It registers (main mode + GROUPKEY-PULL) to its key
//! servers in order, takes and acknowledges rekeys (unicast on its socket,
//! multicast on the group's address), re-registers when no rekey comes,
//! and prints what it holds.

mod enroll;
mod membership;
mod metrics;
mod net;
mod report;
mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use gkm_agent::{dataplane, session};
use gkm_dataplane::tunnel::Tunnel;
use gkm_model::clock::unix_ms as now_ms;
use gkm_model::health::{GroupReplay, ReplayCounters, WindowSource};
use gkm_model::D3pWindow;
use gkm_proto::crypto::PkiCredentials;
use gkm_proto::gm::{CertAuth, GmAuth, GmConfig, GmEvent, GmIdentity, GroupMember};
use gkm_proto::group::IpPrefix;
use rand_core::OsRng;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// Command-line options; each overrides the same key of the file.
#[derive(Debug, Parser)]
#[command(name = "gkm-agent", version, about = "GKM group member agent")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// `enroll` or `renew` (without one: run as a group member).
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Run with what `gkm-agent enroll` saved in this directory: its
    /// certificate and name, key servers and health reports to the
    /// controller (flags and the file override each).
    #[arg(long, env = "GKM_AGENT_ENROLLMENT")]
    enrollment: Option<PathBuf>,
    /// With --enrollment: renew the certificate when fewer than this many
    /// days of its validity are left (checked at start and hourly; 1-365).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=365))]
    renew_before_days: u64,
    /// Configuration file (TOML).
    #[arg(long, short, env = "GKM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines (on standard error) as text or one JSON object per line.
    #[arg(long, env = "GKM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Key servers, in order of preference (repeat the flag).
    #[arg(long = "key-server")]
    key_servers: Vec<SocketAddr>,
    /// A key server to offer phase 1 in the IPsec DOI (1) instead of
    /// GDOI's (2), for peers that want it (repeat the flag).
    #[arg(long = "ipsec-doi-key-server")]
    ipsec_doi_key_servers: Vec<SocketAddr>,
    /// A key server also offered the legacy phase 1 suites (HMAC-SHA-1,
    /// MODP 1024/1536) after the strong ones, for a peer that has nothing
    /// stronger (repeat the flag; docs/INTEROP.md).
    #[arg(long = "legacy-phase1-key-server")]
    legacy_phase1_key_servers: Vec<SocketAddr>,
    /// Group identity number.
    #[arg(long)]
    group: Option<u32>,
    /// Local address to send from (its IPv4 address is the phase 1 identity).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Pre-shared key.
    #[arg(long, env = "GKM_PSK", hide_env_values = true)]
    psk: Option<String>,
    /// Sender IDs to request.
    #[arg(long)]
    sender_ids: Option<u16>,
    /// Local IP-D3P window override, `sec S` (1-100) or `msec M` (100-10000).
    #[arg(long = "client-d3p-window")]
    client_d3p_window: Option<D3pWindow>,
    /// Register once, print a summary line, and exit (for scripts and health checks).
    #[arg(long)]
    once: bool,
    /// With --once: give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The group's name in the status (default: its identity number).
    #[arg(long)]
    group_name: Option<String>,
    /// Local status socket (default /run/gkm-agent/GROUP.sock).
    #[arg(long)]
    status_socket: Option<PathBuf>,
    /// Run the encrypting dataplane (TUN device, ESP; needs root).
    #[arg(long)]
    dataplane: bool,
    /// Dataplane: protected destination prefixes routed into the TUN
    /// device before the first registration (fail-close); the TEKs'
    /// destinations are added when keys arrive.
    #[arg(long = "protect")]
    protect: Vec<String>,
    /// Dataplane: TUN device name (default gkm0).
    #[arg(long)]
    tun_name: Option<String>,
    /// Dataplane: send protected traffic in clear until registered (fail-open).
    #[arg(long)]
    fail_open: bool,
    /// Dataplane: TUN queues, each with its own encrypting thread (1-16;
    /// default: the number of CPUs, at most 4).
    #[arg(long)]
    tun_queues: Option<u32>,
    /// Serve the agent's own Prometheus metrics at `http://ADDR/metrics`
    /// (no token: a loopback or management address). Off by default.
    #[arg(long, env = "GKM_AGENT_METRICS")]
    metrics: Option<SocketAddr>,
    /// Report health to the controller at this URL (`https://host:port`).
    #[arg(long)]
    report_url: Option<String>,
    /// File holding the bearer token (role agent) for health reports.
    #[arg(long)]
    report_token_file: Option<PathBuf>,
    /// Seconds between health reports (1-3600, default 30).
    #[arg(long)]
    report_interval: Option<u64>,
    /// PEM trust anchors for the controller's certificate (a private CA).
    #[arg(long)]
    report_ca: Option<PathBuf>,
    /// Testing only: shift the dataplane's clock (IP-D3P stamps and checks)
    /// by this many ms. Only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, allow_hyphen_values = true)]
    test_clock_offset_ms: Option<i64>,
}

/// What the agent does besides running.
#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Enroll with a setup key: make a key pair, get a certificate and an
    /// agent token from the controller, save them (docs/OPERATIONS.md).
    Enroll(enroll::EnrollArgs),
    /// Renew the enrolled certificate (with the agent's token; a new key).
    Renew {
        /// The state directory `enroll` wrote.
        #[arg(long, default_value = "/var/lib/gkm-agent")]
        state_dir: PathBuf,
    },
}

/// A per-key-server setting's list: the flags' when given, else the
/// file's; each address must be one of the key servers.
fn key_server_subset(
    field: &str,
    flags: &[SocketAddr],
    file: Option<&[SocketAddr]>,
    key_servers: &[SocketAddr],
) -> Result<Vec<SocketAddr>> {
    let v = if flags.is_empty() {
        file.unwrap_or_default().to_vec()
    } else {
        flags.to_vec()
    };
    if let Some(a) = v.iter().find(|a| !key_servers.contains(a)) {
        bail!("{field}: {a} is not one of the key servers");
    }
    Ok(v)
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentConfig {
    key_servers: Option<Vec<SocketAddr>>,
    ipsec_doi_key_servers: Option<Vec<SocketAddr>>,
    legacy_phase1_key_servers: Option<Vec<SocketAddr>>,
    group: Option<u32>,
    bind: Option<SocketAddr>,
    psk: Option<String>,
    psk_file: Option<PathBuf>,
    pki: Option<Pki>,
    sender_ids: Option<u16>,
    /// Seconds before TEK expiry to re-register when no rekey came (default 60).
    reregister_before: Option<u64>,
    client_d3p_window: Option<String>,
    group_name: Option<String>,
    status_socket: Option<PathBuf>,
    dataplane: Option<DataplaneFile>,
    report: Option<ReportFile>,
    /// From `--enrollment DIR`, never from the file.
    #[serde(skip)]
    enrolled: Option<enroll::Enrolled>,
}

/// The configuration file's `[report]` section: health reports to the
/// controller.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    url: Option<String>,
    token_file: Option<PathBuf>,
    interval: Option<u64>,
    ca: Option<PathBuf>,
    insecure_http: Option<bool>,
}

/// The configuration file's `[dataplane]` section: present means on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataplaneFile {
    device: Option<String>,
    protect: Option<Vec<String>>,
    fail_close: Option<bool>,
    queues: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

/// The dataplane's settings and its fail-close prefixes from the flags and
/// the file, checked before anything is bound or created; `None` when the
/// dataplane is off (or with `--once`).
fn dataplane_settings(
    args: &Args,
    file: &AgentConfig,
) -> Result<Option<(dataplane::Settings, Vec<IpPrefix>)>> {
    if !(args.dataplane || file.dataplane.is_some()) || args.once {
        return Ok(None);
    }
    let section = file.dataplane.as_ref();
    let default = dataplane::Settings::default();
    let settings = dataplane::Settings {
        device: args
            .tun_name
            .clone()
            .or(section.and_then(|d| d.device.clone()))
            .unwrap_or_else(|| default.device.clone()),
        fail_close: !args.fail_open && section.and_then(|d| d.fail_close).unwrap_or(true),
        queues: match args.tun_queues.or(section.and_then(|d| d.queues)) {
            Some(q) => dataplane::queues(q)?,
            None => default.queues,
        },
        ..default
    };
    let protect = args
        .protect
        .iter()
        .chain(
            section
                .and_then(|d| d.protect.as_ref())
                .into_iter()
                .flatten(),
        )
        .map(|p| {
            p.parse::<IpPrefix>()
                .map_err(|e| anyhow!("protect {p:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((settings, protect)))
}

/// Health report settings from the flags, the file and `GKM_AGENT_TOKEN`,
/// checked at start-up; `None` when no report URL is set (or `--once`).
fn report_settings(args: &Args, file: &AgentConfig) -> Result<Option<report::Settings>> {
    let section = file.report.as_ref();
    let Some(url) = args
        .report_url
        .clone()
        .or(section.and_then(|r| r.url.clone()))
    else {
        if section.is_some() {
            bail!("report: give url (the controller's https://host:port)");
        }
        return Ok(None);
    };
    if args.once {
        return Ok(None);
    }
    let token = match (
        args.report_token_file
            .as_ref()
            .or(section.and_then(|r| r.token_file.as_ref())),
        std::env::var("GKM_AGENT_TOKEN"),
    ) {
        (Some(f), _) => Zeroizing::new(read(f)?.trim().to_owned()),
        (None, Ok(t)) => Zeroizing::new(t.trim().to_owned()),
        (None, Err(_)) => {
            bail!("report: give token_file (--report-token-file) or GKM_AGENT_TOKEN")
        }
    };
    report::Settings::new(
        &url,
        token,
        args.report_interval
            .or(section.and_then(|r| r.interval))
            .unwrap_or(report::DEFAULT_INTERVAL_SECS),
        args.report_ca
            .clone()
            .or(section.and_then(|r| r.ca.clone())),
        section.and_then(|r| r.insecure_http).unwrap_or(false),
    )
    .map(Some)
}

/// TEST ONLY shift of the dataplane clock (`--test-clock-offset-ms`).
#[cfg(feature = "test-hooks")]
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The dataplane's clock: wall-clock ms, shifted only in test builds.
#[cfg(feature = "test-hooks")]
fn dataplane_now_ms() -> u64 {
    now_ms().saturating_add_signed(CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// The dataplane's clock: wall-clock ms.
#[cfg(not(feature = "test-hooks"))]
fn dataplane_now_ms() -> u64 {
    now_ms()
}

fn gm_config(args: &Args, file: &AgentConfig) -> Result<(GmConfig, SocketAddr, Option<D3pWindow>)> {
    let key_servers = if args.key_servers.is_empty() {
        file.key_servers.clone().unwrap_or_default()
    } else {
        args.key_servers.clone()
    };
    if key_servers.is_empty() {
        bail!("key_servers: give at least one key server (--key-server ADDR:PORT)");
    }
    let ipsec_doi_key_servers = key_server_subset(
        "ipsec_doi_key_servers",
        &args.ipsec_doi_key_servers,
        file.ipsec_doi_key_servers.as_deref(),
        &key_servers,
    )?;
    let legacy_phase1_key_servers = key_server_subset(
        "legacy_phase1_key_servers",
        &args.legacy_phase1_key_servers,
        file.legacy_phase1_key_servers.as_deref(),
        &key_servers,
    )?;
    let group_id = args
        .group
        .or(file.group)
        .ok_or_else(|| anyhow!("group: the group identity number is required (--group N)"))?;
    let bind = args
        .bind
        .or(file.bind)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 848)));
    let client_d3p_window = match (&args.client_d3p_window, &file.client_d3p_window) {
        (Some(w), _) => Some(*w),
        (None, Some(s)) => Some(
            s.parse::<D3pWindow>()
                .map_err(|e| anyhow!("client_d3p_window: {e}"))?,
        ),
        (None, None) => None,
    };
    let identity_addr = match bind.ip() {
        a if !a.is_unspecified() => a,
        // Bound to all addresses: the phase 1 ID is the address the host
        // uses to reach the first key server (what the KS will see).
        _ => net::route_source(key_servers[0]).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    let psk = match (&args.psk, &file.psk, &file.psk_file) {
        (Some(k), _, _) | (None, Some(k), _) => Some(k.clone()),
        (None, None, Some(f)) => Some(read(f)?.trim_end().to_owned()),
        _ => None,
    };
    let (auth, identity) = match (psk, &file.pki, &file.enrolled) {
        (None, None, Some(e)) => (
            GmAuth::Certificate(Box::new(CertAuth {
                cert: e.cert.clone(),
                key: e.key.clone(),
                ca: e.ca.clone(),
            })),
            GmIdentity::Fqdn(e.name.clone()),
        ),
        (_, _, Some(_)) => bail!("--enrollment and psk or pki: use one"),
        (Some(k), None, None) if !k.is_empty() => (
            GmAuth::Psk(Zeroizing::new(k.into_bytes())),
            match identity_addr {
                IpAddr::V4(a) => GmIdentity::Ipv4(a),
                IpAddr::V6(a) => GmIdentity::Ipv6(a),
            },
        ),
        (None, Some(pki), None) => {
            let PkiCredentials { ca, cert, key } =
                PkiCredentials::from_pem(&read(&pki.ca)?, &read(&pki.cert)?, &read(&pki.key)?)?;
            let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
                .map_err(|_| anyhow!("pki.cert: not X.509"))?;
            let dn = parsed.subject().as_raw().to_vec();
            (
                GmAuth::Certificate(Box::new(CertAuth { cert, key, ca })),
                GmIdentity::Dn(dn),
            )
        }
        (Some(_), Some(_), None) => {
            bail!("psk and pki: configure exactly one authentication method")
        }
        _ => bail!("psk: give a pre-shared key (--psk, psk, psk_file) or a [pki] section"),
    };
    Ok((
        GmConfig {
            key_servers,
            ipsec_doi_key_servers,
            legacy_phase1_key_servers,
            phase1_suites: None,
            group_id,
            identity,
            auth,
            phase1_life_secs: 86_400,
            sender_ids: args.sender_ids.or(file.sender_ids).unwrap_or(0),
            reregister_before_ms: file.reregister_before.unwrap_or(60) * 1000,
            retransmit_initial_ms: 1000,
            max_transmissions: 4,
            initial_contact: true,
            ack_address: Some(identity_addr),
            multicast_ack_jitter_ms: 500,
            extra_vendor_ids: Vec::new(),
            dh_backend: gkm_proto::crypto::DhBackend::Ring,
        },
        bind,
        client_d3p_window,
    ))
}

/// How the agent writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if args.log_format == LogFormat::Json {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Some(cmd) = &args.command {
        return enroll::run(cmd);
    }
    let mut file = match &args.config {
        Some(p) => toml::from_str(&read(p)?).map_err(|e| anyhow!("config {}: {e}", p.display()))?,
        None => AgentConfig::default(),
    };
    if let Some(dir) = &args.enrollment {
        enroll::apply(&mut file, dir)?;
    }
    let (mut cfg, bind, d3p) = gm_config(&args, &file)?;
    let dp_settings = dataplane_settings(&args, &file)?;
    let report = report_settings(&args, &file)?;
    let identity = cfg.identity.shown();
    let dataplane_on = dp_settings.is_some();
    if dataplane_on && args.sender_ids.or(file.sender_ids).is_none() {
        // One KS-assigned sender ID keeps this sender's ESP IVs apart from
        // every other GM's under the shared key (gkm_dataplane::esp).
        cfg.sender_ids = 1;
    }
    #[cfg(feature = "test-hooks")]
    if let Some(off) = args.test_clock_offset_ms {
        warn!(offset_ms = off, "TEST ONLY: the dataplane clock is shifted");
        CLOCK_OFFSET_MS.store(off, std::sync::atomic::Ordering::Relaxed);
    }
    let group = cfg.group_id;
    let socket = UdpSocket::bind(bind).await.map_err(|e| {
        anyhow!("cannot bind UDP {bind}: {e}; ports below 1024 need root (or pass --bind ADDR:0)")
    })?;
    if let Some(w) = d3p {
        info!(window = %w, "client d3p window override set");
    }
    // A packet thread that stops ends the agent (see dataplane::ThreadFailures).
    let (dp_failed, mut dp_stopped) = tokio::sync::mpsc::unbounded_channel();
    let mut dp = if let Some((settings, protect)) = dp_settings {
        socket2::SockRef::from(&socket).set_mark(settings.fwmark)?;
        let devs = dataplane::tun(&settings)?;
        let mut routes = dataplane::Routes::new(&settings)?;
        if settings.fail_close {
            routes.protect(&protect)?;
        }
        let esp = dataplane::esp_sockets(settings.fwmark)?;
        let t: dataplane::SharedTunnel =
            std::sync::Arc::new(std::sync::Mutex::new(Tunnel::default()));
        let io = t.clone();
        let queues = devs.len();
        dataplane::spawn(devs, esp, io, dataplane_now_ms, &dp_failed)?;
        info!(device = %settings.device, fail_close = settings.fail_close, queues, "dataplane on");
        Some((settings, routes, t))
    } else {
        None
    };
    let tunnel = dp.as_ref().map(|(_, _, t)| t.clone());
    let mut sid: Option<u32> = None;
    let replay: status::Shared = std::sync::Arc::new(std::sync::Mutex::new(GroupReplay {
        group,
        name: args
            .group_name
            .clone()
            .or(file.group_name.clone())
            .unwrap_or_else(|| group.to_string()),
        d3p_window_ms: d3p.map(|w| w.as_msec()),
        d3p_window_source: d3p.map(|_| WindowSource::Client),
        posix_time_ms: 0,
        counters: ReplayCounters::default(),
    }));
    if !args.once {
        let path = args
            .status_socket
            .clone()
            .or(file.status_socket.clone())
            .unwrap_or_else(|| status::default_path(group));
        if let Err(e) = status::serve(&path, replay.clone(), tunnel.clone(), now_ms) {
            warn!(error = %format!("{e:#}"), "no local status socket: pass --status-socket PATH");
        }
    }
    let registered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tracker = membership::Shared::default();
    let sources = report::Sources {
        identity,
        status: replay.clone(),
        tunnel: tunnel.clone(),
        registered: registered.clone(),
        membership: tracker.clone(),
        now_ms: dataplane_now_ms,
    };
    if let Some(addr) = args.metrics {
        metrics::serve(addr, sources.clone()).await?;
    }
    if let Some(r) = report {
        report::spawn(r, sources)?;
    }
    // SIGTERM ends the agent like Ctrl-C: routes, rules and the TUN device go.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut gm = GroupMember::new(cfg, Box::new(OsRng));
    let before = Duration::from_secs(args.renew_before_days * 86_400);
    let mut renewed = match (&args.enrollment, args.once) {
        (Some(dir), false) => enroll::spawn_renewal(dir.clone(), before),
        _ => tokio::sync::mpsc::unbounded_channel().1,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut last_failure: Option<String> = None;
    let mut buf = vec![0u8; 65_536];
    gm.handle_timeout(now_ms());
    let local = match bind.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let mut multicast: Option<(SocketAddrV4, UdpSocket)> = None;
    let mut mbuf = vec![0u8; 65_536];
    loop {
        while let Some(t) = gm.poll_transmit() {
            socket
                .send_to(&t.payload, t.to)
                .await
                .with_context(|| format!("sending to {}", t.to))?;
        }
        while let Some(e) = gm.poll_event() {
            membership::note(&tracker, &e, &gm);
            if matches!(e, GmEvent::Registered { .. } | GmEvent::Rekeyed { .. }) {
                // The window in force: the override, else the KS's GAP.
                let ks_window = gm.group().and_then(|g| g.d3p_window_ms);
                let mut r = replay
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (r.d3p_window_ms, r.d3p_window_source) = session::window_in_force(d3p, ks_window);
                let window = r.d3p_window_ms;
                drop(r);
                if let GmEvent::Registered { sids, .. } = &e {
                    sid = sids.first().copied();
                }
                if let (Some((_, routes, t)), Some(g)) = (dp.as_mut(), gm.group()) {
                    let prefixes = session::sync_tunnel(
                        &mut dataplane::lock(t),
                        &g.teks,
                        sid,
                        window,
                        &mut OsRng,
                    );
                    if let Err(e) = routes.protect(&prefixes) {
                        warn!(error = %format!("{e:#}"), "cannot route the protected prefixes");
                    }
                }
            }
            match e {
                GmEvent::Registered { ks, keys, sids } => {
                    info!(%ks, group, teks = keys.teks.len(), seq = keys.seq, ?sids, "registered");
                    println!(
                        "registered group {group} from {ks}: {} TEK(s), KEK {}, SEQ {}",
                        keys.teks.len(),
                        keys.kek
                            .as_ref()
                            .map(|k| hex::encode(k.spi))
                            .unwrap_or_else(|| "-".into()),
                        keys.seq
                    );
                    if args.once {
                        return Ok(());
                    }
                    if let Some(k) = keys.kek.as_ref().filter(|k| k.rekey_dst.is_multicast()) {
                        let to = SocketAddrV4::new(k.rekey_dst, k.rekey_port);
                        if multicast.as_ref().map(|(a, _)| *a) != Some(to) {
                            let m = net::join_multicast(to, local)?;
                            if let Some((settings, _, _)) = dp.as_ref() {
                                socket2::SockRef::from(&m).set_mark(settings.fwmark)?;
                            }
                            multicast = Some((to, m));
                            info!(group = %to, "listening for multicast rekeys");
                        }
                    }
                }
                GmEvent::AttemptFailed { ks, reason } => {
                    warn!(%ks, ?reason, "registration attempt failed");
                    last_failure = Some(format!("{ks}: {reason:?}"));
                }
                GmEvent::Rekeyed {
                    seq,
                    installed,
                    deleted,
                    new_kek,
                    kek_packet_relabelled,
                } => {
                    if kek_packet_relabelled {
                        info!(group, seq, "the KS labelled the new KEK's key packet with the old KEK's SPI (RFC 6407 section 5.6 has the new one); installed under the SA KEK's SPI");
                    }
                    info!(group, seq, ?installed, ?deleted, new_kek, "rekey applied");
                    println!(
                        "rekeyed group {group}: SEQ {seq}, {} new TEK(s), {} deleted, new KEK {new_kek}, KEK {}",
                        installed.len(),
                        deleted.len(),
                        gm.group()
                            .and_then(|g| g.kek.as_ref())
                            .map(|k| hex::encode(k.spi))
                            .unwrap_or_else(|| "-".into())
                    );
                }
                GmEvent::PushRejected(why) => warn!(group, %why, "rekey refused"),
            }
        }
        registered.store(gm.group().is_some(), std::sync::atomic::Ordering::Relaxed);
        membership::sync(&tracker, &gm);
        let wait = gm
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                gm.handle_datagram(now_ms(), from, buf.get(..n).unwrap_or_default());
            }
            r = async { multicast.as_ref().map(|(_, s)| s).unwrap_or(&socket).recv_from(&mut mbuf).await }, if multicast.is_some() => {
                let (n, from) = r?;
                gm.handle_datagram(now_ms(), from, mbuf.get(..n).unwrap_or_default());
            }
            _ = tokio::time::sleep(wait) => gm.handle_timeout(now_ms()),
            _ = tokio::time::sleep_until(deadline), if args.once => bail!(
                "not registered within {} s (last attempt: {})",
                args.timeout,
                last_failure.as_deref().unwrap_or("no answer")
            ),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            Some(e) = dp_stopped.recv() => return Err(e.context("the dataplane stopped")),
            Some(e) = renewed.recv() => {
                gm.set_certificate(CertAuth { cert: e.cert, key: e.key, ca: e.ca });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The shipped agent (built without `test-hooks`) has no clock-shifting
    /// option; the test build has it. `scripts/test` runs this both ways.
    #[test]
    fn the_clock_offset_option_exists_only_in_test_builds() {
        let r = Args::try_parse_from(["gkm-agent", "--test-clock-offset-ms", "5000"]);
        if cfg!(feature = "test-hooks") {
            assert!(r.is_ok(), "{r:?}");
        } else {
            assert_eq!(
                r.unwrap_err().kind(),
                clap::error::ErrorKind::UnknownArgument
            );
        }
    }

    #[test]
    fn an_ipsec_doi_key_server_must_be_one_of_the_key_servers() {
        let args = |extra: &[&str]| {
            let mut v = vec![
                "gkm-agent",
                "--key-server",
                "127.0.0.1:848",
                "--group",
                "1234",
                "--psk",
                "k",
            ];
            v.extend_from_slice(extra);
            Args::try_parse_from(v).unwrap()
        };
        let file = AgentConfig::default();
        let (cfg, _, _) = gm_config(&args(&[]), &file).unwrap();
        assert!(
            cfg.ipsec_doi_key_servers.is_empty(),
            "GDOI's DOI by default"
        );
        let (cfg, _, _) =
            gm_config(&args(&["--ipsec-doi-key-server", "127.0.0.1:848"]), &file).unwrap();
        assert_eq!(
            cfg.ipsec_doi_key_servers,
            ["127.0.0.1:848".parse().unwrap()]
        );
        let e = gm_config(&args(&["--ipsec-doi-key-server", "127.0.0.2:848"]), &file)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "ipsec_doi_key_servers: 127.0.0.2:848 is not one of the key servers"
        );
        // legacy_phase1 per key server: off by default, from the file
        // when no flag is given, and only for a configured key server.
        assert!(cfg.legacy_phase1_key_servers.is_empty());
        let file: AgentConfig =
            toml::from_str("legacy_phase1_key_servers = [\"127.0.0.1:848\"]").unwrap();
        let (cfg, _, _) = gm_config(&args(&[]), &file).unwrap();
        assert_eq!(
            cfg.legacy_phase1_key_servers,
            ["127.0.0.1:848".parse().unwrap()]
        );
        let e = gm_config(
            &args(&["--legacy-phase1-key-server", "10.0.0.1:848"]),
            &file,
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            e,
            "legacy_phase1_key_servers: 10.0.0.1:848 is not one of the key servers"
        );
    }
}
