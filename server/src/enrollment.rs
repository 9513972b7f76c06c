//! Enrollment at start-up (docs/OPERATIONS.md, "Enrollment"): the internal
//! CA (sealed in the store, or the operator's shared one), the key
//! server's own P-256 certificate from it for phase 1 (its key sealed in
//! the store, its certificate signed again at each start), and the
//! enrolled agents the engine enforces.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use gkm_proto::crypto::Phase1Signer;
use gkm_proto::ks::EnrolledAgents;
use gkm_store::Store;
use gkm_web::ca::InternalCa;

use crate::config::Enrollment as EnrollmentConfig;

/// The sealed secret holding the key server's own phase 1 P-256 key.
const OWN_KEY: &str = "ks-phase1-ecdsa-key";

/// What start-up gets: the CA, and the key server's own certificate
/// (DER) with its key.
pub struct Setup {
    /// The CA.
    pub ca: InternalCa,
    /// The key server's P-256 certificate from it, and the key.
    pub own: (Vec<u8>, Phase1Signer),
}

/// Loads (or makes) the CA and signs the key server's certificate,
/// named after its address.
pub async fn setup(store: &dyn Store, cfg: &EnrollmentConfig, own: Ipv4Addr) -> Result<Setup> {
    let ca = match (&cfg.ca_cert, &cfg.ca_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            InternalCa::from_pem(&read(cert)?, &read(key)?).context("enrollment.ca_cert/ca_key")?
        }
        (None, None) => InternalCa::load_or_create(store, &format!("GKM internal CA {own}"))
            .await
            .context("the internal CA")?,
        _ => anyhow::bail!("enrollment: give ca_cert and ca_key together, or neither"),
    };
    let key = match store.secret(OWN_KEY).await? {
        Some(k) => k.to_vec(),
        None => {
            let k = Phase1Signer::generate_ecdsa_p256_pkcs8()
                .map_err(|e| anyhow::anyhow!("the key server's P-256 key: {e}"))?;
            store.put_secret(OWN_KEY, &k).await?;
            k
        }
    };
    let name = format!("ks-{}", own.to_string().replace('.', "-"));
    let issued = ca
        .sign_key(&key, &name, cfg.cert_validity()?)
        .context("the key server's certificate")?;
    let signer = Phase1Signer::from_pkcs8_der(&key)
        .map_err(|e| anyhow::anyhow!("the key server's P-256 key: {e}"))?;
    Ok(Setup {
        ca,
        own: (issued.der, signer),
    })
}

/// Keeps the engine's enrolled agents current: this key server's
/// enrollments and revocations tell it at once; this also reloads them
/// every 30 s, for those made through another key server sharing the
/// database.
pub async fn keep_engine_current(control: std::sync::Arc<dyn gkm_web::Control>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        every.tick().await;
        control.agents_changed().await;
    }
}

/// The enrolled agents as the engine enforces them.
pub async fn enrolled_agents(store: &dyn Store) -> Result<EnrolledAgents> {
    let mut out = EnrolledAgents::default();
    for a in store.agents().await? {
        if a.revoked_at.is_some() {
            out.revoked.insert(a.name);
        } else {
            out.groups.insert(a.name, a.groups);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ca_writes_the_group_binding_the_key_server_reads() {
        assert_eq!(
            gkm_web::ca::GROUPS_OU_PREFIX,
            gkm_proto::crypto::GROUPS_OU_PREFIX
        );
    }
}
