//! The TUN device: offload and queues as the kernel allows.

use anyhow::{bail, Result};
use tracing::{debug, warn};

use super::routes::ip;
use super::Settings;

/// Creates the TUN device, with segmentation offload (virtio-net header:
/// TSO/GSO super-packets are read whole and split here, received segments
/// are coalesced into one write, GRO) where the kernel offers it, else
/// without; with [`Settings::queues`] > 1 it is a multi-queue device and
/// one handle per queue is returned (a single queue where the kernel
/// refuses more).
pub fn tun(s: &Settings) -> Result<Vec<tun_rs::SyncDevice>> {
    let build = |offload: bool, multi: bool| {
        tun_rs::DeviceBuilder::new()
            .name(s.device.clone())
            .mtu(s.mtu)
            .offload(offload)
            .multi_queue(multi)
            .enable(true)
            .build_sync()
    };
    // Offload matters more than queues: with it a read is a 64 KiB
    // super-packet, without it one packet.
    let mut tries = vec![(true, s.queues > 1), (true, false)];
    if s.queues > 1 {
        tries.push((false, true));
    }
    tries.push((false, false));
    tries.dedup();
    let mut last = None;
    let mut built = None;
    for (offload, multi) in tries {
        match build(offload, multi) {
            Ok(d) => {
                if !offload {
                    warn!("TUN segmentation offload unavailable: one packet per read and write");
                }
                if s.queues > 1 && !multi {
                    warn!("multi-queue TUN unavailable: one queue, one encrypting thread");
                }
                built = Some((d, multi));
                break;
            }
            Err(e) => {
                debug!(offload, multi, error = %e, "TUN device not created");
                last = Some(e);
            }
        }
    }
    let Some((dev, multi)) = built else {
        let e = last.map_or_else(|| "no attempt".to_string(), |e| e.to_string());
        bail!(
            "cannot create TUN device {} (root or CAP_NET_ADMIN needed): {e}",
            s.device
        );
    };
    let mut devs = Vec::with_capacity(s.queues);
    if multi {
        for _ in 1..s.queues {
            match dev.try_clone() {
                Ok(q) => devs.push(q),
                Err(e) => {
                    warn!(error = %e, queues = devs.len() + 1, "cannot open another TUN queue");
                    break;
                }
            }
        }
    }
    devs.insert(0, dev);
    // No address of its own: it only carries packets to and from this host's.
    ip(&["link", "set", &s.device, "up"], &[])?;
    Ok(devs)
}
