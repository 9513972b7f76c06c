//! The ESP socket under load, as root (raw sockets, a network namespace;
//! CI runs as root): a receive queue too small for a burst drops packets,
//! and the kernel's drop count reaches the agent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddrV4};

use gkm_agent::dataplane::esp::{esp_socket, receive};

/// Receive buffers per `recvmmsg`, as many as the packet workers use.
const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Runs `f` on a thread in a network namespace of its own with `lo` up.
fn in_own_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace (run as root)");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip (iproute2)");
        assert!(up.success());
        f();
    })
    .join()
    .unwrap();
}

#[test]
fn a_full_esp_receive_queue_reports_its_drops() {
    in_own_netns(|| {
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
    });
}

/// The IPv6 ESP socket, as root in a namespace of its own: a packet sent
/// with its own header (IPV6_HDRINCL) arrives without it, as IPv6 raw
/// sockets deliver, and `receive_v6` rebuilds the outer header the tunnel
/// checks: source, destination, traffic class, hop limit, ESP, length.
#[test]
fn the_ipv6_esp_socket_rebuilds_the_outer_header_it_does_not_get() {
    use gkm_agent::dataplane::esp::{esp_socket_v6, receive_v6};
    use gkm_dataplane::ipv6::Ipv6Header;
    use std::net::{Ipv6Addr, SocketAddrV6};
    in_own_netns(|| {
        let rx = esp_socket_v6(0).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx = esp_socket_v6(0).unwrap();
        let lo = Ipv6Addr::LOCALHOST;
        let h = Ipv6Header {
            traffic_class: 0xb8,
            flow_label: 0x12345,
            payload_len: 100,
            next_header: 50,
            hop_limit: 17,
            src: lo,
            dst: lo,
        };
        let mut p = vec![0u8; 40];
        gkm_dataplane::ipv6::write(&mut p, &h, 100).unwrap();
        p.extend((0..100u8).map(|i| i ^ 0x5a));
        tx.send_to(&p, &SocketAddrV6::new(lo, 0, 0, 0).into())
            .unwrap();
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048]).collect();
        let mut lens = Vec::new();
        receive_v6(&rx, &mut bufs, &mut lens).unwrap();
        assert_eq!(lens.first(), Some(&140), "{lens:?}");
        let got = Ipv6Header::parse(&bufs[0][..140]).unwrap();
        // The flow label is not reported by the kernel: rebuilt as 0.
        assert_eq!(got, Ipv6Header { flow_label: 0, ..h });
        assert_eq!(bufs[0][40..140], p[40..140]);
    });
}
