//! Types both engines share: outgoing datagrams, time, GM classes and
//! Vendor ID interpretation.

use std::collections::VecDeque;
use std::net::SocketAddr;

use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion, GkmVendorId};

/// A datagram an engine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// What an engine has for its caller: datagrams to send and events to
/// handle, each in the order produced. Both engines write to one and the
/// caller drains it through their `poll_transmit` and `poll_event`; taking
/// the oldest entry is O(1).
#[derive(Debug)]
pub struct Outbox<E> {
    transmits: VecDeque<Transmit>,
    events: VecDeque<E>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Self {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }
}

impl<E> Outbox<E> {
    /// Queues a datagram.
    pub fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(Transmit { to, payload });
    }

    /// Queues a datagram already made.
    pub fn transmit(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    /// Queues an event.
    pub fn event(&mut self, e: E) {
        self.events.push_back(e);
    }

    /// The oldest datagram, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The oldest event, if any.
    pub fn poll_event(&mut self) -> Option<E> {
        self.events.pop_front()
    }

    /// Datagrams queued.
    pub fn transmits_queued(&self) -> usize {
        self.transmits.len()
    }
}

/// Engine time: milliseconds since the UNIX epoch, passed in on every call
/// (wall-clock so that certificate validity can be judged; tests pass a
/// simulated clock).
pub type Millis = u64;

/// The seed's GM classes (docs/FEATURES.md sections 2-3), which decide
/// ACK and ATD policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GmClass {
    /// A Cisco GM (known Cisco Vendor IDs).
    Cisco,
    /// An ASR 9000 GM: marked by an operator tag, not detectable on the wire.
    Asr9000,
    /// Any other GM, GKM agents included.
    NonCisco,
}

impl core::fmt::Display for GmClass {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Cisco => "cisco",
            Self::Asr9000 => "asr9000",
            Self::NonCisco => "non-cisco",
        })
    }
}

/// Vendor IDs Cisco devices send (the "Cisco Unity" VID's published hash
/// prefix; the leading octets of CISCO-GRE-MODE and CISCO-DELETE-REASON).
const CISCO_VID_PREFIXES: &[&[u8]] = &[
    &[
        0x12, 0xf5, 0xf2, 0x8c, 0x45, 0x71, 0x68, 0xa9, 0x70, 0x2d, 0x9f, 0xe2, 0x74, 0xcc,
    ],
    b"CISCO-GRE-MODE",
    b"CISCO-DELETE-REASON",
];

/// What a peer's Vendor ID payloads say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerVendor {
    /// A Cisco VID was seen.
    pub cisco: bool,
    /// GKM's VID, if sent.
    pub gkm: Option<GkmVendorId>,
}

impl PeerVendor {
    /// Folds in one Vendor ID payload; a malformed GKM VID is ignored.
    pub fn observe(&mut self, vid: &[u8]) {
        if CISCO_VID_PREFIXES.iter().any(|p| vid.starts_with(p)) {
            self.cisco = true;
        }
        if let Ok(Some(v)) = GkmVendorId::parse(vid) {
            self.gkm = Some(v);
        }
    }

    /// Version, if reported.
    pub fn version(&self) -> Option<GdoiVersion> {
        self.gkm.map(|v| v.version)
    }

    /// Features, if reported (none otherwise).
    pub fn features(&self) -> FeatureBits {
        self.gkm.map(|v| v.features).unwrap_or_default()
    }
}

/// This build's GDOI version and features, as GKM's Vendor ID reports them.
pub fn own_vendor_id() -> GkmVendorId {
    GkmVendorId {
        version: GdoiVersion {
            major: 1,
            minor: 0,
            mini: 0,
        },
        features: FeatureBits::IP_D3P
            .with(FeatureBits::GDOI_INTEROP_ACK)
            .with(FeatureBits::ATD),
    }
}
