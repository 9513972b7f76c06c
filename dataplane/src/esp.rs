//! One group SA's ESP cryptography: AES-GCM with a 16-octet ICV (RFC 4106)
//! through ring, and the IVs a sender may use under a key it shares with
//! every other GM of the group.
//!
//! Nonce = salt (the last 4 octets of the TEK's key material) ‖ explicit
//! IV (8 octets); associated data = SPI ‖ sequence number (no extended
//! sequence numbers: group SAs turn counter-based anti-replay off, D3P
//! gives freshness).
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

use core::ops::Range;

use gkm_wire::consts::{EspTransformId, IpProtocol};
use gkm_wire::esp::{parse_trailer, EspFraming, EspPacket};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use crate::DataplaneError;

/// Length of the salt at the end of an AES-GCM TEK (RFC 4106 section 8.1).
pub const SALT_LEN: usize = 4;

/// Octets before the payload: SPI, sequence number, 8-octet IV.
pub const ESP_HEADER_LEN: usize = 16;

/// Most octets after the payload: padding (at most 3 for 4-octet
/// alignment), pad length, next header, 16-octet ICV.
pub const ESP_TRAILER_MAX: usize = 3 + 2 + 16;

/// An ESP AES-GCM-16 SA: the key, the salt, the SPI.
pub struct GroupSa {
    spi: u32,
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
    framing: EspFraming,
}

impl core::fmt::Debug for GroupSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key or salt.
        f.debug_struct("GroupSa")
            .field("spi", &self.spi)
            .finish_non_exhaustive()
    }
}

impl GroupSa {
    /// An SA from a TEK: `keymat` is the AES key followed by the 4-octet
    /// salt (20 or 36 octets), as GDOI's KD delivers it for AES-GCM.
    pub fn new(spi: u32, transform: EspTransformId, keymat: &[u8]) -> Result<Self, DataplaneError> {
        if transform != EspTransformId::AES_GCM_16 {
            return Err(DataplaneError::Unsupported(
                "esp transform (AES-GCM-16 only)",
            ));
        }
        if spi == 0 {
            return Err(DataplaneError::Malformed("esp.spi"));
        }
        let (alg, key_len) = match keymat.len() {
            20 => (&AES_128_GCM, 16),
            36 => (&AES_256_GCM, 32),
            _ => {
                return Err(DataplaneError::Unsupported(
                    "AES-GCM key material of 20 or 36 octets",
                ))
            }
        };
        let (key, salt) = keymat.split_at(key_len);
        let key = UnboundKey::new(alg, key).map_err(|_| DataplaneError::Unsupported("AES key"))?;
        let salt = salt
            .try_into()
            .map_err(|_| DataplaneError::Unsupported("AES-GCM salt"))?;
        let framing = EspFraming::for_transform(transform, None)
            .map_err(|_| DataplaneError::Unsupported("esp framing"))?;
        Ok(Self {
            spi,
            key: LessSafeKey::new(key),
            salt,
            framing,
        })
    }

    /// The SA's SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    fn nonce(&self, iv: &[u8]) -> Result<Nonce, DataplaneError> {
        let mut n = [0u8; 12];
        let (s, i) = n.split_at_mut(SALT_LEN);
        s.copy_from_slice(&self.salt);
        if iv.len() != i.len() {
            return Err(DataplaneError::Malformed("esp.iv"));
        }
        i.copy_from_slice(iv);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Appends an ESP packet carrying `parts` (concatenated) with
    /// `next_header`: SPI, `seq`, `iv`, the encrypted payload and trailer,
    /// the ICV. (A copying front end of [`GroupSa::seal_in_place`].)
    pub fn seal(
        &self,
        out: &mut Vec<u8>,
        seq: u32,
        iv: [u8; 8],
        next_header: IpProtocol,
        parts: &[&[u8]],
    ) -> Result<(), DataplaneError> {
        let start = out.len();
        out.resize(start + ESP_HEADER_LEN, 0);
        for p in parts {
            out.extend_from_slice(p);
        }
        let payload = start + ESP_HEADER_LEN..out.len();
        out.resize(payload.end + ESP_TRAILER_MAX, 0);
        let packet = self.seal_in_place(out, payload, seq, iv, next_header)?;
        out.truncate(packet.end);
        Ok(())
    }

    /// Seals the payload at `payload` in `buf` in place: the ESP header
    /// and IV go into the [`ESP_HEADER_LEN`] octets before it, the padding,
    /// trailer and ICV after it (at most [`ESP_TRAILER_MAX`] octets).
    /// Returns where the ESP packet lies in `buf`.
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
            .checked_sub(ESP_HEADER_LEN)
            .ok_or(DataplaneError::NoRoom)?;
        let trailer_len = self.framing.padding_for(payload_len) + 2;
        let ct_end = payload.end + trailer_len;
        let end = ct_end + self.framing.icv_len;
        let header = buf
            .get_mut(start..payload.start)
            .ok_or(DataplaneError::NoRoom)?;
        let (spi_seq, iv_dst) = header.split_at_mut(8);
        let (s, q) = spi_seq.split_at_mut(4);
        s.copy_from_slice(&self.spi.to_be_bytes());
        q.copy_from_slice(&seq.to_be_bytes());
        iv_dst.copy_from_slice(&iv);
        let trailer = buf
            .get_mut(payload.end..ct_end)
            .ok_or(DataplaneError::NoRoom)?;
        write_trailer(trailer, next_header);
        let nonce = self.nonce(&iv)?;
        let (ct, rest) = buf
            .get_mut(payload.start..end)
            .ok_or(DataplaneError::NoRoom)?
            .split_at_mut(ct_end - payload.start);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad(self.spi, seq)), ct)
            .map_err(|_| DataplaneError::TooLarge)?;
        rest.copy_from_slice(tag.as_ref());
        Ok(start..end)
    }

    /// Decrypts the ESP packet `esp` (the IP payload) in place and returns
    /// the next header and where the payload now lies in `esp`.
    pub fn open(&self, esp: &mut [u8]) -> Result<(IpProtocol, Range<usize>), DataplaneError> {
        let (spi, seq, iv) = {
            let p = EspPacket::parse(esp, self.framing)
                .map_err(|_| DataplaneError::Malformed("esp"))?;
            let iv: [u8; 8] =
                p.iv.try_into()
                    .map_err(|_| DataplaneError::Malformed("esp.iv"))?;
            (p.spi, p.seq, iv)
        };
        if spi != self.spi {
            return Err(DataplaneError::UnknownSpi(spi));
        }
        let nonce = self.nonce(&iv)?;
        let ct_start = 8 + self.framing.iv_len;
        let sealed = esp
            .get_mut(ct_start..)
            .ok_or(DataplaneError::Malformed("esp"))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(spi, seq)), sealed)
            .map_err(|_| DataplaneError::Authentication)?;
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
        // pad <= 3: the casts cannot truncate.
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
            let sa = GroupSa::new(k.spi, EspTransformId::AES_GCM_16, &unhex(k.keymat)).unwrap();
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

    #[test]
    fn seal_then_open_and_every_tamper_is_refused() {
        let sa = GroupSa::new(0x1234, EspTransformId::AES_GCM_16, &[7; 36]).unwrap();
        let mut out = Vec::new();
        sa.seal(
            &mut out,
            9,
            [1; 8],
            IpProtocol::IPV4,
            &[b"inner ", b"packet"],
        )
        .unwrap();
        let mut esp = out.clone();
        let (nh, r) = sa.open(&mut esp).unwrap();
        assert_eq!(
            (nh, esp.get(r).unwrap()),
            (IpProtocol::IPV4, &b"inner packet"[..])
        );
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            let e = sa.open(&mut bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    DataplaneError::Authentication
                        | DataplaneError::UnknownSpi(_)
                        | DataplaneError::Malformed(_)
                ),
                "octet {i}: {e:?}"
            );
        }
        let other = GroupSa::new(0x1234, EspTransformId::AES_GCM_16, &[8; 36]).unwrap();
        assert_eq!(
            other.open(&mut out.clone()).unwrap_err(),
            DataplaneError::Authentication
        );
        assert!(GroupSa::new(1, EspTransformId::AES_GCM_16, &[0; 32]).is_err());
        assert!(GroupSa::new(1, EspTransformId::AES_CBC, &[0; 36]).is_err());
        assert!(GroupSa::new(0, EspTransformId::AES_GCM_16, &[0; 36]).is_err());
    }
}
