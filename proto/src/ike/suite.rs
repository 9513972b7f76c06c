//! The phase 1 suites GKM offers and accepts (DESIGN.md, "registration"):
//! AES-CBC-128/256, HMAC-SHA-256/384, DH groups 14, 19 and 20, PSK, RSA
//! signatures or ECDSA-256 signatures (RFC 4754); and, only where an operator turns on `legacy_phase1`, the
//! legacy suites older peers have: 3DES-CBC, HMAC-SHA-1 and MODP groups 2
//! and 5 (docs/INTEROP.md, "Phase 1 suites").

use gkm_wire::consts::{AuthMethod, IsakmpTransformId};
use gkm_wire::payload::{OakleyAttributes, Transform};

use crate::crypto::{CbcCipher, DhGroup, KeyKind, Prf};

/// Phase 1 authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// Pre-shared key.
    Psk,
    /// Signatures with X.509 certificates whose key is of this kind
    /// (RSA signatures, or ECDSA-256 as RFC 4754 numbers it).
    Signature(KeyKind),
}

impl AuthKind {
    fn oakley(self) -> AuthMethod {
        match self {
            Self::Psk => AuthMethod::PRE_SHARED_KEY,
            Self::Signature(KeyKind::Rsa) => AuthMethod::RSA_SIGNATURES,
            Self::Signature(KeyKind::EcdsaP256) => AuthMethod::ECDSA_P256,
        }
    }

    /// Whether it is a signature method (certificates).
    pub fn is_signature(self) -> bool {
        matches!(self, Self::Signature(_))
    }
}

/// A complete phase 1 suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite {
    /// Cipher.
    pub cipher: CbcCipher,
    /// PRF and hash.
    pub prf: Prf,
    /// DH group.
    pub group: DhGroup,
    /// Authentication.
    pub auth: AuthKind,
    /// Lifetime in seconds.
    pub life_secs: u32,
}

/// Shortest and longest phase 1 lifetimes accepted from a peer.
pub const LIFE_RANGE_SECS: (u32, u32) = (60, 86_400);

impl Suite {
    /// Whether a part of the suite is below GKM's floor (3DES, SHA-1,
    /// MODP 1024 or 1536), so that it needs `legacy_phase1`.
    pub fn is_legacy(&self) -> bool {
        self.cipher.is_legacy() || self.prf.is_legacy() || self.group.is_legacy()
    }

    /// The transforms an initiator offers for `auth`, strongest first;
    /// with `legacy`, the legacy suites follow every strong one, so a peer
    /// that has a strong suite picks it.
    pub fn offers(auth: AuthKind, life_secs: u32, legacy: bool) -> Vec<Suite> {
        let mut v = Vec::new();
        let mut add = |groups: &[DhGroup], ciphers: &[CbcCipher], prfs: &[Prf]| {
            for &group in groups {
                for &cipher in ciphers {
                    for &prf in prfs {
                        let s = Suite {
                            cipher,
                            prf,
                            group,
                            auth,
                            life_secs,
                        };
                        if !v.contains(&s) {
                            v.push(s);
                        }
                    }
                }
            }
        };
        let aes = [CbcCipher::Aes256, CbcCipher::Aes128];
        add(
            &[DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Modp2048],
            &aes,
            &[Prf::HmacSha256, Prf::HmacSha384],
        );
        if legacy {
            let groups = [
                DhGroup::Ecp256,
                DhGroup::Modp2048,
                DhGroup::Modp1536,
                DhGroup::Modp1024,
            ];
            add(&groups, &aes, &[Prf::HmacSha256, Prf::HmacSha1]);
            // 3DES last of all: only a peer with nothing better takes it
            // (RFC 4109 made it the IKEv1 MUST that AES-128 now is).
            add(&groups, &[CbcCipher::TripleDes], &[Prf::HmacSha1]);
        }
        v
    }

    /// The suite's parts as `show crypto isakmp policy` names them
    /// (`AES-CBC-128/SHA/MODP-1536`, `3DES-CBC/SHA/MODP-1024`).
    pub fn name(&self) -> String {
        format!(
            "{}/{}/{}",
            self.cipher.name(),
            self.prf.oakley(),
            self.group.oakley()
        )
    }

    /// The Transform payload for this suite.
    pub fn transform(&self, number: u8) -> Transform<'static> {
        let (encryption, key_length_bits) = self.cipher.oakley();
        Transform {
            number,
            transform_id: IsakmpTransformId::KEY_IKE,
            attributes: OakleyAttributes {
                encryption: Some(encryption),
                key_length_bits,
                hash: Some(self.prf.oakley()),
                auth_method: Some(self.auth.oakley()),
                group: Some(self.group.oakley()),
                life_seconds: Some(self.life_secs),
                ..OakleyAttributes::default()
            },
        }
    }

    /// The suite a transform describes, if GKM supports every part of it
    /// and the lifetime is in range; unknown attributes make it unacceptable.
    /// Legacy suites are returned too: callers decide with [`Suite::is_legacy`].
    pub fn from_transform(t: &Transform<'_>, auth_allowed: &[AuthKind]) -> Option<Suite> {
        let a = &t.attributes;
        if t.transform_id != IsakmpTransformId::KEY_IKE
            || !a.unknown.is_empty()
            || a.life_kilobytes.is_some()
        {
            return None;
        }
        let cipher = CbcCipher::from_oakley(a.encryption?, a.key_length_bits)?;
        let prf = Prf::from_oakley(a.hash?)?;
        let group = DhGroup::from_oakley(a.group?)?;
        let auth = match a.auth_method? {
            AuthMethod::PRE_SHARED_KEY => AuthKind::Psk,
            AuthMethod::RSA_SIGNATURES => AuthKind::Signature(KeyKind::Rsa),
            AuthMethod::ECDSA_P256 => AuthKind::Signature(KeyKind::EcdsaP256),
            _ => return None,
        };
        if !auth_allowed.contains(&auth) {
            return None;
        }
        let life_secs = a.life_seconds.unwrap_or(28_800);
        if !(LIFE_RANGE_SECS.0..=LIFE_RANGE_SECS.1).contains(&life_secs) {
            return None;
        }
        Some(Suite {
            cipher,
            prf,
            group,
            auth,
            life_secs,
        })
    }
}
