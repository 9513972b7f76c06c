//! ISAKMP/GDOI payloads: one typed `Repr` per payload, the payload-chain
//! walker, and the chain emitter.
//!
//! Unknown items follow one rule everywhere (docs/WIRE.md, "Unknown
//! items"): whatever carries its own length and whose type the codec does
//! not know is *skipped and kept* (an [`UnknownPayload`], a kept
//! [`crate::DataAttribute`], an [`OtherKeyPacket`]) and emitted back
//! unchanged; the engines decide whether to accept it. What the codec cannot
//! frame at all (an SA with an unknown DOI, a phase 1 proposal for a protocol
//! other than ISAKMP) is rejected with [`crate::ErrorKind::Unsupported`].

mod gap;
mod kd;
mod kek;
mod notify;
mod sa;
mod simple;
mod tek;

pub use gap::Gap;
pub use kd::{KekKeyPacket, KeyDownload, KeyPacket, OtherKeyPacket, SidKeyPacket, TekKeyPacket};
pub use kek::{KekPolicy, SaKek, TrafficSelector, SA_KEK_RFC3547};
pub use notify::{Delete, Notification};
pub use sa::{GdoiSa, OakleyAttributes, Phase1Sa, Proposal, Sa, SaLayout, Transform};
pub use simple::{Cert, CertReq, Hash, IdPayload, KeyExchange, Nonce, Seq, Signature, VendorId};
pub use tek::{IpsecSaAttributes, IpsecTek, SaTek, TekBody};

use crate::codec::{patch_len16, put_u8, reserve_len16, Reader};
use crate::consts::{limits::MAX_PAYLOADS, PayloadType, GENERIC_HEADER_LEN};
use crate::error::{err, ErrorKind, Result};

/// One payload of a chain, framed but not interpreted: the walker's output
/// and the unit the engines hash ("every octet after the HASH payload").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// This payload's type (from the previous header's Next Payload).
    pub payload_type: PayloadType,
    /// The Next Payload field of this payload's generic header.
    pub next_payload: PayloadType,
    /// The whole payload, generic header included.
    pub bytes: &'a [u8],
    /// The payload body, after the 4-octet generic header.
    pub body: &'a [u8],
}

/// Walks a payload chain that must fill `buf` exactly.
///
/// Checks every Payload Length against the buffer, stops after
/// [`MAX_PAYLOADS`], and rejects trailing bytes. The iterator yields at most
/// one error and then ends.
#[derive(Debug, Clone)]
pub struct PayloadIter<'a> {
    reader: Reader<'a>,
    next: PayloadType,
    count: usize,
    allow_trailing: usize,
    failed: bool,
}

impl<'a> PayloadIter<'a> {
    /// A walker over the chain in `buf` whose first payload is `first`.
    pub fn new(first: PayloadType, buf: &'a [u8]) -> Self {
        Self {
            reader: Reader::new(buf),
            next: first,
            count: 0,
            allow_trailing: 0,
            failed: false,
        }
    }

    /// A walker over a decrypted body: up to `max_padding` octets after the
    /// last payload are encryption padding (RFC 2409 appendix B), not trailing garbage.
    pub fn with_padding(first: PayloadType, buf: &'a [u8], max_padding: usize) -> Self {
        Self {
            allow_trailing: max_padding,
            ..Self::new(first, buf)
        }
    }

    fn step(&mut self) -> Result<Option<RawPayload<'a>>> {
        if self.next == PayloadType::NONE {
            if self.reader.remaining() > self.allow_trailing {
                return Err(err(ErrorKind::TrailingBytes, "payload_chain"));
            }
            return Ok(None);
        }
        if self.count >= MAX_PAYLOADS {
            return Err(err(ErrorKind::TooMany, "payload_chain"));
        }
        let start = self.reader;
        let next_payload = PayloadType(self.reader.u8("payload.next_payload")?);
        let _reserved = self.reader.u8("payload.reserved")?;
        let length = usize::from(self.reader.u16("payload.length")?);
        let body_len = length
            .checked_sub(GENERIC_HEADER_LEN)
            .ok_or(err(ErrorKind::BadLength, "payload.length"))?;
        let mut body = self.reader.sub(body_len, "payload.length")?;
        let mut whole = start;
        let bytes = whole.take(length, "payload.length")?;
        let raw = RawPayload {
            payload_type: self.next,
            next_payload,
            bytes,
            body: body.rest(),
        };
        self.next = next_payload;
        self.count += 1;
        Ok(Some(raw))
    }

    /// Octets left after the chain ended (padding, when allowed).
    pub fn remaining(&self) -> usize {
        self.reader.remaining()
    }
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = Result<RawPayload<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.failed = true;
                None
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A payload whose type the codec does not know (or does not expect at this
/// place), kept with its body so it can be emitted back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownPayload<'a> {
    /// Its payload type.
    pub payload_type: PayloadType,
    /// Its body.
    pub body: &'a [u8],
}

/// A typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// SA (phase 1 or GDOI layout).
    Sa(Sa<'a>),
    /// Key Exchange.
    KeyExchange(KeyExchange<'a>),
    /// Identification.
    Id(IdPayload<'a>),
    /// Certificate.
    Cert(Cert<'a>),
    /// Certificate Request.
    CertReq(CertReq<'a>),
    /// Hash.
    Hash(Hash<'a>),
    /// Signature.
    Signature(Signature<'a>),
    /// Nonce.
    Nonce(Nonce<'a>),
    /// Notification.
    Notification(Notification<'a>),
    /// Delete.
    Delete(Delete<'a>),
    /// Vendor ID.
    VendorId(VendorId<'a>),
    /// SA KEK (normally nested in a GDOI SA; accepted top level too).
    SaKek(SaKek<'a>),
    /// SA TEK (normally nested in a GDOI SA; accepted top level too).
    SaTek(SaTek<'a>),
    /// Key Download.
    KeyDownload(KeyDownload<'a>),
    /// Sequence Number.
    Seq(Seq),
    /// Group Associated Policy.
    Gap(Gap<'a>),
    /// Any other payload type, skipped and kept.
    Unknown(UnknownPayload<'a>),
}

impl<'a> Payload<'a> {
    /// The payload type this payload is sent as.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SA,
            Self::KeyExchange(_) => PayloadType::KE,
            Self::Id(_) => PayloadType::ID,
            Self::Cert(_) => PayloadType::CERT,
            Self::CertReq(_) => PayloadType::CERTREQ,
            Self::Hash(_) => PayloadType::HASH,
            Self::Signature(_) => PayloadType::SIG,
            Self::Nonce(_) => PayloadType::NONCE,
            Self::Notification(_) => PayloadType::NOTIFICATION,
            Self::Delete(_) => PayloadType::DELETE,
            Self::VendorId(_) => PayloadType::VENDOR_ID,
            Self::SaKek(_) => PayloadType::SA_KEK,
            Self::SaTek(_) => PayloadType::SA_TEK,
            Self::KeyDownload(_) => PayloadType::KEY_DOWNLOAD,
            Self::Seq(_) => PayloadType::SEQ,
            Self::Gap(_) => PayloadType::GAP,
            Self::Unknown(u) => u.payload_type,
        }
    }

    /// Parses the body of one payload of type `payload_type`.
    pub fn parse(payload_type: PayloadType, body: &'a [u8], layout: SaLayout) -> Result<Self> {
        Ok(match payload_type {
            PayloadType::SA => Self::Sa(Sa::parse(body, layout)?),
            PayloadType::KE => Self::KeyExchange(KeyExchange::parse(body)?),
            PayloadType::ID => Self::Id(IdPayload::parse(body)?),
            PayloadType::CERT => Self::Cert(Cert::parse(body)?),
            PayloadType::CERTREQ => Self::CertReq(CertReq::parse(body)?),
            PayloadType::HASH => Self::Hash(Hash::parse(body)?),
            PayloadType::SIG => Self::Signature(Signature::parse(body)?),
            PayloadType::NONCE => Self::Nonce(Nonce::parse(body)?),
            PayloadType::NOTIFICATION => Self::Notification(Notification::parse(body)?),
            PayloadType::DELETE => Self::Delete(Delete::parse(body)?),
            PayloadType::VENDOR_ID => Self::VendorId(VendorId::parse(body)?),
            PayloadType::SA_KEK => Self::SaKek(SaKek::parse(body)?),
            PayloadType::SA_TEK => Self::SaTek(SaTek::parse(body)?),
            PayloadType::KEY_DOWNLOAD => Self::KeyDownload(KeyDownload::parse(body)?),
            PayloadType::SEQ => Self::Seq(Seq::parse(body)?),
            PayloadType::GAP => Self::Gap(Gap::parse(body)?),
            PayloadType::NONE => return Err(err(ErrorKind::BadValue, "payload.next_payload")),
            other => Self::Unknown(UnknownPayload {
                payload_type: other,
                body,
            }),
        })
    }

    /// Appends the payload body (no generic header).
    pub fn emit_body(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Sa(p) => p.emit(out),
            Self::KeyExchange(p) => p.emit(out),
            Self::Id(p) => p.emit(out),
            Self::Cert(p) => p.emit(out),
            Self::CertReq(p) => p.emit(out),
            Self::Hash(p) => p.emit(out),
            Self::Signature(p) => p.emit(out),
            Self::Nonce(p) => p.emit(out),
            Self::Notification(p) => p.emit(out),
            Self::Delete(p) => p.emit(out),
            Self::VendorId(p) => p.emit(out),
            Self::SaKek(p) => p.emit(out),
            Self::SaTek(p) => p.emit(out),
            Self::KeyDownload(p) => p.emit(out),
            Self::Seq(p) => {
                p.emit(out);
                Ok(())
            }
            Self::Gap(p) => p.emit(out),
            Self::Unknown(u) => {
                out.extend_from_slice(u.body);
                Ok(())
            }
        }
    }
}

/// Parses a whole chain into typed payloads.
pub fn parse_chain<'a>(
    first: PayloadType,
    buf: &'a [u8],
    layout: SaLayout,
) -> Result<Vec<Payload<'a>>> {
    collect_chain(PayloadIter::new(first, buf), layout)
}

/// Parses a decrypted chain followed by at most `max_padding` octets of padding.
pub fn parse_padded_chain<'a>(
    first: PayloadType,
    buf: &'a [u8],
    max_padding: usize,
    layout: SaLayout,
) -> Result<Vec<Payload<'a>>> {
    collect_chain(PayloadIter::with_padding(first, buf, max_padding), layout)
}

fn collect_chain<'a>(iter: PayloadIter<'a>, layout: SaLayout) -> Result<Vec<Payload<'a>>> {
    let mut out = Vec::with_capacity(8);
    for raw in iter {
        let raw = raw?;
        out.push(Payload::parse(raw.payload_type, raw.body, layout)?);
    }
    Ok(out)
}

/// Writes one generic payload header + body produced by `body`.
pub(crate) fn emit_framed(
    out: &mut Vec<u8>,
    next: PayloadType,
    body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = out.len();
    put_u8(out, next.0);
    put_u8(out, 0);
    let at = reserve_len16(out);
    body(out)?;
    patch_len16(out, at, start, "payload.length")
}

/// Emits a chain of already encoded payload bodies (for bodies an engine
/// encodes once and sends many times) and returns the first type.
pub fn emit_raw_chain(items: &[(PayloadType, &[u8])], out: &mut Vec<u8>) -> Result<PayloadType> {
    if items.len() > MAX_PAYLOADS {
        return Err(err(ErrorKind::TooMany, "payload_chain"));
    }
    let mut iter = items.iter().peekable();
    let first = iter.peek().map_or(PayloadType::NONE, |(t, _)| *t);
    while let Some((_, body)) = iter.next() {
        let next = iter.peek().map_or(PayloadType::NONE, |(t, _)| *t);
        emit_framed(out, next, |o| {
            o.extend_from_slice(body);
            Ok(())
        })?;
    }
    Ok(first)
}

/// Emits a chain and returns the type of its first payload (for the
/// enclosing header's Next Payload).
pub fn emit_chain(payloads: &[Payload<'_>], out: &mut Vec<u8>) -> Result<PayloadType> {
    if payloads.len() > MAX_PAYLOADS {
        return Err(err(ErrorKind::TooMany, "payload_chain"));
    }
    let mut iter = payloads.iter().peekable();
    let first = iter.peek().map_or(PayloadType::NONE, |p| p.payload_type());
    while let Some(p) = iter.next() {
        let next = iter.peek().map_or(PayloadType::NONE, |n| n.payload_type());
        emit_framed(out, next, |o| p.emit_body(o))?;
    }
    Ok(first)
}
