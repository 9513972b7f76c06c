//! Anti-replay counters of one group, everything `show crypto gkm gm
//! replay` shows (seed section 1): input and output packets, input and
//! output IP-D3P error packets, and the error history, sampled at most
//! [`HISTORY_PER_MINUTE`] entries per minute.

use std::net::IpAddr;

pub use gkm_model::health::{
    D3pError, GroupReplay, ReplayCounters, WindowSource, HISTORY_PER_MINUTE,
};
/// History entries kept (the oldest are dropped first).
pub use gkm_model::MAX_HISTORY as HISTORY_KEPT;

use crate::d3p::{check, D3pVerdict};

/// Counting into a group's [`ReplayCounters`]: the dataplane's side of
/// `show crypto gkm gm replay`.
pub trait CountReplay {
    /// Judges an input packet's D3P stamp, counting it; an error is
    /// sampled into the history unless [`HISTORY_PER_MINUTE`] entries were
    /// taken in the last 60 s.
    fn input(&mut self, now_ms: u64, src: IpAddr, stamp_ms: u64, window_ms: u32) -> D3pVerdict;
    /// Counts an input packet on a group without IP-D3P.
    fn input_unstamped(&mut self);
    /// Counts an output packet.
    fn output(&mut self);
    /// Counts an output packet that could not be stamped.
    fn output_error(&mut self);
}

impl CountReplay for ReplayCounters {
    fn input(&mut self, now_ms: u64, src: IpAddr, stamp_ms: u64, window_ms: u32) -> D3pVerdict {
        self.input_packets += 1;
        let verdict = check(now_ms, stamp_ms, window_ms);
        if verdict != D3pVerdict::Fresh {
            self.input_errors += 1;
            let recent = self
                .history
                .iter()
                .rev()
                .take_while(|e| now_ms.saturating_sub(e.my_time_ms) < 60_000)
                .count();
            if recent < HISTORY_PER_MINUTE {
                if self.history.len() == HISTORY_KEPT {
                    self.history.pop_front();
                }
                self.history.push_back(D3pError {
                    src,
                    my_time_ms: now_ms,
                    peer_time_ms: stamp_ms,
                    window_ms,
                });
            }
        }
        verdict
    }

    fn input_unstamped(&mut self) {
        self.input_packets += 1;
    }

    fn output(&mut self) {
        self.output_packets += 1;
    }

    fn output_error(&mut self) {
        self.output_errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(5, 0, 0, 2));

    #[test]
    fn counts_and_verdicts() {
        let mut c = ReplayCounters::default();
        let now = 1_700_000_000_000;
        assert_eq!(c.input(now, SRC, now - 1000, 1000), D3pVerdict::Fresh);
        assert_eq!(c.input(now, SRC, now - 1001, 1000), D3pVerdict::TooOld);
        assert_eq!(c.input(now, SRC, now + 1001, 1000), D3pVerdict::TooNew);
        c.output();
        c.output_error();
        c.input_unstamped();
        assert_eq!(
            (
                c.input_packets,
                c.input_errors,
                c.output_packets,
                c.output_errors
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(
            c.history[0],
            D3pError {
                src: SRC,
                my_time_ms: now,
                peer_time_ms: now - 1001,
                window_ms: 1000
            }
        );
    }

    #[test]
    fn history_is_sampled_at_ten_a_minute_and_bounded() {
        let mut c = ReplayCounters::default();
        let t0 = 1_700_000_000_000;
        // 50 errors within one second: 10 sampled, all 50 counted.
        for i in 0..50 {
            c.input(t0 + i, SRC, 0, 1000);
        }
        assert_eq!((c.input_errors, c.history.len()), (50, 10));
        // 59.9 s after the first: still the same minute for the first entry.
        c.input(t0 + 59_999, SRC, 0, 1000);
        assert_eq!(c.history.len(), 10);
        // A minute after the first: room for one more.
        c.input(t0 + 60_000, SRC, 0, 1000);
        assert_eq!(c.history.len(), 11);
        // Hours of errors: at most HISTORY_KEPT remain, the newest.
        for m in 0..100u64 {
            for i in 0..20 {
                c.input(t0 + 120_000 + m * 60_000 + i, SRC, 0, 1000);
            }
        }
        assert_eq!(c.history.len(), HISTORY_KEPT);
        assert!(c.history.back().unwrap().my_time_ms > t0 + 120_000 + 99 * 60_000);
    }
}
