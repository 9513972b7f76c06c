//! What the key server keeps across restarts, all in the store:
//!
//! - each group's keys and SEQ: the engine's [`GroupState`] as JSON, a
//!   secret named `group-state/<id>` (sealed with AES-256-GCM under the
//!   master key, the name as associated data). It is written, in the same
//!   ordered queue as the GM rows before it, and committed before any
//!   GROUPKEY-PUSH with a new SEQ leaves, so a crash never reuses a SEQ,
//!   loses a key GMs hold, or forgets a GM the rekey went to;
//! - the GM database: the `gms` table (no key material), loaded back with
//!   [`gm_record`] at start.

use std::net::{Ipv4Addr, SocketAddr};

use gkm_store::model::GmRow;

use anyhow::{anyhow, bail, Context, Result};
use gkm_proto::crypto::CbcCipher;
use gkm_proto::engine::GmClass;
use gkm_proto::group::{GroupKeys, IpPrefix, Kek, Tek};
use gkm_proto::ks::GmRecord;
use gkm_proto::rekey::GroupState;
use gkm_wire::consts::{AuthAlgorithm, EspTransformId, SigAlgorithm};
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow!("{what}: expected {N} octets of hex"))
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

    fn to_kek(&self) -> Result<Kek> {
        let cipher = match self.key_bits {
            128 => CbcCipher::Aes128,
            256 => CbcCipher::Aes256,
            b => bail!("KEK key size {b}"),
        };
        let key = Zeroizing::new(hex::decode(&self.key).map_err(|_| anyhow!("KEK key"))?);
        if key.len() != cipher.key_len() {
            bail!("KEK key length");
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
            sig_key_spki: hex::decode(&self.sig_key_spki).map_err(|_| anyhow!("KEK SPKI"))?,
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

    fn to_tek(&self) -> Result<Tek> {
        Ok(Tek {
            spi: self.spi,
            transform: EspTransformId(self.transform),
            auth: self.auth.map(AuthAlgorithm),
            key: Zeroizing::new(hex::decode(&self.key).map_err(|_| anyhow!("TEK key"))?),
            integrity_key: Zeroizing::new(
                hex::decode(&self.integrity_key).map_err(|_| anyhow!("TEK integrity key"))?,
            ),
            src: self.src.parse::<IpPrefix>().map_err(|e| anyhow!(e))?,
            dst: self.dst.parse::<IpPrefix>().map_err(|e| anyhow!(e))?,
            lifetime_secs: self.lifetime_secs,
        })
    }
}

/// A group's persisted state and the policy it was made for.
pub struct Resumed {
    /// The engine state.
    pub state: GroupState,
    /// The policy fingerprint at the time.
    pub policy: String,
}

/// The store secret that holds a group's keys and SEQ.
pub fn secret_name(group_id: u32) -> String {
    gkm_store::group_state_secret(group_id)
}

/// A group's state as the plaintext of its secret.
pub fn encode_group(policy: &str, s: &GroupState) -> Result<Zeroizing<Vec<u8>>> {
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
    Ok(Zeroizing::new(serde_json::to_vec(&stored)?))
}

/// A group's state back from the plaintext of its secret.
pub fn decode_group(group_id: u32, plain: &[u8]) -> Result<Resumed> {
    let name = secret_name(group_id);
    let g: StoredGroup =
        serde_json::from_slice(plain).with_context(|| format!("{name}: not a group state"))?;
    if g.group_id != group_id {
        bail!("{name}: holds group {}", g.group_id);
    }
    let keys = GroupKeys {
        group_id,
        kek: g.kek.as_ref().map(StoredKek::to_kek).transpose()?,
        teks: g
            .teks
            .iter()
            .map(StoredTek::to_tek)
            .collect::<Result<_>>()?,
        seq: g.seq,
    };
    Ok(Resumed {
        policy: g.policy,
        state: GroupState {
            keys,
            push_kek: g.push_kek.as_ref().map(StoredKek::to_kek).transpose()?,
            previous_teks: g
                .previous_teks
                .iter()
                .map(|(t, e)| Ok((t.to_tek()?, *e)))
                .collect::<Result<_>>()?,
            tek_expires_at: g.tek_expires_at,
            kek_expires_at: g.kek_expires_at,
            rekeys_sent: g.rekeys_sent,
        },
    })
}

fn class_from(s: &str) -> Result<GmClass> {
    Ok(match s {
        "cisco" => GmClass::Cisco,
        "asr9000" => GmClass::Asr9000,
        "non-cisco" => GmClass::NonCisco,
        other => bail!("unknown GM class {other:?}"),
    })
}

fn version_from(s: &str) -> Result<GdoiVersion> {
    let mut parts = s.split('.').map(str::parse::<u8>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(mini)), None) => {
            Ok(GdoiVersion { major, minor, mini })
        }
        _ => bail!("GM version {s:?} is not major.minor.mini"),
    }
}

/// A GM database row back as the engine's record (a restart).
pub fn gm_record(row: &GmRow) -> Result<GmRecord> {
    let what = || format!("GM {:?} of group {}", row.gm_identity, row.group);
    Ok(GmRecord {
        gm_identity: row.gm_identity.clone(),
        addr: row
            .address
            .parse::<SocketAddr>()
            .map_err(|e| anyhow!("address {:?}: {e}", row.address))
            .with_context(what)?,
        group_id: row.group,
        class: class_from(&row.class).with_context(what)?,
        version: row
            .version
            .as_deref()
            .map(version_from)
            .transpose()
            .with_context(what)?,
        features: FeatureBits(row.features),
        sids: row.sids.clone(),
        registered_at: u64::try_from(row.registered_at)
            .map_err(|_| anyhow!("registration time {}", row.registered_at))
            .with_context(what)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkm_proto::group::Kek;

    #[test]
    fn gm_rows_come_back_as_the_records_they_were_made_from() {
        let rec = GmRecord {
            gm_identity: "gm-1".into(),
            addr: "10.0.0.9:848".parse().unwrap(),
            group_id: 7,
            class: GmClass::Asr9000,
            version: Some(GdoiVersion {
                major: 1,
                minor: 0,
                mini: 11,
            }),
            features: FeatureBits(3),
            sids: vec![4, 9],
            registered_at: 99,
        };
        let row = crate::views::gm_row(&rec, None);
        assert_eq!(gm_record(&row).unwrap(), rec);
        for (field, bad) in [
            (
                "address",
                GmRow {
                    address: "nowhere".into(),
                    ..row.clone()
                },
            ),
            (
                "class",
                GmRow {
                    class: "juniper".into(),
                    ..row.clone()
                },
            ),
            (
                "version",
                GmRow {
                    version: Some("1.0".into()),
                    ..row.clone()
                },
            ),
            (
                "registration",
                GmRow {
                    registered_at: -1,
                    ..row.clone()
                },
            ),
        ] {
            let e = format!("{:#}", gm_record(&bad).unwrap_err());
            assert!(e.contains("gm-1"), "{field}: {e}");
        }
    }

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
        let plain = encode_group("fp", &state).unwrap();
        let back = decode_group(42, &plain).unwrap();
        assert_eq!(back.policy, "fp");
        assert_eq!(back.state.keys.seq, 17);
        assert_eq!(back.state.keys.teks[0].key.as_slice(), &[5; 36]);
        assert_eq!(back.state.previous_teks[1], (cbc, 6));
        assert_eq!(
            back.state.keys.kek.as_ref().unwrap().key.as_slice(),
            &[2; 32]
        );
        assert_eq!(back.state.previous_teks.len(), 2);
        assert_eq!(
            (
                back.state.tek_expires_at,
                back.state.kek_expires_at,
                back.state.rekeys_sent
            ),
            (1000, 2000, 16)
        );
        assert!(format!("{:#}", decode_group(43, &plain).err().unwrap()).contains("holds group 42"));
        assert!(decode_group(42, b"{}").is_err());
    }
}
