//! ESP framing (RFC 4303): SPI, sequence number, IV, ciphertext, ICV, and
//! the padding/pad-length/next-header trailer. No cryptography here.

use crate::codec::{put_u32, Reader};
use crate::consts::{limits::MAX_ESP_LEN, AuthAlgorithm, EspTransformId, IpProtocol};
use crate::error::{err, ErrorKind, Result};

/// Octet sizes an ESP transform fixes: explicit IV, ICV, and the alignment
/// the ciphertext (payload + padding + 2-octet trailer) must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspFraming {
    /// Explicit IV length (8 for GCM/GMAC/CTR, RFC 4106 section 3.1; 16 for CBC, RFC 3602 section 3).
    pub iv_len: usize,
    /// ICV length.
    pub icv_len: usize,
    /// Alignment of the ciphertext: the cipher block, at least 4 (RFC 4303 section 2.4).
    pub align: usize,
}

impl EspFraming {
    /// The framing of a transform, with its separate integrity algorithm
    /// for non-combined ciphers. A combined-mode cipher with an integrity
    /// algorithm, or an unknown transform, is [`ErrorKind::Unsupported`].
    pub fn for_transform(transform: EspTransformId, auth: Option<AuthAlgorithm>) -> Result<Self> {
        let separate_icv = |a: Option<AuthAlgorithm>| -> Result<usize> {
            Ok(match a {
                None => 0,
                Some(AuthAlgorithm::HMAC_SHA1) => 12,
                Some(AuthAlgorithm::HMAC_SHA2_256) => 16,
                Some(AuthAlgorithm::HMAC_SHA2_384) => 24,
                Some(AuthAlgorithm::HMAC_SHA2_512) => 32,
                Some(_) => return Err(err(ErrorKind::Unsupported, "esp.auth_algorithm")),
            })
        };
        let combined = |icv: usize| -> Result<Self> {
            if auth.is_some() {
                return Err(err(ErrorKind::Unsupported, "esp.auth_algorithm"));
            }
            Ok(Self {
                iv_len: 8,
                icv_len: icv,
                align: 4,
            })
        };
        match transform {
            EspTransformId::AES_GCM_8 => combined(8),
            EspTransformId::AES_GCM_12 => combined(12),
            EspTransformId::AES_GCM_16 | EspTransformId::NULL_AUTH_AES_GMAC => combined(16),
            EspTransformId::AES_CBC => Ok(Self {
                iv_len: 16,
                icv_len: separate_icv(auth)?,
                align: 16,
            }),
            EspTransformId::AES_CTR => Ok(Self {
                iv_len: 8,
                icv_len: separate_icv(auth)?,
                align: 4,
            }),
            EspTransformId::NULL => Ok(Self {
                iv_len: 0,
                icv_len: separate_icv(auth)?,
                align: 4,
            }),
            _ => Err(err(ErrorKind::Unsupported, "esp.transform_id")),
        }
    }

    /// Padding octets needed after a payload of `payload_len` octets so that
    /// payload + padding + pad length + next header meets the alignment.
    pub fn padding_for(&self, payload_len: usize) -> usize {
        let align = self.align.max(4);
        (align - (payload_len + 2) % align) % align
    }

    /// Total ESP packet length for an inner payload of `payload_len` octets.
    pub fn packet_len(&self, payload_len: usize) -> usize {
        8 + self.iv_len + payload_len + self.padding_for(payload_len) + 2 + self.icv_len
    }
}

/// A framed ESP packet (a view; nothing is decrypted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspPacket<'a> {
    /// Security Parameters Index (never 0, RFC 4303 section 2.1).
    pub spi: u32,
    /// Sequence number (low 32 bits).
    pub seq: u32,
    /// Explicit IV.
    pub iv: &'a [u8],
    /// Ciphertext: encrypted payload, padding, pad length and next header.
    pub ciphertext: &'a [u8],
    /// Integrity check value.
    pub icv: &'a [u8],
}

impl<'a> EspPacket<'a> {
    /// Frames `buf` (the IP payload of protocol 50) for the given transform.
    pub fn parse(buf: &'a [u8], framing: EspFraming) -> Result<Self> {
        if buf.len() > MAX_ESP_LEN {
            return Err(err(ErrorKind::TooLarge, "esp.length"));
        }
        let mut r = Reader::new(buf);
        let spi = r.u32("esp.spi")?;
        let seq = r.u32("esp.seq")?;
        if spi == 0 {
            return Err(err(ErrorKind::BadValue, "esp.spi"));
        }
        let iv = r.take(framing.iv_len, "esp.iv")?;
        let ct_len = r
            .remaining()
            .checked_sub(framing.icv_len)
            .ok_or(err(ErrorKind::Truncated, "esp.icv"))?;
        if ct_len < 2 {
            return Err(err(ErrorKind::Truncated, "esp.trailer"));
        }
        if ct_len % framing.align.max(4) != 0 {
            return Err(err(ErrorKind::BadLength, "esp.ciphertext"));
        }
        let ciphertext = r.take(ct_len, "esp.ciphertext")?;
        let icv = r.rest();
        Ok(Self {
            spi,
            seq,
            iv,
            ciphertext,
            icv,
        })
    }

    /// The octets the AEAD authenticates as associated data: SPI ‖ Seq (RFC 4106 section 5).
    pub fn aad(&self) -> [u8; 8] {
        let mut a = [0u8; 8];
        let (s, q) = a.split_at_mut(4);
        s.copy_from_slice(&self.spi.to_be_bytes());
        q.copy_from_slice(&self.seq.to_be_bytes());
        a
    }
}

/// Appends the ESP header and explicit IV; the caller appends the
/// ciphertext (built with [`emit_trailer`]) and the ICV.
pub fn emit_header(out: &mut Vec<u8>, spi: u32, seq: u32, iv: &[u8]) -> Result<()> {
    if spi == 0 {
        return Err(err(ErrorKind::BadValue, "esp.spi"));
    }
    put_u32(out, spi);
    put_u32(out, seq);
    out.extend_from_slice(iv);
    Ok(())
}

/// Appends the default padding (1, 2, 3, ..., RFC 4303 section 2.4), the
/// pad length and the next header after a payload of `payload_len` octets.
pub fn emit_trailer(
    out: &mut Vec<u8>,
    payload_len: usize,
    framing: EspFraming,
    next_header: IpProtocol,
) {
    let pad = framing.padding_for(payload_len);
    // pad < align <= 16, so the casts below cannot truncate.
    out.extend((1..=pad).map(|i| (i & 0xff) as u8));
    out.push((pad & 0xff) as u8);
    out.push(next_header.0);
}

/// Splits decrypted ESP plaintext into the inner payload and the next
/// header, checking the pad length and the default padding bytes.
pub fn parse_trailer(plaintext: &[u8]) -> Result<(&[u8], IpProtocol)> {
    let (nh, rest) = plaintext
        .split_last()
        .ok_or(err(ErrorKind::Truncated, "esp.next_header"))?;
    let (pad_len, rest) = rest
        .split_last()
        .ok_or(err(ErrorKind::Truncated, "esp.pad_length"))?;
    let pad_len = usize::from(*pad_len);
    let payload_len = rest
        .len()
        .checked_sub(pad_len)
        .ok_or(err(ErrorKind::BadLength, "esp.pad_length"))?;
    let (payload, padding) = rest.split_at(payload_len);
    if padding
        .iter()
        .enumerate()
        .any(|(i, b)| usize::from(*b) != i + 1)
    {
        return Err(err(ErrorKind::BadValue, "esp.padding"));
    }
    Ok((payload, IpProtocol(*nh)))
}
