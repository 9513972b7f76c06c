//! RSA signatures in the IKEv1 style (PKCS#1 v1.5 over the raw hash, no
//! DigestInfo: RFC 2409 section 5.1, gdoi-wire.md section 4) and X.509
//! certificate checks against configured CAs (rustls-webpki).

use std::time::Duration;

use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use super::rng::{Adapter, EngineRng};

/// A signature operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key could not be read (RSA or ECDSA, PKCS#8 expected).
    #[error(
        "the key could not be decoded (a PKCS#8 private key of the configured kind is expected)"
    )]
    BadKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Invalid,
    /// Signing failed (key too small for the input).
    #[error("signing failed")]
    SignFailed,
}

/// An RSA private key that signs raw hashes.
#[derive(Clone)]
pub struct RsaSigner {
    key: RsaPrivateKey,
}

impl core::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RsaSigner({} bits)", self.modulus_bits())
    }
}

impl RsaSigner {
    /// From a PKCS#8 PEM document.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigError> {
        RsaPrivateKey::from_pkcs8_pem(pem)
            .map(|key| Self { key })
            .map_err(|_| SigError::BadKey)
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigError> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(|key| Self { key })
            .map_err(|_| SigError::BadKey)
    }

    /// A fresh key of `bits` (tests and first-run generation).
    pub fn generate(rng: &mut dyn EngineRng, bits: usize) -> Result<Self, SigError> {
        RsaPrivateKey::new(&mut Adapter(rng), bits)
            .map(|key| Self { key })
            .map_err(|_| SigError::BadKey)
    }

    /// Signs `hash` with PKCS#1 v1.5 padding and no DigestInfo (blinded).
    pub fn sign(&self, rng: &mut dyn EngineRng, hash: &[u8]) -> Result<Vec<u8>, SigError> {
        self.key
            .sign_with_rng(&mut Adapter(rng), Pkcs1v15Sign::new_unprefixed(), hash)
            .map_err(|_| SigError::SignFailed)
    }

    /// The public key as DER SubjectPublicKeyInfo (what SIG_ALGORITHM_KEY carries).
    pub fn public_spki_der(&self) -> Result<Vec<u8>, SigError> {
        RsaPublicKey::from(&self.key)
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| SigError::BadKey)
    }

    /// Modulus size in bits.
    pub fn modulus_bits(&self) -> usize {
        self.key.n().bits()
    }
}

/// An RSA public key that verifies raw-hash signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaVerifier {
    key: RsaPublicKey,
}

impl RsaVerifier {
    /// From DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SigError> {
        RsaPublicKey::from_public_key_der(der)
            .map(|key| Self { key })
            .map_err(|_| SigError::BadKey)
    }

    /// Checks a PKCS#1 v1.5 (no DigestInfo) signature over `hash`.
    pub fn verify(&self, hash: &[u8], sig: &[u8]) -> Result<(), SigError> {
        self.key
            .verify(Pkcs1v15Sign::new_unprefixed(), hash, sig)
            .map_err(|_| SigError::Invalid)
    }

    /// Modulus size in bits.
    pub fn modulus_bits(&self) -> usize {
        self.key.n().bits()
    }
}

/// Why a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not DER X.509.
    #[error("the certificate is not valid DER X.509")]
    Malformed,
    /// Not issued by a configured CA, expired, not yet valid, or wrong usage.
    #[error("the certificate is not trusted: {0}")]
    Untrusted(String),
    /// The certificate's key is not RSA.
    #[error("the certificate's key is not an RSA key")]
    NotRsa,
}

/// The CAs a key server or agent trusts for phase 1 certificate auth.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    anchors: Vec<TrustAnchor<'static>>,
}

/// id-kp-ipsecIKE (RFC 4945 section 5.1.3.12), DER value octets: if a
/// certificate lists extended key usages, IKE must be among them.
const ID_KP_IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];

/// A verified peer certificate: its key and the names an ID payload may use.
#[derive(Debug, Clone)]
pub struct VerifiedCert {
    /// The certificate's RSA key.
    pub key: RsaVerifier,
    /// DER of the subject name (for ID_DER_ASN1_DN).
    pub subject_der: Vec<u8>,
}

/// A party's certificate credentials for phase 1, from the three PEM
/// files an operator configures (`[pki]` `ca`, `cert`, `key`): the CAs it
/// trusts, its own certificate (the file's first, DER) and its RSA key.
#[derive(Debug)]
pub struct PkiCredentials {
    /// The trusted CAs.
    pub ca: CertificateAuthority,
    /// Its own certificate, DER.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: RsaSigner,
}

/// Which of the three PEM files was refused, and why.
#[derive(Debug, thiserror::Error)]
pub enum PkiLoadError {
    /// The CA file.
    #[error("pki.ca: {0}")]
    Ca(CertError),
    /// The certificate file.
    #[error("pki.cert: {0}")]
    Cert(CertError),
    /// The key file.
    #[error("pki.key: {0}")]
    Key(SigError),
}

impl PkiCredentials {
    /// Parses the CA, certificate and key PEM documents.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, PkiLoadError> {
        let cas = certificates_from_pem(ca).map_err(PkiLoadError::Ca)?;
        let ca = CertificateAuthority::new(&cas).map_err(PkiLoadError::Ca)?;
        let cert = certificates_from_pem(cert)
            .map_err(PkiLoadError::Cert)?
            .into_iter()
            .next()
            .ok_or(PkiLoadError::Cert(CertError::Malformed))?;
        let key = RsaSigner::from_pkcs8_pem(key).map_err(PkiLoadError::Key)?;
        Ok(Self { ca, cert, key })
    }
}

/// The DER certificates in a PEM document, in order.
pub fn certificates_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| CertError::Malformed)?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(CertError::Malformed);
    }
    Ok(out)
}

impl CertificateAuthority {
    /// Trusts the given CA certificates (DER).
    pub fn new(ca_ders: &[Vec<u8>]) -> Result<Self, CertError> {
        let anchors = ca_ders
            .iter()
            .map(|d| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(d.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|_| CertError::Malformed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { anchors })
    }

    /// Verifies `cert` (DER) at `now_unix_secs`: chain to a configured CA,
    /// validity period, key usage. Returns its RSA key and subject.
    pub fn verify(&self, cert: &[u8], now_unix_secs: u64) -> Result<VerifiedCert, CertError> {
        let der = CertificateDer::from(cert);
        let ee = webpki::EndEntityCert::try_from(&der).map_err(|_| CertError::Malformed)?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(now_unix_secs)),
            webpki::KeyUsage::required_if_present(ID_KP_IPSEC_IKE),
            None,
            None,
        )
        .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert).map_err(|_| CertError::Malformed)?;
        let key =
            RsaVerifier::from_spki_der(parsed.public_key().raw).map_err(|_| CertError::NotRsa)?;
        Ok(VerifiedCert {
            key,
            subject_der: parsed.subject().as_raw().to_vec(),
        })
    }
}
