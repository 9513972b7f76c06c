//! Phase 1 signatures: RSA in the IKEv1 style (PKCS#1 v1.5 over the raw
//! hash, no DigestInfo: RFC 2409 section 5.1, gdoi-wire.md section 4) and
//! ECDSA P-256 with SHA-256 over HASH_I/HASH_R, `r || s` fixed (RFC 4754
//! sections 3 and 7, ring); and X.509 certificate checks against
//! configured CAs (rustls-webpki).

use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};

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
    /// The certificate's key is neither RSA nor ECDSA P-256.
    #[error("the certificate's key is neither RSA nor ECDSA P-256")]
    UnsupportedKey,
}

/// The kinds of key a phase 1 signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA (RFC 2409 RSA signatures).
    Rsa,
    /// ECDSA on P-256 with SHA-256 (RFC 4754 ECDSA-256).
    EcdsaP256,
}

impl KeyKind {
    /// As logs and errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::EcdsaP256 => "ECDSA P-256",
        }
    }
}

/// A party's phase 1 signing key: RSA or ECDSA P-256.
#[derive(Clone)]
pub enum Phase1Signer {
    /// RSA, PKCS#1 v1.5 over the raw hash.
    Rsa(Box<RsaSigner>),
    /// ECDSA P-256: SHA-256 of the hash signed, `r || s` (ring; nonces
    /// from the OS).
    EcdsaP256(Arc<EcdsaKeyPair>),
}

impl core::fmt::Debug for Phase1Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Rsa(r) => r.fmt(f),
            Self::EcdsaP256(_) => f.write_str("Phase1Signer::EcdsaP256"),
        }
    }
}

impl From<RsaSigner> for Phase1Signer {
    fn from(r: RsaSigner) -> Self {
        Self::Rsa(Box::new(r))
    }
}

impl Phase1Signer {
    /// From a PKCS#8 PEM document holding an RSA or a P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigError> {
        let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .filter_map(Result::ok)
            .find(|b| b.label == "PRIVATE KEY")
            .ok_or(SigError::BadKey)?;
        Self::from_pkcs8_der(&block.contents)
    }

    /// From PKCS#8 DER holding an RSA or a P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigError> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        ) {
            return Ok(Self::EcdsaP256(Arc::new(k)));
        }
        RsaSigner::from_pkcs8_der(der).map(Self::from)
    }

    /// A fresh P-256 key as PKCS#8 DER (to be saved by the caller).
    pub fn generate_ecdsa_p256_pkcs8() -> Result<Vec<u8>, SigError> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| SigError::BadKey)
    }

    /// Its kind.
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Rsa(_) => KeyKind::Rsa,
            Self::EcdsaP256(_) => KeyKind::EcdsaP256,
        }
    }

    /// Signs HASH_I or HASH_R as the kind's phase 1 method does.
    pub fn sign(&self, rng: &mut dyn EngineRng, hash: &[u8]) -> Result<Vec<u8>, SigError> {
        match self {
            Self::Rsa(r) => r.sign(rng, hash),
            Self::EcdsaP256(k) => k
                .sign(&SystemRandom::new(), hash)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigError::SignFailed),
        }
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> Result<Vec<u8>, SigError> {
        match self {
            Self::Rsa(r) => r.public_spki_der(),
            Self::EcdsaP256(k) => Ok([&P256_SPKI_PREFIX[..], k.public_key().as_ref()].concat()),
        }
    }
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 octets) before the 65-octet uncompressed point.
pub(crate) const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A peer certificate's public key, as phase 1 verifies with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKey {
    /// RSA.
    Rsa(RsaVerifier),
    /// ECDSA P-256: the uncompressed point.
    EcdsaP256(Vec<u8>),
}

impl PeerKey {
    /// From DER SubjectPublicKeyInfo (RSA, or P-256 uncompressed).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SigError> {
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            return if point.len() == 65 && point.first() == Some(&4) {
                Ok(Self::EcdsaP256(point.to_vec()))
            } else {
                Err(SigError::BadKey)
            };
        }
        RsaVerifier::from_spki_der(der).map(Self::Rsa)
    }

    /// Its kind.
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Rsa(_) => KeyKind::Rsa,
            Self::EcdsaP256(_) => KeyKind::EcdsaP256,
        }
    }

    /// Checks a phase 1 signature over HASH_I or HASH_R.
    pub fn verify(&self, hash: &[u8], sig: &[u8]) -> Result<(), SigError> {
        match self {
            Self::Rsa(r) => r.verify(hash, sig),
            Self::EcdsaP256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(hash, sig)
                    .map_err(|_| SigError::Invalid)
            }
        }
    }
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
    /// The certificate's key.
    pub key: PeerKey,
    /// DER of the subject name (for ID_DER_ASN1_DN).
    pub subject_der: Vec<u8>,
    /// The names it certifies: its subject's common names and its DNS
    /// subject alternative names (an ID_FQDN must be one of these; a
    /// revoked agent's name among them refuses it).
    pub names: Vec<String>,
    /// The groups an enrolled agent's certificate binds it to (its
    /// subject's `OU=gkm-groups=1234,1235`, which only the controller's
    /// CA writes): any key server trusting the CA enforces them, its own
    /// store's enrollment or not. None when the certificate has none.
    pub groups: Option<Vec<u32>>,
}

/// The subject OU prefix that binds a certificate to groups.
pub const GROUPS_OU_PREFIX: &str = "gkm-groups=";

/// The groups an OU value binds (`gkm-groups=1234,1235`); an OU with the
/// prefix that does not parse binds to no group at all (empty list).
fn groups_of_ou(ou: &str) -> Option<Vec<u32>> {
    let list = ou.strip_prefix(GROUPS_OU_PREFIX)?;
    let parsed: Result<Vec<u32>, _> = list.split(',').map(str::parse).collect();
    Some(parsed.unwrap_or_default())
}

/// A party's certificate credentials for phase 1, from the three PEM
/// files an operator configures (`[pki]` `ca`, `cert`, `key`): the CAs it
/// trusts, its own certificate (the file's first, DER) and its key (RSA
/// or ECDSA P-256, the certificate's own).
#[derive(Debug)]
pub struct PkiCredentials {
    /// The trusted CAs.
    pub ca: CertificateAuthority,
    /// Its own certificate, DER.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Phase1Signer,
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
    /// The key is not the certificate's.
    #[error("pki.key: the key is not the one pki.cert certifies")]
    KeyMismatch,
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
        let key = Phase1Signer::from_pkcs8_pem(key).map_err(PkiLoadError::Key)?;
        let cert_key = x509_parser::parse_x509_certificate(&cert)
            .ok()
            .and_then(|(_, c)| PeerKey::from_spki_der(c.public_key().raw).ok())
            .ok_or(PkiLoadError::Cert(CertError::UnsupportedKey))?;
        let own = key
            .public_spki_der()
            .ok()
            .and_then(|d| PeerKey::from_spki_der(&d).ok());
        if own.as_ref() != Some(&cert_key) {
            return Err(PkiLoadError::KeyMismatch);
        }
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
    /// validity period, key usage. Returns its key and subject.
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
        let key = PeerKey::from_spki_der(parsed.public_key().raw)
            .map_err(|_| CertError::UnsupportedKey)?;
        let mut names: Vec<String> = parsed
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push((*d).to_owned());
                }
            }
        }
        let groups = parsed
            .subject()
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok())
            .find_map(groups_of_ou);
        Ok(VerifiedCert {
            key,
            subject_der: parsed.subject().as_raw().to_vec(),
            names,
            groups,
        })
    }
}
