//! The group policy form: what the dashboard edits of a [`GroupPolicy`],
//! read from `application/x-www-form-urlencoded` as text so a value that
//! is not a number comes back to the user next to its field, and checked by
//! the same [`GroupPolicy::validate`] the API uses.

use std::collections::BTreeMap;

use gkm_store::model::coop::{
    DEFAULT_CHECK_SECS, DEFAULT_DEAD_PERIODS, DEFAULT_PEER_PORT, DEFAULT_PRIORITY,
    DEFAULT_REFRESH_SECS,
};
use gkm_store::model::{
    AckOption, Authentication, CoopPeer, CoopPolicy, D3pWindow, GroupPolicy, Invalid,
    RekeyTransport,
};
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
    /// Cooperative key servers ticked (docs/COOP.md).
    #[serde(default)]
    pub coop: Option<String>,
    /// COOP: this key server's priority, 1-255.
    #[serde(default)]
    pub coop_priority: String,
    /// COOP: announcement interval, seconds.
    #[serde(default)]
    pub coop_refresh: String,
    /// COOP: a secondary's check period, seconds.
    #[serde(default)]
    pub coop_check: String,
    /// COOP: missed check periods before a peer is dead.
    #[serde(default)]
    pub coop_dead: String,
    /// COOP: the peers, one a line: `ADDRESS [port=N] [pki] [identity=ID]`
    /// ([`coop_peer_line`]).
    #[serde(default)]
    pub coop_peers: String,
    /// COOP: a pair PSK to set on every PSK peer listed (empty: each keeps
    /// the one it has).
    #[serde(default)]
    pub coop_psk: String,
}

/// One peer of the COOP peers field: `ADDRESS [port=N] [pki]
/// [identity=ID]` (the identity runs to the end of the line).
pub fn coop_peer_line(p: &CoopPeer) -> String {
    let mut l = p.address.clone();
    if p.port != DEFAULT_PEER_PORT {
        l += &format!(" port={}", p.port);
    }
    if p.authentication == Authentication::Pki {
        l += " pki";
    }
    if let Some(id) = &p.identity {
        l += &format!(" identity={id}");
    }
    l
}

/// Parses one line of the COOP peers field ([`coop_peer_line`]); `psk`
/// is set on a PSK peer when given.
fn parse_coop_peer(line: &str, psk: Option<&str>) -> Result<CoopPeer, String> {
    let (words, identity) = match line.split_once("identity=") {
        Some((w, id)) => (w, Some(id.trim().to_owned())),
        None => (line, None),
    };
    let mut it = words.split_whitespace();
    let address = it
        .next()
        .ok_or_else(|| format!("{line:?}: no address"))?
        .to_owned();
    let mut port = DEFAULT_PEER_PORT;
    let mut pki = false;
    for w in it {
        match w.split_once('=') {
            Some(("port", v)) => {
                port = v
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{line:?}: port {v:?} is not 1-65535"))?;
            }
            None if w == "pki" => pki = true,
            _ => return Err(format!("{line:?}: {w:?} is not port=N, pki or identity=ID")),
        }
    }
    Ok(CoopPeer {
        address,
        port,
        identity,
        authentication: if pki {
            Authentication::Pki
        } else {
            Authentication::Psk {
                psk: psk.map(str::to_owned),
            }
        },
    })
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
        "/coop/priority" => "coop_priority",
        "/coop/refresh_secs" => "coop_refresh",
        "/coop/check_secs" => "coop_check",
        "/coop/dead_periods" => "coop_dead",
        p if p.starts_with("/coop/peers/") && p.ends_with("/psk") => "coop_psk",
        p if p.starts_with("/coop") => "coop_peers",
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
        // A COOP number as the form shows it (the default when COOP is off).
        let coop_value = |f: fn(&CoopPolicy) -> u32, default: u32| {
            policy.coop.as_ref().map_or(default, f).to_string()
        };
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
            coop: tick(policy.coop.is_some()),
            coop_priority: coop_value(|c| c.priority, DEFAULT_PRIORITY),
            coop_refresh: coop_value(|c| c.refresh_secs, DEFAULT_REFRESH_SECS),
            coop_check: coop_value(|c| c.check_secs, DEFAULT_CHECK_SECS),
            coop_dead: coop_value(|c| c.dead_periods, DEFAULT_DEAD_PERIODS),
            coop_peers: policy
                .coop
                .iter()
                .flat_map(|c| c.peers.iter().map(coop_peer_line))
                .collect::<Vec<_>>()
                .join("\n"),
            coop_psk: String::new(),
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
        let coop_numbers = self.coop.is_some().then(|| {
            (
                num("coop_priority", &self.coop_priority),
                num("coop_refresh", &self.coop_refresh),
                num("coop_check", &self.coop_check),
                num("coop_dead", &self.coop_dead),
            )
        });
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
        p.coop = None;
        if self.coop.is_some() {
            let psk = Some(self.coop_psk.as_str()).filter(|k| !k.is_empty());
            let mut peers = Vec::new();
            for line in self.coop_peers.lines().filter(|l| !l.trim().is_empty()) {
                match parse_coop_peer(line.trim(), psk) {
                    Ok(peer) => peers.push(peer),
                    Err(e) => {
                        errors.insert("coop_peers", e);
                    }
                }
            }
            if let Some((
                Some(priority),
                Some(refresh_secs),
                Some(check_secs),
                Some(dead_periods),
            )) = coop_numbers
            {
                p.coop = Some(CoopPolicy {
                    priority,
                    refresh_secs,
                    check_secs,
                    dead_periods,
                    peers,
                });
            }
        }
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
    fn the_coop_fields_give_back_the_coop_policy() {
        let mut p = base();
        p.acknowledgement = Some(AckOption::Cisco);
        p.coop = Some(
            serde_json::from_str(
                r#"{"priority":7,"refresh_secs":15,"check_secs":45,"dead_periods":4,"peers":[
                {"address":"10.0.0.2","port":1848},
                {"address":"10.0.0.3","identity":"CN=ks 3, O=GKM","authentication":{"method":"pki"}}]}"#,
            )
            .unwrap(),
        );
        let f = PolicyForm::of(&p, 1);
        assert_eq!(
            f.coop_peers,
            "10.0.0.2 port=1848\n10.0.0.3 pki identity=CN=ks 3, O=GKM"
        );
        assert_eq!(f.apply(&base()).unwrap().0, p);
        let with_psk = PolicyForm {
            coop_psk: "pair".into(),
            ..f
        };
        let c = with_psk.apply(&base()).unwrap().0.coop.unwrap();
        assert_eq!(
            c.peers[0].authentication,
            Authentication::Psk {
                psk: Some("pair".into())
            }
        );
        assert_eq!(c.peers[1].authentication, Authentication::Pki);
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
