//! What guards the local sign-in form: a stateless login CSRF token (so
//! the login page keeps no server state a flood of visits could evict),
//! failed sign-ins throttled per source address and per user name with an
//! exponential lockout, and a bound on the CPU the 600,000-iteration
//! PBKDF2 of the local admin's password can be made to burn.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use crate::local;
use crate::problem::Problem;

/// The cookie that binds a login form's token to the browser it was served to.
pub const LOGIN_COOKIE: &str = "gkm_login";

/// How long a login form stays valid.
pub const LOGIN_FORM_TTL_MS: i64 = 600_000;

/// Failed sign-ins (per source and per user) before a lockout begins.
pub const FREE_FAILURES: u32 = 5;

/// The first lockout; each further failure doubles it up to [`MAX_LOCKOUT_MS`].
pub const FIRST_LOCKOUT_MS: i64 = 1_000;

/// The longest lockout: a locked-out user signs in again after it at most.
pub const MAX_LOCKOUT_MS: i64 = 300_000;

/// Failures are forgotten this long after the last one.
pub const FORGET_AFTER_MS: i64 = 900_000;

/// Most sources (and, apart, user names) tracked; the oldest go first.
pub const MAX_TRACKED: usize = 10_000;

/// How long a sign-in waits for a PBKDF2 slot before it is told to retry.
pub const PBKDF2_WAIT: Duration = Duration::from_secs(2);

/// Failures of one source or one user name.
#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    count: u32,
    last: i64,
    until: i64,
}

#[derive(Debug, Default)]
struct Failures {
    by_source: HashMap<IpAddr, Strikes>,
    by_user: HashMap<String, Strikes>,
}

fn strike(s: &mut Strikes, now: i64) {
    if now - s.last > FORGET_AFTER_MS {
        *s = Strikes::default();
    }
    s.count = s.count.saturating_add(1);
    s.last = now;
    if s.count > FREE_FAILURES {
        let doublings = (s.count - FREE_FAILURES - 1).min(20);
        s.until = now + (FIRST_LOCKOUT_MS << doublings).min(MAX_LOCKOUT_MS);
    }
}

fn bound<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Strikes>, now: i64) {
    if map.len() < MAX_TRACKED {
        return;
    }
    map.retain(|_, s| now - s.last <= FORGET_AFTER_MS || s.until > now);
    if map.len() >= MAX_TRACKED {
        // Still full: keep the newer half.
        let mut lasts: Vec<i64> = map.values().map(|s| s.last).collect();
        lasts.sort_unstable();
        let cut = lasts.get(lasts.len() / 2).copied().unwrap_or(i64::MAX);
        map.retain(|_, s| s.last >= cut);
    }
}

/// Why a sign-in is not tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// Too many failures from this source or for this user: retry after this many ms.
    LockedOut(i64),
    /// Every PBKDF2 slot stayed busy for [`PBKDF2_WAIT`].
    Busy,
}

/// The sign-in guard the dashboard shares.
pub struct SignIn {
    key: hmac::Key,
    failures: Mutex<Failures>,
    pbkdf2: Semaphore,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").finish_non_exhaustive()
    }
}

impl SignIn {
    /// A guard with a fresh login-form key and one PBKDF2 slot per two
    /// CPUs (at least one): sign-in attempts can take at most half the
    /// machine, whatever their number.
    pub fn new() -> Result<Self, Problem> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| Problem::internal())?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &k),
            failures: Mutex::new(Failures::default()),
            pbkdf2: Semaphore::new((cores / 2).max(1)),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // Each change is one map update: a poisoned table is consistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mac(&self, cookie: &str) -> String {
        hex::encode(hmac::sign(&self.key, cookie.as_bytes()).as_ref())
    }

    /// A login form's cookie value (random nonce and expiry) and the
    /// token its form carries (their MAC). Nothing is stored.
    pub fn login_form(&self, now: i64) -> Result<(String, String), Problem> {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Problem::internal())?;
        let cookie = format!("{}.{}", hex::encode(nonce), now + LOGIN_FORM_TTL_MS);
        let token = self.mac(&cookie);
        Ok((cookie, token))
    }

    /// Whether `token` is the one served with `cookie`, and not expired.
    pub fn login_form_valid(&self, cookie: Option<&str>, token: &str, now: i64) -> bool {
        let Some(c) = cookie else { return false };
        let Some((_, expiry)) = c.split_once('.') else {
            return false;
        };
        match expiry.parse::<i64>() {
            Ok(e) if e >= now => crate::session::same_token(&self.mac(c), token),
            _ => false,
        }
    }

    /// Whether `source` or `user` is locked out now.
    pub fn locked(&self, source: Option<IpAddr>, user: &str, now: i64) -> Option<i64> {
        let f = self.lock();
        let by_source = source
            .and_then(|s| f.by_source.get(&s))
            .map_or(0, |s| s.until);
        let by_user = f.by_user.get(user).map_or(0, |s| s.until);
        let until = by_source.max(by_user);
        (until > now).then_some(until - now)
    }

    /// Records a failed sign-in; returns the lockout it starts (ms), if any.
    pub fn failed(&self, source: Option<IpAddr>, user: &str, now: i64) -> Option<i64> {
        let mut f = self.lock();
        let mut until = 0;
        if let Some(s) = source {
            bound(&mut f.by_source, now);
            let st = f.by_source.entry(s).or_default();
            strike(st, now);
            until = until.max(st.until);
        }
        bound(&mut f.by_user, now);
        let st = f.by_user.entry(user.to_owned()).or_default();
        strike(st, now);
        until = until.max(st.until);
        (until > now).then_some(until - now)
    }

    /// A successful sign-in clears the user's and the source's failures.
    pub fn succeeded(&self, source: Option<IpAddr>, user: &str) {
        let mut f = self.lock();
        if let Some(s) = source {
            f.by_source.remove(&s);
        }
        f.by_user.remove(user);
    }

    /// Checks the local admin's password against its stored hash, off the
    /// async workers and within the PBKDF2 slots.
    pub async fn verify(&self, stored: Vec<u8>, password: String) -> Result<bool, NotNow> {
        let permit = tokio::time::timeout(PBKDF2_WAIT, self.pbkdf2.acquire())
            .await
            .map_err(|_| NotNow::Busy)?
            .map_err(|_| NotNow::Busy)?;
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        let r = tokio::task::spawn_blocking(move || local::verify(&stored, &password))
            .await
            .map_err(|_| local::BadHash)
            .and_then(|r| r)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "local admin");
                false
            });
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
        Ok(r)
    }

    /// The most password checks that ever ran at once (for tests and metrics).
    pub fn peak_concurrent_checks(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
}

/// The login cookie's `Set-Cookie` value (`secure` under TLS).
pub fn login_cookie(value: &str, secure: bool) -> String {
    crate::session::set_cookie(
        LOGIN_COOKIE,
        value,
        "/login",
        secure,
        Some(LOGIN_FORM_TTL_MS / 1000),
    )
}

/// The login cookie in a `Cookie` header, if any.
pub fn login_cookie_of(header: &str) -> Option<&str> {
    crate::session::cookie_in(header, LOGIN_COOKIE)
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn login_forms_are_bound_to_their_cookie_and_expire() {
        let g = SignIn::new().unwrap();
        let (cookie, token) = g.login_form(1_000).unwrap();
        assert_eq!(token.len(), 64);
        assert!(g.login_form_valid(Some(&cookie), &token, 1_000 + LOGIN_FORM_TTL_MS));
        assert!(!g.login_form_valid(Some(&cookie), &token, 1_001 + LOGIN_FORM_TTL_MS));
        assert!(!g.login_form_valid(None, &token, 1_000));
        let (other, _) = g.login_form(1_000).unwrap();
        assert!(
            !g.login_form_valid(Some(&other), &token, 1_000),
            "another browser's cookie"
        );
        let tampered = cookie.replace(&format!("{}", 1_000 + LOGIN_FORM_TTL_MS), "9999999999999");
        assert!(
            !g.login_form_valid(Some(&tampered), &token, 1_000),
            "a longer expiry"
        );
        let other_key = SignIn::new().unwrap();
        assert!(!other_key.login_form_valid(Some(&cookie), &token, 1_000));
    }

    #[test]
    fn failures_lock_out_exponentially_and_the_window_ends() {
        let g = SignIn::new().unwrap();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        let mut now = 0;
        for _ in 0..FREE_FAILURES {
            assert_eq!(g.locked(Some(src), "admin", now), None);
            assert_eq!(g.failed(Some(src), "admin", now), None, "no lockout yet");
            now += 10;
        }
        assert_eq!(g.locked(Some(src), "admin", now), None, "5 free failures");
        assert_eq!(g.failed(Some(src), "admin", now), Some(FIRST_LOCKOUT_MS));
        assert_eq!(g.locked(Some(src), "admin", now), Some(FIRST_LOCKOUT_MS));
        // The user is locked from any source, and the source for any user.
        assert!(g
            .locked(Some("192.0.2.2".parse().unwrap()), "admin", now)
            .is_some());
        assert!(g.locked(Some(src), "other", now).is_some());
        g.failed(Some(src), "admin", now);
        assert_eq!(
            g.locked(Some(src), "admin", now),
            Some(2 * FIRST_LOCKOUT_MS)
        );
        for _ in 0..30 {
            g.failed(Some(src), "admin", now);
        }
        assert_eq!(
            g.locked(Some(src), "admin", now),
            Some(MAX_LOCKOUT_MS),
            "capped"
        );
        assert_eq!(
            g.locked(Some(src), "admin", now + MAX_LOCKOUT_MS),
            None,
            "the window ends"
        );
        g.succeeded(Some(src), "admin");
        assert_eq!(g.locked(Some(src), "admin", now), None);
    }

    #[test]
    fn the_tables_are_bounded() {
        let g = SignIn::new().unwrap();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            g.failed(
                Some(IpAddr::from(i.to_be_bytes())),
                &format!("u{i}"),
                i64::from(i),
            );
        }
        let f = g.lock();
        assert!(f.by_source.len() <= MAX_TRACKED && f.by_user.len() <= MAX_TRACKED);
    }
}
