//! SA payloads: the phase 1 layout with Proposal/Transform (RFC 2408
//! sections 3.4-3.6, RFC 2409 appendix A) and the GDOI layout with nested
//! SA KEK, GAP and SA TEK payloads (RFC 6407 section 5.2).

use crate::attr::{self, emit_all, emit_basic, emit_int_compact, set_once, DataAttribute};
use crate::codec::{put_len8, put_u16, put_u32, put_u8, Reader};
use crate::consts::{
    limits::{MAX_PROPOSALS, MAX_TRANSFORMS},
    AuthMethod, Doi, ExchangeType, IsakmpTransformId, LifeType, OakleyAttribute, OakleyEncryption,
    OakleyGroup, OakleyHash, PayloadType, ProtocolId, SIT_IDENTITY_ONLY,
};
use crate::error::{err, ErrorKind, Result};

use super::{emit_framed, Gap, PayloadIter, SaKek, SaTek, UnknownPayload};

/// Which SA body layout applies. DOI 1 is always the phase 1 layout; DOI 2
/// is the phase 1 layout inside phase 1 exchanges (RFC 6407 section 2.1
/// puts the GDOI DOI in phase 1 SA payloads) and the GDOI layout in
/// GROUPKEY-PULL/PUSH. The exchange type decides, see [`SaLayout::for_exchange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaLayout {
    /// Proposal/Transform (phase 1).
    Phase1,
    /// SAK/GAP/SAT (GDOI phase 2).
    Gdoi,
}

impl SaLayout {
    /// The layout of a DOI 2 SA payload in an exchange of this type.
    pub fn for_exchange(exchange: ExchangeType) -> Self {
        match exchange {
            ExchangeType::BASE
            | ExchangeType::IDENTITY_PROTECTION
            | ExchangeType::AUTHENTICATION_ONLY
            | ExchangeType::AGGRESSIVE => Self::Phase1,
            _ => Self::Gdoi,
        }
    }
}

/// Phase 1 (Oakley) transform attributes (RFC 2409 appendix A).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OakleyAttributes<'a> {
    /// Encryption algorithm.
    pub encryption: Option<OakleyEncryption>,
    /// Key length in bits (for AES).
    pub key_length_bits: Option<u16>,
    /// Hash algorithm (also the PRF when no PRF attribute is sent).
    pub hash: Option<OakleyHash>,
    /// Authentication method.
    pub auth_method: Option<AuthMethod>,
    /// Diffie-Hellman group.
    pub group: Option<OakleyGroup>,
    /// Lifetime in seconds.
    pub life_seconds: Option<u32>,
    /// Lifetime in kilobytes.
    pub life_kilobytes: Option<u32>,
    /// Attributes the codec does not know, kept in order.
    pub unknown: Vec<DataAttribute<'a>>,
}

impl<'a> OakleyAttributes<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut s = Self::default();
        let f = "transform.attribute";
        let mut pending_life: Option<LifeType> = None;
        attr::for_each(buf, f, |a| {
            match OakleyAttribute(a.attr_type) {
                OakleyAttribute::ENCRYPTION_ALGORITHM => {
                    set_once(&mut s.encryption, OakleyEncryption(a.int16(f)?), f)?
                }
                OakleyAttribute::KEY_LENGTH => set_once(&mut s.key_length_bits, a.int16(f)?, f)?,
                OakleyAttribute::HASH_ALGORITHM => {
                    set_once(&mut s.hash, OakleyHash(a.int16(f)?), f)?
                }
                OakleyAttribute::AUTHENTICATION_METHOD => {
                    set_once(&mut s.auth_method, AuthMethod(a.int16(f)?), f)?
                }
                OakleyAttribute::GROUP_DESCRIPTION => {
                    set_once(&mut s.group, OakleyGroup(a.int16(f)?), f)?
                }
                OakleyAttribute::LIFE_TYPE => {
                    if pending_life.is_some() {
                        return Err(err(ErrorKind::Missing, "transform.life_duration"));
                    }
                    pending_life = Some(LifeType(a.int16(f)?));
                }
                OakleyAttribute::LIFE_DURATION => {
                    let v = a.int32("transform.life_duration")?;
                    match pending_life.take() {
                        Some(LifeType::SECONDS) => set_once(&mut s.life_seconds, v, f)?,
                        Some(LifeType::KILOBYTES) => set_once(&mut s.life_kilobytes, v, f)?,
                        Some(_) => return Err(err(ErrorKind::BadValue, "transform.life_type")),
                        None => return Err(err(ErrorKind::Missing, "transform.life_type")),
                    }
                }
                _ => s.unknown.push(a),
            }
            Ok(())
        })?;
        if pending_life.is_some() {
            return Err(err(ErrorKind::Missing, "transform.life_duration"));
        }
        Ok(s)
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(v) = self.encryption {
            emit_basic(out, OakleyAttribute::ENCRYPTION_ALGORITHM.0, v.0);
        }
        if let Some(v) = self.key_length_bits {
            emit_basic(out, OakleyAttribute::KEY_LENGTH.0, v);
        }
        if let Some(v) = self.hash {
            emit_basic(out, OakleyAttribute::HASH_ALGORITHM.0, v.0);
        }
        if let Some(v) = self.auth_method {
            emit_basic(out, OakleyAttribute::AUTHENTICATION_METHOD.0, v.0);
        }
        if let Some(v) = self.group {
            emit_basic(out, OakleyAttribute::GROUP_DESCRIPTION.0, v.0);
        }
        if let Some(v) = self.life_seconds {
            emit_basic(out, OakleyAttribute::LIFE_TYPE.0, LifeType::SECONDS.0);
            emit_int_compact(out, OakleyAttribute::LIFE_DURATION.0, v);
        }
        if let Some(v) = self.life_kilobytes {
            emit_basic(out, OakleyAttribute::LIFE_TYPE.0, LifeType::KILOBYTES.0);
            emit_int_compact(out, OakleyAttribute::LIFE_DURATION.0, v);
        }
        emit_all(out, &self.unknown, "transform.attribute")
    }
}

/// Transform payload (RFC 2408 section 3.6) of a phase 1 proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform<'a> {
    /// Transform number.
    pub number: u8,
    /// Transform ID (KEY_IKE).
    pub transform_id: IsakmpTransformId,
    /// Its attributes.
    pub attributes: OakleyAttributes<'a>,
}

/// Proposal payload (RFC 2408 section 3.5) of a phase 1 SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<'a> {
    /// Proposal number.
    pub number: u8,
    /// Protocol-ID; only PROTO_ISAKMP can be framed (GKM has no quick mode).
    pub protocol_id: ProtocolId,
    /// SPI, usually empty in phase 1.
    pub spi: &'a [u8],
    /// Transforms, in preference order.
    pub transforms: Vec<Transform<'a>>,
}

/// A phase 1 SA payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase1Sa<'a> {
    /// DOI: 2 (GDOI, RFC 6407 section 2.1) or 1 (IPsec, for peers that
    /// want it).
    pub doi: Doi,
    /// Situation: with DOI 1 SIT_IDENTITY_ONLY, the only one framed; with
    /// DOI 2 GDOI defines none and sends 0, and any value is kept as sent.
    pub situation: u32,
    /// Proposals.
    pub proposals: Vec<Proposal<'a>>,
}

/// A GDOI SA payload body: policy for the KEK, the group and each TEK.
///
/// Nested payloads must come in RFC 6407 section 5.2 order: at most one SA
/// KEK, at most one GAP, then SA TEKs; at least one SA KEK or SA TEK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GdoiSa<'a> {
    /// Situation (0: none defined).
    pub situation: u32,
    /// KEK policy (absent when the group has no rekeys).
    pub kek: Option<SaKek<'a>>,
    /// Group associated policy.
    pub gap: Option<Gap<'a>>,
    /// One per TEK.
    pub teks: Vec<SaTek<'a>>,
    /// Nested payloads of unknown type, kept; emitted after the SA TEKs.
    pub unknown: Vec<UnknownPayload<'a>>,
}

/// SA payload, in the layout its DOI and exchange call for.
// One SA per message: boxing the larger variant would cost an allocation on
// the hot PUSH parse path for no memory worth saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sa<'a> {
    /// Phase 1: proposals and transforms.
    Phase1(Phase1Sa<'a>),
    /// GDOI: SAK, GAP, SATs.
    Gdoi(GdoiSa<'a>),
}

impl<'a> Sa<'a> {
    /// Parses the body in the given layout.
    pub fn parse(body: &'a [u8], layout: SaLayout) -> Result<Self> {
        let mut r = Reader::new(body);
        let doi = Doi(r.u32("sa.doi")?);
        let situation = r.u32("sa.situation")?;
        match (doi, layout) {
            (Doi::IPSEC, _) | (Doi::GDOI, SaLayout::Phase1) => {
                if situation != SIT_IDENTITY_ONLY && doi == Doi::IPSEC {
                    return Err(err(ErrorKind::Unsupported, "sa.situation"));
                }
                Ok(Self::Phase1(Phase1Sa {
                    doi,
                    situation,
                    proposals: parse_proposals(r.rest())?,
                }))
            }
            (Doi::GDOI, SaLayout::Gdoi) => {
                let next = r.u16("sa.next_attribute_payload")?;
                let _reserved = r.u16("sa.reserved")?;
                let first = u8::try_from(next)
                    .map_err(|_| err(ErrorKind::BadValue, "sa.next_attribute_payload"))?;
                Ok(Self::Gdoi(parse_gdoi(
                    situation,
                    PayloadType(first),
                    r.rest(),
                )?))
            }
            _ => Err(err(ErrorKind::Unsupported, "sa.doi")),
        }
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Phase1(sa) => {
                put_u32(out, sa.doi.0);
                put_u32(out, sa.situation);
                if sa.proposals.is_empty() {
                    return Err(err(ErrorKind::Missing, "sa.proposal"));
                }
                if sa.proposals.len() > MAX_PROPOSALS {
                    return Err(err(ErrorKind::TooMany, "sa.proposal"));
                }
                let mut it = sa.proposals.iter().peekable();
                while let Some(p) = it.next() {
                    let next = if it.peek().is_some() {
                        PayloadType::PROPOSAL
                    } else {
                        PayloadType::NONE
                    };
                    emit_framed(out, next, |o| emit_proposal(p, o))?;
                }
                Ok(())
            }
            Self::Gdoi(sa) => emit_gdoi(sa, out),
        }
    }
}

fn parse_proposals(buf: &[u8]) -> Result<Vec<Proposal<'_>>> {
    let mut proposals = Vec::new();
    for raw in PayloadIter::new(PayloadType::PROPOSAL, buf) {
        let raw = raw?;
        if raw.payload_type != PayloadType::PROPOSAL {
            return Err(err(ErrorKind::BadValue, "proposal.next_payload"));
        }
        if proposals.len() >= MAX_PROPOSALS {
            return Err(err(ErrorKind::TooMany, "sa.proposal"));
        }
        let mut r = Reader::new(raw.body);
        let number = r.u8("proposal.number")?;
        let protocol_id = ProtocolId(r.u8("proposal.protocol_id")?);
        let spi_size = usize::from(r.u8("proposal.spi_size")?);
        let count = usize::from(r.u8("proposal.transform_count")?);
        let spi = r.sub(spi_size, "proposal.spi_size")?.rest();
        if protocol_id != ProtocolId::ISAKMP {
            return Err(err(ErrorKind::Unsupported, "proposal.protocol_id"));
        }
        let mut transforms = Vec::with_capacity(count.min(MAX_TRANSFORMS));
        for t in PayloadIter::new(PayloadType::TRANSFORM, r.rest()) {
            let t = t?;
            if t.payload_type != PayloadType::TRANSFORM {
                return Err(err(ErrorKind::BadValue, "transform.next_payload"));
            }
            if transforms.len() >= MAX_TRANSFORMS {
                return Err(err(ErrorKind::TooMany, "proposal.transform_count"));
            }
            let mut tr = Reader::new(t.body);
            let number = tr.u8("transform.number")?;
            let transform_id = IsakmpTransformId(tr.u8("transform.id")?);
            let _reserved = tr.u16("transform.reserved2")?;
            transforms.push(Transform {
                number,
                transform_id,
                attributes: OakleyAttributes::parse(tr.rest())?,
            });
        }
        if transforms.len() != count {
            return Err(err(ErrorKind::BadLength, "proposal.transform_count"));
        }
        proposals.push(Proposal {
            number,
            protocol_id,
            spi,
            transforms,
        });
    }
    if proposals.is_empty() {
        return Err(err(ErrorKind::Missing, "sa.proposal"));
    }
    Ok(proposals)
}

fn emit_proposal(p: &Proposal<'_>, out: &mut Vec<u8>) -> Result<()> {
    if p.transforms.is_empty() {
        return Err(err(ErrorKind::Missing, "proposal.transform_count"));
    }
    if p.transforms.len() > MAX_TRANSFORMS {
        return Err(err(ErrorKind::TooMany, "proposal.transform_count"));
    }
    if p.protocol_id != ProtocolId::ISAKMP {
        return Err(err(ErrorKind::Unsupported, "proposal.protocol_id"));
    }
    put_u8(out, p.number);
    put_u8(out, p.protocol_id.0);
    put_len8(out, p.spi.len(), "proposal.spi_size")?;
    put_len8(out, p.transforms.len(), "proposal.transform_count")?;
    out.extend_from_slice(p.spi);
    let mut it = p.transforms.iter().peekable();
    while let Some(t) = it.next() {
        let next = if it.peek().is_some() {
            PayloadType::TRANSFORM
        } else {
            PayloadType::NONE
        };
        emit_framed(out, next, |o| {
            put_u8(o, t.number);
            put_u8(o, t.transform_id.0);
            put_u16(o, 0);
            t.attributes.emit(o)
        })?;
    }
    Ok(())
}

fn parse_gdoi(situation: u32, first: PayloadType, buf: &[u8]) -> Result<GdoiSa<'_>> {
    let mut sa = GdoiSa {
        situation,
        ..GdoiSa::default()
    };
    // Stage: 0 = nothing yet, 1 = after SAK, 2 = after GAP, 3 = in SATs.
    let mut stage = 0u8;
    for raw in PayloadIter::new(first, buf) {
        let raw = raw?;
        match raw.payload_type {
            PayloadType::SA_KEK => {
                if stage >= 1 {
                    return Err(err(
                        if sa.kek.is_some() {
                            ErrorKind::Duplicate
                        } else {
                            ErrorKind::OutOfOrder
                        },
                        "sa.sa_kek",
                    ));
                }
                sa.kek = Some(SaKek::parse(raw.body)?);
                stage = 1;
            }
            PayloadType::GAP => {
                if stage >= 2 {
                    return Err(err(
                        if sa.gap.is_some() {
                            ErrorKind::Duplicate
                        } else {
                            ErrorKind::OutOfOrder
                        },
                        "sa.gap",
                    ));
                }
                sa.gap = Some(Gap::parse(raw.body)?);
                stage = 2;
            }
            PayloadType::SA_TEK => {
                sa.teks.push(SaTek::parse(raw.body)?);
                stage = 3;
            }
            PayloadType::NONE => return Err(err(ErrorKind::BadValue, "sa.next_attribute_payload")),
            other => sa.unknown.push(UnknownPayload {
                payload_type: other,
                body: raw.body,
            }),
        }
    }
    if sa.kek.is_none() && sa.teks.is_empty() {
        return Err(err(ErrorKind::Missing, "sa.sa_tek"));
    }
    Ok(sa)
}

fn emit_gdoi(sa: &GdoiSa<'_>, out: &mut Vec<u8>) -> Result<()> {
    if sa.kek.is_none() && sa.teks.is_empty() {
        return Err(err(ErrorKind::Missing, "sa.sa_tek"));
    }
    // The nested chain's payload types in emission order; cloned to look one ahead.
    let kinds = sa
        .kek
        .iter()
        .map(|_| PayloadType::SA_KEK)
        .chain(sa.gap.iter().map(|_| PayloadType::GAP))
        .chain(sa.teks.iter().map(|_| PayloadType::SA_TEK))
        .chain(sa.unknown.iter().map(|u| u.payload_type));
    if kinds.clone().count() > crate::consts::limits::MAX_PAYLOADS {
        return Err(err(ErrorKind::TooMany, "sa.nested"));
    }
    for u in &sa.unknown {
        if matches!(
            u.payload_type,
            PayloadType::NONE | PayloadType::SA_KEK | PayloadType::GAP | PayloadType::SA_TEK
        ) {
            return Err(err(ErrorKind::BadValue, "sa.nested"));
        }
    }

    put_u32(out, Doi::GDOI.0);
    put_u32(out, sa.situation);
    put_u16(out, u16::from(kinds.clone().next().map_or(0, |k| k.0)));
    put_u16(out, 0);

    let mut next_of = kinds.skip(1);
    let mut next = || next_of.next().unwrap_or(PayloadType::NONE);
    if let Some(kek) = &sa.kek {
        emit_framed(out, next(), |o| kek.emit(o))?;
    }
    if let Some(gap) = &sa.gap {
        emit_framed(out, next(), |o| gap.emit(o))?;
    }
    for tek in &sa.teks {
        emit_framed(out, next(), |o| tek.emit(o))?;
    }
    for u in &sa.unknown {
        emit_framed(out, next(), |o| {
            o.extend_from_slice(u.body);
            Ok(())
        })?;
    }
    Ok(())
}
