//! A group's key state ([`GroupState`]) as JSON: one codec for what a key
//! server keeps across restarts (the store's sealed `group-state/<id>`
//! secret, with the policy fingerprint the keys were made for) and what a
//! COOP primary hands its secondaries (the GKM-COOP-GroupState payload,
//! docs/COOP.md "Wire"; policy empty). Key material is hex inside; the
//! octets are only ever sealed or sent inside an encrypted KS-to-KS SA.

use std::net::Ipv4Addr;

use gkm_wire::consts::{AuthAlgorithm, EspTransformId, SigAlgorithm};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::CbcCipher;
use crate::group::{GroupKeys, IpPrefix, Kek, Tek};
use crate::rekey::GroupState;

/// Why octets are not a group state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateCodecError {
    /// Not the JSON of a group state (serde's reason).
    #[error("not a group state: {0}")]
    Json(String),
    /// A field does not hold what it must.
    #[error("group state field {0}")]
    Field(&'static str),
    /// The state of another group.
    #[error("holds group {found}, not {expected}")]
    OtherGroup {
        /// The group asked for.
        expected: u32,
        /// The group it holds.
        found: u32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKek {
    spi: String,
    key_bits: u16,
    iv: String,
    key: String,
    lifetime_secs: u32,
    rekey_src: Ipv4Addr,
    rekey_dst: Ipv4Addr,
    #[serde(default = "gdoi_port")]
    rekey_port: u16,
    sig_algorithm: u16,
    sig_key_spki: String,
    sig_key_bits: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTek {
    spi: u32,
    transform: u8,
    /// The SA TEK's authentication algorithm (AES-CBC TEKs; absent before
    /// GKM had them, and for AES-GCM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<u16>,
    key: String,
    /// TEK_INTEGRITY_KEY, hex (empty for AES-GCM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    integrity_key: String,
    src: String,
    dst: String,
    lifetime_secs: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGroup {
    group_id: u32,
    /// The configuration the keys were made for; a change means "rekey replace".
    policy: String,
    seq: u32,
    kek: Option<StoredKek>,
    teks: Vec<StoredTek>,
    push_kek: Option<StoredKek>,
    previous_teks: Vec<(StoredTek, u64)>,
    tek_expires_at: u64,
    kek_expires_at: u64,
    rekeys_sent: u64,
}

fn gdoi_port() -> u16 {
    gkm_wire::consts::GDOI_PORT
}

fn unhex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], StateCodecError> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(StateCodecError::Field(what))
}

impl StoredKek {
    fn from(k: &Kek) -> Self {
        Self {
            spi: hex::encode(k.spi),
            key_bits: k.cipher.key_bits(),
            iv: hex::encode(k.iv),
            key: hex::encode(k.key.as_slice()),
            lifetime_secs: k.lifetime_secs,
            rekey_src: k.rekey_src,
            rekey_dst: k.rekey_dst,
            rekey_port: k.rekey_port,
            sig_algorithm: k.sig_algorithm.0,
            sig_key_spki: hex::encode(&k.sig_key_spki),
            sig_key_bits: k.sig_key_bits,
        }
    }

    fn to_kek(&self) -> Result<Kek, StateCodecError> {
        let cipher = match self.key_bits {
            128 => CbcCipher::Aes128,
            256 => CbcCipher::Aes256,
            _ => return Err(StateCodecError::Field("kek.key_bits")),
        };
        let key =
            Zeroizing::new(hex::decode(&self.key).map_err(|_| StateCodecError::Field("kek.key"))?);
        if key.len() != cipher.key_len() {
            return Err(StateCodecError::Field("kek.key"));
        }
        Ok(Kek {
            spi: unhex(&self.spi, "KEK SPI")?,
            cipher,
            iv: unhex(&self.iv, "KEK IV")?,
            key,
            lifetime_secs: self.lifetime_secs,
            rekey_src: self.rekey_src,
            rekey_dst: self.rekey_dst,
            rekey_port: self.rekey_port,
            sig_algorithm: SigAlgorithm(self.sig_algorithm),
            sig_key_spki: hex::decode(&self.sig_key_spki)
                .map_err(|_| StateCodecError::Field("kek.sig_key_spki"))?,
            sig_key_bits: self.sig_key_bits,
        })
    }
}

impl StoredTek {
    fn from(t: &Tek) -> Self {
        Self {
            spi: t.spi,
            transform: t.transform.0,
            auth: t.auth.map(|a| a.0),
            key: hex::encode(t.key.as_slice()),
            integrity_key: hex::encode(t.integrity_key.as_slice()),
            src: t.src.to_string(),
            dst: t.dst.to_string(),
            lifetime_secs: t.lifetime_secs,
        }
    }

    fn to_tek(&self) -> Result<Tek, StateCodecError> {
        Ok(Tek {
            spi: self.spi,
            transform: EspTransformId(self.transform),
            auth: self.auth.map(AuthAlgorithm),
            key: Zeroizing::new(
                hex::decode(&self.key).map_err(|_| StateCodecError::Field("tek.key"))?,
            ),
            integrity_key: Zeroizing::new(
                hex::decode(&self.integrity_key)
                    .map_err(|_| StateCodecError::Field("tek.integrity_key"))?,
            ),
            src: self
                .src
                .parse::<IpPrefix>()
                .map_err(|_| StateCodecError::Field("tek.src"))?,
            dst: self
                .dst
                .parse::<IpPrefix>()
                .map_err(|_| StateCodecError::Field("tek.dst"))?,
            lifetime_secs: self.lifetime_secs,
        })
    }
}

/// Encodes a group's state with the policy fingerprint its keys were made for.
pub fn encode(policy: &str, s: &GroupState) -> Zeroizing<Vec<u8>> {
    let stored = StoredGroup {
        group_id: s.keys.group_id,
        policy: policy.to_owned(),
        seq: s.keys.seq,
        kek: s.keys.kek.as_ref().map(StoredKek::from),
        teks: s.keys.teks.iter().map(StoredTek::from).collect(),
        push_kek: s.push_kek.as_ref().map(StoredKek::from),
        previous_teks: s
            .previous_teks
            .iter()
            .map(|(t, e)| (StoredTek::from(t), *e))
            .collect(),
        tek_expires_at: s.tek_expires_at,
        kek_expires_at: s.kek_expires_at,
        rekeys_sent: s.rekeys_sent,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default())
}

/// Decodes group `group_id`'s state: the policy fingerprint and the state.
pub fn decode(group_id: u32, plain: &[u8]) -> Result<(String, GroupState), StateCodecError> {
    let g: StoredGroup =
        serde_json::from_slice(plain).map_err(|e| StateCodecError::Json(e.to_string()))?;
    if g.group_id != group_id {
        return Err(StateCodecError::OtherGroup {
            expected: group_id,
            found: g.group_id,
        });
    }
    let keys = GroupKeys {
        group_id,
        kek: g.kek.as_ref().map(StoredKek::to_kek).transpose()?,
        teks: g
            .teks
            .iter()
            .map(StoredTek::to_tek)
            .collect::<Result<_, _>>()?,
        seq: g.seq,
    };
    let state = GroupState {
        keys,
        push_kek: g.push_kek.as_ref().map(StoredKek::to_kek).transpose()?,
        previous_teks: g
            .previous_teks
            .iter()
            .map(|(t, e)| Ok((t.to_tek()?, *e)))
            .collect::<Result<_, StateCodecError>>()?,
        tek_expires_at: g.tek_expires_at,
        kek_expires_at: g.kek_expires_at,
        rekeys_sent: g.rekeys_sent,
    };
    Ok((g.policy, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_state_round_trips_and_refuses_another_group_or_garbage() {
        let kek = Kek {
            spi: [7; 16],
            cipher: CbcCipher::Aes256,
            iv: [1; 16],
            key: Zeroizing::new(vec![2; 32]),
            lifetime_secs: 86_400,
            rekey_src: Ipv4Addr::new(10, 0, 0, 1),
            rekey_dst: Ipv4Addr::new(239, 1, 2, 3),
            rekey_port: 848,
            sig_algorithm: SigAlgorithm(1),
            sig_key_spki: vec![3; 40],
            sig_key_bits: 2048,
        };
        let tek = Tek {
            spi: 0x1234,
            transform: EspTransformId(20),
            auth: None,
            key: Zeroizing::new(vec![5; 36]),
            integrity_key: Zeroizing::new(Vec::new()),
            src: "10.0.0.0/8".parse().unwrap(),
            dst: "10.0.0.0/8".parse().unwrap(),
            lifetime_secs: 3600,
        };
        // An AES-CBC TEK keeps its authentication algorithm and HMAC key.
        let cbc = Tek {
            transform: EspTransformId::AES_CBC,
            auth: Some(AuthAlgorithm::HMAC_SHA2_256),
            key: Zeroizing::new(vec![6; 32]),
            integrity_key: Zeroizing::new(vec![8; 32]),
            ..tek.clone()
        };
        let state = GroupState {
            keys: GroupKeys {
                group_id: 42,
                kek: Some(kek),
                teks: vec![tek.clone()],
                seq: 17,
            },
            push_kek: None,
            previous_teks: vec![(tek, 5), (cbc.clone(), 6)],
            tek_expires_at: 1000,
            kek_expires_at: 2000,
            rekeys_sent: 16,
        };
        let plain = encode("fp", &state);
        let back = decode(42, &plain).unwrap();
        assert_eq!(back.0, "fp");
        assert_eq!(back.1.keys.seq, 17);
        assert_eq!(back.1.keys.teks[0].key.as_slice(), &[5; 36]);
        assert_eq!(back.1.previous_teks[1], (cbc, 6));
        assert_eq!(back.1.keys.kek.as_ref().unwrap().key.as_slice(), &[2; 32]);
        assert_eq!(back.1.previous_teks.len(), 2);
        assert_eq!(
            (
                back.1.tek_expires_at,
                back.1.kek_expires_at,
                back.1.rekeys_sent
            ),
            (1000, 2000, 16)
        );
        assert_eq!(
            decode(43, &plain).unwrap_err(),
            StateCodecError::OtherGroup {
                expected: 43,
                found: 42
            }
        );
        assert!(matches!(decode(42, b"{}"), Err(StateCodecError::Json(_))));
    }
}
