//! The seed's rekey acknowledgement tables (docs/FEATURES.md section
//! 3) and ATD eligibility (section 2), as data.
//!
//! Table 1: what the KEK SA carries, per `rekey acknowledgement` option and
//! GM class. Table 2: which ACK kind each option accepts. Each table is a
//! constant the code looks up; nothing about them is scattered in `if`s.

use gkm_wire::consts::AckRequested;

use crate::engine::GmClass;

pub use gkm_model::AckOption;

/// The kind of a received ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckKind {
    /// RFC 8263 (I-D) ACK: `HDR, HASH, SEQ, ID`, exchange 35, unencrypted.
    Rfc8263,
    /// The Cisco-style unicast ACK (GKM's encrypted encoding, exchange 240).
    CiscoUnicast,
}

/// An ACK the configured option does not accept (Table 2's "no (error)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rekey acknowledgement {option}: a {kind:?} ACK is not accepted")]
pub struct AckNotAccepted {
    /// The configured option.
    pub option: AckOption,
    /// What arrived.
    pub kind: AckKind,
}

const CLASSES: [GmClass; 3] = [GmClass::Cisco, GmClass::Asr9000, GmClass::NonCisco];

/// Table 1: KEK_ACK_REQUESTED sent in the KEK SA, per option, for GM
/// classes in the order new Cisco GM, ASR 9000 GM, non-Cisco GM. The value
/// is REKEY_ACK_KEK_SHA256 (the seed's "KEK_ACK_REQ, REKEY_ACK_KEK_SHA256").
const TABLE_1: [(AckOption, [Option<AckRequested>; 3]); 3] = {
    const REQ: Option<AckRequested> = Some(AckRequested::REKEY_ACK_KEK_SHA256);
    [
        (AckOption::Cisco, [None, None, None]),
        (AckOption::Interoperable, [REQ, REQ, REQ]),
        (AckOption::Any, [None, REQ, REQ]),
    ]
};

/// Table 2: accepted ACK kinds per option, as (RFC 8263 ACK, Cisco ACK).
const TABLE_2: [(AckOption, bool, bool); 3] = [
    (AckOption::Cisco, false, true),
    (AckOption::Interoperable, true, false),
    (AckOption::Any, true, true),
];

/// GM classes that receive ATD in GAP (seed section 2: ASR 9000 and
/// non-Cisco GMs, never others).
const ATD_CLASSES: [GmClass; 2] = [GmClass::Asr9000, GmClass::NonCisco];

/// Table 1: the KEK_ACK_REQUESTED value for a GM of `class` under
/// `option`, or none.
pub fn kek_ack_requested(option: AckOption, class: GmClass) -> Option<AckRequested> {
    let col = CLASSES.iter().position(|c| *c == class)?;
    TABLE_1
        .iter()
        .find(|(o, _)| *o == option)
        .and_then(|(_, row)| row.get(col).copied().flatten())
}

/// Table 2: whether an ACK of `kind` is accepted under `option`.
pub fn accepts(option: AckOption, kind: AckKind) -> Result<(), AckNotAccepted> {
    let ok =
        TABLE_2
            .iter()
            .find(|(o, _, _)| *o == option)
            .is_some_and(|(_, rfc, cisco)| match kind {
                AckKind::Rfc8263 => *rfc,
                AckKind::CiscoUnicast => *cisco,
            });
    if ok {
        Ok(())
    } else {
        Err(AckNotAccepted { option, kind })
    }
}

/// Whether a rekey to a GM of `class` carries ATD: only to the classes the
/// seed names, only with a single TEK, only with unicast rekeys.
pub fn atd_applies(class: GmClass, tek_count: usize, unicast: bool) -> bool {
    unicast && tek_count == 1 && ATD_CLASSES.contains(&class)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Option<AckRequested> = Some(AckRequested::REKEY_ACK_KEK_SHA256);

    /// Every cell of the seed's Table 1, written out independently of the constant.
    #[test]
    fn table_1_every_option_and_class() {
        use AckOption as O;
        use GmClass as C;
        let want = [
            (O::Cisco, C::Cisco, None),
            (O::Cisco, C::Asr9000, None),
            (O::Cisco, C::NonCisco, None),
            (O::Interoperable, C::Cisco, REQ),
            (O::Interoperable, C::Asr9000, REQ),
            (O::Interoperable, C::NonCisco, REQ),
            (O::Any, C::Cisco, None),
            (O::Any, C::Asr9000, REQ),
            (O::Any, C::NonCisco, REQ),
        ];
        for (option, class, attr) in want {
            assert_eq!(kek_ack_requested(option, class), attr, "{option} x {class}");
        }
    }

    /// Every cell of Table 2, including the errors.
    #[test]
    fn table_2_every_option_and_ack_kind() {
        use AckKind::*;
        use AckOption::*;
        let want = [
            (Cisco, Rfc8263, false),
            (Cisco, CiscoUnicast, true),
            (Interoperable, Rfc8263, true),
            (Interoperable, CiscoUnicast, false),
            (Any, Rfc8263, true),
            (Any, CiscoUnicast, true),
        ];
        for (option, kind, ok) in want {
            let r = accepts(option, kind);
            assert_eq!(r.is_ok(), ok, "{option} x {kind:?}");
            if !ok {
                assert_eq!(r, Err(AckNotAccepted { option, kind }));
                assert!(r.unwrap_err().to_string().contains(&option.to_string()));
            }
        }
    }

    #[test]
    fn atd_only_for_the_named_classes_single_tek_unicast() {
        assert!(atd_applies(GmClass::NonCisco, 1, true));
        assert!(atd_applies(GmClass::Asr9000, 1, true));
        assert!(!atd_applies(GmClass::Cisco, 1, true));
        assert!(!atd_applies(GmClass::NonCisco, 2, true));
        assert!(!atd_applies(GmClass::NonCisco, 1, false));
    }

    #[test]
    fn option_words() {
        for o in [AckOption::Cisco, AckOption::Interoperable, AckOption::Any] {
            assert_eq!(o.to_string().parse::<AckOption>(), Ok(o));
        }
        assert!("Cisco".parse::<AckOption>().is_err());
        assert_eq!(AckOption::default(), AckOption::Cisco);
    }
}
