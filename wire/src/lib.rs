//! `gkm-wire`: the ISAKMP/GDOI, ESP and IP-D3P codecs of GKM.
//!
//! Typed parse/emit over byte buffers, no I/O and no cryptography. Every
//! payload has a `Repr`-style type with `parse(&[u8])` and `emit(&mut Vec<u8>)`;
//! `parse` borrows from the input and never panics; errors are small `Copy`
//! values naming the failing field ([`Error`]). Every protocol number lives
//! in [`consts`]. Limits (64 KiB messages, payload and attribute counts)
//! live in [`consts::limits`]. The rule for unknown items is documented in
//! [`payload`] and `docs/WIRE.md`.
//!
//! ```
//! use gkm_wire::{Message, consts::ExchangeType};
//! # fn main() -> Result<(), gkm_wire::Error> {
//! let datagram = [0u8; 10];
//! assert!(Message::parse(&datagram).is_err()); // truncated header: a typed error
//! # Ok(()) }
//! ```

#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod attr;
mod codec;
pub mod consts;
pub mod coop;
pub mod coop_gms;
pub mod d3p;
mod error;
pub mod esp;
pub mod gkm_vid;
mod header;
mod id;
mod message;
pub mod payload;

pub use attr::{AttrValue, DataAttribute};
pub use error::{Error, ErrorKind, Result};
pub use header::IsakmpHeader;
pub use id::Identity;
pub use message::{Body, Message};
pub use payload::Payload;
