//! AES-CBC without padding (ISAKMP pads itself, RFC 2409 appendix B).

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use gkm_wire::consts::OakleyEncryption;

/// AES-CBC with a 128- or 256-bit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CbcCipher {
    /// AES-128-CBC.
    Aes128,
    /// AES-256-CBC.
    Aes256,
}

/// A cipher operation on malformed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// Ciphertext not a multiple of the block size, or empty.
    #[error("ciphertext is not a whole number of blocks")]
    NotBlockAligned,
    /// Key or IV of the wrong size.
    #[error("key or IV has the wrong length")]
    BadKey,
}

impl CbcCipher {
    /// The cipher for a phase 1 proposal (encryption algorithm + key length).
    pub fn from_oakley(e: OakleyEncryption, key_bits: Option<u16>) -> Option<Self> {
        match (e, key_bits) {
            (OakleyEncryption::AES_CBC, Some(128)) => Some(Self::Aes128),
            (OakleyEncryption::AES_CBC, Some(256)) => Some(Self::Aes256),
            _ => None,
        }
    }

    /// Key length in octets.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// Key length in bits.
    pub fn key_bits(self) -> u16 {
        match self {
            Self::Aes128 => 128,
            Self::Aes256 => 256,
        }
    }

    /// Block (and IV) length.
    pub const BLOCK: usize = 16;

    /// Encrypts `data`, which must be block aligned.
    pub fn encrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
        if data.is_empty() || data.len() % Self::BLOCK != 0 {
            return Err(CipherError::NotBlockAligned);
        }
        Ok(match self {
            Self::Aes128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
                .map_err(|_| CipherError::BadKey)?
                .encrypt_padded_vec_mut::<NoPadding>(data),
            Self::Aes256 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
                .map_err(|_| CipherError::BadKey)?
                .encrypt_padded_vec_mut::<NoPadding>(data),
        })
    }

    /// Decrypts `data`, which must be block aligned.
    pub fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
        if data.is_empty() || data.len() % Self::BLOCK != 0 {
            return Err(CipherError::NotBlockAligned);
        }
        match self {
            Self::Aes128 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                .map_err(|_| CipherError::BadKey)?
                .decrypt_padded_vec_mut::<NoPadding>(data),
            Self::Aes256 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                .map_err(|_| CipherError::BadKey)?
                .decrypt_padded_vec_mut::<NoPadding>(data),
        }
        .map_err(|_| CipherError::NotBlockAligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST SP 800-38A F.2.1 CBC-AES128.Encrypt, first block.
    #[test]
    fn sp800_38a_vector() {
        let h = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let key = h("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = h("000102030405060708090a0b0c0d0e0f");
        let pt = h("6bc1bee22e409f96e93d7e117393172a");
        let ct = CbcCipher::Aes128.encrypt(&key, &iv, &pt).unwrap();
        assert_eq!(ct, h("7649abac8119b246cee98e9b12e9197d"));
        assert_eq!(CbcCipher::Aes128.decrypt(&key, &iv, &ct).unwrap(), pt);
        assert_eq!(
            CbcCipher::Aes128.decrypt(&key, &iv, &ct[..15]),
            Err(CipherError::NotBlockAligned)
        );
    }
}
