//! Policy math from the seed (spec/seed-features.md), shared by the key
//! server, the agent, the API and the dashboard so that every surface
//! enforces the same ranges with the same messages.

use core::fmt;

/// Activation time delay in seconds for a new SA (seed section 2):
/// `max(max(old_remaining, 30) - 30, 1)`, clamped to 65535 because ATD is a
/// basic (16-bit) GAP attribute (RFC 6407 section 5.4).
pub fn activation_time_delay(old_sa_remaining_secs: u64) -> u16 {
    let atd = old_sa_remaining_secs.max(30).saturating_sub(30).max(1);
    u16::try_from(atd).unwrap_or(u16::MAX)
}

/// An IP-D3P window as an operator writes it: `sec S` (1-100) or `msec M`
/// (100-10000), the seed's `sa d3p window` / `client d3p window` ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum D3pWindow {
    /// Seconds, 1-100.
    Sec(u16),
    /// Milliseconds, 100-10000.
    Msec(u16),
}

/// Why a D3P window was refused; the message names the accepted range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct D3pWindowError(String);

impl fmt::Display for D3pWindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for D3pWindowError {}

impl D3pWindow {
    /// Smallest and largest `sec` values.
    pub const SEC_RANGE: (u16, u16) = (1, 100);
    /// Smallest and largest `msec` values.
    pub const MSEC_RANGE: (u16, u16) = (100, 10_000);

    /// A window in seconds, checked against 1-100.
    pub fn sec(s: u64) -> Result<Self, D3pWindowError> {
        let (lo, hi) = Self::SEC_RANGE;
        match u16::try_from(s) {
            Ok(v) if (lo..=hi).contains(&v) => Ok(Self::Sec(v)),
            _ => Err(D3pWindowError(format!(
                "d3p window sec {s} is out of range: sec must be {lo}-{hi}"
            ))),
        }
    }

    /// A window in milliseconds, checked against 100-10000.
    pub fn msec(m: u64) -> Result<Self, D3pWindowError> {
        let (lo, hi) = Self::MSEC_RANGE;
        match u16::try_from(m) {
            Ok(v) if (lo..=hi).contains(&v) => Ok(Self::Msec(v)),
            _ => Err(D3pWindowError(format!(
                "d3p window msec {m} is out of range: msec must be {lo}-{hi}"
            ))),
        }
    }

    /// The window in milliseconds, as carried in GAP D3P_WINDOW_MSEC.
    pub fn as_msec(self) -> u32 {
        match self {
            Self::Sec(s) => u32::from(s) * 1000,
            Self::Msec(m) => u32::from(m),
        }
    }
}

impl core::str::FromStr for D3pWindow {
    type Err = D3pWindowError;

    /// Parses `sec S` or `msec M`, the seed's CLI words.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let unit = words.next();
        let value = words.next().map(str::parse::<u64>);
        match (unit, value, words.next()) {
            (Some("sec"), Some(Ok(v)), None) => Self::sec(v),
            (Some("msec"), Some(Ok(v)), None) => Self::msec(v),
            _ => Err(D3pWindowError(format!(
                "d3p window {s:?} is not understood: write `sec S` (1-100) or `msec M` (100-10000)"
            ))),
        }
    }
}

impl fmt::Display for D3pWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sec(s) => write!(f, "sec {s}"),
            Self::Msec(m) => write!(f, "msec {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atd_follows_the_seed_formula() {
        assert_eq!(activation_time_delay(0), 1);
        assert_eq!(activation_time_delay(30), 1);
        assert_eq!(activation_time_delay(31), 1);
        assert_eq!(activation_time_delay(32), 2);
        assert_eq!(activation_time_delay(3600), 3570);
        assert_eq!(activation_time_delay(65_565), 65_535);
        assert_eq!(activation_time_delay(10_000_000), 65_535);
    }

    #[test]
    fn d3p_window_ranges_are_the_seeds() {
        assert_eq!(
            "sec 1".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(1000)
        );
        assert_eq!(
            "sec 100".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(100_000)
        );
        assert_eq!(
            "msec 100".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(100)
        );
        assert_eq!(
            "msec 10000".parse::<D3pWindow>().map(D3pWindow::as_msec),
            Ok(10_000)
        );
        for bad in [
            "sec 0",
            "sec 101",
            "msec 99",
            "msec 10001",
            "msec 70000",
            "sec",
            "min 5",
            "sec 5 x",
        ] {
            let e = bad.parse::<D3pWindow>().unwrap_err().to_string();
            assert!(e.contains("1-100") || e.contains("100-10000"), "{bad}: {e}");
        }
        // The seed's example: KS msec 1000, GM override sec 50 -> 50000.
        assert_eq!(D3pWindow::sec(50).map(D3pWindow::as_msec), Ok(50_000));
    }
}
