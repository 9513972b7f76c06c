//! The agent's policy between the GM engine and the dataplane, as plain
//! functions over the engine's state and the [`Tunnel`]: which IP-D3P
//! window is in force, and how the GM's TEKs become the tunnel's SAs. The
//! `select!` loop in `main.rs` only moves datagrams and calls these.

use gkm_dataplane::esp::{EspKeys, IvSource};
use gkm_dataplane::tunnel::{Selectors, Tunnel};
use gkm_model::health::WindowSource;
use gkm_model::D3pWindow;
use gkm_proto::gm::InstalledTek;
use gkm_proto::group::IpPrefix;
use rand_core::RngCore;
use tracing::{info, warn};

/// Sender-ID length GKM's KS grants (the KD's NUMBER_OF_SID_BITS).
pub const SID_BITS: u8 = 16;

/// The IP-D3P window in force and where it comes from: the agent's
/// override (`client_d3p_window`) wins, else the window the KS's GAP set,
/// else none (IP-D3P off).
pub fn window_in_force(
    client: Option<D3pWindow>,
    ks_ms: Option<u32>,
) -> (Option<u32>, Option<WindowSource>) {
    match (client, ks_ms) {
        (Some(w), _) => (Some(w.as_msec()), Some(WindowSource::Client)),
        (None, Some(w)) => (Some(w), Some(WindowSource::Ks)),
        (None, None) => (None, None),
    }
}

/// Makes the tunnel hold exactly the GM's TEKs: new ones installed (with
/// this sender's IV space: under the KS-assigned sender ID `sid`, else a
/// random prefix from `rng`), the timing of known ones updated (never
/// reinstalled: that would restart an IV counter), others removed; sets
/// the D3P window. Returns the TEKs' destination prefixes, in TEK order
/// with repeats next to each other dropped.
pub fn sync_tunnel(
    t: &mut Tunnel,
    teks: &[InstalledTek],
    sid: Option<u32>,
    window: Option<u32>,
    rng: &mut dyn RngCore,
) -> Vec<IpPrefix> {
    t.set_d3p_window(window);
    for it in teks {
        let spi = it.tek.spi;
        if t.has(spi) {
            t.set_timing(spi, it.send_from, it.expires_at);
            continue;
        }
        let iv = sid
            .and_then(|s| IvSource::from_sid(s, SID_BITS))
            .unwrap_or_else(|| IvSource::random_prefix(rng.next_u32()));
        let keys = EspKeys {
            transform: it.tek.transform,
            auth: it.tek.auth,
            algorithm_key: &it.tek.key,
            integrity_key: &it.tek.integrity_key,
        };
        let selectors = Selectors {
            src: it.tek.src,
            dst: it.tek.dst,
        };
        match t.install_for(spi, &keys, selectors, it.send_from, it.expires_at, iv) {
            Ok(()) => info!(spi = format!("{spi:#010x}"), "SA installed"),
            Err(e) => warn!(spi = format!("{spi:#010x}"), error = %e, "SA not installed"),
        }
    }
    let live: Vec<u32> = teks.iter().map(|x| x.tek.spi).collect();
    t.retain(|spi| live.contains(&spi));
    let mut prefixes: Vec<IpPrefix> = teks.iter().map(|x| x.tek.dst).collect();
    prefixes.dedup();
    prefixes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gkm_proto::group::GroupKeys;
    use rand_core::OsRng;

    fn teks(n: usize, from: u64, until: u64) -> Vec<InstalledTek> {
        let any = IpPrefix::any()[0];
        let dst: IpPrefix = "10.1.0.0/16".parse().unwrap();
        let pairs: Vec<_> = (0..n).map(|_| (any, dst)).collect();
        GroupKeys::generate(&mut OsRng, 1, &pairs, 3600, None)
            .teks
            .into_iter()
            .map(|tek| InstalledTek {
                tek,
                send_from: from,
                expires_at: until,
            })
            .collect()
    }

    /// One inner IPv4 packet sealed at `now`: the ESP sequence number used.
    fn seal_seq(t: &mut Tunnel, now: u64) -> u32 {
        let mut inner = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1];
        inner.extend_from_slice(&[10, 1, 0, 2]);
        inner.resize(28, 0);
        let mut out = Vec::new();
        t.encapsulate(now, &inner, &mut out).unwrap();
        u32::from_be_bytes(out[24..28].try_into().unwrap())
    }

    #[test]
    fn the_client_window_overrides_the_ks_window_and_none_turns_d3p_off() {
        let client: D3pWindow = "msec 500".parse().unwrap();
        assert_eq!(
            window_in_force(Some(client), Some(2000)),
            (Some(500), Some(WindowSource::Client))
        );
        assert_eq!(
            window_in_force(None, Some(2000)),
            (Some(2000), Some(WindowSource::Ks))
        );
        assert_eq!(window_in_force(None, None), (None, None));
    }

    #[test]
    fn a_known_tek_is_retimed_never_reinstalled_and_a_gone_one_is_removed() {
        let mut t = Tunnel::default();
        let first = teks(2, 0, 10_000);
        let p = sync_tunnel(&mut t, &first, Some(7), None, &mut OsRng);
        assert_eq!(p, vec![first[0].tek.dst], "one prefix for both TEKs");
        assert!(first.iter().all(|x| t.has(x.tek.spi)));
        let spi = t.outbound_spi(1).unwrap();
        assert_eq!(seal_seq(&mut t, 1), 1);
        assert_eq!(seal_seq(&mut t, 1), 2);

        // The rekey keeps the sending TEK (later expiry), drops the other
        // and adds a new one that starts sending only later (ATD).
        let kept = first.iter().find(|x| x.tek.spi == spi).unwrap();
        let gone = first.iter().find(|x| x.tek.spi != spi).unwrap().tek.spi;
        let mut next = vec![InstalledTek {
            tek: kept.tek.clone(),
            send_from: 0,
            expires_at: 20_000,
        }];
        next.extend(teks(1, 15_000, 30_000));
        sync_tunnel(&mut t, &next, Some(7), Some(1000), &mut OsRng);
        assert!(!t.has(gone));
        assert!(t.has(next[1].tek.spi));
        assert_eq!(t.outbound_spi(12_000), Some(spi), "retimed: still live");
        // Not reinstalled: its sequence (and IV) counter goes on.
        assert_eq!(seal_seq(&mut t, 1), 3);
        assert_eq!(t.outbound_spi(16_000), Some(next[1].tek.spi));
        assert_eq!(seal_seq(&mut t, 16_000), 1, "a new SA starts at 1");

        // No TEKs: nothing left to send under.
        assert!(sync_tunnel(&mut t, &[], None, None, &mut OsRng).is_empty());
        assert_eq!(t.outbound_spi(1), None);
    }
}
