//! The negotiated phase 1 hash and its HMAC PRF (RFC 2409 section 5,
//! RFC 4868 section 2 for SHA-2; SHA-1, FIPS 180-4 with HMAC per RFC
//! 2104, for legacy peers only).

use gkm_wire::consts::OakleyHash;
use ring::{digest, hmac};

/// A phase 1 PRF: HMAC with the negotiated hash; `hash` is the plain hash
/// used for the phase 1 and phase 2 IVs (RFC 2409 appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// HMAC-SHA-1: legacy (RFC 8247 section 2.3 demotes SHA-1 as the IKE
    /// PRF), accepted only with `legacy_phase1`.
    HmacSha1,
    /// HMAC-SHA-256.
    HmacSha256,
    /// HMAC-SHA-384.
    HmacSha384,
    /// HMAC-SHA-512 (RFC 8263 ACK hashes; not offered in phase 1).
    HmacSha512,
}

impl Prf {
    /// The PRF for a negotiated hash algorithm, if GKM offers it.
    pub fn from_oakley(h: OakleyHash) -> Option<Self> {
        match h {
            OakleyHash::SHA1 => Some(Self::HmacSha1),
            OakleyHash::SHA2_256 => Some(Self::HmacSha256),
            OakleyHash::SHA2_384 => Some(Self::HmacSha384),
            _ => None,
        }
    }

    /// The Oakley hash value for this PRF.
    pub fn oakley(self) -> OakleyHash {
        match self {
            Self::HmacSha1 => OakleyHash::SHA1,
            Self::HmacSha256 => OakleyHash::SHA2_256,
            Self::HmacSha384 => OakleyHash::SHA2_384,
            Self::HmacSha512 => OakleyHash::SHA2_512,
        }
    }

    /// Output length in octets.
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Self::HmacSha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => &digest::SHA256,
            Self::HmacSha384 => &digest::SHA384,
            Self::HmacSha512 => &digest::SHA512,
        }
    }

    /// Whether the hash is below GKM's floor and so needs `legacy_phase1`.
    pub fn is_legacy(self) -> bool {
        self == Self::HmacSha1
    }

    /// prf(key, parts[0] | parts[1] | ...).
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let k = hmac::Key::new(self.hmac_alg(), key);
        let mut ctx = hmac::Context::with_key(&k);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// Constant-time check of a received prf output.
    pub fn verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        let k = hmac::Key::new(self.hmac_alg(), key);
        hmac::verify(&k, &parts.concat(), tag).is_ok()
    }

    /// hash(parts[0] | parts[1] | ...).
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.digest_alg());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// Expands SKEYID_e to a cipher key of `len` octets (RFC 2409 appendix B):
    /// K1 = prf(SKEYID_e, 0), K2 = prf(SKEYID_e, K1), ... truncated.
    pub fn expand_key(self, skeyid_e: &[u8], len: usize) -> Vec<u8> {
        if skeyid_e.len() >= len {
            return skeyid_e.get(..len).unwrap_or(skeyid_e).to_vec();
        }
        let mut out = Vec::with_capacity(len + self.output_len());
        let mut k = self.prf(skeyid_e, &[&[0u8]]);
        while out.len() < len {
            out.extend_from_slice(&k);
            k = self.prf(skeyid_e, &[&k]);
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_rfc4231_case2() {
        let tag = Prf::HmacSha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let got = hex::encode(&tag);
        assert_eq!(got, want);
        assert!(Prf::HmacSha256.verify(b"Jefe", &[b"what do ya want for nothing?"], &tag));
    }

    /// RFC 2202 section 3, test case 2 (HMAC-SHA-1), and FIPS 180 "abc".
    #[test]
    fn hmac_sha1_rfc2202_case2() {
        let tag = Prf::HmacSha1.prf(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            hex::encode(&tag),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex::encode(Prf::HmacSha1.hash(&[b"abc"])),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(Prf::HmacSha1.is_legacy() && !Prf::HmacSha256.is_legacy());
        // AES-256 from a 20-octet SKEYID_e takes the RFC 2409 appendix B expansion.
        let k = Prf::HmacSha1.expand_key(&[9; 20], 32);
        assert_eq!(k[..20], Prf::HmacSha1.prf(&[9; 20], &[&[0]])[..]);
    }

    #[test]
    fn key_expansion_is_prefix_stable() {
        let k = Prf::HmacSha256.expand_key(&[7; 32], 32);
        assert_eq!(k, vec![7; 32]);
        let long = Prf::HmacSha256.expand_key(&[7; 16], 40);
        assert_eq!(long.len(), 40);
        assert_eq!(long[..32], Prf::HmacSha256.prf(&[7; 16], &[&[0]])[..]);
    }
}
