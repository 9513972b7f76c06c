//! IKEv1 phase 1 pieces shared by both engines (RFC 2409): the offered
//! suites, the key schedule, CBC message protection with IV chaining, and
//! HASH payload construction for protected exchanges.

pub mod crypt;
pub mod initiator;
pub mod keys;
pub mod suite;

pub use crypt::{
    decrypt_message, encrypt_body, encrypt_message, hashed_chain, hashed_raw_chain, phase2_iv,
    verify_hashed_chain, CryptError, Decrypted, Iv,
};
pub use keys::{phase1_iv, Phase1Keys, Transcript};
pub use suite::{AuthKind, Suite};
