//! Key Download payload (RFC 6407 section 5.6) and its key packets.

use crate::attr::{self, emit_all, emit_basic, emit_int32, emit_var, set_once, DataAttribute};
use crate::codec::{patch_len16, put_len8, put_u16, put_u32, put_u8, reserve_len16, Reader};
use crate::consts::{
    limits::MAX_KEY_PACKETS, KdType, KekKeyAttribute, SidAttribute, TekKeyAttribute, KEK_SPI_LEN,
};
use crate::error::{err, ErrorKind, Result};

/// Keys for one TEK (SPI size 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TekKeyPacket<'a> {
    /// SPI of the TEK these keys belong to.
    pub spi: u32,
    /// TEK_ALGORITHM_KEY: cipher key (AES-GCM: key ‖ 4-octet salt).
    pub algorithm_key: Option<&'a [u8]>,
    /// TEK_INTEGRITY_KEY.
    pub integrity_key: Option<&'a [u8]>,
    /// TEK_SOURCE_AUTH_KEY.
    pub source_auth_key: Option<&'a [u8]>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

/// Keys for the KEK (SPI size 16).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KekKeyPacket<'a> {
    /// KEK SPI (cookie pair).
    pub spi: [u8; KEK_SPI_LEN],
    /// KEK_ALGORITHM_KEY: explicit IV followed by the key (RFC 6407 section 5.6.2.1).
    pub algorithm_key: Option<&'a [u8]>,
    /// SIG_ALGORITHM_KEY: the KS's rekey-signing public key (DER SubjectPublicKeyInfo).
    pub sig_algorithm_key: Option<&'a [u8]>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

/// Sender IDs granted to a GM (SPI size 0; RFC 6407 section 5.6.4, RFC 6054).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidKeyPacket<'a> {
    /// NUMBER_OF_SID_BITS.
    pub number_of_sid_bits: Option<u16>,
    /// SID_VALUE, one per sender ID (1 to 4 octets on input, 4 on output).
    pub sid_values: Vec<u32>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

/// A key packet of a type the codec does not interpret (LKH, private):
/// kept with its SPI and attribute octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherKeyPacket<'a> {
    /// KD Type.
    pub kd_type: KdType,
    /// SPI, any size up to 255.
    pub spi: &'a [u8],
    /// The attribute octets, uninterpreted.
    pub attributes: &'a [u8],
}

/// One key packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPacket<'a> {
    /// TEK keys.
    Tek(TekKeyPacket<'a>),
    /// KEK keys.
    Kek(KekKeyPacket<'a>),
    /// Sender IDs.
    Sid(SidKeyPacket<'a>),
    /// Anything else, kept.
    Other(OtherKeyPacket<'a>),
}

impl<'a> KeyPacket<'a> {
    /// The KD type this packet is sent as.
    pub fn kd_type(&self) -> KdType {
        match self {
            Self::Tek(_) => KdType::TEK,
            Self::Kek(_) => KdType::KEK,
            Self::Sid(_) => KdType::SID,
            Self::Other(o) => o.kd_type,
        }
    }

    fn parse(kd_type: KdType, spi: &'a [u8], attrs: &'a [u8]) -> Result<Self> {
        match kd_type {
            KdType::TEK => {
                let f = "kd.tek.attribute";
                let spi = <[u8; 4]>::try_from(spi)
                    .map_err(|_| err(ErrorKind::BadValue, "kd.tek.spi_size"))?;
                let mut p = TekKeyPacket {
                    spi: u32::from_be_bytes(spi),
                    ..TekKeyPacket::default()
                };
                attr::for_each(attrs, f, |a| match TekKeyAttribute(a.attr_type) {
                    TekKeyAttribute::ALGORITHM_KEY => {
                        set_once(&mut p.algorithm_key, a.bytes(f)?, f)
                    }
                    TekKeyAttribute::INTEGRITY_KEY => {
                        set_once(&mut p.integrity_key, a.bytes(f)?, f)
                    }
                    TekKeyAttribute::SOURCE_AUTH_KEY => {
                        set_once(&mut p.source_auth_key, a.bytes(f)?, f)
                    }
                    _ => {
                        p.unknown.push(a);
                        Ok(())
                    }
                })?;
                Ok(Self::Tek(p))
            }
            KdType::KEK => {
                let f = "kd.kek.attribute";
                let spi = <[u8; KEK_SPI_LEN]>::try_from(spi)
                    .map_err(|_| err(ErrorKind::BadValue, "kd.kek.spi_size"))?;
                let mut p = KekKeyPacket {
                    spi,
                    ..KekKeyPacket::default()
                };
                attr::for_each(attrs, f, |a| match KekKeyAttribute(a.attr_type) {
                    KekKeyAttribute::ALGORITHM_KEY => {
                        set_once(&mut p.algorithm_key, a.bytes(f)?, f)
                    }
                    KekKeyAttribute::SIG_ALGORITHM_KEY => {
                        set_once(&mut p.sig_algorithm_key, a.bytes(f)?, f)
                    }
                    _ => {
                        p.unknown.push(a);
                        Ok(())
                    }
                })?;
                Ok(Self::Kek(p))
            }
            KdType::SID => {
                let f = "kd.sid.attribute";
                if !spi.is_empty() {
                    return Err(err(ErrorKind::BadValue, "kd.sid.spi_size"));
                }
                let mut p = SidKeyPacket::default();
                attr::for_each(attrs, f, |a| {
                    match SidAttribute(a.attr_type) {
                        SidAttribute::NUMBER_OF_SID_BITS => {
                            set_once(&mut p.number_of_sid_bits, a.int16(f)?, f)?
                        }
                        SidAttribute::SID_VALUE => {
                            if a.bytes(f)?.len() > 4 {
                                return Err(err(ErrorKind::BadValue, "kd.sid.sid_value"));
                            }
                            p.sid_values.push(a.int32(f)?);
                        }
                        _ => p.unknown.push(a),
                    }
                    Ok(())
                })?;
                Ok(Self::Sid(p))
            }
            other => Ok(Self::Other(OtherKeyPacket {
                kd_type: other,
                spi,
                attributes: attrs,
            })),
        }
    }

    fn emit_spi_and_attributes(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Tek(p) => {
                let f = "kd.tek.attribute";
                put_u8(out, 4);
                put_u32(out, p.spi);
                if let Some(k) = p.algorithm_key {
                    emit_var(out, TekKeyAttribute::ALGORITHM_KEY.0, k, f)?;
                }
                if let Some(k) = p.integrity_key {
                    emit_var(out, TekKeyAttribute::INTEGRITY_KEY.0, k, f)?;
                }
                if let Some(k) = p.source_auth_key {
                    emit_var(out, TekKeyAttribute::SOURCE_AUTH_KEY.0, k, f)?;
                }
                emit_all(out, &p.unknown, f)
            }
            Self::Kek(p) => {
                let f = "kd.kek.attribute";
                put_len8(out, KEK_SPI_LEN, "kd.kek.spi_size")?;
                out.extend_from_slice(&p.spi);
                if let Some(k) = p.algorithm_key {
                    emit_var(out, KekKeyAttribute::ALGORITHM_KEY.0, k, f)?;
                }
                if let Some(k) = p.sig_algorithm_key {
                    emit_var(out, KekKeyAttribute::SIG_ALGORITHM_KEY.0, k, f)?;
                }
                emit_all(out, &p.unknown, f)
            }
            Self::Sid(p) => {
                put_u8(out, 0);
                if let Some(bits) = p.number_of_sid_bits {
                    emit_basic(out, SidAttribute::NUMBER_OF_SID_BITS.0, bits);
                }
                for v in &p.sid_values {
                    emit_int32(out, SidAttribute::SID_VALUE.0, *v);
                }
                emit_all(out, &p.unknown, "kd.sid.attribute")
            }
            Self::Other(p) => {
                put_len8(out, p.spi.len(), "kd.spi_size")?;
                out.extend_from_slice(p.spi);
                out.extend_from_slice(p.attributes);
                Ok(())
            }
        }
    }
}

/// Key Download payload: a counted list of key packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDownload<'a> {
    /// The key packets, in wire order.
    pub packets: Vec<KeyPacket<'a>>,
}

impl<'a> KeyDownload<'a> {
    /// Parses the body. The Number of Key Packets must match the packets
    /// present, and each KD Length must lie inside the payload.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let count = usize::from(r.u16("kd.num_packets")?);
        let _reserved = r.u16("kd.reserved2")?;
        if count > MAX_KEY_PACKETS {
            return Err(err(ErrorKind::TooMany, "kd.num_packets"));
        }
        let mut packets = Vec::with_capacity(count.min(r.remaining() / 5));
        for _ in 0..count {
            let kd_type = KdType(r.u8("kd.packet.type")?);
            let _reserved = r.u8("kd.packet.reserved")?;
            let len = usize::from(r.u16("kd.packet.length")?);
            let body_len = len
                .checked_sub(4)
                .ok_or(err(ErrorKind::BadLength, "kd.packet.length"))?;
            let mut pr = r.sub(body_len, "kd.packet.length")?;
            let spi_size = usize::from(pr.u8("kd.packet.spi_size")?);
            let spi = pr.sub(spi_size, "kd.packet.spi_size")?.rest();
            packets.push(KeyPacket::parse(kd_type, spi, pr.rest())?);
        }
        // More octets than the counted packets: the count lies.
        if !r.is_empty() {
            return Err(err(ErrorKind::BadLength, "kd.num_packets"));
        }
        Ok(Self { packets })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.packets.len() > MAX_KEY_PACKETS {
            return Err(err(ErrorKind::TooMany, "kd.num_packets"));
        }
        put_u16(out, u16::try_from(self.packets.len()).unwrap_or(u16::MAX));
        put_u16(out, 0);
        for p in &self.packets {
            let start = out.len();
            put_u8(out, p.kd_type().0);
            put_u8(out, 0);
            let at = reserve_len16(out);
            p.emit_spi_and_attributes(out)?;
            patch_len16(out, at, start, "kd.packet.length")?;
        }
        Ok(())
    }
}
