//! Policy math from the seed (docs/FEATURES.md): the activation time
//! delay. The IP-D3P window's words and ranges are gkm-model's.

/// Activation time delay in seconds for a new SA (seed section 2):
/// `max(max(old_remaining, 30) - 30, 1)`, clamped to 65535 because ATD is a
/// basic (16-bit) GAP attribute (RFC 6407 section 5.4).
pub fn activation_time_delay(old_sa_remaining_secs: u64) -> u16 {
    let atd = old_sa_remaining_secs.max(30).saturating_sub(30).max(1);
    u16::try_from(atd).unwrap_or(u16::MAX)
}

pub use gkm_model::policy::{D3pWindow, D3pWindowError};

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
}
