//! Phase 1 identities as GKM shows, logs, stores and matches them.

use gkm_wire::Identity;

/// A peer-chosen name as GKM shows, logs and stores it: control, format
/// (bidi) and other invisible characters escaped as `\u{..}`, so an
/// identity can neither forge a log line nor reorder what a page shows.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
        if invisible || c == '\\' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a certificate's subject (DER) is the distinguished name an
/// operator configured (`CN=ks3,O=GKM`): the same attributes with the
/// same values, in any order, attribute names without regard to case,
/// spaces around `,` and `=` ignored. A subject that does not parse, or
/// a name with an attribute written twice differently, never matches.
pub fn dn_matches(configured: &str, subject_der: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((rest, name)) = x509_parser::x509::X509Name::from_der(subject_der) else {
        return false;
    };
    if !rest.is_empty() {
        return false;
    }
    let registry = x509_parser::objects::oid_registry();
    let mut have: Vec<(String, String)> = Vec::new();
    for a in name.iter_attributes() {
        let Ok(value) = a.as_str() else {
            return false;
        };
        let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
            .map_or_else(|_| a.attr_type().to_id_string(), str::to_owned);
        have.push((key.to_ascii_uppercase(), value.to_owned()));
    }
    let mut want: Vec<(String, String)> = Vec::new();
    for part in configured.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return false;
        };
        want.push((k.trim().to_ascii_uppercase(), v.trim().to_owned()));
    }
    have.sort_unstable();
    want.sort_unstable();
    !want.is_empty() && have == want
}

/// How an identity is shown and matched in authorization lists (peer
/// text made [`printable`]).
pub fn identity_string(id: &Identity<'_>) -> String {
    match id {
        Identity::Ipv4Addr(a) => a.to_string(),
        Identity::Ipv6Addr(a) => a.to_string(),
        Identity::Fqdn(b) | Identity::UserFqdn(b) => printable(&String::from_utf8_lossy(b)),
        other => {
            let mut v = Vec::new();
            other.emit_data(&mut v);
            format!("{}:{}", other.id_type(), hex::encode(&v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_dn_matches_the_certificates_subject_in_any_order() {
        let der = crate::crypto::certificates_from_pem(include_str!("../tests/data/ks.pem"))
            .unwrap()
            .remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = cert.subject().as_raw();
        for yes in [
            "CN=ks1.gkm.test,O=GKM test",
            "O=GKM test, CN=ks1.gkm.test",
            "cn = ks1.gkm.test , o = GKM test",
        ] {
            assert!(dn_matches(yes, subject), "{yes}");
        }
        for no in [
            "CN=ks1.gkm.test",
            "CN=ks1.gkm.test,O=GKM test,OU=x",
            "CN=KS1.gkm.test,O=GKM test",
            "CN=gm1.gkm.test,O=GKM test",
            "",
            "ks1.gkm.test",
        ] {
            assert!(!dn_matches(no, subject), "{no}");
        }
        assert!(!dn_matches(
            "CN=ks1.gkm.test,O=GKM test",
            &subject[..subject.len() - 1]
        ));
    }

    #[test]
    fn peer_identities_cannot_forge_log_lines_or_reorder_text() {
        let evil =
            b"gm.example\n2026-12-01T00:00:00Z  INFO gkm_server: forged\x1b[31m\xe2\x80\xaeabc\\";
        let shown = identity_string(&Identity::Fqdn(evil));
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert!(shown.starts_with("gm.example\\u{a}2026"), "{shown}");
        assert!(shown.ends_with("\\u{202e}abc\\u{5c}"), "{shown}");
        assert_eq!(
            identity_string(&Identity::Fqdn(b"gm1.example.com")),
            "gm1.example.com"
        );
        assert_eq!(printable("plain ascii - ok"), "plain ascii - ok");
    }
}
