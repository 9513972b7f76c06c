//! The engine's records and status as the store and the API show them:
//! a GM record as its GM database row, a group's status for
//! `show crypto gkm ks rekey` and `ks policy`.

use gkm_model::clock::unix_ms as now_ms;
use gkm_proto::ks::{GmRecord, KeyServer};
use gkm_store::model::GmRow;
use gkm_web::GroupStatus;

/// A GM record as a store row, with its ACK state if known.
pub(crate) fn gm_row(r: &GmRecord, ack: Option<gkm_proto::ack_tracker::AckState>) -> GmRow {
    let misses = ack.map_or(0, |a| a.misses);
    GmRow {
        group: r.group_id,
        gm_identity: r.gm_identity.clone(),
        address: r.addr.to_string(),
        class: r.class.to_string(),
        version: r.version.map(|v| v.to_string()),
        features: r.features.0,
        state: if misses > 0 {
            gkm_store::model::GmState::Lagging
        } else {
            gkm_store::model::GmState::Registered
        },
        registered_at: i64::try_from(r.registered_at).unwrap_or(i64::MAX),
        last_seq_sent: ack.and_then(|a| a.last_sent),
        last_seq_acked: ack.and_then(|a| a.last_acked),
        misses,
        sids: r.sids.clone(),
    }
}

pub(crate) fn status_of(ks: &KeyServer, group: u32) -> Option<GroupStatus> {
    let r = ks.rekey_status(group)?;
    let own = gkm_proto::engine::own_vendor_id();
    Some(GroupStatus {
        rekey: r,
        kek: ks.kek_policy_status(group, now_ms()),
        key_servers: vec![gkm_web::KeyServerFeatures {
            address: ks.address().to_string(),
            version: own.version.to_string(),
            features: own.features.0,
        }],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gkm_proto::ack_tracker::AckState;
    use gkm_proto::engine::GmClass;
    use gkm_store::model::GmState;
    use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};

    fn record() -> GmRecord {
        GmRecord {
            gm_identity: "10.0.0.2".into(),
            addr: "10.0.0.2:848".parse().unwrap(),
            group_id: 7,
            class: GmClass::Asr9000,
            version: Some(GdoiVersion {
                major: 1,
                minor: 0,
                mini: 26,
            }),
            features: FeatureBits(5),
            sids: vec![3, 4],
            registered_at: 1_700_000_000_123,
        }
    }

    /// The GM database row the API and the dashboard show, field by field.
    #[test]
    fn a_gm_record_becomes_its_row() {
        let row = gm_row(&record(), None);
        assert_eq!(
            (row.group, row.gm_identity.as_str(), row.address.as_str()),
            (7, "10.0.0.2", "10.0.0.2:848")
        );
        assert_eq!(row.class, "asr9000");
        assert_eq!(row.version.as_deref(), Some("1.0.26"));
        assert_eq!((row.features, row.sids.as_slice()), (5, &[3, 4][..]));
        assert_eq!(row.registered_at, 1_700_000_000_123);
        assert_eq!(row.state, GmState::Registered);
        assert_eq!(
            (row.last_seq_sent, row.last_seq_acked, row.misses),
            (None, None, 0)
        );

        let acked = AckState {
            last_sent: Some(9),
            last_acked: Some(9),
            misses: 0,
        };
        let row = gm_row(&record(), Some(acked));
        assert_eq!((row.last_seq_sent, row.last_seq_acked), (Some(9), Some(9)));
        assert_eq!(row.state, GmState::Registered);

        let missed = AckState {
            last_sent: Some(11),
            last_acked: Some(9),
            misses: 2,
        };
        let row = gm_row(&record(), Some(missed));
        assert_eq!((row.state, row.misses), (GmState::Lagging, 2));

        let far = GmRecord {
            registered_at: u64::MAX,
            version: None,
            ..record()
        };
        let row = gm_row(&far, None);
        assert_eq!((row.registered_at, row.version), (i64::MAX, None));
    }
}
