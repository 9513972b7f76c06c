//! The phase 1 suites GKM offers and accepts (DESIGN.md, "registration"):
//! AES-CBC-128/256, HMAC-SHA-256/384, DH groups 14 and 19, PSK or RSA
//! signatures.

use gkm_wire::consts::{AuthMethod, IsakmpTransformId, OakleyEncryption};
use gkm_wire::payload::{OakleyAttributes, Transform};

use crate::crypto::{CbcCipher, DhGroup, Prf};

/// Phase 1 authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// Pre-shared key.
    Psk,
    /// RSA signatures with X.509 certificates.
    RsaSig,
}

impl AuthKind {
    fn oakley(self) -> AuthMethod {
        match self {
            Self::Psk => AuthMethod::PRE_SHARED_KEY,
            Self::RsaSig => AuthMethod::RSA_SIGNATURES,
        }
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
    /// The transforms an initiator offers for `auth`, strongest first.
    pub fn offers(auth: AuthKind, life_secs: u32) -> Vec<Suite> {
        let mut v = Vec::new();
        for group in [DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Modp2048] {
            for cipher in [CbcCipher::Aes256, CbcCipher::Aes128] {
                for prf in [Prf::HmacSha256, Prf::HmacSha384] {
                    v.push(Suite {
                        cipher,
                        prf,
                        group,
                        auth,
                        life_secs,
                    });
                }
            }
        }
        v
    }

    /// The Transform payload for this suite.
    pub fn transform(&self, number: u8) -> Transform<'static> {
        Transform {
            number,
            transform_id: IsakmpTransformId::KEY_IKE,
            attributes: OakleyAttributes {
                encryption: Some(OakleyEncryption::AES_CBC),
                key_length_bits: Some(self.cipher.key_bits()),
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
            AuthMethod::RSA_SIGNATURES => AuthKind::RsaSig,
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
