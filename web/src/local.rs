//! The local bootstrap admin: one dashboard user, `admin`, with a password
//! so the quick start needs no identity provider. Only a PBKDF2-HMAC-SHA256
//! hash is stored (sealed in the store as the secret [`SECRET`]).

use std::num::NonZeroU32;

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::problem::Problem;

/// The store secret that holds the hash.
pub const SECRET: &str = "dashboard/admin-password";

/// The local admin's user name.
pub const USER: &str = "admin";

/// PBKDF2 iterations (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;

const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// Why a stored hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored admin password hash is damaged")]
pub struct BadHash;

/// Hashes `password` with a fresh salt: `iterations (4, big-endian) ||
/// salt (16) || hash (32)`.
pub fn hash(password: &str) -> Result<Vec<u8>, Problem> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Problem::internal())?;
    Ok(hash_with(password, &salt, ITERATIONS))
}

fn hash_with(password: &str, salt: &[u8; SALT_LEN], iterations: u32) -> Vec<u8> {
    let mut out = [0u8; HASH_LEN];
    let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        password.as_bytes(),
        &mut out,
    );
    let mut v = Vec::with_capacity(4 + SALT_LEN + HASH_LEN);
    v.extend_from_slice(&n.get().to_be_bytes());
    v.extend_from_slice(salt);
    v.extend_from_slice(&out);
    v
}

/// Whether `password` matches `stored` (constant time in the hash).
pub fn verify(stored: &[u8], password: &str) -> Result<bool, BadHash> {
    let (iter, rest) = stored.split_first_chunk::<4>().ok_or(BadHash)?;
    let (salt, hash) = rest.split_first_chunk::<SALT_LEN>().ok_or(BadHash)?;
    if hash.len() != HASH_LEN {
        return Err(BadHash);
    }
    let n = NonZeroU32::new(u32::from_be_bytes(*iter)).ok_or(BadHash)?;
    Ok(pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        password.as_bytes(),
        hash,
    )
    .is_ok())
}

/// A new random password: 24 characters from an unambiguous alphabet.
pub fn generate() -> Result<String, Problem> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY34679";
    let mut b = [0u8; 24];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Problem::internal())?;
    // 50 symbols: rejection-free mapping would bias; take bytes < 250 only.
    let mut out = String::with_capacity(24);
    let mut pool = b.to_vec();
    while out.len() < 24 {
        if pool.is_empty() {
            let mut more = [0u8; 24];
            SystemRandom::new()
                .fill(&mut more)
                .map_err(|_| Problem::internal())?;
            pool.extend_from_slice(&more);
        }
        let x = pool.remove(0);
        if x < 250 {
            if let Some(c) = ALPHABET.get(usize::from(x % 50)) {
                out.push(char::from(*c));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_with("correct horse", &[7; SALT_LEN], 1_000);
        assert_eq!(h.len(), 4 + SALT_LEN + HASH_LEN);
        assert_eq!(verify(&h, "correct horse"), Ok(true));
        assert_eq!(verify(&h, "correct horsE"), Ok(false));
        assert_eq!(verify(&h, ""), Ok(false));
        assert_eq!(verify(&h[..10], "x"), Err(BadHash));
        let mut zero_iter = h.clone();
        zero_iter[..4].copy_from_slice(&[0; 4]);
        assert_eq!(verify(&zero_iter, "correct horse"), Err(BadHash));
    }

    #[test]
    fn salts_differ_and_passwords_are_long() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(hash("x").unwrap(), hash("x").unwrap());
    }
}
