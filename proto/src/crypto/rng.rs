//! Injected randomness: engines take any `CryptoRng`, so tests run
//! deterministically from a seed and binaries use the OS generator.

use rand_core::{CryptoRng, RngCore};

/// The randomness an engine draws from.
pub trait EngineRng: RngCore + CryptoRng + Send {}

impl<T: RngCore + CryptoRng + Send> EngineRng for T {}

/// Fills a fresh array with random octets.
pub fn array<const N: usize>(rng: &mut dyn EngineRng) -> [u8; N] {
    let mut a = [0u8; N];
    rng.fill_bytes(&mut a);
    a
}

/// A fresh vector of random octets.
pub fn bytes(rng: &mut dyn EngineRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Lets RustCrypto crates (`p256`, `rsa`) draw from an engine's injected
/// generator through a `&mut dyn EngineRng`.
pub(crate) struct Adapter<'a>(pub(crate) &'a mut dyn EngineRng);

impl RngCore for Adapter<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for Adapter<'_> {}
