//! The RFC 8263 GROUPKEY-PUSH acknowledgement: `HDR, HASH, SEQ, ID`,
//! exchange 35, not encrypted, cookies = KEK SPI, message ID 0
//! (RFC 8263 section 3.1).
//!
//! `ack_key = prf(base_key, "GROUPKEY-PUSH ACK\0" | SPI | L)` where
//! base_key is the KEK key without its IV (section 2.1) and
//! `HASH = prf(ack_key, SEQ | ID)` over the whole SEQ and ID payloads
//! (section 3.2). Every GM holding the KEK can compute ack_key, so an ACK
//! proves "a group member", and the ID payload names which (section 7).

use std::net::Ipv4Addr;

use gkm_wire::consts::{
    ack_kdf_length_bits, AckRequested, ExchangeType, Flags, PayloadType, GROUPKEY_PUSH_ACK_LABEL,
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

/// Builds the ACK a GM at `gm` sends for the PUSH with `seq`.
pub fn seal_rfc8263_ack(
    kek: &Kek,
    ack: AckRequested,
    seq: u32,
    gm: Ipv4Addr,
) -> Result<Vec<u8>, AckError> {
    let prf = prf_for(ack).ok_or(AckError::Unsupported)?;
    let key = ack_key(ack, kek)?;
    let mut rest = Vec::with_capacity(32);
    let rest_payloads = [
        Payload::Seq(Seq(seq)),
        Payload::Id(IdPayload {
            protocol: 0,
            port: 0,
            identity: Identity::Ipv4Addr(gm),
        }),
    ];
    let first_rest = emit_chain(&rest_payloads, &mut rest).map_err(|_| AckError::Malformed)?;
    let hash = prf.prf(&key, &[&rest]);
    let (i, r) = IsakmpHeader::cookies_from_kek_spi(&kek.spi);
    let total = 28 + 4 + hash.len() + rest.len();
    let header = IsakmpHeader {
        initiator_cookie: i,
        responder_cookie: r,
        next_payload: PayloadType::HASH,
        exchange_type: ExchangeType::GROUPKEY_PUSH_ACK,
        flags: Flags::default(),
        message_id: 0,
        length: u32::try_from(total).map_err(|_| AckError::Malformed)?,
    };
    let mut out = Vec::with_capacity(total);
    header.emit(&mut out);
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

/// A verified ACK: which SEQ, from which GM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc8263Ack {
    /// The acknowledged SEQ.
    pub seq: u32,
    /// The GM's address from the ID payload.
    pub gm: Ipv4Addr,
}

/// Checks an ACK against the KEK it names.
pub fn open_rfc8263_ack(
    datagram: &[u8],
    kek: &Kek,
    ack: AckRequested,
) -> Result<Rfc8263Ack, AckError> {
    let prf = prf_for(ack).ok_or(AckError::Unsupported)?;
    let msg = gkm_wire::Message::parse(datagram).map_err(|_| AckError::Malformed)?;
    let h = msg.header;
    if h.exchange_type != ExchangeType::GROUPKEY_PUSH_ACK
        || h.message_id != 0
        || h.flags != Flags::default()
    {
        return Err(AckError::Malformed);
    }
    if h.kek_spi() != kek.spi {
        return Err(AckError::WrongKek);
    }
    let body = datagram.get(28..).unwrap_or_default();
    let raws: Vec<_> = PayloadIter::new(h.next_payload, body)
        .collect::<Result<_, _>>()
        .map_err(|_| AckError::Malformed)?;
    let [hash, seq, id] = raws.as_slice() else {
        return Err(AckError::Malformed);
    };
    if hash.payload_type != PayloadType::HASH
        || seq.payload_type != PayloadType::SEQ
        || id.payload_type != PayloadType::ID
    {
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
        Identity::Ipv4Addr(gm) if id.protocol == 0 && id.port == 0 => Ok(Rfc8263Ack { seq, gm }),
        _ => Err(AckError::Malformed),
    }
}
