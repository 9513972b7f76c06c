//! The HTTP side of the server: `/api/v1` and the dashboard on one
//! listener, over TLS (rustls, certificate files) or plain HTTP on
//! loopback; the dashboard's local admin password and OIDC settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gkm_web::oidc::{Oidc, OidcConfig};
use tracing::info;

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
    /// Dashboard sessions end this many seconds after sign-in (300-604800).
    #[arg(long, env = "GKM_SESSION_MAX_SECS", default_value_t = 43_200, value_parser = clap::value_parser!(u32).range(300..=604_800))]
    pub session_max_secs: u32,
}

impl HttpArgs {
    /// Whether the listener is TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
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
        if pw.len() < 12 {
            bail!("GKM_ADMIN_PASSWORD must be at least 12 characters");
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
    // Printed once, to the terminal only (not the log), as the quick start promises.
    println!(
        "gkm-server: dashboard user admin, password {pw} (also in {}); shown this once",
        path.display()
    );
    Ok(())
}

/// Serves `router` on `listener`, over TLS when configured.
pub async fn serve(
    listener: std::net::TcpListener,
    router: axum::Router,
    args: &HttpArgs,
) -> Result<()> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = tls_config(cert, key)?;
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
            )
            .serve(router.into_make_service())
            .await
            .context("HTTPS server")
        }
        _ => {
            listener.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(l, router).await.context("HTTP server")
        }
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
