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
        }
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
