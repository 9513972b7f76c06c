//! One group SA's ESP cryptography, and the IVs a sender may use under a
//! key it shares with every other GM of the group:
//!
//! - AES-GCM with a 16-octet ICV (RFC 4106) through ring, GKM's default.
//!   Nonce = salt (the last 4 octets of the TEK's key material) ‖ explicit
//!   IV (8 octets); associated data = SPI ‖ sequence number (no extended
//!   sequence numbers: group SAs turn counter-based anti-replay off, D3P
//!   gives freshness).
//! - AES-CBC (RFC 3602, RustCrypto `aes`/`cbc`) with HMAC-SHA1-96 (RFC
//!   2404) or HMAC-SHA-256-128 (RFC 4868) through ring, for peers without
//!   GCM: encrypt, then the ICV over SPI ‖ sequence number ‖ IV ‖
//!   ciphertext (RFC 4303 section 3.3.2), checked before anything is
//!   decrypted (in constant time, `subtle`).
//!
//! ## Why the IVs never repeat across senders
//!
//! GCM breaks if one (key, nonce) pair encrypts twice. All GMs of a group
//! encrypt under the same key, so each sender must draw IVs from a space
//! no other sender touches ([`IvSource`]):
//! - with KS-assigned sender IDs (RFC 6054): IV = SID in the top
//!   `sid_bits` bits ‖ a counter in the rest. The KS never grants one SID
//!   twice per group (the GM database keeps them across restarts), so two
//!   senders' IVs differ in the SID bits, and one sender's differ in the
//!   counter, which never wraps (exhaustion stops sending);
//! - without a SID: IV = a random 32-bit prefix drawn per sender per SA ‖
//!   a 32-bit counter. Two of N senders share a prefix with probability
//!   about N²/2³³ per SA (10⁻⁵ for 400 senders): small, not zero, which is
//!   why GKM agents request SIDs by default when the KS offers them.
//!
//! A restarted agent registers again and gets a fresh SID or draws a fresh
//! prefix, so it never continues a counter it cannot remember.
//!
//! CBC needs more than unique IVs: they must be unpredictable (RFC 3602
//! section 3). The 16-octet CBC IV is the AES encryption, under the
//! SA's key, of the same unique 8-octet value followed by 8 zero octets
//! (NIST SP 800-38A appendix C, the nonce method): unique because the
//! input is, unpredictable without the key.

use core::ops::Range;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit};
use gkm_wire::consts::{AuthAlgorithm, EspTransformId, IpProtocol};
use gkm_wire::esp::{parse_trailer, EspFraming, EspPacket};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::DataplaneError;

/// Length of the salt at the end of an AES-GCM TEK (RFC 4106 section 8.1).
pub const SALT_LEN: usize = 4;

/// Most octets before the payload: SPI, sequence number and IV (8 octets
/// for GCM, 16 for CBC).
pub const ESP_HEADER_MAX: usize = 8 + 16;

/// Most octets after the payload: padding (at most 15 for CBC's 16-octet
/// blocks), pad length, next header, a 16-octet ICV.
pub const ESP_TRAILER_MAX: usize = 15 + 2 + 16;

/// A TEK as an SA is made from it: its ESP transform and authentication
/// algorithm (the SA TEK's attributes) and its keys (the KD's
/// TEK_ALGORITHM_KEY and TEK_INTEGRITY_KEY).
#[derive(Clone, Copy)]
pub struct EspKeys<'a> {
    /// ESP transform: AES-GCM-16 or AES-CBC.
    pub transform: EspTransformId,
    /// Separate integrity algorithm (CBC only): HMAC-SHA1 or HMAC-SHA2-256.
    pub auth: Option<AuthAlgorithm>,
    /// The cipher key (AES-GCM: key ‖ 4-octet salt).
    pub algorithm_key: &'a [u8],
    /// The HMAC key (empty for GCM).
    pub integrity_key: &'a [u8],
}

impl core::fmt::Debug for EspKeys<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the keys.
        f.debug_struct("EspKeys")
            .field("transform", &self.transform)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// AES with its key schedule, for CBC and the IV derivation.
#[derive(Clone)]
enum Aes {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
}

impl Aes {
    fn new(key: &[u8]) -> Result<Self, DataplaneError> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key).map(|a| Self::Aes128(Box::new(a))),
            32 => aes::Aes256::new_from_slice(key).map(|a| Self::Aes256(Box::new(a))),
            _ => {
                return Err(DataplaneError::Unsupported(
                    "AES-CBC key of 16 or 32 octets",
                ))
            }
        }
        .map_err(|_| DataplaneError::Unsupported("AES key"))
    }

    /// The CBC IV for a unique 8-octet value (see the module documentation).
    fn cbc_iv(&self, unique: &[u8; 8]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(unique);
        let block = GenericArray::from_mut_slice(&mut b);
        match self {
            Self::Aes128(a) => a.encrypt_block(block),
            Self::Aes256(a) => a.encrypt_block(block),
        }
        b
    }

    /// CBC-encrypts `data` (whole blocks) in place.
    fn cbc_encrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), DataplaneError> {
        let len = data.len();
        let iv = GenericArray::from_slice(iv);
        let r = match self {
            Self::Aes128(a) => cbc::Encryptor::<aes::Aes128>::inner_iv_init((**a).clone(), iv)
                .encrypt_padded_mut::<NoPadding>(data, len)
                .map(|_| ()),
            Self::Aes256(a) => cbc::Encryptor::<aes::Aes256>::inner_iv_init((**a).clone(), iv)
                .encrypt_padded_mut::<NoPadding>(data, len)
                .map(|_| ()),
        };
        r.map_err(|_| DataplaneError::Malformed("esp.ciphertext (not whole blocks)"))
    }

    /// CBC-decrypts `data` (whole blocks) in place.
    fn cbc_decrypt(&self, iv: &[u8], data: &mut [u8]) -> Result<(), DataplaneError> {
        let iv = <&[u8; 16]>::try_from(iv).map_err(|_| DataplaneError::Malformed("esp.iv"))?;
        let iv = GenericArray::from_slice(iv);
        let r = match self {
            Self::Aes128(a) => cbc::Decryptor::<aes::Aes128>::inner_iv_init((**a).clone(), iv)
                .decrypt_padded_mut::<NoPadding>(data)
                .map(|_| ()),
            Self::Aes256(a) => cbc::Decryptor::<aes::Aes256>::inner_iv_init((**a).clone(), iv)
                .decrypt_padded_mut::<NoPadding>(data)
                .map(|_| ()),
        };
        r.map_err(|_| DataplaneError::Malformed("esp.ciphertext (not whole blocks)"))
    }
}

/// The SA's cipher.
enum Cipher {
    /// AES-GCM-16: the AEAD key and the salt.
    Gcm {
        key: Box<LessSafeKey>,
        salt: [u8; SALT_LEN],
    },
    /// AES-CBC with a truncated HMAC (the ICV length is the framing's).
    CbcHmac { aes: Aes, mac: hmac::Key },
}

/// An ESP group SA: the cipher and keys, the SPI, the framing.
pub struct GroupSa {
    spi: u32,
    cipher: Cipher,
    framing: EspFraming,
}

impl core::fmt::Debug for GroupSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key or salt.
        f.debug_struct("GroupSa")
            .field("spi", &self.spi)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl GroupSa {
    /// An SA from a TEK. AES-GCM-16: `algorithm_key` is the AES key
    /// followed by the 4-octet salt (20 or 36 octets), no integrity
    /// algorithm. AES-CBC: a 16- or 32-octet key and HMAC-SHA1 (20-octet
    /// key, 12-octet ICV) or HMAC-SHA2-256 (32-octet key, 16-octet ICV).
    /// 3DES and everything else is refused (RFC 8221: 3DES MUST NOT).
    pub fn new(spi: u32, keys: &EspKeys<'_>) -> Result<Self, DataplaneError> {
        if spi == 0 {
            return Err(DataplaneError::Malformed("esp.spi"));
        }
        let cipher = match (keys.transform, keys.auth) {
            (EspTransformId::AES_GCM_16, None) => {
                if !keys.integrity_key.is_empty() {
                    return Err(DataplaneError::Unsupported("an integrity key with AES-GCM"));
                }
                let (alg, key_len) = match keys.algorithm_key.len() {
                    20 => (&AES_128_GCM, 16),
                    36 => (&AES_256_GCM, 32),
                    _ => {
                        return Err(DataplaneError::Unsupported(
                            "AES-GCM key material of 20 or 36 octets",
                        ))
                    }
                };
                let (key, salt) = keys.algorithm_key.split_at(key_len);
                let key = UnboundKey::new(alg, key)
                    .map_err(|_| DataplaneError::Unsupported("AES key"))?;
                let salt = salt
                    .try_into()
                    .map_err(|_| DataplaneError::Unsupported("AES-GCM salt"))?;
                Cipher::Gcm {
                    key: Box::new(LessSafeKey::new(key)),
                    salt,
                }
            }
            (EspTransformId::AES_CBC, Some(auth)) => {
                let (alg, key_len) = match auth {
                    AuthAlgorithm::HMAC_SHA1 => (hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 20),
                    AuthAlgorithm::HMAC_SHA2_256 => (hmac::HMAC_SHA256, 32),
                    _ => {
                        return Err(DataplaneError::Unsupported(
                            "esp auth algorithm (HMAC-SHA1 or HMAC-SHA2-256 with AES-CBC)",
                        ))
                    }
                };
                if keys.integrity_key.len() != key_len {
                    return Err(DataplaneError::Unsupported(
                        "HMAC key length (20 octets for SHA-1, 32 for SHA-256)",
                    ));
                }
                Cipher::CbcHmac {
                    aes: Aes::new(keys.algorithm_key)?,
                    mac: hmac::Key::new(alg, keys.integrity_key),
                }
            }
            (EspTransformId::AES_CBC, None) => {
                return Err(DataplaneError::Unsupported(
                    "AES-CBC without an integrity algorithm",
                ))
            }
            (EspTransformId::AES_GCM_16, Some(_)) => {
                return Err(DataplaneError::Unsupported(
                    "an integrity algorithm with AES-GCM",
                ))
            }
            (EspTransformId::TRIPLE_DES, _) => {
                return Err(DataplaneError::Unsupported(
                    "esp transform 3DES (RFC 8221: MUST NOT)",
                ))
            }
            _ => {
                return Err(DataplaneError::Unsupported(
                    "esp transform (AES-GCM-16 or AES-CBC)",
                ))
            }
        };
        let framing = EspFraming::for_transform(keys.transform, keys.auth)
            .map_err(|_| DataplaneError::Unsupported("esp framing"))?;
        Ok(Self {
            spi,
            cipher,
            framing,
        })
    }

    /// The SA's SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Octets before the payload: SPI, sequence number, IV.
    pub fn header_len(&self) -> usize {
        8 + self.framing.iv_len
    }

    fn nonce(salt: &[u8; SALT_LEN], iv: &[u8]) -> Result<Nonce, DataplaneError> {
        let mut n = [0u8; 12];
        let (s, i) = n.split_at_mut(SALT_LEN);
        s.copy_from_slice(salt);
        if iv.len() != i.len() {
            return Err(DataplaneError::Malformed("esp.iv"));
        }
        i.copy_from_slice(iv);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Appends an ESP packet carrying `parts` (concatenated) with
    /// `next_header`: SPI, `seq`, the IV made from `iv`, the encrypted
    /// payload and trailer, the ICV. (A copying front end of
    /// [`GroupSa::seal_in_place`].)
    pub fn seal(
        &self,
        out: &mut Vec<u8>,
        seq: u32,
        iv: [u8; 8],
        next_header: IpProtocol,
        parts: &[&[u8]],
    ) -> Result<(), DataplaneError> {
        let start = out.len();
        out.resize(start + self.header_len(), 0);
        for p in parts {
            out.extend_from_slice(p);
        }
        let payload = start + self.header_len()..out.len();
        out.resize(payload.end + ESP_TRAILER_MAX, 0);
        let packet = self.seal_in_place(out, payload, seq, iv, next_header)?;
        out.truncate(packet.end);
        Ok(())
    }

    /// Seals the payload at `payload` in `buf` in place: the ESP header
    /// and IV go into the [`GroupSa::header_len`] octets before it (at
    /// most [`ESP_HEADER_MAX`]), the padding, trailer and ICV after it (at
    /// most [`ESP_TRAILER_MAX`] octets). `iv` is this sender's unique
    /// value ([`IvSource`]): GCM's explicit IV, or what CBC's IV is made
    /// from. Returns where the ESP packet lies in `buf`.
    pub fn seal_in_place(
        &self,
        buf: &mut [u8],
        payload: Range<usize>,
        seq: u32,
        iv: [u8; 8],
        next_header: IpProtocol,
    ) -> Result<Range<usize>, DataplaneError> {
        let payload_len = payload.len();
        if self.framing.packet_len(payload_len) > usize::from(u16::MAX) {
            return Err(DataplaneError::TooLarge);
        }
        let start = payload
            .start
            .checked_sub(self.header_len())
            .ok_or(DataplaneError::NoRoom)?;
        let trailer_len = self.framing.padding_for(payload_len) + 2;
        let ct_end = payload.end + trailer_len;
        let end = ct_end + self.framing.icv_len;
        if buf.len() < end {
            return Err(DataplaneError::NoRoom);
        }
        let spi_seq = buf
            .get_mut(start..start + 8)
            .ok_or(DataplaneError::NoRoom)?;
        let (s, q) = spi_seq.split_at_mut(4);
        s.copy_from_slice(&self.spi.to_be_bytes());
        q.copy_from_slice(&seq.to_be_bytes());
        let trailer = buf
            .get_mut(payload.end..ct_end)
            .ok_or(DataplaneError::NoRoom)?;
        write_trailer(trailer, next_header);
        match &self.cipher {
            Cipher::Gcm { key, salt } => {
                buf.get_mut(start + 8..payload.start)
                    .ok_or(DataplaneError::NoRoom)?
                    .copy_from_slice(&iv);
                let nonce = Self::nonce(salt, &iv)?;
                let (ct, rest) = buf
                    .get_mut(payload.start..end)
                    .ok_or(DataplaneError::NoRoom)?
                    .split_at_mut(ct_end - payload.start);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad(self.spi, seq)), ct)
                    .map_err(|_| DataplaneError::TooLarge)?;
                rest.copy_from_slice(tag.as_ref());
            }
            Cipher::CbcHmac { aes, mac } => {
                let cbc_iv = aes.cbc_iv(&iv);
                buf.get_mut(start + 8..payload.start)
                    .ok_or(DataplaneError::NoRoom)?
                    .copy_from_slice(&cbc_iv);
                aes.cbc_encrypt(
                    &cbc_iv,
                    buf.get_mut(payload.start..ct_end)
                        .ok_or(DataplaneError::NoRoom)?,
                )?;
                let (authenticated, icv) = buf
                    .get_mut(start..end)
                    .ok_or(DataplaneError::NoRoom)?
                    .split_at_mut(ct_end - start);
                let tag = hmac::sign(mac, authenticated);
                icv.copy_from_slice(
                    tag.as_ref()
                        .get(..icv.len())
                        .ok_or(DataplaneError::Unsupported("ICV longer than the HMAC"))?,
                );
            }
        }
        Ok(start..end)
    }

    /// Decrypts the ESP packet `esp` (the IP payload) in place and returns
    /// the next header and where the payload now lies in `esp`. With CBC
    /// the ICV is checked first: a forged packet is never decrypted.
    pub fn open(&self, esp: &mut [u8]) -> Result<(IpProtocol, Range<usize>), DataplaneError> {
        let (spi, seq, icv_at) = {
            let p = EspPacket::parse(esp, self.framing)
                .map_err(|_| DataplaneError::Malformed("esp"))?;
            (p.spi, p.seq, esp.len() - p.icv.len())
        };
        if spi != self.spi {
            return Err(DataplaneError::UnknownSpi(spi));
        }
        let ct_start = self.header_len();
        let plain = match &self.cipher {
            Cipher::Gcm { key, salt } => {
                let nonce = Self::nonce(salt, esp.get(8..ct_start).unwrap_or_default())?;
                let sealed = esp
                    .get_mut(ct_start..)
                    .ok_or(DataplaneError::Malformed("esp"))?;
                &*key
                    .open_in_place(nonce, Aad::from(aad(spi, seq)), sealed)
                    .map_err(|_| DataplaneError::Authentication)?
            }
            Cipher::CbcHmac { aes, mac } => {
                let (authenticated, icv) = esp.split_at_mut(icv_at);
                let tag = hmac::sign(mac, authenticated);
                let want = tag.as_ref().get(..icv.len()).unwrap_or_default();
                if !bool::from(want.ct_eq(icv)) {
                    return Err(DataplaneError::Authentication);
                }
                let (header, ct) = authenticated.split_at_mut(ct_start);
                aes.cbc_decrypt(header.get(8..).unwrap_or_default(), ct)?;
                &*ct
            }
        };
        let (payload, nh) =
            parse_trailer(plain).map_err(|_| DataplaneError::Malformed("esp.trailer"))?;
        Ok((nh, ct_start..ct_start + payload.len()))
    }
}

/// Writes the default padding (1, 2, 3, ...; RFC 4303 section 2.4), the
/// pad length and the next header into `dst` (padding + 2 octets).
fn write_trailer(dst: &mut [u8], next_header: IpProtocol) {
    let pad = dst.len().saturating_sub(2);
    for (i, b) in dst.iter_mut().enumerate() {
        // pad <= 15: the casts cannot truncate.
        *b = if i < pad {
            (i + 1) as u8
        } else if i == pad {
            pad as u8
        } else {
            next_header.0
        };
    }
}

/// SPI ‖ sequence number: ESP's associated data without ESN (RFC 4106 section 5).
fn aad(spi: u32, seq: u32) -> [u8; 8] {
    let mut a = [0u8; 8];
    let (s, q) = a.split_at_mut(4);
    s.copy_from_slice(&spi.to_be_bytes());
    q.copy_from_slice(&seq.to_be_bytes());
    a
}

/// The IVs (and sequence numbers) one sender uses under one SA; see the
/// module documentation for why they never collide with another sender's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvSource {
    /// The sender's fixed top bits, already shifted into place.
    prefix: u64,
    /// Next counter value.
    next: u64,
    /// First counter value that is not allowed.
    end: u64,
}

impl IvSource {
    /// IVs under a KS-assigned sender ID of `sid_bits` bits (1-32): the SID
    /// in the top bits, a counter below. `None` if the SID does not fit.
    pub fn from_sid(sid: u32, sid_bits: u8) -> Option<Self> {
        if !(1..=32).contains(&sid_bits) || (sid_bits < 32 && sid >> sid_bits != 0) {
            return None;
        }
        let counter_bits = 64 - u32::from(sid_bits);
        Some(Self {
            prefix: u64::from(sid) << counter_bits,
            next: 1,
            end: 1u64 << counter_bits,
        })
    }

    /// IVs under a random 32-bit prefix (no SID): a 32-bit counter below.
    pub fn random_prefix(prefix: u32) -> Self {
        Self {
            prefix: u64::from(prefix) << 32,
            next: 1,
            end: 1u64 << 32,
        }
    }

    /// The next IV and the ESP sequence number sent with it (the counter's
    /// low 32 bits); `None` once the space is used up.
    pub fn next_iv(&mut self) -> Option<([u8; 8], u32)> {
        if self.next >= self.end {
            return None;
        }
        let c = self.next;
        self.next += 1;
        // Truncation intended: ESP carries the low 32 bits.
        Some(((self.prefix | c).to_be_bytes(), c as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm(keymat: &[u8]) -> EspKeys<'_> {
        EspKeys {
            transform: EspTransformId::AES_GCM_16,
            auth: None,
            algorithm_key: keymat,
            integrity_key: &[],
        }
    }

    fn cbc<'a>(auth: AuthAlgorithm, key: &'a [u8], mac: &'a [u8]) -> EspKeys<'a> {
        EspKeys {
            transform: EspTransformId::AES_CBC,
            auth: Some(auth),
            algorithm_key: key,
            integrity_key: mac,
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known answers: draft-mcgrew-gcm-test-01 section 4 (the ESP test
    /// cases of RFC 4106's author), the two without extended sequence
    /// numbers and with a non-zero SPI: the AES-128 case on page 8 and the
    /// AES-256 case on page 9. Key material = key ‖ salt (nonce = salt ‖ IV).
    #[test]
    fn known_answers_from_draft_mcgrew_gcm_test() {
        struct Kat {
            keymat: &'static str,
            spi: u32,
            seq: u32,
            iv: &'static str,
            plaintext: &'static str,
            packet: &'static str,
        }
        let kats = [
            Kat {
                keymat: "feffe9928665731c6d6a8f9467308308 cafebabe",
                spi: 0x0000a5f8,
                seq: 0x0a,
                iv: "facedbaddecaf888",
                plaintext: "4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100
                            00010000000000000373697009637962 65726369747902646b00000100010001",
                packet: "0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304
                         a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642
                         cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a",
            },
            Kat {
                keymat: "abbccddef00112233445566778899aababbccddef00112233445566778899aab 11223344",
                spi: 0x4a2cbfe3,
                seq: 2,
                iv: "0102030405060708",
                plaintext: "4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000
                            7002400020bf0000020405b401010402 01020201",
                packet: "4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d
                         6a78107f1b0b1cbf06efae9d65a5d763 748a637985771d347f0545659f14e99d
                         ef842d8eb335f4eecfdbf831824b4c49 15956c96",
            },
        ];
        for k in kats {
            let keymat = unhex(k.keymat);
            let sa = GroupSa::new(k.spi, &gcm(&keymat)).unwrap();
            let plain = unhex(k.plaintext);
            // The draft's plaintext ends with the ESP trailer; split it off.
            let (payload, nh) = parse_trailer(&plain).unwrap();
            let iv: [u8; 8] = unhex(k.iv).try_into().unwrap();
            let mut out = Vec::new();
            sa.seal(&mut out, k.seq, iv, nh, &[payload]).unwrap();
            assert_eq!(out, unhex(k.packet), "SPI {:#x}", k.spi);
            let (got_nh, r) = sa.open(&mut out).unwrap();
            assert_eq!((got_nh, out.get(r).unwrap()), (nh, payload));
        }
    }

    #[test]
    fn iv_sources_stay_in_their_space() {
        let mut a = IvSource::from_sid(5, 8).unwrap();
        let (iv, seq) = a.next_iv().unwrap();
        assert_eq!((iv, seq), ([5, 0, 0, 0, 0, 0, 0, 1], 1));
        assert!(IvSource::from_sid(256, 8).is_none());
        assert!(IvSource::from_sid(1, 0).is_none());
        let mut full = IvSource::from_sid(u32::MAX, 32).unwrap();
        assert_eq!(
            full.next_iv().unwrap().0,
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]
        );
        let mut r = IvSource::random_prefix(0xdead_beef);
        r.next = r.end - 1;
        assert_eq!(
            r.next_iv().unwrap().0,
            [0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(r.next_iv(), None, "exhausted: never wraps");
    }

    /// RFC 3602 section 4, cases #1 and #2 (AES-128-CBC), through the
    /// cipher the CBC SAs use.
    #[test]
    fn aes_cbc_known_answers_from_rfc_3602() {
        let cases = [
            (
                "06a9214036b8a15b512e03d534120006",
                "3dafba429d9eb430b422da802c9fac41",
                "53696e676c6520626c6f636b206d7367",
                "e353779c1079aeb82708942dbe77181a",
            ),
            (
                "c286696d887c9aa0611bbb3e2025a45a",
                "562e17996d093d28ddb3ba695a2e6f58",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
            ),
        ];
        for (key, iv, pt, ct) in cases {
            let aes = Aes::new(&unhex(key)).unwrap();
            let iv: [u8; 16] = unhex(iv).try_into().unwrap();
            let mut data = unhex(pt);
            aes.cbc_encrypt(&iv, &mut data).unwrap();
            assert_eq!(hex(&data), ct);
            aes.cbc_decrypt(&iv, &mut data).unwrap();
            assert_eq!(hex(&data), pt);
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The ICV is the HMAC truncated as RFC 2404 (96 bits) and RFC 4868
    /// (128 bits) say, over SPI ‖ seq ‖ IV ‖ ciphertext: the truncations
    /// of the RFC 2202 and RFC 4868 vectors, and a packet built by hand
    /// (RFC 3602 case #2's key and IV, the ICV computed here) opens.
    #[test]
    fn cbc_hmac_icvs_follow_rfc_2404_and_rfc_4868() {
        // RFC 2202 test case 1 and RFC 4868 section 2.7.2.1 case 1: the
        // HMAC of "Hi There"; truncated, the ICVs of those RFCs.
        let sha1 = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[0x0b; 20]);
        assert_eq!(
            hex(&hmac::sign(&sha1, b"Hi There").as_ref()[..12]),
            "b617318655057264e28bc0b6"
        );
        let sha256 = hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]);
        assert_eq!(
            hex(&hmac::sign(&sha256, b"Hi There").as_ref()[..16]),
            "198a607eb44bfbc69903a0f1cf2bbdc5"
        );
        // An ESP packet sealed by hand with RFC 3602 case #2's key and IV.
        let key = unhex("c286696d887c9aa0611bbb3e2025a45a");
        let iv = unhex("562e17996d093d28ddb3ba695a2e6f58");
        for (auth, mac, icv_len) in [
            (AuthAlgorithm::HMAC_SHA1, vec![0x0b; 20], 12),
            (AuthAlgorithm::HMAC_SHA2_256, vec![0x0b; 32], 16),
        ] {
            let sa = GroupSa::new(0x1234, &cbc(auth, &key, &mac)).unwrap();
            // payload 14 octets + pad 0 + pad length + next header = 16.
            let mut plain = b"fourteen bytes".to_vec();
            plain.extend_from_slice(&[0, 4]);
            let mut packet = vec![0, 0, 0x12, 0x34, 0, 0, 0, 7];
            packet.extend_from_slice(&iv);
            let mut ct = plain.clone();
            Aes::new(&key)
                .unwrap()
                .cbc_encrypt(&iv.clone().try_into().unwrap(), &mut ct)
                .unwrap();
            packet.extend_from_slice(&ct);
            let k = hmac::Key::new(
                if icv_len == 12 {
                    hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY
                } else {
                    hmac::HMAC_SHA256
                },
                &mac,
            );
            let tag = hmac::sign(&k, &packet);
            packet.extend_from_slice(&tag.as_ref()[..icv_len]);
            let (nh, r) = sa.open(&mut packet).unwrap();
            assert_eq!(nh, IpProtocol::IPV4);
            assert_eq!(&packet[r], b"fourteen bytes");
        }
    }

    #[test]
    fn seal_then_open_and_every_tamper_is_refused() {
        let key = [7u8; 36];
        let (k128, mac20, mac32) = ([3u8; 16], [4u8; 20], [5u8; 32]);
        let suites = [
            (gcm(&key), 8 + 8, 16, 4),
            (cbc(AuthAlgorithm::HMAC_SHA1, &k128, &mac20), 8 + 16, 12, 16),
            (
                cbc(AuthAlgorithm::HMAC_SHA2_256, &key[..32], &mac32),
                8 + 16,
                16,
                16,
            ),
        ];
        for (keys, header, icv, align) in suites {
            let sa = GroupSa::new(0x1234, &keys).unwrap();
            assert_eq!(sa.header_len(), header);
            let mut out = Vec::new();
            sa.seal(
                &mut out,
                9,
                [1; 8],
                IpProtocol::IPV4,
                &[b"inner ", b"packet"],
            )
            .unwrap();
            assert!(out.len() <= header + 12 + ESP_TRAILER_MAX);
            assert_eq!((out.len() - header - icv) % align, 0);
            let mut esp = out.clone();
            let (nh, r) = sa.open(&mut esp).unwrap();
            assert_eq!(
                (nh, esp.get(r).unwrap()),
                (IpProtocol::IPV4, &b"inner packet"[..]),
                "{keys:?}"
            );
            // Every octet is covered: the SPI names another SA; anything
            // after it fails the ICV (or the AEAD) before a single octet
            // is decrypted or its padding looked at.
            for i in 0..out.len() {
                let mut bad = out.clone();
                bad[i] ^= 0x40;
                let e = sa.open(&mut bad).unwrap_err();
                if i < 4 {
                    assert!(
                        matches!(e, DataplaneError::UnknownSpi(_)),
                        "{keys:?} octet {i}: {e:?}"
                    );
                } else {
                    assert_eq!(e, DataplaneError::Authentication, "{keys:?} octet {i}");
                }
            }
            let mut short = out.clone();
            short.truncate(out.len() - 1);
            assert!(sa.open(&mut short).is_err());
        }
        // CBC IVs: different for different unique values, never the value
        // itself (unpredictable without the key).
        let sa = GroupSa::new(0x1234, &cbc(AuthAlgorithm::HMAC_SHA1, &k128, &mac20)).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        sa.seal(&mut a, 1, [1; 8], IpProtocol::IPV4, &[b"x"])
            .unwrap();
        sa.seal(&mut b, 1, [2; 8], IpProtocol::IPV4, &[b"x"])
            .unwrap();
        assert_ne!(a[8..24], b[8..24]);
        assert_ne!(a[8..16], [1; 8]);
        let other = GroupSa::new(0x1234, &gcm(&[8; 36])).unwrap();
        let good = GroupSa::new(0x1234, &gcm(&key)).unwrap();
        let mut out = Vec::new();
        good.seal(&mut out, 9, [1; 8], IpProtocol::IPV4, &[b"p"])
            .unwrap();
        assert_eq!(
            other.open(&mut out.clone()).unwrap_err(),
            DataplaneError::Authentication
        );
        // What an SA is refused for, named.
        let refused = |keys: EspKeys<'_>| GroupSa::new(1, &keys).unwrap_err();
        assert!(matches!(
            refused(gcm(&[0; 32])),
            DataplaneError::Unsupported(_)
        ));
        assert_eq!(
            refused(EspKeys {
                transform: EspTransformId::TRIPLE_DES,
                auth: Some(AuthAlgorithm::HMAC_SHA1),
                algorithm_key: &[0; 24],
                integrity_key: &[0; 20],
            }),
            DataplaneError::Unsupported("esp transform 3DES (RFC 8221: MUST NOT)")
        );
        assert_eq!(
            refused(EspKeys {
                auth: None,
                ..cbc(AuthAlgorithm::HMAC_SHA1, &k128, &mac20)
            }),
            DataplaneError::Unsupported("AES-CBC without an integrity algorithm")
        );
        assert!(GroupSa::new(1, &cbc(AuthAlgorithm::HMAC_SHA1, &k128, &mac32)).is_err());
        assert!(GroupSa::new(1, &cbc(AuthAlgorithm::HMAC_SHA1, &[0; 24], &mac20)).is_err());
        assert!(GroupSa::new(1, &cbc(AuthAlgorithm::HMAC_SHA2_384, &k128, &mac32)).is_err());
        assert!(GroupSa::new(0, &gcm(&key)).is_err());
    }
}
