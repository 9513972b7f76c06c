//! The RFC 8263 GROUPKEY-PUSH acknowledgement: `HDR, HASH, SEQ, ID`,
//! exchange 35, not encrypted, cookies = KEK SPI, message ID 0
//! (RFC 8263 section 3.1).
//!
//! `ack_key = prf(base_key, "GROUPKEY-PUSH ACK\0" | SPI | L)` where
//! base_key is the KEK key without its IV (section 2.1) and
//! `HASH = prf(ack_key, SEQ | ID)` over the whole SEQ and ID payloads
//! (section 3.2). Every GM holding the KEK can compute ack_key, so an ACK
//! proves "a group member", and the ID payload names which (section 7).

use std::net::IpAddr;

use gkm_wire::consts::{
    ack_kdf_length_bits, AckRequested, ExchangeType, Flags, PayloadType, GROUPKEY_PUSH_ACK_LABEL,
    ISAKMP_HEADER_LEN,
};
use gkm_wire::payload::{emit_chain, IdPayload, PayloadIter, Seq};
use gkm_wire::{Identity, IsakmpHeader, Payload};
use zeroize::Zeroizing;

use crate::crypto::Prf;
use crate::group::Kek;

/// Why an RFC 8263 ACK was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Not a well-formed ACK (layout, exchange, flags, message ID).
    #[error("malformed GROUPKEY-PUSH ACK")]
    Malformed,
    /// The cookies name another KEK.
    #[error("ACK for another KEK")]
    WrongKek,
    /// The HASH does not verify.
    #[error("ACK HASH does not verify")]
    BadHash,
    /// A KEK_ACK_REQUESTED value GKM does not implement (the LKH variants).
    #[error("unsupported KEK_ACK_REQUESTED value")]
    Unsupported,
}

fn prf_for(ack: AckRequested) -> Option<Prf> {
    match ack {
        AckRequested::REKEY_ACK_KEK_SHA256 => Some(Prf::HmacSha256),
        AckRequested::REKEY_ACK_KEK_SHA512 => Some(Prf::HmacSha512),
        _ => None,
    }
}

/// The ack_key for a KEK (RFC 8263 section 3.2).
pub fn ack_key(ack: AckRequested, kek: &Kek) -> Result<Zeroizing<Vec<u8>>, AckError> {
    let prf = prf_for(ack).ok_or(AckError::Unsupported)?;
    let l = ack_kdf_length_bits(ack).ok_or(AckError::Unsupported)?;
    Ok(Zeroizing::new(prf.prf(
        &kek.key,
        &[GROUPKEY_PUSH_ACK_LABEL, &kek.spi, &l.to_be_bytes()],
    )))
}

/// `HASH, SEQ, ID` with HASH = prf(ack_key, SEQ | ID): the body both ACK
/// kinds carry. Returns the body's first payload type and its octets.
fn ack_chain(kek: &Kek, ack: AckRequested, seq: u32, gm: IpAddr) -> Result<Vec<u8>, AckError> {
    let prf = prf_for(ack).ok_or(AckError::Unsupported)?;
    let key = ack_key(ack, kek)?;
    let mut rest = Vec::with_capacity(32);
    let rest_payloads = [
        Payload::Seq(Seq(seq)),
        Payload::Id(IdPayload {
            protocol: 0,
            port: 0,
            identity: match gm {
                IpAddr::V4(a) => Identity::Ipv4Addr(a),
                IpAddr::V6(a) => Identity::Ipv6Addr(a),
            },
        }),
    ];
    let first_rest = emit_chain(&rest_payloads, &mut rest).map_err(|_| AckError::Malformed)?;
    let hash = prf.prf(&key, &[&rest]);
    let mut out = Vec::with_capacity(4 + hash.len() + rest.len());
    out.push(first_rest.0);
    out.push(0);
    out.extend_from_slice(
        &u16::try_from(4 + hash.len())
            .map_err(|_| AckError::Malformed)?
            .to_be_bytes(),
    );
    out.extend_from_slice(&hash);
    out.extend_from_slice(&rest);
    Ok(out)
}

/// Checks a `HASH, SEQ, ID` chain (exactly those three, in order).
fn check_ack_chain(kek: &Kek, ack: AckRequested, body: &[u8]) -> Result<Rfc8263Ack, AckError> {
    let prf = prf_for(ack).ok_or(AckError::Unsupported)?;
    let raws: Vec<_> = PayloadIter::new(PayloadType::HASH, body)
        .collect::<Result<_, _>>()
        .map_err(|_| AckError::Malformed)?;
    let [hash, seq, id] = raws.as_slice() else {
        return Err(AckError::Malformed);
    };
    if seq.payload_type != PayloadType::SEQ || id.payload_type != PayloadType::ID {
        return Err(AckError::Malformed);
    }
    let key = ack_key(ack, kek)?;
    let rest = body.get(hash.bytes.len()..).unwrap_or_default();
    if !prf.verify(&key, &[rest], hash.body) {
        return Err(AckError::BadHash);
    }
    let seq = Seq::parse(seq.body).map_err(|_| AckError::Malformed)?.0;
    let id = IdPayload::parse(id.body).map_err(|_| AckError::Malformed)?;
    match id.identity {
        Identity::Ipv4Addr(a) if id.protocol == 0 && id.port == 0 => Ok(Rfc8263Ack {
            seq,
            gm: IpAddr::V4(a),
        }),
        Identity::Ipv6Addr(a) if id.protocol == 0 && id.port == 0 => Ok(Rfc8263Ack {
            seq,
            gm: IpAddr::V6(a),
        }),
        _ => Err(AckError::Malformed),
    }
}

fn ack_header(
    kek: &Kek,
    exchange: ExchangeType,
    flags: Flags,
    len: usize,
) -> Result<IsakmpHeader, AckError> {
    let (i, r) = IsakmpHeader::cookies_from_kek_spi(&kek.spi);
    Ok(IsakmpHeader {
        initiator_cookie: i,
        responder_cookie: r,
        next_payload: PayloadType::HASH,
        exchange_type: exchange,
        flags,
        message_id: 0,
        length: u32::try_from(ISAKMP_HEADER_LEN + len).map_err(|_| AckError::Malformed)?,
    })
}

/// Builds the ACK a GM at `gm` sends for the PUSH with `seq`.
pub fn seal_rfc8263_ack(
    kek: &Kek,
    ack: AckRequested,
    seq: u32,
    gm: IpAddr,
) -> Result<Vec<u8>, AckError> {
    let body = ack_chain(kek, ack, seq, gm)?;
    let header = ack_header(
        kek,
        ExchangeType::GROUPKEY_PUSH_ACK,
        Flags::default(),
        body.len(),
    )?;
    let mut out = Vec::with_capacity(ISAKMP_HEADER_LEN + body.len());
    header.emit(&mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

/// A verified ACK (either kind): which SEQ, from which GM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc8263Ack {
    /// The acknowledged SEQ.
    pub seq: u32,
    /// The GM's address from the ID payload (ID_IPV4_ADDR or ID_IPV6_ADDR).
    pub gm: IpAddr,
}

/// Checks an ACK against the KEK it names.
pub fn open_rfc8263_ack(
    datagram: &[u8],
    kek: &Kek,
    ack: AckRequested,
) -> Result<Rfc8263Ack, AckError> {
    let h = IsakmpHeader::parse(datagram).map_err(|_| AckError::Malformed)?;
    if h.exchange_type != ExchangeType::GROUPKEY_PUSH_ACK
        || h.message_id != 0
        || h.flags != Flags::default()
        || h.next_payload != PayloadType::HASH
        || usize::try_from(h.length).ok() != Some(datagram.len())
    {
        return Err(AckError::Malformed);
    }
    if h.kek_spi() != kek.spi {
        return Err(AckError::WrongKek);
    }
    check_ack_chain(
        kek,
        ack,
        datagram.get(ISAKMP_HEADER_LEN..).unwrap_or_default(),
    )
}

/// The ack_key kind GKM's unicast ACK uses (REKEY_ACK_KEK_SHA256's).
const UNICAST_ACK_KIND: AckRequested = AckRequested::REKEY_ACK_KEK_SHA256;

/// GKM's encrypted unicast ACK, the `cisco` option (DESIGN.md "ACK,
/// cisco"): exchange 240, `HDR*, HASH, SEQ, ID` with the same HASH as RFC
/// 8263, the chain zero-padded and AES-CBC-encrypted under the KEK with the
/// KEK's IV, as GROUPKEY-PUSH is. The HASH leads the plaintext and differs
/// per GM and SEQ, so the fixed IV does not make two ACKs' first blocks equal.
pub fn seal_unicast_ack(kek: &Kek, seq: u32, gm: IpAddr) -> Result<Vec<u8>, AckError> {
    let mut body = ack_chain(kek, UNICAST_ACK_KIND, seq, gm)?;
    let pad = (16 - body.len() % 16) % 16;
    body.resize(body.len() + pad, 0);
    let ct = kek
        .cipher
        .encrypt(&kek.key, &kek.iv, &body)
        .map_err(|_| AckError::Malformed)?;
    let header = ack_header(
        kek,
        ExchangeType::GKM_UNICAST_ACK,
        Flags::ENCRYPTION,
        ct.len(),
    )?;
    let mut out = Vec::with_capacity(ISAKMP_HEADER_LEN + ct.len());
    header.emit(&mut out);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts and checks GKM's unicast ACK under the KEK it names.
pub fn open_unicast_ack(datagram: &[u8], kek: &Kek) -> Result<Rfc8263Ack, AckError> {
    let h = IsakmpHeader::parse(datagram).map_err(|_| AckError::Malformed)?;
    if h.exchange_type != ExchangeType::GKM_UNICAST_ACK
        || h.message_id != 0
        || h.flags != Flags::ENCRYPTION
        || h.next_payload != PayloadType::HASH
        || usize::try_from(h.length).ok() != Some(datagram.len())
    {
        return Err(AckError::Malformed);
    }
    if h.kek_spi() != kek.spi {
        return Err(AckError::WrongKek);
    }
    let pt = kek
        .cipher
        .decrypt(
            &kek.key,
            &kek.iv,
            datagram.get(ISAKMP_HEADER_LEN..).unwrap_or_default(),
        )
        .map_err(|_| AckError::Malformed)?;
    let mut it = PayloadIter::with_padding(PayloadType::HASH, &pt, 16);
    for p in it.by_ref() {
        p.map_err(|_| AckError::Malformed)?;
    }
    let end = pt.len() - it.remaining();
    check_ack_chain(kek, UNICAST_ACK_KIND, pt.get(..end).unwrap_or_default())
}
