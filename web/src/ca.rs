//! The controller's internal CA (docs/OPERATIONS.md, "Enrollment"): a
//! P-256 key made at the first start and sealed in the store like every
//! other secret (or the operator's CA, given as files, so that
//! cooperative key servers share one), with its self-signed certificate.
//! It signs the certificates of enrolled agents, from their certificate
//! signing requests, and the key server's own P-256 certificate for
//! phase 1. It never signs a CA.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gkm_store::Store;

/// The subject OU prefix binding a certificate to groups (the key
/// server's `gkm_proto::crypto::GROUPS_OU_PREFIX`; a test keeps them equal).
pub const GROUPS_OU_PREFIX: &str = "gkm-groups=";
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};

/// The sealed secret holding the CA's key (PKCS#8 DER).
const SECRET_KEY: &str = "internal-ca-key";
/// The secret holding its certificate (DER; sealed with the key so the
/// two never part).
const SECRET_CERT: &str = "internal-ca-cert";
/// The CA certificate's validity: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 366 * 86_400);
/// Certificates start this long before they are made (clock skew).
const BACKDATE: Duration = Duration::from_secs(300);

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] gkm_store::StoreError),
    /// The stored or configured CA is not usable.
    #[error("CA: {0}")]
    Ca(String),
    /// The certificate signing request was refused (named field).
    #[error("{0}")]
    Csr(String),
}

/// A certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Serial number, hex.
    pub serial_hex: String,
    /// End of validity, UNIX ms.
    pub not_after_ms: i64,
}

impl Issued {
    fn of(cert: &rcgen::Certificate, serial_hex: String, not_after_ms: i64) -> Self {
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial_hex,
            not_after_ms,
        }
    }
}

/// A certificate's serial (hex) and end of validity (UNIX ms).
fn facts(p: &CertificateParams) -> (String, i64) {
    let serial = p
        .serial_number
        .as_ref()
        .map(|s| hex::encode(s.as_ref()))
        .unwrap_or_default();
    (serial, unix_ms(p.not_after.into()))
}

/// The internal CA.
pub struct InternalCa {
    cert_der: Vec<u8>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl core::fmt::Debug for InternalCa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("InternalCa")
    }
}

fn ca_err(e: impl core::fmt::Display) -> CaError {
    CaError::Ca(e.to_string())
}

/// A DER certificate as PEM (base64 in 64-column lines).
fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl InternalCa {
    /// The CA sealed in `store`, made (key and self-signed certificate
    /// named `CN=<common_name>`) and sealed at the first start.
    pub async fn load_or_create(store: &dyn Store, common_name: &str) -> Result<Self, CaError> {
        if let (Some(key), Some(cert)) = (
            store.secret(SECRET_KEY).await?,
            store.secret(SECRET_CERT).await?,
        ) {
            let key = KeyPair::try_from(key.as_slice()).map_err(ca_err)?;
            return Self::from_parts(cert.to_vec(), key);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.distinguished_name
            .push(DnType::OrganizationName, "GKM internal CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        p.not_before = (now - BACKDATE).into();
        p.not_after = (now + CA_VALIDITY).into();
        p.serial_number = Some(random_serial()?);
        let cert = p.self_signed(&key).map_err(ca_err)?.der().to_vec();
        // The certificate first: a crash between the two leaves no key
        // without its certificate (the next start makes both again).
        store.put_secret(SECRET_CERT, &cert).await?;
        store
            .put_secret(SECRET_KEY, key.serialize_der().as_slice())
            .await?;
        tracing::info!(
            ca = common_name,
            "internal CA created and sealed in the store"
        );
        Self::from_parts(cert, key)
    }

    /// The operator's CA: a certificate and its P-256 key (PKCS#8), PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Ca(format!("key: {e}")))?;
        let der = first_certificate(cert_pem)?;
        Self::from_parts(der, key)
    }

    fn from_parts(cert_der: Vec<u8>, key: KeyPair) -> Result<Self, CaError> {
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Ca("the CA key must be ECDSA P-256".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| CaError::Ca(format!("certificate: {e}")))?;
        Ok(Self {
            cert_pem: pem_of(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// Its certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Its certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs an agent's certificate for `name` (CN and DNS name) bound to
    /// `groups` (`OU=gkm-groups=...`, which every key server trusting this
    /// CA enforces) from its PEM certificate signing request, valid for
    /// `validity`: the request must be signed by its own P-256 key; its
    /// names and extensions are not taken (the controller decides what the
    /// certificate says).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        name: &str,
        groups: &[u32],
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(format!("/csr: not a signed certificate request ({e})")))?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::Csr(
                "/csr: the key must be ECDSA P-256 (RFC 4754 ECDSA-256)".into(),
            ));
        }
        let mut params = self.leaf(name, validity)?;
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!("{GROUPS_OU_PREFIX}{}", list.join(",")),
        );
        let (serial_hex, not_after_ms) = facts(&params);
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(ca_err)?;
        Ok(Issued::of(&cert, serial_hex, not_after_ms))
    }

    /// Signs a certificate for `name` over `key` (a key server's own
    /// P-256 key, PKCS#8 DER).
    pub fn sign_key(
        &self,
        key_pkcs8: &[u8],
        name: &str,
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let key = KeyPair::try_from(key_pkcs8).map_err(ca_err)?;
        let params = self.leaf(name, validity)?;
        let (serial_hex, not_after_ms) = facts(&params);
        let cert = params.signed_by(&key, &self.issuer).map_err(ca_err)?;
        Ok(Issued::of(&cert, serial_hex, not_after_ms))
    }

    /// An end-entity certificate's parameters: CN and DNS name `name`,
    /// a random serial, digital signatures only.
    fn leaf(&self, name: &str, validity: Duration) -> Result<CertificateParams, CaError> {
        let mut p = CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| CaError::Csr(format!("/name: {e}")))?;
        p.subject_alt_names = vec![SanType::DnsName(
            name.try_into()
                .map_err(|e| CaError::Csr(format!("/name: {e}")))?,
        )];
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        p.not_before = (now - BACKDATE).into();
        p.not_after = (now + validity).into();
        p.serial_number = Some(random_serial()?);
        Ok(p)
    }
}

/// 16 random octets, the first below 0x80 (a positive INTEGER).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| CaError::Ca("no randomness".into()))?;
    if let Some(first) = b.first_mut() {
        *first &= 0x7f;
        *first |= 0x01;
    }
    Ok(SerialNumber::from_slice(&b))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The first certificate of a PEM document, DER.
fn first_certificate(pem: &str) -> Result<Vec<u8>, CaError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| CaError::Ca(format!("certificate: {e}")))
}
