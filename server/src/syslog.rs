//! The key server's syslog messages (RFC 5424 over UDP, RFC 5426) to the
//! collector the configuration file names (`syslog = "host:port"`), for
//! the seed's `%GDOI-...` texts network operators watch for. Each message
//! is also in the key server's own log.

use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context, Result};

/// Facility local7 (23), the vendor's default `logging facility`.
const FACILITY: u8 = 23;

/// Syslog severities used (RFC 5424 section 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 3: the vendor's `%GDOI-3-...` messages.
    Error,
    /// 5: an alarm cleared.
    Notice,
}

/// A UDP syslog sender.
pub struct Syslog {
    socket: UdpSocket,
    to: SocketAddr,
    hostname: String,
}

impl Syslog {
    /// A sender to `to`, from an ephemeral port of the matching family.
    pub fn new(to: SocketAddr) -> Result<Self> {
        let any: SocketAddr = if to.is_ipv6() {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let socket = UdpSocket::bind(any).context("syslog: binding a UDP socket")?;
        socket
            .set_nonblocking(true)
            .context("syslog: non-blocking socket")?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into());
        Ok(Self {
            socket,
            to,
            hostname,
        })
    }

    /// Sends one message; a full socket buffer or an unreachable
    /// collector loses it (UDP syslog), the caller's own log keeps it.
    pub fn send(
        &self,
        severity: Severity,
        msgid: &str,
        text: &str,
        now_ms: u64,
    ) -> std::io::Result<()> {
        let line = format_line(severity, &self.hostname, msgid, text, now_ms);
        self.socket.send_to(line.as_bytes(), self.to).map(|_| ())
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
/// - MSG` (no structured data).
fn format_line(severity: Severity, hostname: &str, msgid: &str, text: &str, now_ms: u64) -> String {
    let sev = match severity {
        Severity::Error => 3,
        Severity::Notice => 5,
    };
    let pri = u16::from(FACILITY) * 8 + sev;
    let ts = gkm_model::clock::rfc3339(i64::try_from(now_ms).unwrap_or(i64::MAX));
    format!(
        "<{pri}>1 {ts} {hostname} gkm-server {} {msgid} - {text}",
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_rfc_5424_with_the_text_as_is() {
        let l = format_line(
            Severity::Error,
            "ks1",
            "COOP_CONFIG_MISMATCH",
            "%GDOI-3-COOP_CONFIG_MISMATCH: WARNING: x",
            1_795_867_200_123,
        );
        assert_eq!(
            l,
            format!(
                "<187>1 2026-11-28T12:00:00.123Z ks1 gkm-server {} COOP_CONFIG_MISMATCH - %GDOI-3-COOP_CONFIG_MISMATCH: WARNING: x",
                std::process::id()
            )
        );
    }

    #[test]
    fn a_message_reaches_a_udp_collector() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = Syslog::new(collector.local_addr().unwrap()).unwrap();
        s.send(Severity::Notice, "M", "hello", 0).unwrap();
        let mut buf = [0u8; 512];
        collector
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = collector.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<189>1 1970-01-01T00:00:00.000Z "), "{got}");
        assert!(got.ends_with(" M - hello"), "{got}");
    }
}
