//! `gkm-dataplane`: GKM's encrypting dataplane.
//!
//! Owns (DESIGN.md): ESP tunnel mode with address preservation, AES-GCM,
//! D3P stamping and checking, the SA table with ATD/DTD transitions,
//! counters, and TUN/raw-socket I/O behind traits (the only code in the
//! tree allowed `unsafe`, in its I/O module). Framing comes from
//! `gkm-wire`; the ESP engine and I/O land with the dataplane issue. The
//! D3P freshness rule, which the seed fixes exactly, is here already.

pub mod d3p;
pub mod replay;
