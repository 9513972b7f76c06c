//! The HTTP side of the server: `/api/v1` and the dashboard on one
//! listener, over TLS (rustls, certificate files) or plain HTTP on
//! loopback; the dashboard's local admin password and OIDC settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gkm_web::oidc::{Oidc, OidcConfig};
use tracing::{info, warn};

use crate::conns::{Conn, Limits, Table, Watched};

/// The shortest `GKM_ADMIN_PASSWORD` taken.
const MIN_ADMIN_PASSWORD: usize = 16;

/// File descriptors kept for everything but HTTP connections.
const FD_RESERVE: u64 = 128;

/// Raises the soft open-file limit to the hard one (each HTTP connection
/// is a descriptor); returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit");
            1024
        }
    }
}

/// Dashboard and HTTP options.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// TLS certificate chain (PEM) for the API and dashboard.
    #[arg(long, env = "GKM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GKM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (session cookies
    /// and tokens then cross the network in clear: only behind a TLS proxy).
    #[arg(long, env = "GKM_HTTP_INSECURE")]
    pub http_insecure: bool,
    /// The URL browsers reach this server at (for the OIDC redirect);
    /// default `http(s)://<--http address>`.
    #[arg(long, env = "GKM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// OIDC issuer URL; enables "Sign in with your identity provider".
    #[arg(long, env = "GKM_OIDC_ISSUER", requires = "oidc_client_id")]
    pub oidc_issuer: Option<String>,
    /// OIDC client id.
    #[arg(long, env = "GKM_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// OIDC client secret (prefer the environment variable).
    #[arg(long, env = "GKM_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// ID token claim holding the role (dotted path; string or array; viewer, operator, admin).
    #[arg(long, env = "GKM_OIDC_ROLE_CLAIM", default_value = "gkm_role")]
    pub oidc_role_claim: String,
    /// Dashboard sessions end after this many seconds without a request (60-86400).
    #[arg(long, env = "GKM_SESSION_IDLE_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub session_idle_secs: u32,
    /// Most HTTP connections open at once (16-65536); at the cap a new
    /// connection closes the one idle longest.
    #[arg(long, env = "GKM_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub http_max_connections: u32,
    /// Seconds a request's headers (or a TLS handshake) may take (1-300).
    #[arg(long, env = "GKM_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=300))]
    pub http_header_timeout_secs: u32,
    /// Seconds an HTTP connection may stay open without a request (1-3600).
    #[arg(long, env = "GKM_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub http_idle_timeout_secs: u32,
    /// An agent that has not reported for this many seconds counts as
    /// silent in `gkm_agents_silent` (10-86400; default four of the
    /// agents' default 30 s report intervals).
    #[arg(long, env = "GKM_AGENT_SILENT_SECS", default_value_t = gkm_web::metrics::AGENT_SILENT_SECS, value_parser = clap::value_parser!(u32).range(10..=86_400))]
    pub agent_silent_secs: u32,
    /// Dashboard sessions end this many seconds after sign-in (300-604800).
    #[arg(long, env = "GKM_SESSION_MAX_SECS", default_value_t = 43_200, value_parser = clap::value_parser!(u32).range(300..=604_800))]
    pub session_max_secs: u32,
}

impl HttpArgs {
    /// Whether the listener is TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The listener's connection limits, the cap lowered to fit `fd_limit`
    /// (the process's open-file limit) with room for the store, the GDOI
    /// socket and logs.
    pub fn limits(&self, fd_limit: u64) -> Limits {
        let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let wanted = usize::try_from(self.http_max_connections).unwrap_or(usize::MAX);
        let max_connections = wanted.min(room).max(16);
        if max_connections < wanted {
            warn!(
                wanted,
                max_connections,
                fd_limit,
                "--http-max-connections lowered to fit the open-file limit (RLIMIT_NOFILE); raise the limit (LimitNOFILE= in systemd)"
            );
        }
        let header = Duration::from_secs(u64::from(self.http_header_timeout_secs));
        Limits {
            max_connections,
            header_timeout: header,
            idle_timeout: Duration::from_secs(u64::from(self.http_idle_timeout_secs)),
            handshake_timeout: header,
        }
    }

    /// Refuses plain HTTP off loopback unless forced.
    pub fn check_listen(&self, http: SocketAddr) -> Result<()> {
        if !self.tls() && !http.ip().is_loopback() && !self.http_insecure {
            bail!(
                "refusing plain HTTP on {http}: pass --tls-cert/--tls-key, listen on loopback, or force it with --http-insecure (behind a TLS proxy)"
            );
        }
        Ok(())
    }

    /// The OIDC relying party, if configured.
    pub fn oidc(&self, http: SocketAddr) -> Result<Option<Arc<Oidc>>> {
        let (Some(issuer), Some(client_id)) = (&self.oidc_issuer, &self.oidc_client_id) else {
            return Ok(None);
        };
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{http}", if self.tls() { "https" } else { "http" }));
        let oidc = Oidc::new(OidcConfig {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: self.oidc_client_secret.clone(),
            redirect_url: format!("{}/login/oidc/callback", base.trim_end_matches('/')),
            role_claim: self.oidc_role_claim.clone(),
        })
        .map_err(|e| anyhow!("{e}"))?;
        info!(issuer = %issuer, redirect = %oidc.config().redirect_url, claim = %self.oidc_role_claim, "dashboard: OIDC sign-in enabled");
        Ok(Some(Arc::new(oidc)))
    }
}

/// Sets the local admin's password: from `GKM_ADMIN_PASSWORD` when given
/// (replacing the stored one), else generated on first run, written to
/// `admin-password` (mode 0600) in the data directory and printed once.
pub async fn bootstrap_admin_password(
    store: &dyn gkm_store::Store,
    data_dir: &Path,
    from_env: Option<String>,
) -> Result<()> {
    if let Some(pw) = from_env {
        if pw.chars().count() < MIN_ADMIN_PASSWORD {
            bail!("GKM_ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD} characters");
        }
        let h = gkm_web::local::hash(&pw).map_err(|p| anyhow!(p.detail))?;
        store.put_secret(gkm_web::local::SECRET, &h).await?;
        info!("dashboard: the local admin password is the one in GKM_ADMIN_PASSWORD");
        return Ok(());
    }
    if store.secret(gkm_web::local::SECRET).await?.is_some() {
        return Ok(());
    }
    let pw = gkm_web::local::generate().map_err(|p| anyhow!(p.detail))?;
    let path = data_dir.join("admin-password");
    let _ = std::fs::remove_file(&path);
    crate::create_secret(&path, format!("{pw}\n").as_bytes())?;
    let h = gkm_web::local::hash(&pw).map_err(|p| anyhow!(p.detail))?;
    store.put_secret(gkm_web::local::SECRET, &h).await?;
    // Printed once, to a terminal only (never to a log or a pipe), as the
    // quick start promises; otherwise only where it is.
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!(
            "gkm-server: dashboard user admin, password {pw} (also in {}); shown this once",
            path.display()
        );
    } else {
        info!(path = %path.display(), "dashboard: generated the local admin password (user admin); it is in this file");
    }
    Ok(())
}

/// Serves `router` on `listener`, over TLS when configured, within the
/// connection limits of [`crate::conns`]. Under TLS every answer carries
/// HSTS.
pub async fn serve(
    listener: std::net::TcpListener,
    router: axum::Router,
    args: &HttpArgs,
    limits: Limits,
) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(
            cert, key,
        )?))),
        _ => None,
    };
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let table = Table::new(limits);
    let mut accept_errors = crate::logthrottle::Throttle::new(Duration::from_secs(10));
    loop {
        let slot = table.admit().await;
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(n) = accept_errors.admit() {
                    warn!(error = %e, suppressed = n, "HTTP accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        slot.conn.accepted();
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = slot.conn.clone();
            match tls {
                Some(acceptor) => {
                    let handshake = acceptor.accept(Watched::new(tcp, conn.clone()));
                    let stream = tokio::select! {
                        r = tokio::time::timeout(limits.handshake_timeout, handshake) => match r {
                            Ok(Ok(s)) => s,
                            _ => return,
                        },
                        () = conn.expired(limits) => return,
                    };
                    connection(stream, router, conn, peer, limits, true).await;
                }
                None => {
                    connection(
                        Watched::new(tcp, conn.clone()),
                        router,
                        conn,
                        peer,
                        limits,
                        false,
                    )
                    .await
                }
            }
            drop(slot);
        });
    }
}

/// One connection, HTTP/1.1 with keep-alive, until the client closes it or
/// it expires (idle, slow headers, or evicted for a newcomer).
async fn connection<S>(
    io: S,
    router: axum::Router,
    conn: Arc<Conn>,
    peer: std::net::SocketAddr,
    limits: Limits,
    hsts: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let state = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let state = state.clone();
        async move {
            state.begin();
            let mut req = req.map(axum::body::Body::new);
            // The peer address, for sign-in throttling per source.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut r = router
                .oneshot(req)
                .await
                .unwrap_or_else(|never| match never {});
            if hsts {
                r.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
            }
            state.end();
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::select! {
        _ = http => {}
        () = conn.expired(limits) => {}
    }
}

/// A rustls server configuration (ring provider) from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: no usable PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
