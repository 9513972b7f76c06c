//! The cryptography the engines need, behind small typed wrappers: PRFs and
//! hashes (ring), AES-CBC (RustCrypto `aes`/`cbc`), Diffie-Hellman groups
//! 14, 19 and 20 (and the legacy 2 and 5), RSA and ECDSA P-256 phase 1
//! signatures, and certificate checks.
//! No cipher or bignum arithmetic is written here.

mod cbc_cipher;
mod dh;
mod prf;
mod rekey_sig;
pub mod rng;
mod sig;

pub use cbc_cipher::{CbcCipher, CipherError};
pub use dh::{DhBackend, DhError, DhGroup, DhPrivate};
pub use prf::Prf;
pub use rekey_sig::{RekeySigner, RekeyVerifier};
pub use rng::EngineRng;
pub use sig::{
    certificates_from_pem, CertError, CertificateAuthority, KeyKind, PeerKey, Phase1Signer,
    PkiCredentials, PkiLoadError, RsaSigner, RsaVerifier, SigError, VerifiedCert, GROUPS_OU_PREFIX,
};
