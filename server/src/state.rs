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

use std::net::SocketAddr;

use gkm_store::model::GmRow;

use anyhow::{anyhow, bail, Context, Result};
use gkm_proto::engine::GmClass;
use gkm_proto::ks::GmRecord;
use gkm_proto::rekey::GroupState;
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};
use zeroize::Zeroizing;

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
    Ok(gkm_proto::group_state::encode(policy, s))
}

/// A group's state back from the plaintext of its secret.
pub fn decode_group(group_id: u32, plain: &[u8]) -> Result<Resumed> {
    let (policy, state) =
        gkm_proto::group_state::decode(group_id, plain).with_context(|| secret_name(group_id))?;
    Ok(Resumed { state, policy })
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
}
