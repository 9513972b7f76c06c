//! The agent's encrypting dataplane I/O (Linux): a TUN device takes the
//! group's protected traffic, [`Tunnel`] encrypts it, and a raw socket of
//! the packet's family (protocol 50, header included; one for IPv4, one
//! for IPv6) sends the ESP packet with the inner addresses; the same
//! sockets receive the group's ESP, which is decrypted and written into
//! the TUN device for local delivery.
//!
//! Routing (iproute2, undone on exit and redone cleanly after a crash):
//! - rule `pref P fwmark M lookup main`: the agent's own packets (ESP,
//!   GDOI, multicast rekeys; all sockets carry mark M) never loop back
//!   into the TUN device;
//! - rule `pref P+1 to DST lookup T` for each TEK's destination prefix,
//!   and in table T `DST dev gkm0`: everything else to a protected
//!   destination enters the TUN device. Traffic outside the selectors
//!   keeps the main table, in clear. With fail-close (the default) the
//!   routes exist from the start, so protected traffic is dropped, never
//!   sent in clear, until the agent holds keys.
//!
//! The parts: [`routes`] (the rules and the routing table), [`tun`] (the
//! TUN device and its queues), [`esp`] (the raw ESP socket and its batched
//! I/O) and [`workers`] (the packet threads that move packets between
//! them through the shared [`Tunnel`]). The GDOI loop in `main.rs` only
//! installs keys ([`crate::session`]) and never touches a packet.

pub mod esp;
pub mod routes;
pub mod tun;
pub mod workers;

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use gkm_dataplane::tunnel::Tunnel;
use workers::Family;

pub use esp::{esp_socket, esp_sockets, EspSockets};
pub use routes::Routes;
pub use tun::tun;

/// Dataplane settings (the agent's `[dataplane]` section).
#[derive(Debug, Clone)]
pub struct Settings {
    /// TUN device name.
    pub device: String,
    /// TUN MTU: every transform's outer packet must fit 1500 octets. The
    /// worst is IPv6 (40) + ESP header (8) + CBC IV (16) + the inner
    /// packet, D3P (12) and trailer (2) padded to 16 + ICV (16): at 1390 a
    /// full packet leaves as 1,488 octets; 1394 is the most that fits
    /// (1400 gives 1,504).
    pub mtu: u16,
    /// Mark on the agent's own sockets.
    pub fwmark: u32,
    /// Routing table of the protected prefixes.
    pub table: u32,
    /// Preference of the first of the two rules.
    pub rule_pref: u32,
    /// Drop protected traffic until registered (routes from the start).
    pub fail_close: bool,
    /// TUN queues (1 = a single-queue device), each read by an
    /// encrypting thread of its own; see [`spawn`].
    pub queues: usize,
}

/// Most TUN queues [`queues`] accepts.
pub const MAX_QUEUES: u32 = 16;

/// Checks a configured number of TUN queues (1-16).
pub fn queues(q: u32) -> Result<usize> {
    if (1..=MAX_QUEUES).contains(&q) {
        Ok(q as usize)
    } else {
        bail!("dataplane queues {q}: out of range 1-{MAX_QUEUES}")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            device: "gkm0".into(),
            mtu: 1390,
            fwmark: 0x474b,
            table: 0x474b,
            rule_pref: 10_000,
            fail_close: true,
            // One encrypting thread per CPU, up to 4.
            queues: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

/// Shared dataplane state: the tunnel the GDOI loop installs keys into.
pub type SharedTunnel = Arc<Mutex<Tunnel>>;

/// Locks the tunnel (a panic elsewhere while holding it leaves the data usable).
pub fn lock(t: &SharedTunnel) -> std::sync::MutexGuard<'_, Tunnel> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the packet threads, which run until the process ends: per TUN
/// queue, TUN → encrypt in place → raw socket; and one raw socket →
/// decrypt → TUN. `now_ms` is the clock D3P uses.
///
/// Why threads with blocking I/O, not tasks on the async runtime: a
/// socket registered with epoll for writing wakes an epoll waiter each
/// time the kernel frees one of its sent packets; at tens of thousands of
/// packets a second those wake-ups (and the task switches behind them)
/// cost more than the cryptography. A thread blocked in `read` or
/// `recvmmsg` is woken only when there is data.
///
/// Why one encrypting thread per queue: the thread that sends an ESP
/// packet also runs, inside `sendmmsg`, the kernel's forwarding of it
/// (on a bridge or veth, the receiver's IP input too), so one sending
/// thread keeps one CPU busy while the others idle. The kernel spreads
/// flows over the queues by a hash of the flow, and the inbound thread writes a
/// flow's received packets on the queue [`workers::queue_of`] picks, which the
/// kernel then keeps for the flow's sent packets too (tun "automq").
pub fn spawn(
    tuns: Vec<tun_rs::SyncDevice>,
    esp: EspSockets,
    tunnel: SharedTunnel,
    now_ms: fn() -> u64,
    failed: &ThreadFailures,
) -> Result<()> {
    let tuns: Vec<Arc<tun_rs::SyncDevice>> = tuns.into_iter().map(Arc::new).collect();
    let esp = Arc::new(esp);
    for (q, t) in tuns.iter().enumerate() {
        let (t, e, tu, f) = (t.clone(), esp.clone(), tunnel.clone(), failed.clone());
        std::thread::Builder::new()
            .name(format!("gkm-esp-out{q}"))
            .spawn(move || report(workers::outbound(&t, &e, &tu, now_ms), &f))
            .context("starting an outbound dataplane thread")?;
    }
    if esp.v6.is_some() {
        let (t, e, tu, f) = (tuns.clone(), esp.clone(), tunnel.clone(), failed.clone());
        std::thread::Builder::new()
            .name("gkm-esp-in6".into())
            .spawn(move || {
                let Some(v6) = e.v6.as_ref() else {
                    return;
                };
                report(workers::inbound(&t, v6, Family::V6, &tu, now_ms), &f)
            })
            .context("starting the inbound IPv6 dataplane thread")?;
    }
    let f = failed.clone();
    std::thread::Builder::new()
        .name("gkm-esp-in".into())
        .spawn(move || {
            report(
                workers::inbound(&tuns, &esp.v4, Family::V4, &tunnel, now_ms),
                &f,
            )
        })
        .context("starting the inbound dataplane thread")?;
    Ok(())
}

/// Where a packet thread that stops sends why: the agent then ends (its
/// routes and rules go with it), rather than run on with a queue nobody
/// reads, whose flows the kernel would keep sending into it.
pub type ThreadFailures = tokio::sync::mpsc::UnboundedSender<anyhow::Error>;

fn report(r: Result<()>, failed: &ThreadFailures) {
    if let Err(e) = r {
        tracing::error!(error = %format!("{e:#}"), "dataplane stopped");
        let _ = failed.send(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default TUN MTU fits every transform in either family with
    /// IP-D3P on: the largest packet the device hands over leaves as ESP
    /// of at most 1500 octets (an IPv6 packet under AES-CBC with a
    /// 16-octet ICV is the worst case, and 1400 would not fit it).
    #[test]
    fn the_default_mtu_fits_the_worst_outer_packet_in_1500_octets() {
        use gkm_dataplane::esp::{EspKeys, IvSource};
        use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
        let key = [7u8; 36];
        let mac = [9u8; 32];
        let transforms = [
            (EspTransformId::AES_GCM_16, None, &key[..36], &mac[..0]),
            (
                EspTransformId::AES_CBC,
                Some(AuthAlgorithm::HMAC_SHA2_256),
                &key[..32],
                &mac[..32],
            ),
            (
                EspTransformId::AES_CBC,
                Some(AuthAlgorithm::HMAC_SHA1),
                &key[..16],
                &mac[..20],
            ),
        ];
        let packet = |v6: bool, len: usize| -> Vec<u8> {
            let mut p = vec![0u8; len];
            if v6 {
                p[0] = 0x60;
                p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                p[6] = 59; // no next header
                p[8] = 0xfd;
                p[24] = 0xfd;
            } else {
                p[0] = 0x45;
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                p[9] = 17;
            }
            p
        };
        let worst = |mtu: usize| {
            let mut most = 0;
            for (transform, auth, k, m) in transforms {
                for v6 in [false, true] {
                    // Every length near the MTU: the padding varies with it.
                    for len in mtu - 15..=mtu {
                        let mut t = Tunnel::default();
                        t.set_d3p_window(Some(1000));
                        let keys = EspKeys {
                            transform,
                            auth,
                            algorithm_key: k,
                            integrity_key: m,
                        };
                        t.install(1000, &keys, 0, u64::MAX, IvSource::from_sid(1, 8).unwrap())
                            .unwrap();
                        let mut out = Vec::new();
                        t.encapsulate(5, &packet(v6, len), &mut out).unwrap();
                        most = most.max(out.len());
                    }
                }
            }
            most
        };
        let mtu = usize::from(Settings::default().mtu);
        assert_eq!(worst(mtu), 1488);
        // The reason the MTU is below 1400, and the most that would fit.
        assert_eq!(worst(1400), 1504);
        assert!(worst(1394) <= 1500 && worst(1395) > 1500);
    }

    #[test]
    fn queues_outside_1_to_16_are_refused_with_the_range() {
        assert_eq!(queues(1).unwrap(), 1);
        assert_eq!(queues(16).unwrap(), 16);
        for q in [0, 17, 1000] {
            let e = queues(q).unwrap_err().to_string();
            assert!(e.contains("1-16"), "{e}");
        }
    }
}
