//! Dashboard sessions: an opaque random cookie naming a server-side
//! session that holds the signed-in user, the CSRF token of its forms and,
//! during an OIDC login, the state, nonce and PKCE verifier.
//!
//! Sessions live in memory: a restart signs everybody out, which is the
//! safe failure. A session ends after `idle` without a request and in any
//! case `absolute` after sign-in; signing in issues a new session id
//! (no fixation).

use std::collections::HashMap;
use std::sync::Mutex;

use gkm_store::model::Role;
use ring::rand::{SecureRandom, SystemRandom};

use crate::problem::Problem;

/// The session cookie's name.
pub const COOKIE: &str = "gkm_session";

/// At most this many signed-in sessions; when full, the oldest of them
/// ends for a new sign-in.
pub const MAX_SESSIONS: usize = 10_000;

/// At most this many anonymous sessions (OIDC sign-ins in progress), held
/// apart: a flood of them evicts only each other, never a signed-in
/// session. The local login form needs none (its token is stateless).
pub const MAX_ANONYMOUS: usize = 2_000;

/// How a user signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The local bootstrap admin (password).
    Local,
    /// OpenID Connect, as this subject of this issuer.
    Oidc {
        /// The ID token's `iss`.
        issuer: String,
        /// Its `sub`.
        subject: String,
    },
}

/// A signed-in dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name shown and audited (`preferred_username`, email or subject for OIDC).
    pub name: String,
    /// Role, from the OIDC role claim or `admin` for the local admin.
    pub role: Role,
    /// How.
    pub login: Login,
}

impl User {
    /// The audit actor: `local:admin` for the local admin,
    /// `oidc:<issuer>/<subject>` for an OIDC user (names can collide;
    /// these cannot).
    pub fn actor(&self) -> gkm_store::Actor {
        gkm_store::Actor(match &self.login {
            Login::Local => format!("local:{}", self.name),
            Login::Oidc { issuer, subject } => format!("oidc:{issuer}/{subject}"),
        })
    }
}

/// What an OIDC login in progress must remember until the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOidc {
    /// The `state` parameter sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user, once signed in.
    pub user: Option<User>,
    /// The token every form of this session carries.
    pub csrf: String,
    /// An OIDC login in progress.
    pub oidc: Option<PendingOidc>,
    /// Created (or signed in), UNIX ms.
    pub since: i64,
    /// Last request, UNIX ms.
    pub seen: i64,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    idle_ms: i64,
    absolute_ms: i64,
}

/// 32 random octets as hex; fails only if the operating system's random
/// number generator does (then no session or token is made at all).
pub fn random_hex() -> Result<String, Problem> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Problem::internal())?;
    Ok(hex::encode(b))
}

/// Constant-time equality of two tokens (lengths are not secret).
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// A table whose sessions end after `idle_ms` without a request, or
    /// `absolute_ms` after they began.
    pub fn new(idle_ms: i64, absolute_ms: i64) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            idle_ms,
            absolute_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the table consistent
        // (every write is one insert or remove), so a poisoned lock is used.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self, s: &Session, now: i64) -> bool {
        now - s.seen <= self.idle_ms && now - s.since <= self.absolute_ms
    }

    /// Starts a session (anonymous, or `user`); returns its id.
    pub fn start(&self, user: Option<User>, now: i64) -> Result<(String, Session), Problem> {
        let id = random_hex()?;
        let s = Session {
            user,
            csrf: random_hex()?,
            oidc: None,
            since: now,
            seen: now,
        };
        let signed = s.user.is_some();
        let cap = if signed { MAX_SESSIONS } else { MAX_ANONYMOUS };
        let mut t = self.lock();
        let kind = |t: &HashMap<String, Session>| {
            t.values().filter(|x| x.user.is_some() == signed).count()
        };
        if kind(&t) >= cap {
            t.retain(|_, s| self.live(s, now));
        }
        if kind(&t) >= cap {
            // Still full of live sessions of this kind: the oldest of the
            // same kind goes (anonymous ones never push out a sign-in).
            let victim = t
                .iter()
                .filter(|(_, x)| x.user.is_some() == signed)
                .min_by_key(|(_, x)| x.seen)
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                t.remove(&v);
            }
        }
        t.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    /// The live session `id`, touched; an expired one is removed.
    pub fn get(&self, id: &str, now: i64) -> Option<Session> {
        let mut t = self.lock();
        let live = t.get(id).map(|s| self.live(s, now))?;
        if !live {
            t.remove(id);
            return None;
        }
        let s = t.get_mut(id)?;
        s.seen = now;
        Some(s.clone())
    }

    /// Replaces the pending OIDC login of session `id`.
    pub fn set_oidc(&self, id: &str, pending: Option<PendingOidc>) -> bool {
        match self.lock().get_mut(id) {
            Some(s) => {
                s.oidc = pending;
                true
            }
            None => false,
        }
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends session `old` (if any) and starts a signed-in one.
    pub fn sign_in(
        &self,
        old: Option<&str>,
        user: User,
        now: i64,
    ) -> Result<(String, Session), Problem> {
        if let Some(o) = old {
            self.end(o);
        }
        self.start(Some(user), now)
    }

    /// Sessions held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `Set-Cookie` value for session `id` (`secure` under TLS).
pub fn cookie(id: &str, secure: bool) -> String {
    set_cookie(COOKIE, id, "/", secure, None)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` under TLS,
/// `max_age_secs` if given (0 deletes it).
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    secure: bool,
    max_age_secs: Option<i64>,
) -> String {
    let mut c = cookie::Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure);
    if let Some(secs) = max_age_secs {
        c = c.max_age(cookie::time::Duration::seconds(secs));
    }
    c.build().to_string()
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn cookie_clear(secure: bool) -> String {
    set_cookie(COOKIE, "", "/", secure, Some(0))
}

/// The session id in a `Cookie` header, if any.
pub fn id_of_cookie_header(header: &str) -> Option<&str> {
    cookie_in(header, COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The value of cookie `name` in a `Cookie` header, if any.
pub fn cookie_in<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    cookie::Cookie::split_parse(header)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
}

/// The value of cookie `name` in a request's `Cookie` headers, as
/// `pick` accepts it.
pub fn cookie_of_request<'a>(
    headers: &'a axum::http::HeaderMap,
    pick: impl Fn(&'a str) -> Option<&'a str>,
) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(pick)
        .map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn admin() -> User {
        User {
            name: "admin".into(),
            role: Role::Admin,
            login: Login::Local,
        }
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let t = Sessions::new(1_000, 5_000);
        let (id, _) = t.start(Some(admin()), 0).unwrap();
        assert!(t.get(&id, 1_000).is_some(), "exactly at the idle limit");
        assert!(
            t.get(&id, 1_900).is_some(),
            "touched at 1000, so live at 1900"
        );
        assert!(t.get(&id, 2_901).is_none(), "idle 1001 ms: gone");
        assert!(t.get(&id, 2_902).is_none(), "and removed");
        let (id, _) = t.start(Some(admin()), 0).unwrap();
        for now in (500..=5_000).step_by(500) {
            assert!(t.get(&id, now).is_some(), "{now}");
        }
        assert!(t.get(&id, 5_001).is_none(), "absolute limit");
    }

    #[test]
    fn sign_in_issues_a_new_id_and_ends_the_old_one() {
        let t = Sessions::new(1_000, 5_000);
        let (anon, s) = t.start(None, 0).unwrap();
        assert!(s.user.is_none());
        let (id, s2) = t.sign_in(Some(&anon), admin(), 1).unwrap();
        assert_ne!(id, anon);
        assert_ne!(s.csrf, s2.csrf);
        assert!(t.get(&anon, 2).is_none());
        assert_eq!(t.get(&id, 2).unwrap().user, Some(admin()));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Sessions::new(1_000_000, 1_000_000);
        let (keep, _) = t.start(Some(admin()), 0).unwrap();
        for i in 0..(MAX_SESSIONS + 10) {
            t.start(None, 1 + i64::try_from(i).unwrap()).unwrap();
        }
        assert_eq!(t.len(), MAX_ANONYMOUS + 1);
        assert!(
            t.get(&keep, 20_000).is_some(),
            "anonymous sessions never evict a sign-in"
        );
        for i in 0..(MAX_SESSIONS + 10) {
            t.start(Some(admin()), 30_000 + i64::try_from(i).unwrap())
                .unwrap();
        }
        assert_eq!(t.len(), MAX_ANONYMOUS + MAX_SESSIONS);
        assert!(
            t.get(&keep, 50_000).is_none(),
            "the oldest sign-in made room"
        );
    }

    #[test]
    fn cookies_and_tokens() {
        let id = "a".repeat(64);
        let c = cookie(&id, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(!cookie(&id, false).contains("Secure"));
        assert!(c.contains("Path=/") && c.starts_with(&format!("{COOKIE}={id}")));
        let gone = cookie_clear(false);
        assert!(gone.starts_with(&format!("{COOKIE}=;")) && gone.contains("Max-Age=0"));
        assert_eq!(cookie_in("a=1;b=2 ; c=3", "b"), Some("2"));
        assert_eq!(cookie_in("a=1; b", "b"), None);
        assert_eq!(
            id_of_cookie_header(&format!("x=1; {COOKIE}={id}; y=2")),
            Some(id.as_str())
        );
        assert_eq!(id_of_cookie_header(&format!("{COOKIE}=short")), None);
        assert_eq!(id_of_cookie_header("other=1"), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
    }
}
