//! CBC without padding (ISAKMP pads itself, RFC 2409 appendix B): AES
//! with a 128- or 256-bit key, and 3DES (EDE3, RFC 2451) for legacy phase
//! 1 peers only (docs/INTEROP.md, "Phase 1 suites").

use aes::cipher::{
    block_padding::NoPadding, BlockCipher, BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit,
};
use gkm_wire::consts::OakleyEncryption;

/// A CBC block cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CbcCipher {
    /// AES-128-CBC.
    Aes128,
    /// AES-256-CBC.
    Aes256,
    /// 3DES-CBC (three-key EDE, 64-bit block): legacy, phase 1 only and
    /// only with `legacy_phase1` (RFC 8247 section 2.1: SHOULD NOT).
    TripleDes,
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
            // 3DES has one key length; RFC 2409 appendix A: no Key Length.
            (OakleyEncryption::TRIPLE_DES_CBC, None) => Some(Self::TripleDes),
            _ => None,
        }
    }

    /// The Oakley encryption algorithm and Key Length attribute naming it.
    pub fn oakley(self) -> (OakleyEncryption, Option<u16>) {
        match self {
            Self::Aes128 | Self::Aes256 => (OakleyEncryption::AES_CBC, Some(self.key_bits())),
            Self::TripleDes => (OakleyEncryption::TRIPLE_DES_CBC, None),
        }
    }

    /// Whether the cipher is below GKM's floor and so needs `legacy_phase1`.
    pub fn is_legacy(self) -> bool {
        self == Self::TripleDes
    }

    /// Key length in octets.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes256 => 32,
            Self::TripleDes => 24,
        }
    }

    /// Key length in bits (3DES: the 192 key octets' bits, parity included).
    pub fn key_bits(self) -> u16 {
        match self {
            Self::Aes128 => 128,
            Self::Aes256 => 256,
            Self::TripleDes => 192,
        }
    }

    /// The name `show crypto isakmp policy` uses (`AES-CBC-128`, `3DES-CBC`).
    pub fn name(self) -> String {
        match self {
            Self::Aes128 | Self::Aes256 => format!("AES-CBC-{}", self.key_bits()),
            Self::TripleDes => "3DES-CBC".to_string(),
        }
    }

    /// The longest block (and IV) of any cipher here: IVs are held in
    /// this many octets, of which a cipher uses the first
    /// [`CbcCipher::block_len`].
    pub const MAX_BLOCK: usize = 16;

    /// Block (and IV) length in octets: 16 for AES, 8 for 3DES.
    pub fn block_len(self) -> usize {
        match self {
            Self::Aes128 | Self::Aes256 => 16,
            Self::TripleDes => 8,
        }
    }

    fn check(self, iv: &[u8], data: &[u8]) -> Result<(), CipherError> {
        if data.is_empty() || data.len() % self.block_len() != 0 {
            return Err(CipherError::NotBlockAligned);
        }
        if iv.len() != self.block_len() {
            return Err(CipherError::BadKey);
        }
        Ok(())
    }

    /// Encrypts `data`, which must be block aligned, with an IV of
    /// exactly [`CbcCipher::block_len`] octets.
    pub fn encrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
        self.check(iv, data)?;
        match self {
            Self::Aes128 => encrypt_with::<aes::Aes128>(key, iv, data),
            Self::Aes256 => encrypt_with::<aes::Aes256>(key, iv, data),
            Self::TripleDes => encrypt_with::<des::TdesEde3>(key, iv, data),
        }
    }

    /// Decrypts `data`, which must be block aligned, with an IV of
    /// exactly [`CbcCipher::block_len`] octets.
    pub fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
        self.check(iv, data)?;
        match self {
            Self::Aes128 => decrypt_with::<aes::Aes128>(key, iv, data),
            Self::Aes256 => decrypt_with::<aes::Aes256>(key, iv, data),
            Self::TripleDes => decrypt_with::<des::TdesEde3>(key, iv, data),
        }
    }
}

fn encrypt_with<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError>
where
    C: BlockCipher + BlockEncryptMut + KeyInit,
{
    Ok(cbc::Encryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| CipherError::BadKey)?
        .encrypt_padded_vec_mut::<NoPadding>(data))
}

fn decrypt_with<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError>
where
    C: BlockCipher + BlockDecryptMut + KeyInit,
{
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| CipherError::BadKey)?
        .decrypt_padded_vec_mut::<NoPadding>(data)
        .map_err(|_| CipherError::NotBlockAligned)
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

    /// NIST SP 800-67 rev. 2 appendix B.1: TDEA (three keys) ECB of the
    /// first plaintext block, which is CBC with an all-zero IV; then a
    /// second block chained through CBC and back.
    #[test]
    fn sp800_67_triple_des_vector() {
        let key = hex::decode("0123456789abcdef23456789abcdef01456789abcdef0123").unwrap();
        let pt = hex::decode("5468652071756663").unwrap();
        let ct = CbcCipher::TripleDes.encrypt(&key, &[0; 8], &pt).unwrap();
        assert_eq!(hex::encode(&ct), "a826fd8ce53b855f");
        let two = [pt.clone(), pt.clone()].concat();
        let iv = [7u8; 8];
        let ct2 = CbcCipher::TripleDes.encrypt(&key, &iv, &two).unwrap();
        assert_ne!(ct2[..8], ct2[8..], "CBC chains the second block");
        assert_eq!(CbcCipher::TripleDes.decrypt(&key, &iv, &ct2).unwrap(), two);
        // 3DES takes 8-octet blocks and IVs, nothing else.
        assert_eq!(
            CbcCipher::TripleDes.encrypt(&key, &[0; 16], &pt),
            Err(CipherError::BadKey)
        );
        assert_eq!(
            CbcCipher::TripleDes.encrypt(&key, &[0; 8], &[0; 12]),
            Err(CipherError::NotBlockAligned)
        );
        assert_eq!(
            CbcCipher::TripleDes.encrypt(&key[..16], &[0; 8], &pt),
            Err(CipherError::BadKey)
        );
        assert!(CbcCipher::TripleDes.is_legacy() && !CbcCipher::Aes128.is_legacy());
        assert_eq!(
            CbcCipher::from_oakley(OakleyEncryption::TRIPLE_DES_CBC, None),
            Some(CbcCipher::TripleDes)
        );
        assert_eq!(
            CbcCipher::from_oakley(OakleyEncryption::TRIPLE_DES_CBC, Some(192)),
            None
        );
    }
}
