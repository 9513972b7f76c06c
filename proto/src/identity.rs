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
