//! IP-D3P freshness (seed section 1): the receiver accepts a packet only if
//! its sender timestamp lies within the window of the receiver's clock.

/// The verdict on one packet's D3P timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum D3pVerdict {
    /// Within the window: deliver.
    Fresh,
    /// Older than the window: replayed or held back; drop and count.
    TooOld,
    /// Newer than the window: sender clock ahead or forged; drop and count.
    TooNew,
}

/// Judges a timestamp: fresh when `|now - stamp| <= window` (both edges
/// included), too old or too new beyond that.
pub fn check(now_ms: u64, stamp_ms: u64, window_ms: u32) -> D3pVerdict {
    let window = u64::from(window_ms);
    if now_ms >= stamp_ms {
        if now_ms - stamp_ms > window {
            D3pVerdict::TooOld
        } else {
            D3pVerdict::Fresh
        }
    } else if stamp_ms - now_ms > window {
        D3pVerdict::TooNew
    } else {
        D3pVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_edges() {
        let now = 1_700_000_000_000;
        assert_eq!(check(now, now, 1000), D3pVerdict::Fresh);
        assert_eq!(check(now, now - 1000, 1000), D3pVerdict::Fresh);
        assert_eq!(check(now, now - 1001, 1000), D3pVerdict::TooOld);
        assert_eq!(check(now, now + 1000, 1000), D3pVerdict::Fresh);
        assert_eq!(check(now, now + 1001, 1000), D3pVerdict::TooNew);
        assert_eq!(check(0, u64::MAX, 10_000), D3pVerdict::TooNew);
        assert_eq!(check(u64::MAX, 0, 10_000), D3pVerdict::TooOld);
    }
}
