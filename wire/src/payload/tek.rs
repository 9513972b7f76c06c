//! SA TEK payload (RFC 6407 section 5.5) with the ESP/AH body (section
//! 5.5.1) and IPsec DOI SA attributes (RFC 2407 section 4.5).

use crate::attr::{self, emit_all, emit_basic, emit_int_compact, set_once, DataAttribute};
use crate::codec::{put_u32, put_u8, Reader};
use crate::consts::{
    AddressPreservation, AuthAlgorithm, EncapsulationMode, EspTransformId, GdoiProtocol,
    IpsecAttribute, LifeType, SaDirection,
};
use crate::error::{err, ErrorKind, Result};

use super::kek::{SelectorIn, TrafficSelector};

/// IPsec DOI SA attributes of an ESP/AH TEK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpsecSaAttributes<'a> {
    /// Lifetime in seconds (SA Life Type seconds + SA Life Duration).
    pub life_seconds: Option<u32>,
    /// Lifetime in kilobytes (SA Life Type kilobytes + SA Life Duration).
    pub life_kilobytes: Option<u32>,
    /// Encapsulation Mode.
    pub encapsulation_mode: Option<EncapsulationMode>,
    /// Authentication Algorithm (absent for combined-mode ciphers like AES-GCM).
    pub auth_algorithm: Option<AuthAlgorithm>,
    /// Key Length in bits.
    pub key_length_bits: Option<u16>,
    /// Extended Sequence Number.
    pub extended_sequence_number: Option<u16>,
    /// Address Preservation (absent means Source-and-Destination).
    pub address_preservation: Option<AddressPreservation>,
    /// SA Direction (absent means Symmetric).
    pub sa_direction: Option<SaDirection>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

impl<'a> IpsecSaAttributes<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut s = Self::default();
        let f = "sa_tek.attribute";
        // SA Life Type announces the unit of the SA Life Duration that follows it.
        let mut pending_life: Option<LifeType> = None;
        attr::for_each(buf, f, |a| {
            match IpsecAttribute(a.attr_type) {
                IpsecAttribute::SA_LIFE_TYPE => {
                    if pending_life.is_some() {
                        return Err(err(ErrorKind::Missing, "sa_tek.life_duration"));
                    }
                    pending_life = Some(LifeType(a.int16(f)?));
                }
                IpsecAttribute::SA_LIFE_DURATION => {
                    let v = a.int32("sa_tek.life_duration")?;
                    match pending_life.take() {
                        Some(LifeType::SECONDS) => set_once(&mut s.life_seconds, v, f)?,
                        Some(LifeType::KILOBYTES) => set_once(&mut s.life_kilobytes, v, f)?,
                        Some(_) => return Err(err(ErrorKind::BadValue, "sa_tek.life_type")),
                        None => return Err(err(ErrorKind::Missing, "sa_tek.life_type")),
                    }
                }
                IpsecAttribute::ENCAPSULATION_MODE => {
                    set_once(&mut s.encapsulation_mode, EncapsulationMode(a.int16(f)?), f)?
                }
                IpsecAttribute::AUTHENTICATION_ALGORITHM => {
                    set_once(&mut s.auth_algorithm, AuthAlgorithm(a.int16(f)?), f)?
                }
                IpsecAttribute::KEY_LENGTH => set_once(&mut s.key_length_bits, a.int16(f)?, f)?,
                IpsecAttribute::EXTENDED_SEQUENCE_NUMBER => {
                    set_once(&mut s.extended_sequence_number, a.int16(f)?, f)?
                }
                IpsecAttribute::ADDRESS_PRESERVATION => set_once(
                    &mut s.address_preservation,
                    AddressPreservation(a.int16(f)?),
                    f,
                )?,
                IpsecAttribute::SA_DIRECTION => {
                    set_once(&mut s.sa_direction, SaDirection(a.int16(f)?), f)?
                }
                _ => s.unknown.push(a),
            }
            Ok(())
        })?;
        if pending_life.is_some() {
            return Err(err(ErrorKind::Missing, "sa_tek.life_duration"));
        }
        Ok(s)
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(v) = self.life_seconds {
            emit_basic(out, IpsecAttribute::SA_LIFE_TYPE.0, LifeType::SECONDS.0);
            emit_int_compact(out, IpsecAttribute::SA_LIFE_DURATION.0, v);
        }
        if let Some(v) = self.life_kilobytes {
            emit_basic(out, IpsecAttribute::SA_LIFE_TYPE.0, LifeType::KILOBYTES.0);
            emit_int_compact(out, IpsecAttribute::SA_LIFE_DURATION.0, v);
        }
        if let Some(v) = self.encapsulation_mode {
            emit_basic(out, IpsecAttribute::ENCAPSULATION_MODE.0, v.0);
        }
        if let Some(v) = self.auth_algorithm {
            emit_basic(out, IpsecAttribute::AUTHENTICATION_ALGORITHM.0, v.0);
        }
        if let Some(v) = self.key_length_bits {
            emit_basic(out, IpsecAttribute::KEY_LENGTH.0, v);
        }
        if let Some(v) = self.extended_sequence_number {
            emit_basic(out, IpsecAttribute::EXTENDED_SEQUENCE_NUMBER.0, v);
        }
        if let Some(v) = self.address_preservation {
            emit_basic(out, IpsecAttribute::ADDRESS_PRESERVATION.0, v.0);
        }
        if let Some(v) = self.sa_direction {
            emit_basic(out, IpsecAttribute::SA_DIRECTION.0, v.0);
        }
        emit_all(out, &self.unknown, "sa_tek.attribute")
    }
}

/// The ESP/AH protocol-specific part of an SA TEK (RFC 6407 section 5.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecTek<'a> {
    /// IP protocol selector of the protected traffic (0 = any).
    pub protocol: u8,
    /// Source selector.
    pub src: TrafficSelector<'a>,
    /// Destination selector.
    pub dst: TrafficSelector<'a>,
    /// Transform ID: an ESP transform for ESP TEKs; for AH TEKs the AH
    /// transform number (RFC 2407 section 4.4.3) in the same octet.
    pub transform_id: EspTransformId,
    /// SPI of the TEK.
    pub spi: u32,
    /// SA attributes.
    pub attributes: IpsecSaAttributes<'a>,
}

impl<'a> IpsecTek<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self> {
        let protocol = r.u8("sa_tek.protocol")?;
        let src = TrafficSelector::parse(r, SelectorIn::SaTek, "sa_tek.src_id")?;
        let dst = TrafficSelector::parse(r, SelectorIn::SaTek, "sa_tek.dst_id")?;
        let transform_id = EspTransformId(r.u8("sa_tek.transform_id")?);
        let spi = r.u32("sa_tek.spi")?;
        let attributes = IpsecSaAttributes::parse(r.rest())?;
        Ok(Self {
            protocol,
            src,
            dst,
            transform_id,
            spi,
            attributes,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u8(out, self.protocol);
        self.src.emit(out, SelectorIn::SaTek, "sa_tek.src_id")?;
        self.dst.emit(out, SelectorIn::SaTek, "sa_tek.dst_id")?;
        put_u8(out, self.transform_id.0);
        put_u32(out, self.spi);
        self.attributes.emit(out)
    }
}

/// The protocol-specific part of an SA TEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TekBody<'a> {
    /// ESP or AH (the SA TEK's Protocol-ID says which).
    Ipsec(IpsecTek<'a>),
    /// Another TEK protocol (IEC 61850, private use): kept as octets.
    Other(&'a [u8]),
}

/// SA TEK payload: one traffic-encryption key's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaTek<'a> {
    /// Protocol-ID.
    pub protocol_id: GdoiProtocol,
    /// The protocol-specific part.
    pub body: TekBody<'a>,
}

impl<'a> SaTek<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let protocol_id = GdoiProtocol(r.u8("sa_tek.protocol_id")?);
        let body = match protocol_id {
            GdoiProtocol::IPSEC_ESP | GdoiProtocol::IPSEC_AH => {
                TekBody::Ipsec(IpsecTek::parse(&mut r)?)
            }
            _ => TekBody::Other(r.rest()),
        };
        Ok(Self { protocol_id, body })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        put_u8(out, self.protocol_id.0);
        match (&self.body, self.protocol_id) {
            (TekBody::Ipsec(t), GdoiProtocol::IPSEC_ESP | GdoiProtocol::IPSEC_AH) => t.emit(out),
            (TekBody::Other(b), p)
                if p != GdoiProtocol::IPSEC_ESP && p != GdoiProtocol::IPSEC_AH =>
            {
                out.extend_from_slice(b);
                Ok(())
            }
            _ => Err(err(ErrorKind::BadValue, "sa_tek.protocol_id")),
        }
    }

    /// The ESP/AH part, if this is an IPsec TEK.
    pub fn ipsec(&self) -> Option<&IpsecTek<'a>> {
        match &self.body {
            TekBody::Ipsec(t) => Some(t),
            TekBody::Other(_) => None,
        }
    }
}
