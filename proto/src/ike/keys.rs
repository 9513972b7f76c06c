//! The phase 1 key schedule (RFC 2409 section 5 and appendix B).

use zeroize::{Zeroize, Zeroizing};

use super::crypt::{iv_from, Iv};
use super::suite::{AuthKind, Suite};
#[cfg(doc)]
use crate::crypto::CbcCipher;
use crate::crypto::Prf;

/// Keys derived at the end of main mode message 3/4.
#[derive(Clone)]
pub struct Phase1Keys {
    /// SKEYID.
    pub skeyid: Zeroizing<Vec<u8>>,
    /// SKEYID_d (keying material for phase 2; unused by GDOI, kept for the key log).
    pub skeyid_d: Zeroizing<Vec<u8>>,
    /// SKEYID_a: keys every HASH payload of later exchanges.
    pub skeyid_a: Zeroizing<Vec<u8>>,
    /// SKEYID_e.
    pub skeyid_e: Zeroizing<Vec<u8>>,
    /// The cipher key expanded from SKEYID_e.
    pub enc_key: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for Phase1Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Phase1Keys(..)")
    }
}

impl Phase1Keys {
    /// Derives SKEYID and its children.
    ///
    /// PSK: SKEYID = prf(psk, Ni_b | Nr_b); signatures: SKEYID =
    /// prf(Ni_b | Nr_b, g^xy). Then SKEYID_d = prf(SKEYID, g^xy | CKY-I |
    /// CKY-R | 0), SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R |
    /// 1), SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2).
    pub fn derive(
        suite: &Suite,
        psk: Option<&[u8]>,
        ni_b: &[u8],
        nr_b: &[u8],
        gxy: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
    ) -> Self {
        let prf = suite.prf;
        let skeyid = Zeroizing::new(match (suite.auth, psk) {
            (AuthKind::Psk, Some(psk)) => prf.prf(psk, &[ni_b, nr_b]),
            _ => {
                let mut k = [ni_b, nr_b].concat();
                let out = prf.prf(&k, &[gxy]);
                k.zeroize();
                out
            }
        });
        let skeyid_d = Zeroizing::new(prf.prf(&skeyid, &[gxy, cky_i, cky_r, &[0]]));
        let skeyid_a = Zeroizing::new(prf.prf(&skeyid, &[&skeyid_d, gxy, cky_i, cky_r, &[1]]));
        let skeyid_e = Zeroizing::new(prf.prf(&skeyid, &[&skeyid_a, gxy, cky_i, cky_r, &[2]]));
        let enc_key = Zeroizing::new(prf.expand_key(&skeyid_e, suite.cipher.key_len()));
        Self {
            skeyid,
            skeyid_d,
            skeyid_a,
            skeyid_e,
            enc_key,
        }
    }

    /// HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b).
    pub fn hash_i(&self, prf: Prf, t: &Transcript<'_>, idii_b: &[u8]) -> Vec<u8> {
        prf.prf(
            &self.skeyid,
            &[t.gxi, t.gxr, t.cky_i, t.cky_r, t.sai_b, idii_b],
        )
    }

    /// HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b).
    pub fn hash_r(&self, prf: Prf, t: &Transcript<'_>, idir_b: &[u8]) -> Vec<u8> {
        prf.prf(
            &self.skeyid,
            &[t.gxr, t.gxi, t.cky_r, t.cky_i, t.sai_b, idir_b],
        )
    }

    /// Constant-time check of a received HASH_I.
    pub fn verify_hash_i(&self, prf: Prf, t: &Transcript<'_>, idii_b: &[u8], tag: &[u8]) -> bool {
        prf.verify(
            &self.skeyid,
            &[t.gxi, t.gxr, t.cky_i, t.cky_r, t.sai_b, idii_b],
            tag,
        )
    }

    /// Constant-time check of a received HASH_R.
    pub fn verify_hash_r(&self, prf: Prf, t: &Transcript<'_>, idir_b: &[u8], tag: &[u8]) -> bool {
        prf.verify(
            &self.skeyid,
            &[t.gxr, t.gxi, t.cky_r, t.cky_i, t.sai_b, idir_b],
            tag,
        )
    }
}

/// The main mode values HASH_I and HASH_R cover besides the ID payload.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// Initiator's public DH value.
    pub gxi: &'a [u8],
    /// Responder's public DH value.
    pub gxr: &'a [u8],
    /// Initiator cookie.
    pub cky_i: &'a [u8; 8],
    /// Responder cookie.
    pub cky_r: &'a [u8; 8],
    /// Body of the initiator's SA payload.
    pub sai_b: &'a [u8],
}

/// The phase 1 IV: hash(g^xi | g^xr) truncated to the block size (held
/// in [`CbcCipher::MAX_BLOCK`] octets: see [`super::crypt::Iv`]).
pub fn phase1_iv(suite: &Suite, gxi: &[u8], gxr: &[u8]) -> Iv {
    iv_from(suite.cipher, &suite.prf.hash(&[gxi, gxr]))
}
