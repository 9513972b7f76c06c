//! The ISAKMP header (RFC 2408 section 3.1).

use crate::codec::Reader;
use crate::consts::{
    limits::MAX_MESSAGE_LEN, ExchangeType, Flags, PayloadType, ISAKMP_HEADER_LEN, ISAKMP_VERSION,
};
use crate::error::{err, ErrorKind, Result};

/// The 28-octet ISAKMP header.
///
/// For GROUPKEY-PUSH and RFC 8263 ACKs the two cookies together are the KEK
/// SPI (RFC 6407 section 4); see [`IsakmpHeader::kek_spi`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IsakmpHeader {
    /// Initiator cookie (first half of the KEK SPI in a PUSH).
    pub initiator_cookie: [u8; 8],
    /// Responder cookie (second half of the KEK SPI in a PUSH).
    pub responder_cookie: [u8; 8],
    /// Type of the first payload (also when the body is encrypted).
    pub next_payload: PayloadType,
    /// Exchange type.
    pub exchange_type: ExchangeType,
    /// Flags (E, C, A).
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
    /// Length of the whole message including this header.
    pub length: u32,
}

impl IsakmpHeader {
    /// Parses the header at the start of `buf` (the rest is not examined).
    ///
    /// Rejects a version other than 1.0 and a length outside
    /// 28..=[`MAX_MESSAGE_LEN`]; whether the length matches the datagram is
    /// checked by [`crate::Message::parse`].
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let initiator_cookie = r.array("isakmp.initiator_cookie")?;
        let responder_cookie = r.array("isakmp.responder_cookie")?;
        let next_payload = PayloadType(r.u8("isakmp.next_payload")?);
        let version = r.u8("isakmp.version")?;
        let exchange_type = ExchangeType(r.u8("isakmp.exchange_type")?);
        let flags = Flags(r.u8("isakmp.flags")?);
        let message_id = r.u32("isakmp.message_id")?;
        let length = r.u32("isakmp.length")?;
        if version >> 4 != ISAKMP_VERSION >> 4 {
            return Err(err(ErrorKind::Unsupported, "isakmp.version"));
        }
        if version != ISAKMP_VERSION {
            return Err(err(ErrorKind::BadValue, "isakmp.version"));
        }
        let len = usize::try_from(length).map_err(|_| err(ErrorKind::TooLarge, "isakmp.length"))?;
        if len < ISAKMP_HEADER_LEN {
            return Err(err(ErrorKind::BadLength, "isakmp.length"));
        }
        if len > MAX_MESSAGE_LEN {
            return Err(err(ErrorKind::TooLarge, "isakmp.length"));
        }
        Ok(Self {
            initiator_cookie,
            responder_cookie,
            next_payload,
            exchange_type,
            flags,
            message_id,
            length,
        })
    }

    /// Appends the header as it stands, length included.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// The header's 28 octets as they stand, length included.
    pub fn to_bytes(&self) -> [u8; ISAKMP_HEADER_LEN] {
        let mut b = [0u8; ISAKMP_HEADER_LEN];
        let (cookies, rest) = b.split_at_mut(16);
        cookies.copy_from_slice(&self.kek_spi());
        let fixed = [
            self.next_payload.0,
            ISAKMP_VERSION,
            self.exchange_type.0,
            self.flags.0,
        ];
        let (f, rest) = rest.split_at_mut(4);
        f.copy_from_slice(&fixed);
        let (mid, len) = rest.split_at_mut(4);
        mid.copy_from_slice(&self.message_id.to_be_bytes());
        len.copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Both cookies: the KEK SPI of a GROUPKEY-PUSH or ACK.
    pub fn kek_spi(&self) -> [u8; 16] {
        let mut spi = [0u8; 16];
        let (a, b) = spi.split_at_mut(8);
        a.copy_from_slice(&self.initiator_cookie);
        b.copy_from_slice(&self.responder_cookie);
        spi
    }

    /// Splits a KEK SPI into the two cookies.
    pub fn cookies_from_kek_spi(spi: &[u8; 16]) -> ([u8; 8], [u8; 8]) {
        let mut i = [0u8; 8];
        let mut r = [0u8; 8];
        let (a, b) = spi.split_at(8);
        i.copy_from_slice(a);
        r.copy_from_slice(b);
        (i, r)
    }
}
