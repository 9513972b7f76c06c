//! The ESP socket under load, as root (raw sockets, a network namespace;
//! CI runs as root): a receive queue too small for a burst drops packets,
//! and the kernel's drop count reaches the agent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddrV4};

use gkm_agent::dataplane::esp::{esp_socket, receive};

/// Receive buffers per `recvmmsg`, as many as the packet workers use.
const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

#[test]
fn a_full_esp_receive_queue_reports_its_drops() {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace (run as root)");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip (iproute2)");
        assert!(up.success());
        let rx = esp_socket(0).unwrap();
        rx.set_recv_buffer_size(1).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let tx = esp_socket(0).unwrap();
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 50, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        p.resize(1400, 0x5a);
        p[2..4].copy_from_slice(&1400u16.to_be_bytes());
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into();
        for _ in 0..200 {
            tx.send_to(&p, &to).unwrap();
        }
        // A marked packet after the burst carries the count; it may
        // itself meet a full queue, so it is sent again after each drain.
        p[20] = 0xa5;
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048]).collect();
        let mut lens = Vec::new();
        let (mut sent, mut received, mut drops) = (200, 0, None);
        'probe: for _ in 0..20 {
            tx.send_to(&p, &to).unwrap();
            sent += 1;
            while let Ok(d) = receive(&rx, &mut bufs, &mut lens) {
                drops = d.or(drops);
                received += lens.len();
                if bufs
                    .iter()
                    .zip(&lens)
                    .any(|(b, &n)| n == 1400 && b[20] == 0xa5)
                {
                    break 'probe;
                }
            }
        }
        let drops = drops.expect("a drop count") as usize;
        assert!(drops > 0 && received > 0, "{drops} {received}");
        assert_eq!(received + drops, sent);
    })
    .join()
    .unwrap();
}
