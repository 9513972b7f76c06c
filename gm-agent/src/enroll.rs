//! Enrollment (docs/OPERATIONS.md, "Enrollment"): `gkm-agent enroll`
//! makes the agent's own ECDSA P-256 key, sends the controller a
//! certificate signing request with a setup key, and saves what comes
//! back in its state directory (key and token 0600); `gkm-agent renew`
//! gets a new certificate with the agent's token; `--enrollment DIR`
//! runs the agent with what `enroll` saved.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gkm_proto::crypto::{Phase1Signer, PkiCredentials};

use crate::{AgentConfig, Cmd, ReportFile};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// `gkm-agent enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The controller's API (`https://host:port`).
    #[arg(long)]
    pub controller: String,
    /// The setup key (`gkmsk_...`).
    #[arg(long, env = "GKM_SETUP_KEY", hide_env_values = true)]
    pub setup_key: String,
    /// PEM trust anchors for the controller's TLS certificate (a private
    /// CA); kept for renewals and health reports.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The name to ask for (a DNS name; default: the controller makes one).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the key, certificate and token are kept.
    #[arg(long, default_value = "/var/lib/gkm-agent")]
    pub state_dir: PathBuf,
}

/// A group the agent joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentGroup {
    /// Name.
    pub name: String,
    /// Identity number.
    pub group_id: u32,
}

/// What enrollment saved (`enrollment.json`); the key, certificate, CA
/// and token are files beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// The controller's API.
    pub controller: String,
    /// The agent's name (its GM identity, ID_FQDN).
    pub name: String,
    /// Its groups.
    pub groups: Vec<AgentGroup>,
    /// Its key servers.
    pub key_servers: Vec<SocketAddr>,
    /// Its certificate's end of validity, UNIX ms.
    pub cert_not_after: i64,
}

/// The controller's answer to an enrollment.
#[derive(Deserialize)]
struct EnrollAnswer {
    name: String,
    groups: Vec<AgentGroup>,
    certificate: String,
    ca: String,
    token: String,
    key_servers: Vec<SocketAddr>,
    cert_not_after: i64,
}

/// The controller's answer to a renewal.
#[derive(Deserialize)]
struct Renewed {
    certificate: String,
    ca: String,
    cert_not_after: i64,
}

const SAVED: &str = "enrollment.json";
const KEY: &str = "key.pem";
const CERT: &str = "cert.pem";
const CA: &str = "ca.pem";
const TOKEN: &str = "token";
const CONTROLLER_CA: &str = "controller-ca.pem";

/// A fresh P-256 key (PKCS#8 PEM) and a certificate request over it.
fn key_and_request(name: Option<&str>) -> Result<(Zeroizing<String>, String)> {
    let der = Phase1Signer::generate_ecdsa_p256_pkcs8()
        .map_err(|e| anyhow!("cannot make a P-256 key: {e}"))?;
    let key = rcgen::KeyPair::try_from(der.as_slice()).context("the new key")?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    if let Some(n) = name {
        p.distinguished_name.push(rcgen::DnType::CommonName, n);
    }
    let csr = p.serialize_request(&key)?.pem()?;
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}

fn http(ca: Option<&Path>) -> Result<ureq::Agent> {
    crate::report::http_agent("--ca", ca, Duration::from_secs(30))
}

/// POSTs `body`; the answer's JSON, or the controller's problem.
fn post<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<T> {
    let mut req = agent.post(url);
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send_json(body).with_context(|| format!("POST {url}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(300).collect());
        bail!("the controller refused ({status}): {detail}");
    }
    serde_json::from_str(&text).map_err(|e| anyhow!("the controller's answer: {e}"))
}

/// Writes `data` to `dir/name` with `mode`, through a temporary file and
/// a rename: a crash leaves the old file or the new one, never half.
fn write(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("cannot write {}", dir.join(name).display()))
}

/// Enrolls: the key is made here and never leaves the host.
pub fn enroll(a: &EnrollArgs) -> Result<Saved> {
    let controller = a.controller.trim_end_matches('/').to_owned();
    if !controller.starts_with("https://") && !crate::report::is_loopback_http(&controller) {
        bail!("--controller {controller:?}: plain HTTP would send the setup key in clear; use https://");
    }
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("cannot create {}", a.state_dir.display()))?;
    std::fs::set_permissions(
        &a.state_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let (key, csr) = key_and_request(a.name.as_deref())?;
    let mut body = serde_json::json!({"setup_key": a.setup_key, "csr": csr});
    if let Some(n) = &a.name {
        body["name"] = serde_json::Value::String(n.clone());
    }
    let e: EnrollAnswer = post(
        &http(a.ca.as_deref())?,
        &format!("{controller}/api/v1/enroll"),
        None,
        &body,
    )?;
    let dir = &a.state_dir;
    let token = Zeroizing::new(e.token);
    write(dir, KEY, key.as_bytes(), 0o600)?;
    write(dir, CERT, e.certificate.as_bytes(), 0o600)?;
    write(dir, CA, e.ca.as_bytes(), 0o600)?;
    write(dir, TOKEN, token.as_bytes(), 0o600)?;
    if let Some(ca) = &a.ca {
        write(dir, CONTROLLER_CA, &std::fs::read(ca)?, 0o600)?;
    }
    let saved = Saved {
        controller,
        name: e.name,
        groups: e.groups,
        key_servers: e.key_servers,
        cert_not_after: e.cert_not_after,
    };
    write(dir, SAVED, &serde_json::to_vec_pretty(&saved)?, 0o600)?;
    Ok(saved)
}

/// Renews the certificate with the agent's token (a new key too).
pub fn renew(dir: &Path) -> Result<Saved> {
    let mut saved = load_saved(dir)?;
    let token = Zeroizing::new(read(dir, TOKEN)?.trim().to_owned());
    let (key, csr) = key_and_request(Some(&saved.name))?;
    let ca = dir.join(CONTROLLER_CA);
    let r: Renewed = post(
        &http(ca.exists().then_some(ca.as_path()))?,
        &format!("{}/api/v1/agents/renew", saved.controller),
        Some(&token),
        &serde_json::json!({"csr": csr}),
    )?;
    // The certificate before the key would leave a pair that does not
    // match if a crash came between: the key goes first, under another
    // name, and both are renamed into place.
    write(dir, ".key.pem.new", key.as_bytes(), 0o600)?;
    write(dir, CERT, r.certificate.as_bytes(), 0o600)?;
    std::fs::rename(dir.join(".key.pem.new"), dir.join(KEY))?;
    write(dir, CA, r.ca.as_bytes(), 0o600)?;
    saved.cert_not_after = r.cert_not_after;
    write(dir, SAVED, &serde_json::to_vec_pretty(&saved)?, 0o600)?;
    Ok(saved)
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
}

fn load_saved(dir: &Path) -> Result<Saved> {
    serde_json::from_str(&read(dir, SAVED)?)
        .map_err(|e| anyhow!("{}: {e}", dir.join(SAVED).display()))
}

/// What `--enrollment DIR` runs with.
pub struct Loaded {
    /// What enrollment saved.
    pub saved: Saved,
    /// The certificate credentials.
    pub pki: PkiCredentials,
    /// The token file (health reports).
    pub token_file: PathBuf,
    /// The controller's TLS trust anchors, when enrollment had them.
    pub controller_ca: Option<PathBuf>,
}

/// Loads an enrollment.
pub fn load(dir: &Path) -> Result<Loaded> {
    let saved = load_saved(dir)?;
    let pki = PkiCredentials::from_pem(&read(dir, CA)?, &read(dir, CERT)?, &read(dir, KEY)?)
        .with_context(|| format!("the enrollment in {}", dir.display()))?;
    let ca = dir.join(CONTROLLER_CA);
    Ok(Loaded {
        saved,
        pki,
        token_file: dir.join(TOKEN),
        controller_ca: ca.exists().then_some(ca),
    })
}

/// An enrolled agent's phase 1 credentials and name.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// Its certificate, DER.
    pub cert: Vec<u8>,
    /// Its key.
    pub key: Phase1Signer,
    /// The CAs the key server's certificate must chain to.
    pub ca: gkm_proto::crypto::CertificateAuthority,
    /// Its name (ID_FQDN).
    pub name: String,
}

/// Fills what the file leaves out from an enrollment: key servers, the
/// group (when it is the only one), the group's name, health reports to
/// the controller, and the certificate and name to register with.
pub fn apply(file: &mut AgentConfig, dir: &Path) -> Result<()> {
    let e = load(dir)?;
    if file.psk.is_some() || file.psk_file.is_some() || file.pki.is_some() {
        bail!("--enrollment: the file also configures psk or pki; use one");
    }
    file.key_servers
        .get_or_insert_with(|| e.saved.key_servers.clone());
    if file.group.is_none() {
        if let [only] = e.saved.groups.as_slice() {
            file.group = Some(only.group_id);
        }
    }
    if let Some(g) = e
        .saved
        .groups
        .iter()
        .find(|g| Some(g.group_id) == file.group)
    {
        file.group_name.get_or_insert_with(|| g.name.clone());
    }
    file.report.get_or_insert_with(|| ReportFile {
        url: Some(e.saved.controller.clone()),
        token_file: Some(e.token_file.clone()),
        ca: e.controller_ca.clone(),
        ..ReportFile::default()
    });
    let PkiCredentials { ca, cert, key } = e.pki;
    file.enrolled = Some(Enrolled {
        cert,
        key,
        ca,
        name: e.saved.name,
    });
    Ok(())
}

/// Runs `enroll` or `renew`, printing what was saved.
pub fn run(cmd: &Cmd) -> Result<()> {
    match cmd {
        Cmd::Enroll(a) => {
            let saved = enroll(a)?;
            let groups: Vec<&str> = saved.groups.iter().map(|g| g.name.as_str()).collect();
            println!(
                "enrolled {} in {} with key servers {:?}; saved in {}",
                saved.name,
                groups.join(", "),
                saved.key_servers,
                a.state_dir.display()
            );
        }
        Cmd::Renew { state_dir } => {
            let saved = renew(state_dir)?;
            println!(
                "renewed {}: valid until {} (UNIX ms)",
                saved.name, saved.cert_not_after
            );
        }
    }
    Ok(())
}

/// Renews the enrolled certificate when less than `before` of its
/// validity is left at `now_ms`; the new credentials when it did.
pub fn renew_if_due(dir: &Path, before: Duration, now_ms: u64) -> Result<Option<Enrolled>> {
    let saved = load_saved(dir)?;
    let left = saved
        .cert_not_after
        .saturating_sub(i64::try_from(now_ms).unwrap_or(i64::MAX));
    if left > i64::try_from(before.as_millis()).unwrap_or(i64::MAX) {
        return Ok(None);
    }
    renew(dir)?;
    let e = load(dir)?;
    let PkiCredentials { ca, cert, key } = e.pki;
    Ok(Some(Enrolled {
        cert,
        key,
        ca,
        name: e.saved.name,
    }))
}

/// Checks at start and then hourly whether the certificate is due for
/// renewal ([`renew_if_due`]); each renewed credential comes out of the
/// channel for the running GM. A failed renewal is logged and tried again
/// at the next check.
pub fn spawn_renewal(
    dir: PathBuf,
    before: Duration,
) -> tokio::sync::mpsc::UnboundedReceiver<Enrolled> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            let d = dir.clone();
            let now = gkm_model::clock::unix_ms();
            match tokio::task::spawn_blocking(move || renew_if_due(&d, before, now)).await {
                Ok(Ok(Some(e))) => {
                    tracing::info!(agent = %e.name, "certificate renewed");
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; trying again in an hour")
                }
                Err(e) => tracing::warn!(error = %e, "certificate renewal stopped"),
            }
        }
    });
    rx
}
