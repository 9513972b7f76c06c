//! The key server's rekey-signing key (KEK SIG_ALGORITHM, RFC 6407 section
//! 5.3): RSA in the IKEv1 style (PKCS#1 v1.5 over the raw SHA-256 hash) or
//! ECDSA P-256 with SHA-256 and the fixed `r ‖ s` encoding (RFC 4754
//! section 7). GMs receive the public key as DER SubjectPublicKeyInfo in
//! the KEK key packet's SIG_ALGORITHM_KEY.

use gkm_wire::consts::SigAlgorithm;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};

use super::rng::EngineRng;
use super::sig::{KeyKind, PeerKey, Phase1Signer, RsaSigner, SigError, P256_SPKI_PREFIX};

/// The KS's rekey-signing key.
pub enum RekeySigner {
    /// RSA, PKCS#1 v1.5 over the raw hash.
    Rsa(Box<RsaSigner>),
    /// ECDSA P-256 / SHA-256 (ring; signatures draw nonces from the OS).
    EcdsaP256(Box<EcdsaKeyPair>),
}

impl core::fmt::Debug for RekeySigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Rsa(r) => write!(f, "RekeySigner::Rsa({} bits)", r.modulus_bits()),
            Self::EcdsaP256(_) => f.write_str("RekeySigner::EcdsaP256"),
        }
    }
}

impl RekeySigner {
    /// An ECDSA P-256 key from PKCS#8 DER.
    pub fn ecdsa_p256_from_pkcs8(der: &[u8]) -> Result<Self, SigError> {
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map(|k| Self::EcdsaP256(Box::new(k)))
        .map_err(|_| SigError::BadKey)
    }

    /// A fresh ECDSA P-256 key as PKCS#8 DER (to be stored by the caller).
    pub fn generate_ecdsa_p256_pkcs8() -> Result<Vec<u8>, SigError> {
        Phase1Signer::generate_ecdsa_p256_pkcs8()
    }

    /// SIG_ALGORITHM of the KEK policy.
    pub fn algorithm(&self) -> SigAlgorithm {
        match self {
            Self::Rsa(_) => SigAlgorithm::RSA,
            Self::EcdsaP256(_) => SigAlgorithm::ECDSA_256,
        }
    }

    /// SIG_KEY_LENGTH in bits (RSA modulus; 256 for P-256).
    pub fn key_bits(&self) -> u16 {
        match self {
            Self::Rsa(r) => u16::try_from(r.modulus_bits()).unwrap_or(u16::MAX),
            Self::EcdsaP256(_) => 256,
        }
    }

    /// Length of every signature this key makes.
    pub fn signature_len(&self) -> usize {
        match self {
            Self::Rsa(r) => r.modulus_bits().div_ceil(8),
            Self::EcdsaP256(_) => 64,
        }
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> Result<Vec<u8>, SigError> {
        match self {
            Self::Rsa(r) => r.public_spki_der(),
            Self::EcdsaP256(k) => Ok([&P256_SPKI_PREFIX[..], k.public_key().as_ref()].concat()),
        }
    }

    /// Signs `message` with SHA-256.
    pub fn sign(&self, rng: &mut dyn EngineRng, message: &[u8]) -> Result<Vec<u8>, SigError> {
        match self {
            Self::Rsa(r) => r.sign(rng, digest::digest(&digest::SHA256, message).as_ref()),
            Self::EcdsaP256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigError::SignFailed),
        }
    }
}

/// A GM's copy of the KS's rekey-signing public key: a key of the kind
/// SIG_ALGORITHM names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyVerifier(PeerKey);

impl RekeyVerifier {
    /// From the KEK policy's SIG_ALGORITHM and the SPKI delivered in KD.
    pub fn new(algorithm: SigAlgorithm, spki: &[u8]) -> Result<Self, SigError> {
        let kind = match algorithm {
            SigAlgorithm::RSA => KeyKind::Rsa,
            SigAlgorithm::ECDSA_256 => KeyKind::EcdsaP256,
            _ => return Err(SigError::BadKey),
        };
        PeerKey::from_spki_der(spki)
            .ok()
            .filter(|k| k.kind() == kind)
            .map(Self)
            .ok_or(SigError::BadKey)
    }

    /// Checks `sig` over `message` (SHA-256).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), SigError> {
        match &self.0 {
            PeerKey::Rsa(r) => r.verify(digest::digest(&digest::SHA256, message).as_ref(), sig),
            ecdsa @ PeerKey::EcdsaP256(_) => ecdsa.verify(message, sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn ecdsa_and_rsa_sign_and_verify_through_the_spki() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let ec =
            RekeySigner::ecdsa_p256_from_pkcs8(&RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
                .unwrap();
        let rsa = RekeySigner::Rsa(Box::new(RsaSigner::generate(&mut rng, 1024).unwrap()));
        for signer in [ec, rsa] {
            let spki = signer.public_spki_der().unwrap();
            let v = RekeyVerifier::new(signer.algorithm(), &spki).unwrap();
            let sig = signer.sign(&mut rng, b"rekey message").unwrap();
            assert_eq!(sig.len(), signer.signature_len());
            assert_eq!(v.verify(b"rekey message", &sig), Ok(()));
            assert_eq!(
                v.verify(b"rekey messagf", &sig),
                Err(SigError::Invalid),
                "{signer:?}"
            );
            let mut bad = sig.clone();
            bad[3] ^= 1;
            assert_eq!(v.verify(b"rekey message", &bad), Err(SigError::Invalid));
            // The wrong algorithm for the key is refused, not misread.
            let other = if signer.algorithm() == SigAlgorithm::RSA {
                SigAlgorithm::ECDSA_256
            } else {
                SigAlgorithm::RSA
            };
            assert!(RekeyVerifier::new(other, &spki).is_err());
        }
        // The SPKI is what x509-parser (an independent DER reader) sees as P-256.
        let ec =
            RekeySigner::ecdsa_p256_from_pkcs8(&RekeySigner::generate_ecdsa_p256_pkcs8().unwrap())
                .unwrap();
        let spki = ec.public_spki_der().unwrap();
        use x509_parser::prelude::FromDer;
        let (_, parsed) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).expect("SPKI DER");
        assert_eq!(
            parsed.algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
    }
}
