//! The group policy form: what the dashboard edits of a [`GroupPolicy`],
//! read from `application/x-www-form-urlencoded` as text so a value that
//! is not a number comes back to the user next to its field, and checked by
//! the same [`GroupPolicy::validate`] the API uses.

use std::collections::BTreeMap;

use gkm_store::model::{AckOption, D3pWindow, GroupPolicy, Invalid, RekeyTransport};
use serde::Deserialize;

/// The form as posted (every field text; checkboxes present when ticked).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The group version the form was built from.
    #[serde(default)]
    pub version: String,
    /// `off`, `sec` or `msec`.
    #[serde(default)]
    pub d3p: String,
    /// The window in the unit of `d3p`.
    #[serde(default)]
    pub d3p_value: String,
    /// `cisco`, `interoperable` or `any`.
    #[serde(default)]
    pub acknowledgement: String,
    /// Activation time delay ticked.
    #[serde(default)]
    pub atd: Option<String>,
    /// Unicast: seconds between retransmissions.
    #[serde(default)]
    pub retransmit_interval: String,
    /// Unicast: retransmissions.
    #[serde(default)]
    pub retransmit_number: String,
    /// Every TEK's lifetime, seconds.
    #[serde(default)]
    pub tek_lifetime: String,
    /// KEK lifetime, seconds.
    #[serde(default)]
    pub kek_lifetime: String,
    /// TEK rekey this many seconds before expiry.
    #[serde(default)]
    pub tek_rekey_before: String,
    /// KEK rekey this many seconds before expiry.
    #[serde(default)]
    pub kek_rekey_before: String,
    /// GM error detection ticked.
    #[serde(default)]
    pub gm_error_detection: Option<String>,
    /// CMD inline tagging ticked.
    #[serde(default)]
    pub cmd_inline_tagging: Option<String>,
    /// Legacy phase 1 suites accepted (`legacy_phase1`) ticked.
    #[serde(default)]
    pub legacy_phase1: Option<String>,
}

/// Errors by form field name; `_form` for one that belongs to no field.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// The form field a validation path belongs to.
pub fn field_of_path(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/d3p_window") => "d3p_value",
        "/acknowledgement" => "acknowledgement",
        "/activation_time_delay" => "atd",
        "/rekey/retransmit_interval" => "retransmit_interval",
        "/rekey/retransmit_number" => "retransmit_number",
        p if p.starts_with("/teks/") && p.ends_with("/lifetime") => "tek_lifetime",
        "/kek/lifetime" => "kek_lifetime",
        "/tek_rekey_before" => "tek_rekey_before",
        "/kek_rekey_before" => "kek_rekey_before",
        _ => "_form",
    }
}

impl PolicyForm {
    /// The form filled from a stored policy.
    pub fn of(policy: &GroupPolicy, version: i64) -> Self {
        let (d3p, d3p_value) = match policy.d3p_window {
            None => ("off", String::new()),
            Some(D3pWindow::Sec(s)) => ("sec", s.to_string()),
            Some(D3pWindow::Msec(m)) => ("msec", m.to_string()),
        };
        let (ri, rn) = match &policy.rekey {
            RekeyTransport::Unicast {
                retransmit_interval,
                retransmit_number,
            } => (
                retransmit_interval.to_string(),
                retransmit_number.to_string(),
            ),
            RekeyTransport::Multicast { .. } => (String::new(), String::new()),
        };
        let tick = |b: bool| b.then(|| "on".to_owned());
        Self {
            csrf: String::new(),
            version: version.to_string(),
            d3p: d3p.into(),
            d3p_value,
            acknowledgement: match policy.acknowledgement.unwrap_or_default() {
                AckOption::Cisco => "cisco",
                AckOption::Interoperable => "interoperable",
                AckOption::Any => "any",
            }
            .into(),
            atd: tick(policy.activation_time_delay == Some(true)),
            retransmit_interval: ri,
            retransmit_number: rn,
            tek_lifetime: policy
                .teks
                .first()
                .map(|t| t.lifetime.to_string())
                .unwrap_or_default(),
            kek_lifetime: policy.kek.lifetime.to_string(),
            tek_rekey_before: policy.tek_rekey_before.to_string(),
            kek_rekey_before: policy.kek_rekey_before.to_string(),
            gm_error_detection: tick(policy.gm_error_detection),
            cmd_inline_tagging: tick(policy.cmd_inline_tagging),
            legacy_phase1: tick(policy.legacy_phase1),
        }
    }

    /// `base` changed as the form says, or the errors by field. The result
    /// has passed [`GroupPolicy::validate`].
    pub fn apply(&self, base: &GroupPolicy) -> Result<(GroupPolicy, i64), FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut num = |name: &'static str, v: &str| -> Option<u32> {
            match v.trim().parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errors.insert(name, format!("{:?} is not a whole number", v.trim()));
                    None
                }
            }
        };
        let mut p = base.clone();
        let version = self.version.trim().parse::<i64>().ok();
        p.d3p_window = match self.d3p.as_str() {
            "off" | "" => None,
            "sec" => num("d3p_value", &self.d3p_value).map(D3pWindow::Sec),
            "msec" => num("d3p_value", &self.d3p_value).map(D3pWindow::Msec),
            _ => None,
        };
        if let Some(l) = num("tek_lifetime", &self.tek_lifetime) {
            for t in &mut p.teks {
                t.lifetime = l;
            }
        }
        if let Some(l) = num("kek_lifetime", &self.kek_lifetime) {
            p.kek.lifetime = l;
        }
        if let Some(v) = num("tek_rekey_before", &self.tek_rekey_before) {
            p.tek_rekey_before = v;
        }
        if let Some(v) = num("kek_rekey_before", &self.kek_rekey_before) {
            p.kek_rekey_before = v;
        }
        if let RekeyTransport::Unicast {
            retransmit_interval,
            retransmit_number,
        } = &mut p.rekey
        {
            if let Some(v) = num("retransmit_interval", &self.retransmit_interval) {
                *retransmit_interval = v;
            }
            if let Some(v) = num("retransmit_number", &self.retransmit_number) {
                *retransmit_number = v;
            }
        }
        if !["off", "", "sec", "msec"].contains(&self.d3p.as_str()) {
            errors.insert("d3p_value", "choose off, sec or msec".into());
        }
        p.acknowledgement = match self.acknowledgement.as_str() {
            "cisco" => Some(AckOption::Cisco),
            "interoperable" => Some(AckOption::Interoperable),
            "any" => Some(AckOption::Any),
            _ if matches!(p.rekey, RekeyTransport::Multicast { .. }) => None,
            other => {
                errors.insert(
                    "acknowledgement",
                    format!("{other:?}: choose cisco, interoperable or any"),
                );
                None
            }
        };
        if matches!(p.rekey, RekeyTransport::Multicast { .. }) {
            p.acknowledgement = None;
        }
        p.activation_time_delay = self.atd.is_some().then_some(true);
        p.gm_error_detection = self.gm_error_detection.is_some();
        p.cmd_inline_tagging = self.cmd_inline_tagging.is_some();
        p.legacy_phase1 = self.legacy_phase1.is_some();
        let Some(version) = version else {
            errors.insert("_form", "the form lost its version; reload the page".into());
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        match p.validate() {
            Ok(()) => Ok((p, version)),
            Err(Invalid { field, message }) => {
                errors.insert(field_of_path(&field), message);
                Err(errors)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base() -> GroupPolicy {
        serde_json::from_str(r#"{"teks":[{"src":"10.0.0.0/8","dst":"10.0.0.0/8"}]}"#).unwrap()
    }

    fn form() -> PolicyForm {
        PolicyForm::of(&base(), 1)
    }

    fn err(f: &PolicyForm) -> FieldErrors {
        f.apply(&base()).unwrap_err()
    }

    #[test]
    fn the_unchanged_form_gives_back_the_policy() {
        let (p, v) = form().apply(&base()).unwrap();
        assert_eq!(v, 1);
        let mut want = base();
        want.acknowledgement = Some(AckOption::Cisco);
        assert_eq!(p, want);
    }

    #[test]
    fn d3p_window_edges_and_errors_name_the_field() {
        for (unit, v, ok) in [
            ("sec", "1", true),
            ("sec", "100", true),
            ("sec", "0", false),
            ("sec", "101", false),
            ("msec", "100", true),
            ("msec", "10000", true),
            ("msec", "99", false),
            ("msec", "10001", false),
        ] {
            let f = PolicyForm {
                d3p: unit.into(),
                d3p_value: v.into(),
                ..form()
            };
            match f.apply(&base()) {
                Ok((p, _)) => {
                    assert!(ok, "{unit} {v}");
                    assert!(p.d3p_window.is_some());
                }
                Err(e) => {
                    assert!(!ok, "{unit} {v}: {e:?}");
                    let m = e.get("d3p_value").unwrap();
                    assert!(m.contains("out of range"), "{m}");
                }
            }
        }
        let e = err(&PolicyForm {
            d3p: "sec".into(),
            d3p_value: "ten".into(),
            ..form()
        });
        assert_eq!(e.get("d3p_value").unwrap(), "\"ten\" is not a whole number");
        let e = err(&PolicyForm {
            d3p: "sec".into(),
            d3p_value: "10".into(),
            gm_error_detection: Some("on".into()),
            ..form()
        });
        assert!(e.get("d3p_value").unwrap().contains("GM error detection"));
    }

    #[test]
    fn every_field_reports_its_own_error() {
        type Change = fn(&mut PolicyForm);
        let cases: [(&str, Change); 9] = [
            ("retransmit_interval", |f| {
                f.retransmit_interval = "61".into()
            }),
            ("retransmit_number", |f| f.retransmit_number = "11".into()),
            ("tek_lifetime", |f| f.tek_lifetime = "299".into()),
            ("kek_lifetime", |f| f.kek_lifetime = "604801".into()),
            ("tek_rekey_before", |f| f.tek_rekey_before = "9".into()),
            ("kek_rekey_before", |f| f.kek_rekey_before = "x".into()),
            ("acknowledgement", |f| f.acknowledgement = "none".into()),
            ("d3p_value", |f| f.d3p = "hours".into()),
            ("_form", |f| f.version = "v".into()),
        ];
        for (field, change) in cases {
            let mut f = form();
            change(&mut f);
            let e = err(&f);
            assert!(e.contains_key(field), "{field}: {e:?}");
        }
    }

    #[test]
    fn checkboxes() {
        let f = PolicyForm {
            atd: Some("on".into()),
            cmd_inline_tagging: Some("on".into()),
            ..form()
        };
        let (p, _) = f.apply(&base()).unwrap();
        assert_eq!(p.activation_time_delay, Some(true));
        assert!(p.cmd_inline_tagging && !p.gm_error_detection);
        assert!(!p.legacy_phase1, "legacy phase 1 off unless ticked");
        let f = PolicyForm {
            legacy_phase1: Some("on".into()),
            ..form()
        };
        assert!(f.apply(&base()).unwrap().0.legacy_phase1);
    }
}
