//! A whole ISAKMP message: header plus payload chain or ciphertext.

use crate::consts::{limits::MAX_MESSAGE_LEN, Flags, PayloadType, ISAKMP_HEADER_LEN};
use crate::error::{err, ErrorKind, Result};
use crate::header::IsakmpHeader;
use crate::payload::{emit_chain, parse_chain, Payload, SaLayout};

/// What follows the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// A cleartext payload chain (E flag clear).
    Payloads(Vec<Payload<'a>>),
    /// Ciphertext (E flag set): the engines decrypt it and parse the result
    /// with [`crate::payload::parse_padded_chain`].
    Encrypted(&'a [u8]),
}

/// An ISAKMP message.
///
/// `parse` checks the header length against the datagram (shorter:
/// truncated; longer: trailing bytes) and the 64 KiB bound; `emit`
/// recomputes Next Payload (for cleartext bodies) and Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header. On emit, `length` and (for cleartext) `next_payload` are recomputed.
    pub header: IsakmpHeader,
    /// The body.
    pub body: Body<'a>,
}

impl<'a> Message<'a> {
    /// Parses one datagram holding exactly one message.
    pub fn parse(datagram: &'a [u8]) -> Result<Self> {
        if datagram.len() > MAX_MESSAGE_LEN {
            return Err(err(ErrorKind::TooLarge, "isakmp.length"));
        }
        let header = IsakmpHeader::parse(datagram)?;
        let len = header.length as usize;
        if datagram.len() < len {
            return Err(err(ErrorKind::Truncated, "isakmp.length"));
        }
        if datagram.len() > len {
            return Err(err(ErrorKind::TrailingBytes, "isakmp.length"));
        }
        let body = datagram
            .get(ISAKMP_HEADER_LEN..len)
            .ok_or(err(ErrorKind::Truncated, "isakmp.length"))?;
        let body = if header.flags.contains(Flags::ENCRYPTION) {
            if body.is_empty() {
                return Err(err(ErrorKind::Truncated, "isakmp.encrypted_body"));
            }
            Body::Encrypted(body)
        } else {
            Body::Payloads(parse_chain(
                header.next_payload,
                body,
                SaLayout::for_exchange(header.exchange_type),
            )?)
        };
        Ok(Self { header, body })
    }

    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let mut header = self.header;
        let encrypted = header.flags.contains(Flags::ENCRYPTION);
        header.emit(out);
        match &self.body {
            Body::Payloads(payloads) => {
                if encrypted {
                    return Err(err(ErrorKind::BadValue, "isakmp.flags"));
                }
                header.next_payload = emit_chain(payloads, out)?;
            }
            Body::Encrypted(ct) => {
                if !encrypted || ct.is_empty() {
                    return Err(err(ErrorKind::BadValue, "isakmp.flags"));
                }
                out.extend_from_slice(ct);
            }
        }
        let len = out.len().saturating_sub(start);
        if len > MAX_MESSAGE_LEN {
            return Err(err(ErrorKind::TooLarge, "isakmp.length"));
        }
        header.length =
            u32::try_from(len).map_err(|_| err(ErrorKind::TooLarge, "isakmp.length"))?;
        let slot = out
            .get_mut(start..start.saturating_add(ISAKMP_HEADER_LEN))
            .ok_or(err(ErrorKind::BadLength, "isakmp.length"))?;
        slot.copy_from_slice(&header.to_bytes());
        Ok(())
    }

    /// The message as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        self.emit(&mut out)?;
        Ok(out)
    }

    /// The cleartext payloads, if the body is not encrypted.
    pub fn payloads(&self) -> Option<&[Payload<'a>]> {
        match &self.body {
            Body::Payloads(p) => Some(p),
            Body::Encrypted(_) => None,
        }
    }

    /// The first payload of a given type in a cleartext body.
    pub fn find(&self, t: PayloadType) -> Option<&Payload<'a>> {
        self.payloads()?.iter().find(|p| p.payload_type() == t)
    }
}
