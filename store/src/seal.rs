//! Secrets at rest (DESIGN.md "storage"): AES-256-GCM under a master key,
//! with the secret's name as associated data so a sealed value cannot be
//! moved to another name. The master key comes from `GKM_MASTER_KEY` (64 hex
//! digits), the file named by `GKM_MASTER_KEY_FILE`, or `master.key` in the
//! data directory, created with mode 0600 on first run.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Leading octets of every sealed value (format version 1).
pub const SEAL_MAGIC: &[u8; 8] = b"GKMSEAL1";

/// Why a secret could not be sealed or opened, or the key loaded.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The master key is not 64 hex digits.
    #[error("the master key must be 64 hex digits (32 octets)")]
    BadKey,
    /// The key file could not be read or created.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No randomness from the OS.
    #[error("the OS gave no randomness")]
    Random,
    /// Not a sealed value, truncated, another name, another key, or damaged.
    #[error("{0}: cannot be opened with this master key (wrong key, wrong name, or damaged)")]
    Open(String),
}

/// The AES-256-GCM key that seals secrets at rest.
pub struct MasterKey(LessSafeKey);

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From `hex` (64 digits).
    pub fn from_hex(hex_key: &str) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey)?);
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// From the environment or the data directory, creating `master.key`
    /// (0600) on first run; the path is returned when the key was created,
    /// so the caller can say so.
    pub fn load(data_dir: &Path) -> Result<(Self, Option<PathBuf>), SealError> {
        if let Ok(v) = std::env::var("GKM_MASTER_KEY") {
            return Ok((Self::from_hex(&Zeroizing::new(v))?, None));
        }
        let path = std::env::var_os("GKM_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("master.key"));
        let io = |source| SealError::Io {
            path: path.clone(),
            source,
        };
        if path.exists() {
            let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(io)?);
            return Ok((Self::from_hex(&text)?, None));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| SealError::Random)?;
        let text = Zeroizing::new(hex::encode(k.as_ref()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((Self::from_hex(&text)?, Some(path)))
    }

    /// Seals `plain` under `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        Ok([&SEAL_MAGIC[..], &nonce, &buf].concat())
    }

    /// Opens what [`MasterKey::seal`] made under the same `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let fail = || SealError::Open(name.to_owned());
        let rest = sealed.strip_prefix(&SEAL_MAGIC[..]).ok_or_else(fail)?;
        if rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), buf.as_mut())
            .map_err(|_| fail())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_refuse_another_name_key_or_a_flipped_bit() {
        let k = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        let sealed = k.seal("a", b"secret").unwrap();
        assert_eq!(k.open("a", &sealed).unwrap().as_slice(), b"secret");
        assert!(k.open("b", &sealed).is_err());
        assert!(other.open("a", &sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("a", &bad).is_err());
        assert!(k.open("a", &sealed[..10]).is_err());
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(!format!("{k:?}").contains("11"));
    }
}
