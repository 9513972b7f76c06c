//! Protected ISAKMP messages: CBC encryption of the payload chain with the
//! phase 1 key and IV chaining (RFC 2409 appendix B), and HASH payloads
//! over "every octet after the HASH payload" (RFC 6407 section 3.1).

use gkm_wire::consts::{Flags, PayloadType, ISAKMP_HEADER_LEN};
use gkm_wire::payload::{emit_chain, PayloadIter, RawPayload};
use gkm_wire::{IsakmpHeader, Payload};

use crate::crypto::{CbcCipher, Prf};

/// Why a protected message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// Framing error in the header or the decrypted chain.
    #[error("malformed: {0}")]
    Malformed(gkm_wire::Error),
    /// Ciphertext not a whole number of blocks.
    #[error("ciphertext is not block aligned")]
    NotAligned,
    /// The first payload is not HASH.
    #[error("the first payload is not HASH")]
    NoHash,
    /// The HASH does not verify.
    #[error("HASH does not verify")]
    BadHash,
}

impl From<gkm_wire::Error> for CryptError {
    fn from(e: gkm_wire::Error) -> Self {
        Self::Malformed(e)
    }
}

/// An IV, or a CBC chain's last ciphertext block: [`CbcCipher::MAX_BLOCK`]
/// octets, of which a cipher uses the first [`CbcCipher::block_len`] (all
/// 16 for AES, 8 for 3DES; the rest stay zero).
pub type Iv = [u8; CbcCipher::MAX_BLOCK];

/// The first `cipher.block_len()` octets of `h` as an IV.
pub(crate) fn iv_from(cipher: CbcCipher, h: &[u8]) -> Iv {
    let n = cipher.block_len();
    let mut iv = [0u8; CbcCipher::MAX_BLOCK];
    if let (Some(dst), Some(src)) = (iv.get_mut(..n), h.get(..n)) {
        dst.copy_from_slice(src);
    }
    iv
}

/// The used part of `iv` for `cipher`.
fn used(cipher: CbcCipher, iv: &Iv) -> &[u8] {
    iv.get(..cipher.block_len()).unwrap_or(iv)
}

/// The IV of a new phase 2 style exchange: hash(last phase 1 block | M-ID)
/// truncated to the block size (RFC 2409 appendix B).
pub fn phase2_iv(cipher: CbcCipher, prf: Prf, last_p1_block: &Iv, message_id: u32) -> Iv {
    let h = prf.hash(&[used(cipher, last_p1_block), &message_id.to_be_bytes()]);
    iv_from(cipher, &h)
}

fn last_block(cipher: CbcCipher, ct: &[u8]) -> Iv {
    iv_from(
        cipher,
        ct.get(ct.len().saturating_sub(cipher.block_len())..)
            .unwrap_or_default(),
    )
}

/// Encrypts `payloads` under `header` (E flag set, Length computed).
/// Returns the datagram and the IV for the next message (its last block).
pub fn encrypt_message(
    mut header: IsakmpHeader,
    payloads: &[Payload<'_>],
    cipher: CbcCipher,
    key: &[u8],
    iv: &Iv,
) -> Result<(Vec<u8>, Iv), CryptError> {
    let mut body = Vec::with_capacity(512);
    header.next_payload = emit_chain(payloads, &mut body)?;
    encrypt_body(header, body, cipher, key, iv)
}

/// Encrypts an already emitted payload chain.
pub fn encrypt_body(
    mut header: IsakmpHeader,
    body: Vec<u8>,
    cipher: CbcCipher,
    key: &[u8],
    iv: &Iv,
) -> Result<(Vec<u8>, Iv), CryptError> {
    // The plaintext may hold keys (a KD, a COOP group state): zeroized
    // when dropped.
    let mut body = zeroize::Zeroizing::new(body);
    // Zero padding to the block size (RFC 2409 appendix B).
    let block = cipher.block_len();
    let pad = (block - body.len() % block) % block;
    let padded = body.len() + pad;
    body.resize(padded, 0);
    let ct = cipher
        .encrypt(key, used(cipher, iv), &body)
        .map_err(|_| CryptError::NotAligned)?;
    header.flags = header.flags.with(Flags::ENCRYPTION);
    header.length = u32::try_from(ISAKMP_HEADER_LEN + ct.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(ISAKMP_HEADER_LEN + ct.len());
    header.emit(&mut out);
    out.extend_from_slice(&ct);
    Ok((out, last_block(cipher, &ct)))
}

/// A decrypted message.
#[derive(Debug)]
pub struct Decrypted {
    /// The header.
    pub header: IsakmpHeader,
    /// The plaintext chain with its padding cut off (zeroized when
    /// dropped: it may hold keys).
    pub plaintext: zeroize::Zeroizing<Vec<u8>>,
    /// The IV for the next message of the exchange.
    pub next_iv: Iv,
}

/// Decrypts a message whose header has the E flag; checks the chain frames
/// and strips the padding.
pub fn decrypt_message(
    datagram: &[u8],
    cipher: CbcCipher,
    key: &[u8],
    iv: &Iv,
) -> Result<Decrypted, CryptError> {
    let msg = gkm_wire::Message::parse(datagram)?;
    let gkm_wire::Body::Encrypted(ct) = msg.body else {
        return Err(CryptError::Malformed(gkm_wire::Error::new(
            gkm_wire::ErrorKind::BadValue,
            "isakmp.flags",
        )));
    };
    let mut plaintext = zeroize::Zeroizing::new(
        cipher
            .decrypt(key, used(cipher, iv), ct)
            .map_err(|_| CryptError::NotAligned)?,
    );
    let mut it = PayloadIter::with_padding(msg.header.next_payload, &plaintext, cipher.block_len());
    for p in it.by_ref() {
        p?;
    }
    let chain_len = plaintext.len() - it.remaining();
    plaintext.truncate(chain_len);
    Ok(Decrypted {
        header: msg.header,
        plaintext,
        next_iv: last_block(cipher, ct),
    })
}

/// Builds `HASH, rest...` where HASH = prf(SKEYID_a, M-ID | prefix | rest octets).
pub fn hashed_chain(
    prf: Prf,
    skeyid_a: &[u8],
    message_id: u32,
    prefix: &[&[u8]],
    rest: &[Payload<'_>],
) -> Result<(PayloadType, Vec<u8>), CryptError> {
    let mut rest_bytes = Vec::with_capacity(512);
    let first_rest = emit_chain(rest, &mut rest_bytes)?;
    Ok(prepend_hash(
        prf,
        skeyid_a,
        message_id,
        prefix,
        first_rest,
        &rest_bytes,
    ))
}

/// As [`hashed_chain`], with the rest given as encoded payload bodies.
pub fn hashed_raw_chain(
    prf: Prf,
    skeyid_a: &[u8],
    message_id: u32,
    prefix: &[&[u8]],
    rest: &[(PayloadType, &[u8])],
) -> Result<(PayloadType, Vec<u8>), CryptError> {
    let mut rest_bytes = Vec::with_capacity(512);
    let first_rest = gkm_wire::payload::emit_raw_chain(rest, &mut rest_bytes)?;
    Ok(prepend_hash(
        prf,
        skeyid_a,
        message_id,
        prefix,
        first_rest,
        &rest_bytes,
    ))
}

fn prepend_hash(
    prf: Prf,
    skeyid_a: &[u8],
    message_id: u32,
    prefix: &[&[u8]],
    first_rest: PayloadType,
    rest_bytes: &[u8],
) -> (PayloadType, Vec<u8>) {
    let mid = message_id.to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(prefix.len() + 2);
    parts.push(&mid);
    parts.extend_from_slice(prefix);
    parts.push(rest_bytes);
    let hash = prf.prf(skeyid_a, &parts);
    // HASH's generic header: Next Payload names the first of the rest.
    let mut body = Vec::with_capacity(4 + hash.len() + rest_bytes.len() + 16);
    body.push(first_rest.0);
    body.push(0);
    body.extend_from_slice(&((4 + hash.len()) as u16).to_be_bytes());
    body.extend_from_slice(&hash);
    body.extend_from_slice(rest_bytes);
    (PayloadType::HASH, body)
}

/// Checks the leading HASH of a decrypted chain and returns the raw
/// payloads after it.
pub fn verify_hashed_chain<'a>(
    prf: Prf,
    skeyid_a: &[u8],
    header: &IsakmpHeader,
    plaintext: &'a [u8],
    prefix: &[&[u8]],
) -> Result<Vec<RawPayload<'a>>, CryptError> {
    let raws = PayloadIter::new(header.next_payload, plaintext).collect::<Result<Vec<_>, _>>()?;
    let first = raws.first().ok_or(CryptError::NoHash)?;
    if first.payload_type != PayloadType::HASH {
        return Err(CryptError::NoHash);
    }
    let rest = plaintext.get(first.bytes.len()..).unwrap_or_default();
    let mid = header.message_id.to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(prefix.len() + 2);
    parts.push(&mid);
    parts.extend_from_slice(prefix);
    parts.push(rest);
    if !prf.verify(skeyid_a, &parts, first.body) {
        return Err(CryptError::BadHash);
    }
    Ok(raws.into_iter().skip(1).collect())
}
