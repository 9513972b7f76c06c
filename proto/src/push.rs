//! GROUPKEY-PUSH protection (RFC 6407 section 4; DESIGN.md "rekey"):
//! `HDR*, SEQ, [D,] SA, KD, SIG`, signed by the key server and encrypted
//! under the KEK. The rekey scheduler and the GM's installation of the
//! contents build on these two functions.
//!
//! Signature: RSA PKCS#1 v1.5 over the raw SHA-256 hash (no DigestInfo),
//! or ECDSA P-256/SHA-256, of `"rekey" ‖ HDR ‖ payloads before SIG`, where HDR has the E flag set and
//! Length = the unpadded plaintext length including the SIG payload
//! (observed on the reference implementation, gdoi-wire.md section 14).
//! Encryption: the payload chain, zero-padded to the block, AES-CBC with
//! the KEK key and the IV delivered with it (RFC 6407 section 5.6.2.1).

use gkm_wire::consts::{ExchangeType, Flags, PayloadType, ISAKMP_HEADER_LEN};
use gkm_wire::payload::{emit_chain, PayloadIter, RawPayload, Seq};
use gkm_wire::{Body, IsakmpHeader, Message, Payload};

use crate::crypto::{EngineRng, RekeySigner, RekeyVerifier};
use crate::group::Kek;

/// Why a GROUPKEY-PUSH was refused by a GM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Not a well-formed encrypted GROUPKEY-PUSH, and what in it is not.
    #[error("malformed GROUPKEY-PUSH: {0}")]
    Malformed(MalformedPush),
    /// The cookies do not name the KEK this GM holds.
    #[error("GROUPKEY-PUSH for another KEK")]
    WrongKek,
    /// The signature does not verify with the KS's rekey key.
    #[error("GROUPKEY-PUSH signature does not verify")]
    BadSignature,
    /// SEQ not greater than the last accepted: a replay or a stale rekey.
    #[error("GROUPKEY-PUSH SEQ {seq} is not greater than {last}")]
    Replay {
        /// SEQ received.
        seq: u32,
        /// Last SEQ accepted.
        last: u32,
    },
    /// The KS's key could not sign or the chain could not be encoded.
    #[error("GROUPKEY-PUSH could not be built")]
    Build,
}

/// What part of a GROUPKEY-PUSH is malformed: the message says which
/// field, and with SPIs which value did not match which (counters count
/// all of them as one kind, never by value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedPush {
    /// The message's framing: header, encryption, payload order.
    #[error("{0}")]
    Framing(&'static str),
    /// A payload inside does not parse (the wire field that failed).
    #[error("{}: {:?}", .0.field, .0.kind)]
    Payload(gkm_wire::Error),
    /// SA and KD disagree or are incomplete (which part).
    #[error("{0}")]
    Policy(&'static str),
    /// The KD's KEK packet is labelled with neither the SA KEK's SPI nor,
    /// in the rollover form a real peer sends, the KEK in use.
    #[error(
        "KD KEK packet SPI {} matches neither the SA KEK's {} nor the KEK in use {}",
        hex::encode(.packet), hex::encode(.sa_kek), hex::encode(.current)
    )]
    KekPacketSpi {
        /// The KEK packet's SPI.
        packet: [u8; 16],
        /// The SA KEK's SPI.
        sa_kek: [u8; 16],
        /// The KEK that protected the push.
        current: [u8; 16],
    },
    /// The new KEK's rekey-signing key cannot be used.
    #[error("the new rekey-signing key cannot be used")]
    SigningKey,
}

fn framing(what: &'static str) -> PushError {
    PushError::Malformed(MalformedPush::Framing(what))
}

/// What the SIG payload signs: `"rekey" ‖ HDR ‖ payloads before SIG`.
fn signed_message(header: &IsakmpHeader, before_sig: &[u8]) -> Vec<u8> {
    [&b"rekey"[..], &header.to_bytes(), before_sig].concat()
}

/// Builds an encrypted, signed GROUPKEY-PUSH. `payloads` are the ones
/// before SIG and must start with SEQ (`[SEQ, D?, SA, KD]`).
pub fn seal_push(
    kek: &Kek,
    signer: &RekeySigner,
    rng: &mut dyn EngineRng,
    payloads: &[Payload<'_>],
) -> Result<Vec<u8>, PushError> {
    if !matches!(payloads.first(), Some(Payload::Seq(_))) {
        return Err(PushError::Build);
    }
    let mut before_sig = Vec::with_capacity(1024);
    // The chain is emitted with SIG as the last payload's next; SIG is appended after.
    let mut chain: Vec<Payload<'_>> = payloads.to_vec();
    let sig_len = signer.signature_len();
    let placeholder = vec![0u8; sig_len];
    chain.push(Payload::Signature(gkm_wire::payload::Signature(
        &placeholder,
    )));
    let first = emit_chain(&chain, &mut before_sig).map_err(|_| PushError::Build)?;
    let sig_payload_len = 4 + sig_len;
    let unsigned_len = before_sig.len() - sig_payload_len;
    let (i, r) = IsakmpHeader::cookies_from_kek_spi(&kek.spi);
    let mut header = IsakmpHeader {
        initiator_cookie: i,
        responder_cookie: r,
        next_payload: first,
        exchange_type: ExchangeType::GROUPKEY_PUSH,
        flags: Flags::ENCRYPTION,
        message_id: 0,
        length: u32::try_from(ISAKMP_HEADER_LEN + before_sig.len())
            .map_err(|_| PushError::Build)?,
    };
    let signed = signed_message(&header, before_sig.get(..unsigned_len).unwrap_or_default());
    let sig = signer.sign(rng, &signed).map_err(|_| PushError::Build)?;
    if sig.len() != sig_len {
        return Err(PushError::Build);
    }
    before_sig.truncate(unsigned_len + 4);
    before_sig.extend_from_slice(&sig);
    let pad = (16 - before_sig.len() % 16) % 16;
    before_sig.resize(before_sig.len() + pad, 0);
    let ct = kek
        .cipher
        .encrypt(&kek.key, &kek.iv, &before_sig)
        .map_err(|_| PushError::Build)?;
    header.length = u32::try_from(ISAKMP_HEADER_LEN + ct.len()).map_err(|_| PushError::Build)?;
    let mut out = Vec::with_capacity(ISAKMP_HEADER_LEN + ct.len());
    header.emit(&mut out);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// A verified GROUPKEY-PUSH: its SEQ and decrypted payload chain (without
/// padding), for the caller to parse and apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedPush {
    /// The SEQ, greater than the last accepted.
    pub seq: u32,
    /// First payload type of `plaintext`.
    pub first: PayloadType,
    /// The payload chain, SIG included.
    pub plaintext: Vec<u8>,
}

impl OpenedPush {
    /// The payloads before SIG.
    pub fn payloads(&self) -> impl Iterator<Item = RawPayload<'_>> {
        PayloadIter::new(self.first, &self.plaintext)
            .filter_map(Result::ok)
            .filter(|p| p.payload_type != PayloadType::SIG)
    }
}

/// Decrypts and verifies a GROUPKEY-PUSH under `kek`, checking the
/// signature with the KS's key and requiring SEQ > `last_seq`.
pub fn open_push(
    datagram: &[u8],
    kek: &Kek,
    ks_key: &RekeyVerifier,
    last_seq: u32,
) -> Result<OpenedPush, PushError> {
    let msg =
        Message::parse(datagram).map_err(|e| PushError::Malformed(MalformedPush::Payload(e)))?;
    let h = msg.header;
    if h.exchange_type != ExchangeType::GROUPKEY_PUSH {
        return Err(framing("exchange type is not GROUPKEY-PUSH"));
    }
    if h.message_id != 0 {
        return Err(framing("message ID is not 0"));
    }
    if h.kek_spi() != kek.spi {
        return Err(PushError::WrongKek);
    }
    let Body::Encrypted(ct) = msg.body else {
        return Err(framing("not encrypted"));
    };
    let mut pt = kek
        .cipher
        .decrypt(&kek.key, &kek.iv, ct)
        .map_err(|_| framing("ciphertext is not a whole number of blocks"))?;
    let mut it = PayloadIter::with_padding(h.next_payload, &pt, 16);
    let mut sig_at = None;
    let mut seq = None;
    let mut last_type = PayloadType::NONE;
    let mut offset = 0usize;
    for p in it.by_ref() {
        let p = p.map_err(|e| PushError::Malformed(MalformedPush::Payload(e)))?;
        if offset == 0 {
            if p.payload_type != PayloadType::SEQ {
                return Err(framing("first payload is not SEQ"));
            }
            seq = Some(
                Seq::parse(p.body)
                    .map_err(|e| PushError::Malformed(MalformedPush::Payload(e)))?
                    .0,
            );
        }
        if p.payload_type == PayloadType::SIG {
            sig_at = Some((offset, p.body.to_vec()));
        }
        last_type = p.payload_type;
        offset += p.bytes.len();
    }
    let chain_len = pt.len() - it.remaining();
    pt.truncate(chain_len);
    let (Some((sig_offset, sig)), Some(seq), PayloadType::SIG) = (sig_at, seq, last_type) else {
        return Err(framing("SIG is not the last payload"));
    };
    let signed_header = IsakmpHeader {
        length: u32::try_from(ISAKMP_HEADER_LEN + chain_len).map_err(|_| framing("length"))?,
        ..h
    };
    let signed = signed_message(&signed_header, pt.get(..sig_offset).unwrap_or_default());
    ks_key
        .verify(&signed, &sig)
        .map_err(|_| PushError::BadSignature)?;
    if seq <= last_seq {
        return Err(PushError::Replay {
            seq,
            last: last_seq,
        });
    }
    Ok(OpenedPush {
        seq,
        first: h.next_payload,
        plaintext: pt,
    })
}
