//! The rekey-signing key: generated on first run and sealed in the store,
//! or imported from the file `rekey_signing_key` names (the same key on
//! every cooperative key server of a group, docs/COOP.md).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use gkm_proto::crypto::{RekeySigner, RsaSigner};
use rand_core::OsRng;
use tracing::info;
use zeroize::Zeroizing;

use crate::config::SignatureKind;

/// The rekey-signing key's name (shown by `show crypto gkm ks policy`)
/// for each signature kind; the key is the store secret
/// `rekey-signing-key/<name>`.
pub fn signing_key_name(kind: SignatureKind) -> &'static str {
    match kind {
        SignatureKind::Rsa => "gkm-rekey-rsa2048",
        SignatureKind::EcdsaP256 => "gkm-rekey-p256",
    }
}

/// The file an earlier GKM kept the rekey-signing key in (imported once).
fn legacy_signing_key_file(kind: SignatureKind) -> &'static str {
    match kind {
        SignatureKind::Rsa => "rekey-signing-key.pem",
        SignatureKind::EcdsaP256 => "rekey-signing-key-p256.der",
    }
}

/// Loads the rekey-signing key (PKCS#8) from the store, sealed there like
/// every secret; creates it on first run so restarts keep the same key. A
/// key file an earlier version left in the data directory is imported and
/// removed.
pub async fn rekey_signer(
    store: &dyn gkm_store::Store,
    data_dir: &Path,
    kind: SignatureKind,
    import: Option<&Path>,
) -> Result<RekeySigner> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let name = format!("rekey-signing-key/{}", signing_key_name(kind));
    let open = |der: &[u8]| -> Result<RekeySigner> {
        match kind {
            SignatureKind::Rsa => {
                let pem = std::str::from_utf8(der).map_err(|_| anyhow!("{name}: not PEM"))?;
                RsaSigner::from_pkcs8_pem(pem)
                    .map(|k| RekeySigner::Rsa(Box::new(k)))
                    .map_err(|e| anyhow!("{name}: {e}"))
            }
            SignatureKind::EcdsaP256 => {
                RekeySigner::ecdsa_p256_from_pkcs8(der).map_err(|e| anyhow!("{name}: {e}"))
            }
        }
    };
    if let Some(file) = import {
        let key = Zeroizing::new(
            std::fs::read(file)
                .with_context(|| format!("rekey_signing_key: cannot read {}", file.display()))?,
        );
        let signer = open(&key).with_context(|| {
            format!(
                "rekey_signing_key: {} is not a {kind:?} PKCS#8 key",
                file.display()
            )
        })?;
        if store.secret(&name).await?.as_deref().map(Vec::as_slice) != Some(key.as_slice()) {
            store.put_secret(&name, &key).await?;
            info!(from = %file.display(), secret = %name, "rekey-signing key imported (sealed in the store)");
        }
        return Ok(signer);
    }
    if let Some(key) = store.secret(&name).await? {
        return open(&key);
    }
    let legacy = data_dir.join(legacy_signing_key_file(kind));
    let key = if legacy.exists() {
        let key = Zeroizing::new(std::fs::read(&legacy)?);
        open(&key).with_context(|| format!("importing {}", legacy.display()))?;
        key
    } else {
        match kind {
            SignatureKind::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)
                    .context("generating the rekey-signing key")?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .context("encoding the rekey-signing key")?;
                Zeroizing::new(pem.as_bytes().to_vec())
            }
            SignatureKind::EcdsaP256 => Zeroizing::new(
                RekeySigner::generate_ecdsa_p256_pkcs8().map_err(|e| anyhow!("{name}: {e}"))?,
            ),
        }
    };
    let signer = open(&key)?;
    store.put_secret(&name, &key).await?;
    if legacy.exists() {
        std::fs::remove_file(&legacy)
            .with_context(|| format!("cannot remove {}", legacy.display()))?;
        info!(from = %legacy.display(), secret = %name, "rekey-signing key moved into the store (sealed)");
    } else {
        info!(secret = %name, "generated the rekey-signing key, sealed in the store");
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/data/ks-rekey.pem"
    );

    fn spki(s: &RekeySigner) -> Vec<u8> {
        s.public_spki_der().unwrap()
    }

    #[tokio::test]
    async fn an_imported_key_replaces_the_generated_one_and_a_bad_file_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("gkm-signing-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let master = gkm_store::seal::MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let url = format!("sqlite://{}/gkm.db", dir.display());
        let store = gkm_store::open(&url, master).await.unwrap();
        let kind = SignatureKind::Rsa;
        let generated = rekey_signer(store.as_ref(), &dir, kind, None)
            .await
            .unwrap();
        let shared = RsaSigner::from_pkcs8_pem(&std::fs::read_to_string(SHARED).unwrap()).unwrap();
        let shared = spki(&RekeySigner::Rsa(Box::new(shared)));
        assert_ne!(spki(&generated), shared);
        // Imported: the file's key, and kept by the store after the file goes.
        let imported = rekey_signer(store.as_ref(), &dir, kind, Some(Path::new(SHARED)))
            .await
            .unwrap();
        assert_eq!(spki(&imported), shared);
        let again = rekey_signer(store.as_ref(), &dir, kind, None)
            .await
            .unwrap();
        assert_eq!(spki(&again), shared);
        // Not a key, or not there: refused naming the setting; the store
        // keeps the key it had.
        let bad = dir.join("not-a-key.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        for file in [bad.as_path(), Path::new("/nonexistent/rekey.pem")] {
            let e = rekey_signer(store.as_ref(), &dir, kind, Some(file))
                .await
                .err()
                .unwrap();
            assert!(format!("{e:#}").contains("rekey_signing_key"), "{e:#}");
        }
        let after = rekey_signer(store.as_ref(), &dir, kind, None)
            .await
            .unwrap();
        assert_eq!(spki(&after), shared);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
