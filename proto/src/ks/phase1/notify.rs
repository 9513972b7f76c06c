//! Informational notifications the responder sends: in the clear while
//! phase 1 is not usable (the peer may not share our keys), protected
//! (HDR*, HASH(1), N) over an established phase 1 SA.

use std::net::SocketAddr;

use gkm_wire::consts::{Doi, ExchangeType, Flags, NotifyType, PayloadType, ProtocolId};
use gkm_wire::payload::Notification;
use gkm_wire::{Body, IsakmpHeader, Message, Payload};

use super::super::events::KsOutbox;
use crate::crypto::EngineRng;
use crate::ike::{encrypt_body, hashed_chain, phase2_iv, Phase1Keys, Suite};

/// An unprotected Informational notification `t` to `to`.
pub(crate) fn clear(
    out: &mut KsOutbox,
    to: SocketAddr,
    (icky, rcky): ([u8; 8], [u8; 8]),
    doi: Doi,
    t: NotifyType,
) {
    let header = IsakmpHeader {
        initiator_cookie: icky,
        responder_cookie: rcky,
        next_payload: PayloadType::NOTIFICATION,
        exchange_type: ExchangeType::INFORMATIONAL,
        flags: Flags::default(),
        message_id: 0,
        length: 0,
    };
    let n = Notification {
        doi,
        protocol_id: ProtocolId::ISAKMP.0,
        notify_type: t,
        spi: &[],
        data: &[],
    };
    if let Ok(b) = (Message {
        header,
        body: Body::Payloads(vec![Payload::Notification(n)]),
    })
    .to_vec()
    {
        out.send(to, b);
    }
}

/// The established phase 1 SA a protected notification goes over.
pub(crate) struct Protection<'a> {
    /// The peer.
    pub peer: SocketAddr,
    /// Initiator and responder cookies.
    pub cookies: ([u8; 8], [u8; 8]),
    /// The SA's suite.
    pub suite: Suite,
    /// Its keys.
    pub keys: &'a Phase1Keys,
    /// The last CBC block of main mode.
    pub last_block: &'a [u8; 16],
}

/// A protected Informational notification `t`: HDR*, HASH(1), N, under a
/// fresh message ID.
pub(crate) fn protected(
    out: &mut KsOutbox,
    rng: &mut dyn EngineRng,
    sa: Protection<'_>,
    t: NotifyType,
) {
    let mid = rng.next_u32() | 1;
    let mut spi = [0u8; 16];
    spi[..8].copy_from_slice(&sa.cookies.0);
    spi[8..].copy_from_slice(&sa.cookies.1);
    let n = Notification {
        doi: Doi::GDOI,
        protocol_id: ProtocolId::ISAKMP.0,
        notify_type: t,
        spi: &spi,
        data: &[],
    };
    let Ok((_, body)) = hashed_chain(
        sa.suite.prf,
        &sa.keys.skeyid_a,
        mid,
        &[],
        &[Payload::Notification(n)],
    ) else {
        return;
    };
    let header = IsakmpHeader {
        initiator_cookie: sa.cookies.0,
        responder_cookie: sa.cookies.1,
        next_payload: PayloadType::HASH,
        exchange_type: ExchangeType::INFORMATIONAL,
        flags: Flags::default(),
        message_id: mid,
        length: 0,
    };
    let iv = phase2_iv(sa.suite.cipher, sa.suite.prf, sa.last_block, mid);
    if let Ok((bytes, _)) = encrypt_body(header, body, sa.suite.cipher, &sa.keys.enc_key, &iv) {
        out.send(sa.peer, bytes);
    }
}
