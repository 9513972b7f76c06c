//! Diffie-Hellman for phase 1: group 14 (2048-bit MODP, RFC 3526 section 3)
//! and the legacy groups 2 (1024-bit MODP, RFC 2409 section 6.2) and 5
//! (1536-bit MODP, RFC 3526 section 2), with constant-time modular
//! exponentiation from `crypto-bigint`; group 19 (256-bit random ECP,
//! RFC 5903) with the `p256` crate or ring, group 20 with ring.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U1024, U1536, U2048};
use gkm_wire::consts::OakleyGroup;
use p256::elliptic_curve::sec1::FromEncodedPoint;
use p256::elliptic_curve::sec1::{EncodedPoint, ToEncodedPoint};
use zeroize::Zeroizing;

use super::rng::{Adapter, EngineRng};

/// RFC 3526 section 3, the 2048-bit MODP prime; generator 2.
const MODP_2048_P: U2048 = U2048::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// RFC 3526 section 2, the 1536-bit MODP prime (group 5); generator 2.
/// Held in a 2048-bit integer: Montgomery arithmetic works for any odd
/// modulus below the width, so the three MODP groups share one code path.
const MODP_1536_P: U2048 = U1536::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
))
.resize();

/// RFC 2409 section 6.2, the 1024-bit MODP prime (group 2); generator 2.
const MODP_1024_P: U2048 = U1024::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
))
.resize();

/// Private exponent size for group 14: twice the group's ~112-bit security
/// strength, rounded up (NIST SP 800-56A), and 320 bits so that the
/// bounded exponentiation stays fast. Groups 2 and 5 use the same size
/// (more than they need, and still far below their subgroup order).
const MODP_EXPONENT_BITS: usize = 320;

/// Where group 19 key pairs come from.
///
/// `Ring` (the default in the binaries) uses ring's ECDH with the operating
/// system's generator: about four times faster than `Seeded`, but ring's
/// randomness cannot be injected. `Seeded` uses the `p256` crate with the
/// engine's injected generator, so simulated-clock tests replay the same
/// transcript from a seed. Both are tested against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DhBackend {
    /// ring + OS randomness.
    #[default]
    Ring,
    /// p256 + the engine's generator.
    Seeded,
}

/// A Diffie-Hellman group GKM offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 2, 1024-bit MODP: legacy (RFC 8247 section 2.4: SHOULD NOT),
    /// accepted only with `legacy_phase1`.
    Modp1024,
    /// Group 5, 1536-bit MODP: legacy (RFC 8247 section 2.4: SHOULD NOT,
    /// below 112-bit strength), accepted only with `legacy_phase1`.
    Modp1536,
    /// Group 14, 2048-bit MODP.
    Modp2048,
    /// Group 19, 256-bit random ECP.
    Ecp256,
    /// Group 20, 384-bit random ECP (RFC 5903); ring's only, whatever the
    /// backend, so a seeded simulation is not reproducible through it.
    Ecp384,
}

/// A peer's public value is not a valid group element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Diffie-Hellman public value")]
pub struct DhError;

impl DhGroup {
    /// The group for an Oakley group number, if offered.
    pub fn from_oakley(g: OakleyGroup) -> Option<Self> {
        match g {
            OakleyGroup::MODP_1024 => Some(Self::Modp1024),
            OakleyGroup::MODP_1536 => Some(Self::Modp1536),
            OakleyGroup::MODP_2048 => Some(Self::Modp2048),
            OakleyGroup::ECP_256 => Some(Self::Ecp256),
            OakleyGroup::ECP_384 => Some(Self::Ecp384),
            _ => None,
        }
    }

    /// The Oakley group number.
    pub fn oakley(self) -> OakleyGroup {
        match self {
            Self::Modp1024 => OakleyGroup::MODP_1024,
            Self::Modp1536 => OakleyGroup::MODP_1536,
            Self::Modp2048 => OakleyGroup::MODP_2048,
            Self::Ecp256 => OakleyGroup::ECP_256,
            Self::Ecp384 => OakleyGroup::ECP_384,
        }
    }

    /// Length of a public value in the KE payload.
    pub fn public_len(self) -> usize {
        match self {
            Self::Modp1024 => 128,
            Self::Modp1536 => 192,
            Self::Modp2048 => 256,
            Self::Ecp256 => 64,
            Self::Ecp384 => 96,
        }
    }

    /// Whether the group is below GKM's floor (112-bit strength) and so
    /// needs `legacy_phase1`.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Modp1024 | Self::Modp1536)
    }

    /// The prime of a MODP group.
    fn modp_prime(self) -> Option<&'static U2048> {
        match self {
            Self::Modp1024 => Some(&MODP_1024_P),
            Self::Modp1536 => Some(&MODP_1536_P),
            Self::Modp2048 => Some(&MODP_2048_P),
            Self::Ecp256 | Self::Ecp384 => None,
        }
    }

    /// Generates a key pair; returns the private half and the KE payload bytes.
    /// `backend` chooses the group 19 implementation; group 14 always uses
    /// the injected generator.
    pub fn generate(self, rng: &mut dyn EngineRng, backend: DhBackend) -> (DhPrivate, Vec<u8>) {
        let ring_curve = match (self, backend) {
            (Self::Ecp256, DhBackend::Ring) => Some(&ring::agreement::ECDH_P256),
            (Self::Ecp384, _) => Some(&ring::agreement::ECDH_P384),
            _ => None,
        };
        if let Some(curve) = ring_curve {
            let sys = ring::rand::SystemRandom::new();
            if let Ok(k) = ring::agreement::EphemeralPrivateKey::generate(curve, &sys) {
                if let Ok(p) = k.compute_public_key() {
                    let public = p.as_ref().get(1..).unwrap_or_default().to_vec();
                    return (DhPrivate::Ring(Box::new(k)), public);
                }
            }
        }
        if let Some(p) = self.modp_prime() {
            let mut x = Zeroizing::new([0u8; 256]);
            let n = MODP_EXPONENT_BITS / 8;
            if let Some(tail) = x.get_mut(256 - n..) {
                rng.fill_bytes(tail);
            }
            let x = U2048::from_be_slice(x.as_ref());
            let params = DynResidueParams::new(p);
            let g = DynResidue::new(&U2048::from_u8(2), params);
            let public = g.pow_bounded_exp(&x, MODP_EXPONENT_BITS).retrieve();
            return (
                DhPrivate::Modp(self, Box::new(Zeroizing::new(x))),
                modp_bytes(&public, self.public_len()),
            );
        }
        match self {
            Self::Ecp256 => {
                let secret = p256::ecdh::EphemeralSecret::random(&mut Adapter(rng));
                let point = secret.public_key().to_encoded_point(false);
                // RFC 5903 section 7: x ‖ y, without the SEC1 0x04 prefix.
                let public = point.as_bytes().get(1..).unwrap_or_default().to_vec();
                (DhPrivate::Ecp(Box::new(secret)), public)
            }
            // ring could not draw a key (the system's generator failed):
            // the exchange then fails at `shared`, refused, never weak.
            Self::Ecp384 | Self::Modp1024 | Self::Modp1536 | Self::Modp2048 => {
                (DhPrivate::Unusable, vec![0; self.public_len()])
            }
        }
    }
}

/// The private half of a DH exchange; consumed to compute the shared secret.
pub enum DhPrivate {
    /// A MODP group's exponent (wiped on drop).
    Modp(DhGroup, Box<Zeroizing<U2048>>),
    /// Group 19 scalar (p256, seeded).
    Ecp(Box<p256::ecdh::EphemeralSecret>),
    /// Group 19 or 20 scalar (ring).
    Ring(Box<ring::agreement::EphemeralPrivateKey>),
    /// No key could be drawn; every shared secret fails.
    Unusable,
}

impl core::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DhPrivate(..)")
    }
}

impl DhPrivate {
    /// g^xy from the peer's KE payload: for MODP the full 256 octets
    /// (leading zeros kept), for ECP the x coordinate (RFC 5903 section 9).
    pub fn shared(self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        match self {
            Self::Unusable => Err(DhError),
            Self::Ring(k) => {
                let curve = k.algorithm();
                let len = if curve == &ring::agreement::ECDH_P384 {
                    96
                } else {
                    64
                };
                if peer.len() != len {
                    return Err(DhError);
                }
                let mut sec1 = Vec::with_capacity(len + 1);
                sec1.push(0x04);
                sec1.extend_from_slice(peer);
                let peer = ring::agreement::UnparsedPublicKey::new(curve, sec1);
                ring::agreement::agree_ephemeral(*k, &peer, |s| Zeroizing::new(s.to_vec()))
                    .map_err(|_| DhError)
            }
            Self::Modp(group, x) => {
                let (Some(p), len) = (group.modp_prime(), group.public_len()) else {
                    return Err(DhError);
                };
                if peer.len() != len {
                    return Err(DhError);
                }
                let mut padded = [0u8; 256];
                padded
                    .get_mut(256 - len..)
                    .ok_or(DhError)?
                    .copy_from_slice(peer);
                let y = U2048::from_be_slice(&padded);
                let one = U2048::ONE;
                let p_minus_1 = p.wrapping_sub(&one);
                // 1 < y < p - 1 (RFC 2785 section 3.1 / SP 800-56A 5.6.2.3.1)
                if y <= one || y >= p_minus_1 {
                    return Err(DhError);
                }
                let params = DynResidueParams::new(p);
                let s = DynResidue::new(&y, params)
                    .pow_bounded_exp(&x, MODP_EXPONENT_BITS)
                    .retrieve();
                Ok(Zeroizing::new(modp_bytes(&s, len)))
            }
            Self::Ecp(secret) => {
                if peer.len() != 64 {
                    return Err(DhError);
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(peer);
                let point =
                    EncodedPoint::<p256::NistP256>::from_bytes(&sec1).map_err(|_| DhError)?;
                let pk =
                    Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
                        .ok_or(DhError)?;
                let shared = secret.diffie_hellman(&pk);
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    }
}

/// A MODP value as the KE payload and g^xy carry it: big-endian, the
/// prime's length, leading zeros kept (RFC 2409 section 5).
fn modp_bytes(v: &U2048, len: usize) -> Vec<u8> {
    let all = v.to_be_bytes();
    all.get(256 - len.min(256)..).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn both_groups_agree_and_reject_bad_points() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let cases = [
            (DhGroup::Ecp256, DhBackend::Seeded, DhBackend::Seeded),
            (DhGroup::Ecp256, DhBackend::Ring, DhBackend::Ring),
            (DhGroup::Ecp256, DhBackend::Ring, DhBackend::Seeded),
            (DhGroup::Modp2048, DhBackend::Seeded, DhBackend::Ring),
            (DhGroup::Modp1536, DhBackend::Seeded, DhBackend::Ring),
            (DhGroup::Modp1024, DhBackend::Ring, DhBackend::Seeded),
            (DhGroup::Ecp384, DhBackend::Ring, DhBackend::Ring),
            (DhGroup::Ecp384, DhBackend::Seeded, DhBackend::Ring),
        ];
        for (g, ba, bb) in cases {
            let (a, pa) = g.generate(&mut rng, ba);
            let (b, pb) = g.generate(&mut rng, bb);
            assert_eq!(pa.len(), g.public_len());
            let (a2, _) = g.generate(&mut rng, ba);
            let (a3, _) = g.generate(&mut rng, ba);
            let s1 = a.shared(&pb).unwrap();
            let s2 = b.shared(&pa).unwrap();
            assert_eq!(*s1, *s2, "{g:?} {ba:?}/{bb:?}");
            assert!(a2.shared(&pb[1..]).is_err());
            assert!(a3.shared(&vec![0u8; g.public_len()]).is_err());
        }
        // A P-256 value is no P-384 value, and an unusable key agrees to nothing.
        let (a, _) = DhGroup::Ecp384.generate(&mut rng, DhBackend::Ring);
        let (_, p256) = DhGroup::Ecp256.generate(&mut rng, DhBackend::Ring);
        assert!(a.shared(&p256).is_err());
        assert!(DhPrivate::Unusable.shared(&[0u8; 96]).is_err());
        // Each MODP group refuses 1, p - 1 and values >= p (all 0xff).
        for g in [DhGroup::Modp1024, DhGroup::Modp1536, DhGroup::Modp2048] {
            let len = g.public_len();
            let p = g.modp_prime().unwrap();
            let mut one = vec![0u8; len];
            one[len - 1] = 1;
            let p_minus_1 = modp_bytes(&p.wrapping_sub(&U2048::ONE), len);
            let p_bytes = modp_bytes(p, len);
            for bad in [one, p_minus_1, p_bytes, vec![0xff; len]] {
                let (a, _) = g.generate(&mut rng, DhBackend::Seeded);
                assert!(a.shared(&bad).is_err(), "{g:?}");
            }
        }
    }

    /// The primes are typed in from the RFCs: each must pass Fermat's test
    /// to base 2 and have 2 in the order-q subgroup (2^q = 1 mod p, q =
    /// (p-1)/2), as the RFCs' safe primes do and a single wrong digit would
    /// not (this does not prove q prime); and each is its RFC's length.
    #[test]
    fn modp_primes_are_the_rfc_safe_primes() {
        for (g, bits) in [
            (DhGroup::Modp1024, 1024),
            (DhGroup::Modp1536, 1536),
            (DhGroup::Modp2048, 2048),
        ] {
            let p = g.modp_prime().unwrap();
            assert_eq!(p.bits(), bits, "{g:?}");
            assert_eq!(g.public_len() * 8, bits);
            let params = DynResidueParams::new(p);
            let two = DynResidue::new(&U2048::from_u8(2), params);
            let p_minus_1 = p.wrapping_sub(&U2048::ONE);
            let q = p_minus_1.shr_vartime(1);
            assert_eq!(two.pow(&p_minus_1).retrieve(), U2048::ONE, "{g:?}: Fermat");
            assert_eq!(
                two.pow(&q).retrieve(),
                U2048::ONE,
                "{g:?}: 2 in the q subgroup"
            );
        }
        assert!(DhGroup::Modp1024.is_legacy() && DhGroup::Modp1536.is_legacy());
        assert!(!DhGroup::Modp2048.is_legacy() && !DhGroup::Ecp256.is_legacy());
    }
}
