//! Enrollment: setup keys (what lets a host join, stored as hashes) and
//! the agents enrolled with them (docs/OPERATIONS.md, "Enrollment").

use serde::{Deserialize, Serialize};

use gkm_model::Invalid;

/// Longest a setup key may stay valid: one year.
pub const SETUP_KEY_MAX_SECS: u64 = 366 * 86_400;
/// A setup key's validity when the request names none: one day.
pub const SETUP_KEY_DEFAULT_SECS: u64 = 86_400;
/// Most groups one setup key binds.
pub const SETUP_KEY_MAX_GROUPS: usize = 64;
/// Most tags one setup key carries.
pub const MAX_TAGS: usize = 16;

/// A setup key as stored and listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupKey {
    /// Store id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The groups (identity numbers) an agent enrolled with it joins.
    pub groups: Vec<u32>,
    /// Tags its agents carry (e.g. `asr9000`).
    pub tags: Vec<String>,
    /// Enrollments it allows (1: single-use); none: reusable without limit.
    pub usage_limit: Option<u32>,
    /// Enrollments made with it.
    pub uses: u32,
    /// It is refused from this UNIX ms on.
    pub expires_at: i64,
    /// Created, UNIX ms.
    pub created_at: i64,
}

/// Why a setup key does not enroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupKeyRefused {
    /// No key has this hash (never made, deleted, or mistyped).
    #[error("unknown setup key")]
    Unknown,
    /// Past its expiry.
    #[error("the setup key has expired")]
    Expired,
    /// Its usage limit is reached (a single-use key used once).
    #[error("the setup key has been used up")]
    Exhausted,
}

impl SetupKey {
    /// Whether it may enroll one more agent at `now_ms`.
    pub fn usable_at(&self, now_ms: i64) -> Result<(), SetupKeyRefused> {
        if now_ms >= self.expires_at {
            return Err(SetupKeyRefused::Expired);
        }
        if self.usage_limit.is_some_and(|l| self.uses >= l) {
            return Err(SetupKeyRefused::Exhausted);
        }
        Ok(())
    }
}

/// A setup key to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSetupKey {
    /// Name, 1-64 characters.
    pub name: String,
    /// The groups (by name) its agents join: 1-64.
    pub groups: Vec<String>,
    /// Tags, at most 16, each 1-64 of `A-Z a-z 0-9 . _ : -`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Reusable (default false: single-use).
    #[serde(default)]
    pub reusable: bool,
    /// A reusable key's limit on enrollments (1-1000000; none: no limit).
    pub usage_limit: Option<u32>,
    /// Seconds it stays valid (60-31622400, default 86400).
    pub expires_in_secs: Option<u64>,
}

impl NewSetupKey {
    /// Checks every field but the group names (the caller resolves
    /// those); returns the usage limit and validity to store.
    pub fn validate(&self) -> Result<(Option<u32>, u64), Invalid> {
        if self.groups.is_empty() || self.groups.len() > SETUP_KEY_MAX_GROUPS {
            return Err(Invalid::new(
                "/groups",
                "a setup key binds 1-64 groups, by name",
            ));
        }
        check_tags(&self.tags)?;
        let limit = match (self.reusable, self.usage_limit) {
            (false, None | Some(1)) => Some(1),
            (false, Some(n)) => {
                return Err(Invalid::new(
                    "/usage_limit",
                    format!("{n}: a single-use key is used once; set reusable for more"),
                ))
            }
            (true, Some(n)) if !(1..=1_000_000).contains(&n) => {
                return Err(Invalid::new(
                    "/usage_limit",
                    format!("{n} is out of range: 1-1000000"),
                ))
            }
            (true, l) => l,
        };
        let secs = self.expires_in_secs.unwrap_or(SETUP_KEY_DEFAULT_SECS);
        if !(60..=SETUP_KEY_MAX_SECS).contains(&secs) {
            return Err(Invalid::new(
                "/expires_in_secs",
                format!("{secs} is out of range: 60-{SETUP_KEY_MAX_SECS}"),
            ));
        }
        Ok((limit, secs))
    }
}

/// Checks a tag list: at most [`MAX_TAGS`], each 1-64 of
/// `A-Z a-z 0-9 . _ : -`, none twice.
pub fn check_tags(tags: &[String]) -> Result<(), Invalid> {
    if tags.len() > MAX_TAGS {
        return Err(Invalid::new("/tags", "at most 16 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        let ok = (1..=64).contains(&t.len())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if !ok {
            return Err(Invalid::new(
                &format!("/tags/{i}"),
                "a tag is 1-64 of A-Z a-z 0-9 . _ : -",
            ));
        }
        if tags.get(..i).is_some_and(|before| before.contains(t)) {
            return Err(Invalid::new(&format!("/tags/{i}"), "listed twice"));
        }
    }
    Ok(())
}

/// An agent's name, which is its GM identity (certificate CN and DNS
/// name, ID_FQDN): 1-253 characters of a DNS name (`a-z 0-9 - .`,
/// labels of 1-63, lower case).
pub fn check_agent_name(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = (1..=253).contains(&name.len())
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "an agent name is a DNS name: labels of 1-63 of a-z 0-9 -, dot-separated, at most 253",
        ))
    }
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    /// Store id.
    pub id: i64,
    /// Name: its GM identity in every group.
    pub name: String,
    /// Its groups (identity numbers).
    pub groups: Vec<u32>,
    /// Tags from its setup key.
    pub tags: Vec<String>,
    /// The setup key it enrolled with.
    pub setup_key: String,
    /// Its newest certificate's serial number, hex.
    pub cert_serial: String,
    /// That certificate's end of validity, UNIX ms.
    pub cert_not_after: i64,
    /// Enrolled, UNIX ms.
    pub enrolled_at: i64,
    /// Last renewal, UNIX ms.
    pub renewed_at: Option<i64>,
    /// Revoked, UNIX ms: its certificates are refused at phase 1 and it
    /// has no token.
    pub revoked_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reusable: bool, limit: Option<u32>, secs: Option<u64>) -> NewSetupKey {
        NewSetupKey {
            name: "k".into(),
            groups: vec!["G".into()],
            tags: vec!["asr9000".into()],
            reusable,
            usage_limit: limit,
            expires_in_secs: secs,
        }
    }

    #[test]
    fn setup_key_ranges_and_kinds() {
        assert_eq!(
            key(false, None, None).validate().unwrap(),
            (Some(1), 86_400)
        );
        assert_eq!(key(true, None, Some(60)).validate().unwrap(), (None, 60));
        assert_eq!(key(true, Some(5), None).validate().unwrap().0, Some(5));
        for (k, field) in [
            (key(false, Some(2), None), "/usage_limit"),
            (key(true, Some(0), None), "/usage_limit"),
            (key(true, None, Some(59)), "/expires_in_secs"),
            (
                key(true, None, Some(SETUP_KEY_MAX_SECS + 1)),
                "/expires_in_secs",
            ),
        ] {
            assert_eq!(k.validate().unwrap_err().field, field);
        }
        let mut k = key(false, None, None);
        k.groups.clear();
        assert_eq!(k.validate().unwrap_err().field, "/groups");
        k.groups = vec!["G".into()];
        k.tags = vec!["a".into(), "bad tag".into()];
        assert_eq!(k.validate().unwrap_err().field, "/tags/1");
        k.tags = vec!["a".into(), "a".into()];
        assert_eq!(k.validate().unwrap_err().field, "/tags/1");
    }

    #[test]
    fn a_key_is_refused_expired_or_used_up() {
        let mut k = SetupKey {
            id: 1,
            name: "k".into(),
            groups: vec![1],
            tags: vec![],
            usage_limit: Some(1),
            uses: 0,
            expires_at: 1000,
            created_at: 0,
        };
        assert_eq!(k.usable_at(999), Ok(()));
        assert_eq!(k.usable_at(1000), Err(SetupKeyRefused::Expired));
        k.uses = 1;
        assert_eq!(k.usable_at(10), Err(SetupKeyRefused::Exhausted));
        k.usage_limit = None;
        assert_eq!(k.usable_at(10), Ok(()));
    }

    #[test]
    fn agent_names_are_dns_names() {
        for ok in ["gm1", "host-17.branch.example", "a"] {
            assert!(check_agent_name("/name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Host",
            "a..b",
            "-a",
            "a-",
            "a b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(check_agent_name("/name", bad).is_err(), "{bad}");
        }
    }
}
