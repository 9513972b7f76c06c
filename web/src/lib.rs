//! `gkm-web`: GKM's HTTP layer.
//!
//! Owns (DESIGN.md): the axum routers for `/api/v1` (JSON, OpenAPI 3.1,
//! RFC 9457 problems), the askama dashboard, auth (OIDC, bearer tokens,
//! roles, CSRF) and the audit log. It never sees `gkm-proto`: the server
//! hands it a small status/command trait. Routers land with the controller
//! and dashboard issues; the role model every surface checks is here.

use core::fmt;

/// An operator's role. Ordered: each role can do what the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Also triggers actions: rekey now, rekey replace, eject GM, policy edits.
    Operator,
    /// Also manages key servers, tokens and users.
    Admin,
}

impl Role {
    /// Whether this role may change state.
    pub fn can_mutate(self) -> bool {
        self >= Self::Operator
    }

    /// Parses the role names used in tokens and OIDC claims.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_cannot_mutate() {
        assert!(!Role::Viewer.can_mutate());
        assert!(Role::Operator.can_mutate());
        assert!(Role::Admin.can_mutate());
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(&r.to_string()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
