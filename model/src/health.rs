//! A GM's anti-replay health as its agent counts it, serves it on its
//! status socket (`show crypto gkm gm replay`) and reports it to the
//! controller (`POST /api/v1/gm-health`), which stores and shows it.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// D3P error samples kept by an agent and accepted in one report (the
/// oldest go first).
pub const MAX_HISTORY: usize = 100;

/// At most this many D3P errors are sampled into the history in any 60 s.
pub const HISTORY_PER_MINUTE: usize = 10;

/// One sampled IP-D3P error, as `show crypto gkm gm replay` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct D3pError {
    /// The sender's address (IPv4 or IPv6).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub src: IpAddr,
    /// The receiving GM's clock, POSIX ms.
    pub my_time_ms: u64,
    /// The sender's stamp, POSIX ms.
    pub peer_time_ms: u64,
    /// The window in force, ms.
    pub window_ms: u32,
}

/// A GM's anti-replay counters since its agent started (they restart at
/// zero when the agent does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplayCounters {
    /// Packets decrypted (accepted or refused by IP-D3P).
    pub input_packets: u64,
    /// Packets encrypted and sent.
    pub output_packets: u64,
    /// Input packets dropped for a D3P stamp outside the window.
    pub input_errors: u64,
    /// Output packets that could not be stamped.
    pub output_errors: u64,
    /// Sampled errors, oldest first (at most [`MAX_HISTORY`]).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<D3pError>))]
    pub history: VecDeque<D3pError>,
}

/// Where a GM's IP-D3P window comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WindowSource {
    /// The key server's policy (GAP D3P-WINDOWSIZE).
    Ks,
    /// The agent's `client d3p window` override.
    Client,
}

impl WindowSource {
    /// Its word in the store.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::Client => "client",
        }
    }

    /// From its word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ks" => Some(Self::Ks),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// What an agent serves for one group on its status socket (one JSON
/// line), for `gkmctl show crypto gkm gm replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReplay {
    /// Group identity number.
    pub group: u32,
    /// Group name (the agent's configuration).
    pub name: String,
    /// The IP-D3P window in force, ms; none while IP-D3P is off.
    pub d3p_window_ms: Option<u32>,
    /// Where that window comes from.
    pub d3p_window_source: Option<WindowSource>,
    /// The agent's clock when it answered, POSIX ms.
    pub posix_time_ms: u64,
    /// The counters and error history.
    pub counters: ReplayCounters,
}

/// The acknowledgement a GM sends for a rekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AckKind {
    /// Cisco's unicast ACK (GKM's `acknowledgement = "cisco"`).
    Cisco,
    /// RFC 8263's ACK, asked for by the KEK policy (`interoperable`).
    Interoperable,
}

impl AckKind {
    /// Its name, as the API writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Cisco => "cisco",
            Self::Interoperable => "interoperable",
        }
    }
}

/// GROUPKEY-PUSH messages a GM refused, by reason, since its agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PushesRefused {
    /// Malformed or truncated.
    pub malformed: u64,
    /// Under a KEK the GM does not hold.
    pub wrong_kek: u64,
    /// Whose signature did not verify.
    pub bad_signature: u64,
    /// Replayed or stale (SEQ not above the last accepted).
    pub replayed: u64,
    /// Arrived before the GM registered.
    pub unregistered: u64,
}

/// A GM's membership and ACK health, as its agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Membership {
    /// The key server it registered with (`address:port`); none before
    /// its first registration.
    pub key_server: Option<String>,
    /// Its KEK's SPI (32 hex digits).
    pub kek_spi: Option<String>,
    /// The SEQ of the last GROUPKEY-PUSH that verified (accepted, or
    /// refused as a replay).
    pub last_seq_received: Option<u32>,
    /// The SEQ in force: from the registration, then each accepted push.
    pub last_seq_accepted: Option<u32>,
    /// The SEQ of the last push it acknowledged.
    pub last_seq_acked: Option<u32>,
    /// How it acknowledged that push.
    pub ack_kind: Option<AckKind>,
    /// Pushes refused, by reason.
    pub pushes_refused: PushesRefused,
    /// Registrations since the agent started (the first one included).
    pub registrations: u64,
    /// Registrations with a key server other than the one before.
    pub failovers: u64,
}

/// A GM's dataplane traffic since its agent started (packets and D3P
/// errors are in [`ReplayCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Traffic {
    /// Inner bytes decrypted and delivered.
    pub bytes_in: u64,
    /// Inner bytes encrypted and sent.
    pub bytes_out: u64,
    /// ESP packets the kernel dropped from the agent's receive queue (it
    /// could not read them fast enough).
    pub esp_rx_queue_drops: u64,
}

impl Membership {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(k) = &self.key_server {
            if k.parse::<std::net::SocketAddr>().is_err() {
                return Err(Invalid::new(
                    "/membership/key_server",
                    format!("{k:?} is not an address:port"),
                ));
            }
        }
        if let Some(s) = &self.kek_spi {
            if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Invalid::new("/membership/kek_spi", "must be 32 hex digits"));
            }
        }
        if let (Some(acked), Some(accepted)) = (self.last_seq_acked, self.last_seq_accepted) {
            if acked > accepted {
                return Err(Invalid::new(
                    "/membership/last_seq_acked",
                    format!("{acked} is above last_seq_accepted {accepted}: a GM acknowledges what it accepted"),
                ));
            }
        }
        if self.ack_kind.is_some() != self.last_seq_acked.is_some() {
            return Err(Invalid::new(
                "/membership/ack_kind",
                "given with last_seq_acked, and only with it",
            ));
        }
        if self.failovers > self.registrations.saturating_sub(1) {
            return Err(Invalid::new(
                "/membership/failovers",
                format!(
                    "{} fail-overs in {} registrations: each fail-over is a registration after the first",
                    self.failovers, self.registrations
                ),
            ));
        }
        let big = i64::MAX as u64;
        let r = &self.pushes_refused;
        for (field, v) in [
            ("/membership/registrations", self.registrations),
            ("/membership/failovers", self.failovers),
            ("/membership/pushes_refused/malformed", r.malformed),
            ("/membership/pushes_refused/wrong_kek", r.wrong_kek),
            ("/membership/pushes_refused/bad_signature", r.bad_signature),
            ("/membership/pushes_refused/replayed", r.replayed),
            ("/membership/pushes_refused/unregistered", r.unregistered),
        ] {
            if v > big {
                return Err(Invalid::new(field, format!("{v} is out of range: 0-{big}")));
            }
        }
        Ok(())
    }
}

/// A GM's health report, sent by its agent (DESIGN.md data flow 5): the
/// data of `show crypto gkm gm replay`, with the agent's version and
/// registration state. The agent sends every field but `received_at`,
/// which the controller sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GmHealth {
    /// Group identity number.
    pub group: u32,
    /// The GM's phase 1 identity, as the GM database names it (its IPv4
    /// address for PSK GMs). Accepted as `identity` (GKM 0.1 agents).
    #[serde(alias = "identity")]
    pub gm_identity: String,
    /// When the controller received it, UNIX ms (its own clock; never
    /// sent, so 0 in an agent's report until the controller stamps it).
    #[serde(skip_deserializing, skip_serializing_if = "GmHealth::not_received")]
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub received_at: i64,
    /// The agent's version.
    pub agent_version: String,
    /// Whether the agent holds the group's keys.
    pub registered: bool,
    /// The IP-D3P window in force, ms; none while IP-D3P is off.
    pub d3p_window_ms: Option<u32>,
    /// Where that window comes from.
    pub d3p_window_source: Option<WindowSource>,
    /// The agent's clock when it sampled, POSIX ms (compare with
    /// `received_at` to see its skew).
    pub agent_time_ms: u64,
    /// The counters and error history.
    pub counters: ReplayCounters,
    /// Membership and ACK health (agents before GKM 0.2 send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// Traffic through the dataplane (agents running it, GKM 0.2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// The controller's finding (never sent): the agent acknowledged a
    /// rekey the key server counts as missed, so the ACK was lost between
    /// them (an asymmetric path or a filter).
    #[serde(
        default,
        skip_deserializing,
        skip_serializing_if = "std::ops::Not::not"
    )]
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub ack_lost: bool,
}

impl GmHealth {
    fn not_received(at: &i64) -> bool {
        *at == 0
    }

    /// Checks what the store cannot hold or the seed does not allow.
    pub fn validate(&self) -> Result<(), Invalid> {
        let big = i64::MAX as u64;
        for (field, v) in [
            ("/agent_time_ms", self.agent_time_ms),
            ("/counters/input_packets", self.counters.input_packets),
            ("/counters/output_packets", self.counters.output_packets),
            ("/counters/input_errors", self.counters.input_errors),
            ("/counters/output_errors", self.counters.output_errors),
        ] {
            if v > big {
                return Err(Invalid::new(field, format!("{v} is out of range: 0-{big}")));
            }
        }
        if self.agent_version.is_empty() || self.agent_version.len() > 64 {
            return Err(Invalid::new("/agent_version", "must be 1-64 characters"));
        }
        if self.gm_identity.is_empty() || self.gm_identity.len() > 1024 {
            return Err(Invalid::new("/gm_identity", "must be 1-1024 characters"));
        }
        if let Some(w) = self.d3p_window_ms {
            // The seed's windows: sec 1-100 or msec 100-10000.
            if !(100..=100_000).contains(&w) {
                return Err(Invalid::new(
                    "/d3p_window_ms",
                    format!("{w} is out of range: 100-100000 ms"),
                ));
            }
        }
        if self.counters.history.len() > MAX_HISTORY {
            return Err(Invalid::new(
                "/counters/history",
                format!(
                    "{} entries: at most {MAX_HISTORY}",
                    self.counters.history.len()
                ),
            ));
        }
        if let Some(m) = &self.membership {
            m.validate()?;
        }
        if let Some(tr) = &self.traffic {
            for (field, v) in [
                ("/traffic/bytes_in", tr.bytes_in),
                ("/traffic/bytes_out", tr.bytes_out),
                ("/traffic/esp_rx_queue_drops", tr.esp_rx_queue_drops),
            ] {
                if v > big {
                    return Err(Invalid::new(field, format!("{v} is out of range: 0-{big}")));
                }
            }
        }
        for (i, h) in self.counters.history.iter().enumerate() {
            if h.my_time_ms > big || h.peer_time_ms > big {
                return Err(Invalid::new(
                    &format!("/counters/history/{i}"),
                    format!("times are out of range: 0-{big}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> GmHealth {
        GmHealth {
            group: 1,
            gm_identity: "10.0.0.2".into(),
            received_at: 0,
            agent_version: "0.1.0".into(),
            registered: true,
            d3p_window_ms: Some(1000),
            d3p_window_source: Some(WindowSource::Ks),
            agent_time_ms: 1,
            counters: ReplayCounters::default(),
            membership: None,
            traffic: None,
            ack_lost: false,
        }
    }

    #[test]
    fn an_old_agents_report_still_parses_and_ack_lost_is_the_controllers_alone() {
        // GKM 0.1's report: no membership, no traffic.
        let old = r#"{"group":1,"gm_identity":"10.0.0.2","agent_version":"0.1.0","registered":true,
            "d3p_window_ms":null,"d3p_window_source":null,"agent_time_ms":1,
            "counters":{"input_packets":0,"output_packets":0,"input_errors":0,"output_errors":0,"history":[]}}"#;
        let r: GmHealth = serde_json::from_str(old).unwrap();
        assert_eq!((r.membership, r.traffic), (None, None));
        let mut forged = serde_json::to_value(report()).unwrap();
        forged["ack_lost"] = true.into();
        assert!(serde_json::from_value::<GmHealth>(forged).is_err());
        let flagged = GmHealth {
            ack_lost: true,
            ..report()
        };
        assert_eq!(serde_json::to_value(flagged).unwrap()["ack_lost"], true);
        assert!(serde_json::to_value(report())
            .unwrap()
            .get("ack_lost")
            .is_none());
    }

    #[test]
    fn membership_is_checked_field_by_field() {
        let with = |m: Membership| GmHealth {
            membership: Some(m),
            ..report()
        };
        let good = Membership {
            key_server: Some("10.0.0.1:848".into()),
            kek_spi: Some("00112233445566778899aabbccddeeff".into()),
            last_seq_accepted: Some(3),
            last_seq_acked: Some(3),
            ack_kind: Some(AckKind::Cisco),
            registrations: 2,
            failovers: 1,
            ..Membership::default()
        };
        assert_eq!(with(good.clone()).validate(), Ok(()));
        for (m, field) in [
            (
                Membership {
                    key_server: Some("ks1".into()),
                    ..good.clone()
                },
                "/membership/key_server",
            ),
            (
                Membership {
                    kek_spi: Some("0011".into()),
                    ..good.clone()
                },
                "/membership/kek_spi",
            ),
            (
                Membership {
                    failovers: 2,
                    ..good.clone()
                },
                "/membership/failovers",
            ),
            (
                Membership {
                    ack_kind: None,
                    ..good.clone()
                },
                "/membership/ack_kind",
            ),
            (
                Membership {
                    last_seq_accepted: Some(2),
                    ..good.clone()
                },
                "/membership/last_seq_acked",
            ),
            (
                Membership {
                    registrations: u64::MAX,
                    failovers: 0,
                    ..good.clone()
                },
                "/membership/registrations",
            ),
        ] {
            assert_eq!(with(m).validate().unwrap_err().field, field);
        }
        let mut r = report();
        r.traffic = Some(Traffic {
            bytes_in: u64::MAX,
            ..Traffic::default()
        });
        assert_eq!(r.validate().unwrap_err().field, "/traffic/bytes_in");
        let unknown: Result<Membership, _> = serde_json::from_str(r#"{"kek":"x"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn an_agents_report_never_carries_received_at() {
        let sent = serde_json::to_value(report()).unwrap();
        assert!(sent.get("received_at").is_none(), "{sent}");
        let back: GmHealth = serde_json::from_value(sent).unwrap();
        assert_eq!(back, report());
        let mut forged = serde_json::to_value(report()).unwrap();
        forged["received_at"] = 5.into();
        assert!(serde_json::from_value::<GmHealth>(forged).is_err());
        let stored = GmHealth {
            received_at: 7,
            ..report()
        };
        assert_eq!(serde_json::to_value(stored).unwrap()["received_at"], 7);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(report().validate(), Ok(()));
        let mut r = report();
        r.d3p_window_ms = Some(99);
        assert_eq!(r.validate().unwrap_err().field, "/d3p_window_ms");
        let mut r = report();
        r.counters.history = vec![
            D3pError {
                src: std::net::Ipv4Addr::LOCALHOST.into(),
                my_time_ms: 0,
                peer_time_ms: 0,
                window_ms: 100
            };
            MAX_HISTORY + 1
        ]
        .into();
        assert_eq!(r.validate().unwrap_err().field, "/counters/history");
    }
}
