//! The key server engine (responder): IKEv1 main mode (RFC 2409) followed
//! by GROUPKEY-PULL (RFC 6407 section 3). Sans-IO: the caller feeds
//! datagrams and time, then drains transmits and events.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_wire::consts::{
    Doi, ExchangeType, Flags, IdType, NotifyType, PayloadType, ProtocolId, SIT_IDENTITY_ONLY,
};
use gkm_wire::gkm_vid::{FeatureBits, GdoiVersion};
use gkm_wire::payload::{
    Cert, CertReq, Gap, IdPayload, KeyExchange, Nonce, Notification, Phase1Sa, Proposal,
    RawPayload, Sa, SaLayout, Seq, Signature, VendorId,
};
use gkm_wire::{Body, Identity, IsakmpHeader, Message, Payload};
use zeroize::Zeroizing;

use crate::crypto::{rng, CertificateAuthority, DhBackend, EngineRng, RekeySigner, RsaSigner};
use crate::engine::{own_vendor_id, GmClass, Millis, PeerVendor, Transmit};
use crate::group::{GroupKeys, Ipv4Prefix};
use crate::ike::{
    decrypt_message, encrypt_body, hashed_chain, hashed_raw_chain, phase1_iv, phase2_iv,
    verify_hashed_chain, AuthKind, CryptError, Decrypted, Phase1Keys, Suite, Transcript,
};
use crate::rekey::{GroupRuntime, GroupState, RekeyPolicy, RekeyReason};

/// Bounds on responder state (the half-open flood defence).
#[derive(Debug, Clone, Copy)]
pub struct KsLimits {
    /// Most phase 1 exchanges not yet authenticated, all peers together.
    pub max_half_open: usize,
    /// Most half-open exchanges from one source address.
    pub max_half_open_per_source: usize,
    /// A half-open exchange is forgotten after this long.
    pub half_open_timeout_ms: u64,
    /// A GROUPKEY-PULL not finished after this long is forgotten.
    pub pull_timeout_ms: u64,
}

impl Default for KsLimits {
    fn default() -> Self {
        Self {
            max_half_open: 20_000,
            max_half_open_per_source: 64,
            half_open_timeout_ms: 30_000,
            pull_timeout_ms: 30_000,
        }
    }
}

/// Who may register to a group. Both lists empty: any authenticated GM.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    /// Source address ranges.
    pub addresses: Vec<Ipv4Prefix>,
    /// Phase 1 identities (as [`identity_string`] renders them).
    pub identities: Vec<String>,
}

impl Authorization {
    fn allows(&self, addr: IpAddr, identity: &str) -> bool {
        if self.addresses.is_empty() && self.identities.is_empty() {
            return true;
        }
        let by_addr = match addr {
            IpAddr::V4(a) => self.addresses.iter().any(|p| p.contains(a)),
            IpAddr::V6(_) => false,
        };
        by_addr || self.identities.iter().any(|i| i == identity)
    }
}

/// What authenticated a peer in phase 1. A GROUPKEY-PULL for a group
/// succeeds only when the peer's credential is one the group accepts
/// ([`GroupAuth`]): holding one group's PSK never opens another group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// The pre-shared key of the group with this identity number.
    GroupPsk(u32),
    /// Entry `n` of the configuration file's keyring (`[[psk]]`, in file order).
    Keyring(usize),
    /// A certificate chaining to the configured CAs.
    Certificate,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GroupPsk(g) => write!(f, "psk of group {g}"),
            Self::Keyring(i) => write!(f, "keyring entry psk[{i}]"),
            Self::Certificate => f.write_str("certificate"),
        }
    }
}

/// How a group's GMs authenticate in phase 1, and so which credentials
/// its GROUPKEY-PULL accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupAuth {
    /// Pre-shared key: the group's own PSK when it has one (a
    /// [`PskEntry`] with [`Credential::GroupPsk`] of its identity), else
    /// the configuration file's keyring.
    #[default]
    Psk,
    /// Certificates from the configured CAs only.
    Certificate,
}

/// One pre-shared key the phase 1 responder may try for a source address.
#[derive(Clone)]
pub struct PskEntry {
    /// Whose key it is.
    pub credential: Credential,
    /// Source ranges it applies to; empty: any source.
    pub ranges: Vec<Ipv4Prefix>,
    /// The key.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskEntry")
            .field("credential", &self.credential)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

impl PskEntry {
    /// How specifically the entry covers `a` (its longest covering range;
    /// 0 for an entry without ranges), or None when it does not.
    fn specificity(&self, a: Ipv4Addr) -> Option<u8> {
        if self.ranges.is_empty() {
            return Some(0);
        }
        self.ranges
            .iter()
            .filter(|p| p.contains(a))
            .map(|p| p.len)
            .max()
    }
}

/// Most pre-shared keys the responder tries for one source address in
/// main mode message 5 (the most specific ranges first). Each try costs
/// a key derivation and one decryption of a short message, a small
/// fraction of the Diffie-Hellman already done.
pub const MAX_PSK_CANDIDATES: usize = 16;

/// One group the key server serves.
#[derive(Debug, Clone)]
pub struct KsGroup {
    /// Group name.
    pub name: String,
    /// Current keys and policy.
    pub keys: GroupKeys,
    /// Who may register.
    pub authorization: Authorization,
    /// Which phase 1 credentials the group accepts.
    pub authentication: GroupAuth,
    /// How and when the group is rekeyed.
    pub rekey: RekeyPolicy,
    /// Key state persisted before a restart (None: start from `keys`).
    pub resume: Option<GroupState>,
    /// `sa d3p window`: IP-D3P on with this window (ms), carried to GMs in
    /// the GAP of every registration and rekey (seed section 1).
    pub d3p_window_ms: Option<u32>,
}

/// Key server configuration.
pub struct KsConfig {
    /// The KS's own phase 1 identity.
    pub identity: Ipv4Addr,
    /// Groups by identity number.
    pub groups: Vec<KsGroup>,
    /// Pre-shared keys: the keyring's and each PSK group's, with the
    /// source ranges each applies to.
    pub psks: Vec<PskEntry>,
    /// CAs for certificate authentication (None: certificates refused).
    pub ca: Option<CertificateAuthority>,
    /// The KS's certificate (DER) and key for certificate authentication.
    pub certificate: Option<(Vec<u8>, RsaSigner)>,
    /// Operator tags marking ASR 9000 GMs by address.
    pub asr9000: Vec<Ipv4Prefix>,
    /// Limits.
    pub limits: KsLimits,
    /// Phase 1 lifetime the KS accepts at most; longer offers are answered with this.
    pub max_phase1_life_secs: u32,
    /// Group 19 implementation (see [`DhBackend`]).
    pub dh_backend: DhBackend,
    /// Emit [`KsEvent::Phase1Keys`] for the operator's key log. Off by default.
    pub export_keys: bool,
    /// The rekey-signing key (None: groups are never rekeyed).
    pub rekey_signer: Option<RekeySigner>,
    /// Its name, as `show crypto gkm ks policy` prints it.
    pub rekey_key_name: String,
}

/// What a registration told the KS about a GM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GmRecord {
    /// Phase 1 identity.
    pub identity: String,
    /// Source address and port.
    pub addr: SocketAddr,
    /// Group identity number.
    pub group_id: u32,
    /// Class.
    pub class: GmClass,
    /// Reported version (GKM VID), if any.
    pub version: Option<GdoiVersion>,
    /// Reported features.
    pub features: FeatureBits,
    /// Sender IDs granted.
    pub sids: Vec<u32>,
    /// Registration time.
    pub registered_at: Millis,
}

/// Why the KS refused or dropped something; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not a well-formed ISAKMP message.
    Malformed,
    /// No acceptable proposal.
    NoProposal,
    /// Aggressive mode or another exchange GKM does not serve.
    UnsupportedExchange,
    /// No PSK for the peer, wrong PSK, bad signature.
    AuthenticationFailed,
    /// Untrusted, expired or mismatching certificate.
    InvalidCertificate,
    /// A HASH payload of a protected exchange does not verify.
    InvalidHash,
    /// The group does not exist.
    UnknownGroup,
    /// The GM is not authorised for the group.
    Unauthorized,
    /// The GM's phase 1 credential is not one the group accepts (another
    /// group's PSK, a keyring entry for a group with its own PSK, a
    /// certificate for a PSK group or a PSK for a certificate group).
    CredentialNotAccepted,
    /// A message for an exchange the KS does not know or has finished.
    UnknownExchange,
    /// A repeated message; the cached answer was resent.
    Retransmit,
    /// Dropped by the half-open caps.
    HalfOpenLimit,
    /// A half-open exchange whose initiator had not yet proved its address
    /// (no message 3) was forgotten to make room for a newer one at the
    /// global half-open cap.
    HalfOpenEvicted,
    /// A rekey ACK of a kind the group's `rekey acknowledgement` option
    /// does not accept (seed Table 2).
    AckNotAccepted,
    /// A rekey ACK that does not verify or parse.
    BadAck,
}

/// Something the caller should record or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KsEvent {
    /// Phase 1 completed.
    Phase1Established {
        /// Peer.
        peer: SocketAddr,
        /// Its identity.
        identity: String,
        /// What authenticated it.
        credentials: Vec<Credential>,
    },
    /// Phase 1 keys for the key log (only with `export_keys`): Wireshark's
    /// `ikev1_decryption_table` wants the initiator cookie and the cipher key.
    Phase1Keys {
        /// Initiator cookie.
        initiator_cookie: [u8; 8],
        /// The phase 1 cipher key.
        enc_key: Zeroizing<Vec<u8>>,
    },
    /// A GM registered (PULL message 4 sent).
    Registered(GmRecord),
    /// A rekey is prepared: persist [`KeyServer::group_state`], then call
    /// [`KeyServer::rekey_persisted`]. Nothing is sent before that.
    RekeyPrepared {
        /// Group.
        group_id: u32,
        /// Its new SEQ.
        seq: u32,
        /// Why.
        reason: RekeyReason,
    },
    /// A GROUPKEY-PUSH went out (persist the group state again: GMs now
    /// hold the new KEK).
    RekeySent {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// Why.
        reason: RekeyReason,
        /// Datagrams queued (one per GM, or one multicast).
        datagrams: usize,
    },
    /// Every GM a unicast rekey was sent to has acknowledged it.
    RekeyAcked {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// GMs.
        gms: usize,
        /// From preparing the rekey to the last ACK.
        elapsed_ms: u64,
    },
    /// The ACK wait of a unicast rekey ended.
    RekeyRoundClosed {
        /// Group.
        group_id: u32,
        /// SEQ.
        seq: u32,
        /// GMs that acknowledged.
        acked: usize,
        /// GMs that missed it (and stay).
        missed: usize,
        /// GMs removed for their third consecutive miss.
        removed: usize,
    },
    /// A GM missed its third consecutive unicast rekey and was removed
    /// from the GM database; it gets no rekeys until it registers again.
    GmRemoved {
        /// Group.
        group_id: u32,
        /// Its identity.
        identity: String,
        /// Its address.
        addr: SocketAddr,
        /// The SEQ of the rekey it missed last.
        seq: u32,
    },
    /// A message was refused; `notify` says what was answered, if anything.
    Rejected {
        /// Peer.
        peer: SocketAddr,
        /// Why.
        reason: Reject,
        /// Notification sent back.
        notify: Option<NotifyType>,
    },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KsCounters {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Phase 1 SAs established.
    pub phase1_established: u64,
    /// Registrations completed.
    pub registrations: u64,
    /// Refusals by reason.
    pub rejects: HashMap<Reject, u64>,
    /// Rekeys sent (all groups).
    pub rekeys_sent: u64,
    /// GROUPKEY-PUSH datagrams queued, retransmissions included.
    pub push_datagrams: u64,
    /// GROUPKEY-PUSH retransmissions.
    pub push_retransmits: u64,
    /// ACKs recorded (for the last SEQ sent to that GM).
    pub acks_recorded: u64,
    /// Valid ACKs not recorded (late, duplicate, unknown GM).
    pub acks_ignored: u64,
    /// GMs removed after 3 consecutive missed rekeys.
    pub gms_removed: u64,
}

impl KsCounters {
    /// The count for one reason.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejects.get(&r).copied().unwrap_or(0)
    }
}

enum P1State {
    /// MM2 sent; waiting for MM3.
    SentSa,
    /// MM4 sent; waiting for MM5. The keys are derived when MM5 comes:
    /// with pre-shared keys, each candidate PSK for the source is tried.
    SentKe {
        gxy: Zeroizing<Vec<u8>>,
        gxi: Vec<u8>,
        gxr: Vec<u8>,
        iv: [u8; 16],
    },
    /// MM6 sent.
    Established {
        keys: Phase1Keys,
        last_block: [u8; 16],
        identity: String,
        /// What authenticated the peer (several only when groups share a PSK).
        credentials: Vec<Credential>,
        expires: Millis,
    },
}

struct P1Sa {
    peer: SocketAddr,
    icky: [u8; 8],
    rcky: [u8; 8],
    suite: Suite,
    doi: Doi,
    sai_b: Vec<u8>,
    vendor: PeerVendor,
    state: P1State,
    created: Millis,
    /// The last peer datagram and our answer, for retransmissions.
    last_in: Vec<u8>,
    last_out: Vec<u8>,
    ni_b: Vec<u8>,
    nr_b: Vec<u8>,
    pulls: HashMap<u32, Pull>,
}

enum PullState {
    SentMsg2 { group_idx: usize },
    Done,
}

struct Pull {
    ni_b: Vec<u8>,
    nr_b: Vec<u8>,
    iv: [u8; 16],
    state: PullState,
    started: Millis,
    last_in: Vec<u8>,
    last_out: Vec<u8>,
}

/// The key server engine.
pub struct KeyServer {
    pub(crate) cfg: KsConfig,
    pub(crate) rng: Box<dyn EngineRng>,
    sas: HashMap<[u8; 16], P1Sa>,
    /// (peer, initiator cookie) → responder cookie, for MM1 retransmissions.
    by_icky: HashMap<(SocketAddr, [u8; 8]), [u8; 8]>,
    /// Established phase 1 SAs by peer identity, for INITIAL-CONTACT.
    by_identity: HashMap<String, Vec<[u8; 16]>>,
    half_open: usize,
    half_open_by_source: HashMap<IpAddr, usize>,
    /// Exchanges that sent message 2, oldest first (entries that moved on
    /// or are gone are skipped when met): at the global cap the oldest
    /// whose initiator never answered is forgotten for a new one.
    unproven: VecDeque<[u8; 16]>,
    pub(crate) next_sid: HashMap<u32, u32>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<KsEvent>,
    pub(crate) counters: KsCounters,
    next_sweep: Millis,
    /// Each group's SA and KD payload bodies, encoded once: every GM of a
    /// group receives the same octets. Rebuilt whenever keys change and
    /// once per sweep (remaining lifetimes).
    pub(crate) wire: Vec<GroupWire>,
    /// When `wire` was encoded.
    wire_at: Millis,
    /// Per-group rekey state, same order as `cfg.groups`.
    pub(crate) runtime: Vec<GroupRuntime>,
    pub(crate) rekey_state_ready: bool,
}

/// A group's policy and keys as payload bodies: the SA without and with
/// KEK_ACK_REQUESTED (seed Table 1 picks one per GM class), and the KD.
pub(crate) struct GroupWire {
    keys: GroupKeys,
    sa: [Vec<u8>; 2],
    kd: Zeroizing<Vec<u8>>,
}

impl GroupWire {
    pub(crate) fn encode(keys: GroupKeys, d3p_window_ms: Option<u32>) -> Self {
        let mut plain = Vec::with_capacity(256);
        let mut with_ack = Vec::with_capacity(256);
        let mut kd = Zeroizing::new(Vec::with_capacity(512));
        let material = keys.kek_material();
        // Encoding our own well-formed policy cannot fail short of a group
        // larger than the codec limits, which configuration validation excludes.
        let mut sa = keys.to_sa();
        sa.gap = ks_gap(d3p_window_ms, None);
        let _ = Sa::Gdoi(sa).emit(&mut plain);
        let mut sa = keys.to_sa_with(Some(gkm_wire::consts::AckRequested::REKEY_ACK_KEK_SHA256));
        sa.gap = ks_gap(d3p_window_ms, None);
        let _ = Sa::Gdoi(sa).emit(&mut with_ack);
        let _ = keys.to_kd(&material, None).emit(&mut kd);
        Self {
            keys,
            sa: [plain, with_ack],
            kd,
        }
    }
}

/// The GAP a KS sends: IP-D3P (type POSIX-TIME-MSEC and the window) when
/// the group has it, and the activation time delay when it applies; none
/// when neither.
pub(crate) fn ks_gap(d3p_window_ms: Option<u32>, atd_secs: Option<u16>) -> Option<Gap<'static>> {
    (d3p_window_ms.is_some() || atd_secs.is_some()).then(|| Gap {
        activation_time_delay: atd_secs,
        d3p_type: d3p_window_ms.map(|_| gkm_wire::consts::D3pType::POSIX_TIME_MSEC),
        d3p_window_msec: d3p_window_ms,
        ..Gap::default()
    })
}

/// How often expired state is swept.
pub const SWEEP_INTERVAL_MS: u64 = 1000;

/// Most GROUPKEY-PULL exchanges one phase 1 SA may have open at once.
pub const MAX_PULLS_PER_SA: usize = 8;

fn cookies(i: &[u8; 8], r: &[u8; 8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..8].copy_from_slice(i);
    c[8..].copy_from_slice(r);
    c
}

/// A payload's type and body, copied out of a decrypted message.
type OwnedPayload = (PayloadType, Vec<u8>);

/// Decrypts a protected message of an exchange and checks its leading HASH
/// (prf over M-ID, `prefix` and every octet after the HASH payload).
/// Returns the plaintext and the payloads after the HASH.
fn open_protected(
    suite: Suite,
    keys: &Phase1Keys,
    data: &[u8],
    iv: &[u8; 16],
    prefix: &[&[u8]],
) -> Result<(Decrypted, Vec<OwnedPayload>), Reject> {
    let dec =
        decrypt_message(data, suite.cipher, &keys.enc_key, iv).map_err(|_| Reject::Malformed)?;
    let raws = match verify_hashed_chain(
        suite.prf,
        &keys.skeyid_a,
        &dec.header,
        &dec.plaintext,
        prefix,
    ) {
        Ok(r) => r
            .iter()
            .map(|r| (r.payload_type, r.body.to_vec()))
            .collect(),
        Err(CryptError::BadHash) | Err(CryptError::NoHash) => return Err(Reject::InvalidHash),
        Err(_) => return Err(Reject::Malformed),
    };
    Ok((dec, raws))
}

/// A peer-chosen name as GKM shows, logs and stores it: control, format
/// (bidi) and other invisible characters escaped as `\u{..}`, so an
/// identity can neither forge a log line nor reorder what a page shows.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
        if invisible || c == '\\' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// How an identity is shown and matched in authorization lists (peer
/// text made [`printable`]).
pub fn identity_string(id: &Identity<'_>) -> String {
    match id {
        Identity::Ipv4Addr(a) => a.to_string(),
        Identity::Ipv6Addr(a) => a.to_string(),
        Identity::Fqdn(b) | Identity::UserFqdn(b) => printable(&String::from_utf8_lossy(b)),
        other => {
            let mut v = Vec::new();
            other.emit_data(&mut v);
            format!(
                "{}:{}",
                other.id_type(),
                v.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    }
}

impl KeyServer {
    /// A key server with its configuration and randomness.
    pub fn new(cfg: KsConfig, rng: Box<dyn EngineRng>) -> Self {
        let wire = cfg
            .groups
            .iter()
            .map(|g| GroupWire::encode(g.keys.clone(), g.d3p_window_ms))
            .collect();
        let runtime = cfg.groups.iter().map(|_| GroupRuntime::default()).collect();
        Self {
            wire,
            runtime,
            rekey_state_ready: false,
            wire_at: 0,
            cfg,
            rng,
            sas: HashMap::new(),
            by_icky: HashMap::new(),
            by_identity: HashMap::new(),
            half_open: 0,
            half_open_by_source: HashMap::new(),
            unproven: VecDeque::new(),
            next_sid: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: KsCounters::default(),
            next_sweep: 0,
        }
    }

    /// This key server's phase 1 identity (its address), as GMs see it.
    pub fn identity(&self) -> Ipv4Addr {
        self.cfg.identity
    }

    /// The groups served.
    pub fn groups(&self) -> &[KsGroup] {
        &self.cfg.groups
    }

    /// Counters.
    pub fn counters(&self) -> &KsCounters {
        &self.counters
    }

    /// Phase 1 exchanges in progress or established (state size, for tests and metrics).
    pub fn phase1_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Half-open phase 1 exchanges.
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<KsEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called: state is swept when its
    /// earliest deadline comes, at most once per [`SWEEP_INTERVAL_MS`], so
    /// the cost stays O(1) per datagram and O(n) per second at worst; an
    /// idle KS with established SAs wakes only when one expires.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let sweep = (!self.sas.is_empty()).then_some(self.next_sweep);
        [sweep, self.rekey_deadline()].into_iter().flatten().min()
    }

    /// Re-encodes each group's registration payloads (keys changed, or
    /// remaining lifetimes moved on).
    pub(crate) fn refresh_wire(&mut self, now: Millis) {
        self.wire_at = now;
        for gi in 0..self.cfg.groups.len() {
            let Some(keys) = self.registration_keys(gi, now) else {
                continue;
            };
            let d3p = self.cfg.groups.get(gi).and_then(|g| g.d3p_window_ms);
            if let Some(w) = self.wire.get_mut(gi) {
                *w = GroupWire::encode(keys, d3p);
            }
        }
    }

    /// The seed's GM class of a peer: an operator tag marks ASR 9000; a
    /// Cisco Vendor ID marks Cisco; anything else is non-Cisco.
    fn classify(&self, from: SocketAddr, vendor: &PeerVendor) -> GmClass {
        match from.ip() {
            IpAddr::V4(a) if self.cfg.asr9000.iter().any(|p| p.contains(a)) => GmClass::Asr9000,
            _ if vendor.cisco => GmClass::Cisco,
            _ => GmClass::NonCisco,
        }
    }

    /// Expires half-open exchanges, finished PULLs and phase 1 SAs past their lifetime.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.rekey_timeout(now);
        if now < self.next_sweep {
            return;
        }
        let limits = self.cfg.limits;
        let mut gone = Vec::new();
        let mut earliest = Millis::MAX;
        for (k, sa) in &mut self.sas {
            match &sa.state {
                P1State::Established { expires, .. } => {
                    if now >= *expires {
                        gone.push(*k);
                        continue;
                    }
                    earliest = earliest.min(*expires);
                    sa.pulls
                        .retain(|_, p| now < p.started + limits.pull_timeout_ms);
                    for p in sa.pulls.values() {
                        earliest = earliest.min(p.started + limits.pull_timeout_ms);
                    }
                }
                _ => {
                    let deadline = sa.created + limits.half_open_timeout_ms;
                    if now >= deadline {
                        gone.push(*k);
                    } else {
                        earliest = earliest.min(deadline);
                    }
                }
            }
        }
        for k in gone {
            self.remove_sa(&k);
        }
        self.next_sweep = earliest.max(now + SWEEP_INTERVAL_MS);
    }

    /// New state with a deadline: the sweep comes no later than it.
    fn sweep_by(&mut self, deadline: Millis) {
        self.next_sweep = self.next_sweep.min(deadline);
    }

    fn remove_sa(&mut self, k: &[u8; 16]) {
        if let Some(sa) = self.sas.remove(k) {
            self.by_icky.remove(&(sa.peer, sa.icky));
            if let P1State::Established { identity, .. } = &sa.state {
                if let Some(keys) = self.by_identity.get_mut(identity) {
                    keys.retain(|x| x != k);
                    if keys.is_empty() {
                        self.by_identity.remove(identity);
                    }
                }
            }
            if !matches!(sa.state, P1State::Established { .. }) {
                self.half_open = self.half_open.saturating_sub(1);
                if let Some(n) = self.half_open_by_source.get_mut(&sa.peer.ip()) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.half_open_by_source.remove(&sa.peer.ip());
                    }
                }
            }
        }
    }

    pub(crate) fn reject(&mut self, peer: SocketAddr, reason: Reject, notify: Option<NotifyType>) {
        *self.counters.rejects.entry(reason).or_insert(0) += 1;
        self.events.push_back(KsEvent::Rejected {
            peer,
            reason,
            notify,
        });
    }

    fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(Transmit { to, payload });
    }

    /// An unprotected Informational notification (phase 1 not usable).
    fn notify_clear(
        &mut self,
        to: SocketAddr,
        icky: [u8; 8],
        rcky: [u8; 8],
        doi: Doi,
        t: NotifyType,
    ) {
        let header = IsakmpHeader {
            initiator_cookie: icky,
            responder_cookie: rcky,
            next_payload: PayloadType::NOTIFICATION,
            exchange_type: ExchangeType::INFORMATIONAL,
            flags: Flags::default(),
            message_id: 0,
            length: 0,
        };
        let n = Notification {
            doi,
            protocol_id: ProtocolId::ISAKMP.0,
            notify_type: t,
            spi: &[],
            data: &[],
        };
        if let Ok(b) = (Message {
            header,
            body: Body::Payloads(vec![Payload::Notification(n)]),
        })
        .to_vec()
        {
            self.send(to, b);
        }
    }

    /// Ends a phase 1 exchange that failed: tells the peer in the clear
    /// (it may not share our keys), forgets the SA, counts the reason.
    fn fail_phase1(&mut self, key: [u8; 16], from: SocketAddr, reason: Reject, notify: NotifyType) {
        if let Some(sa) = self.sas.get(&key) {
            let (icky, rcky, doi) = (sa.icky, sa.rcky, sa.doi);
            self.notify_clear(from, icky, rcky, doi, notify);
        }
        self.remove_sa(&key);
        self.reject(from, reason, Some(notify));
    }

    /// A protected Informational notification: HDR*, HASH(1), N.
    fn notify_protected(&mut self, key: [u8; 16], t: NotifyType) {
        let Some(sa) = self.sas.get(&key) else { return };
        let P1State::Established {
            keys, last_block, ..
        } = &sa.state
        else {
            return;
        };
        let mid = self.rng.next_u32() | 1;
        let spi = key;
        let n = Notification {
            doi: Doi::GDOI,
            protocol_id: ProtocolId::ISAKMP.0,
            notify_type: t,
            spi: &spi,
            data: &[],
        };
        let Ok((_, body)) = hashed_chain(
            sa.suite.prf,
            &keys.skeyid_a,
            mid,
            &[],
            &[Payload::Notification(n)],
        ) else {
            return;
        };
        let header = IsakmpHeader {
            initiator_cookie: sa.icky,
            responder_cookie: sa.rcky,
            next_payload: PayloadType::HASH,
            exchange_type: ExchangeType::INFORMATIONAL,
            flags: Flags::default(),
            message_id: mid,
            length: 0,
        };
        let iv = phase2_iv(sa.suite.prf, last_block, mid);
        if let Ok((bytes, _)) = encrypt_body(header, body, sa.suite.cipher, &keys.enc_key, &iv) {
            let to = sa.peer;
            self.send(to, bytes);
        }
    }

    /// Refuses a protected message: a bad HASH is answered with a protected
    /// INVALID-HASH-INFORMATION; anything else is only counted.
    fn refuse_protected(&mut self, key: [u8; 16], from: SocketAddr, reason: Reject) {
        if reason == Reject::InvalidHash {
            self.notify_protected(key, NotifyType::INVALID_HASH_INFORMATION);
            self.reject(from, reason, Some(NotifyType::INVALID_HASH_INFORMATION));
        } else {
            self.reject(from, reason, None);
        }
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.counters.datagrams += 1;
        let header = match IsakmpHeader::parse(data) {
            Ok(h) => h,
            Err(_) => return self.reject(from, Reject::Malformed, None),
        };
        match header.exchange_type {
            ExchangeType::IDENTITY_PROTECTION => self.main_mode(now, from, &header, data),
            ExchangeType::GROUPKEY_PULL => self.pull(now, from, &header, data),
            ExchangeType::GROUPKEY_PUSH_ACK | ExchangeType::GKM_UNICAST_ACK => {
                if !self.rekey_state_ready {
                    self.init_rekey_state(now);
                }
                self.on_ack(now, from, &header, data)
            }
            ExchangeType::INFORMATIONAL => {}
            ExchangeType::AGGRESSIVE => {
                self.notify_clear(
                    from,
                    header.initiator_cookie,
                    header.responder_cookie,
                    Doi::IPSEC,
                    NotifyType::UNSUPPORTED_EXCHANGE_TYPE,
                );
                self.reject(
                    from,
                    Reject::UnsupportedExchange,
                    Some(NotifyType::UNSUPPORTED_EXCHANGE_TYPE),
                );
            }
            _ => self.reject(from, Reject::UnsupportedExchange, None),
        }
    }

    fn main_mode(&mut self, now: Millis, from: SocketAddr, header: &IsakmpHeader, data: &[u8]) {
        if header.responder_cookie == [0; 8] {
            return self.mm1(now, from, header, data);
        }
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let Some(sa) = self.sas.get(&key) else {
            return self.reject(from, Reject::UnknownExchange, None);
        };
        if sa.peer != from {
            return self.reject(from, Reject::UnknownExchange, None);
        }
        if sa.last_in == data {
            let out = sa.last_out.clone();
            self.send(from, out);
            return self.reject(from, Reject::Retransmit, None);
        }
        match sa.state {
            P1State::SentSa => self.mm3(now, from, key, data),
            P1State::SentKe { .. } => self.mm5(now, from, key, data),
            P1State::Established { .. } => self.reject(from, Reject::UnknownExchange, None),
        }
    }

    fn mm1(&mut self, now: Millis, from: SocketAddr, header: &IsakmpHeader, data: &[u8]) {
        if let Some(rcky) = self.by_icky.get(&(from, header.initiator_cookie)).copied() {
            let key = cookies(&header.initiator_cookie, &rcky);
            if let Some(sa) = self.sas.get(&key) {
                if sa.last_in == data {
                    let out = sa.last_out.clone();
                    self.send(from, out);
                    return self.reject(from, Reject::Retransmit, None);
                }
            }
            return self.reject(from, Reject::UnknownExchange, None);
        }
        let src_count = self
            .half_open_by_source
            .get(&from.ip())
            .copied()
            .unwrap_or(0);
        if src_count >= self.cfg.limits.max_half_open_per_source {
            return self.reject(from, Reject::HalfOpenLimit, None);
        }
        let Ok(msg) = Message::parse(data) else {
            return self.reject(from, Reject::Malformed, Some(NotifyType::PAYLOAD_MALFORMED));
        };
        let Some(payloads) = msg.payloads() else {
            return self.reject(from, Reject::Malformed, None);
        };
        let mut vendor = PeerVendor::default();
        let mut sa_payload = None;
        for p in payloads {
            match p {
                Payload::Sa(Sa::Phase1(s)) => sa_payload = Some(s),
                Payload::VendorId(v) => vendor.observe(v.0),
                _ => {}
            }
        }
        let Some(offer) = sa_payload else {
            self.notify_clear(
                from,
                header.initiator_cookie,
                [0; 8],
                Doi::IPSEC,
                NotifyType::PAYLOAD_MALFORMED,
            );
            return self.reject(from, Reject::Malformed, Some(NotifyType::PAYLOAD_MALFORMED));
        };
        let mut allowed = vec![AuthKind::Psk];
        if self.cfg.ca.is_some() && self.cfg.certificate.is_some() {
            allowed.push(AuthKind::RsaSig);
        }
        let chosen = offer.proposals.first().and_then(|prop| {
            prop.transforms.iter().find_map(|t| {
                Suite::from_transform(t, &allowed).map(|s| (prop.number, t.number, s))
            })
        });
        let Some((prop_no, tr_no, mut suite)) = chosen.filter(|_| offer.proposals.len() == 1)
        else {
            self.notify_clear(
                from,
                header.initiator_cookie,
                [0; 8],
                offer.doi,
                NotifyType::NO_PROPOSAL_CHOSEN,
            );
            return self.reject(
                from,
                Reject::NoProposal,
                Some(NotifyType::NO_PROPOSAL_CHOSEN),
            );
        };
        if self.half_open >= self.cfg.limits.max_half_open && !self.evict_unproven() {
            return self.reject(from, Reject::HalfOpenLimit, None);
        }
        suite.life_secs = suite.life_secs.min(self.cfg.max_phase1_life_secs);
        // SAi_b: the whole body of the initiator's SA payload, as sent.
        let sai_b = gkm_wire::payload::PayloadIter::new(
            msg.header.next_payload,
            data.get(28..).unwrap_or_default(),
        )
        .filter_map(Result::ok)
        .find(|r| r.payload_type == PayloadType::SA)
        .map(|r| r.body.to_vec())
        .unwrap_or_default();
        let rcky: [u8; 8] = loop {
            let c = rng::array(self.rng.as_mut());
            if c != [0; 8] {
                break c;
            }
        };
        let answer = Payload::Sa(Sa::Phase1(Phase1Sa {
            doi: offer.doi,
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![Proposal {
                number: prop_no,
                protocol_id: ProtocolId::ISAKMP,
                spi: &[],
                transforms: vec![suite.transform(tr_no)],
            }],
        }));
        let vid = own_vendor_id().to_bytes();
        let h = IsakmpHeader {
            responder_cookie: rcky,
            flags: Flags::default(),
            message_id: 0,
            ..*header
        };
        let Ok(out) = (Message {
            header: h,
            body: Body::Payloads(vec![answer, Payload::VendorId(VendorId(&vid))]),
        })
        .to_vec() else {
            return;
        };
        let key = cookies(&header.initiator_cookie, &rcky);
        self.sas.insert(
            key,
            P1Sa {
                peer: from,
                icky: header.initiator_cookie,
                rcky,
                suite,
                doi: offer.doi,
                sai_b,
                vendor,
                state: P1State::SentSa,
                created: now,
                last_in: data.to_vec(),
                last_out: out.clone(),
                ni_b: Vec::new(),
                nr_b: Vec::new(),
                pulls: HashMap::new(),
            },
        );
        self.by_icky.insert((from, header.initiator_cookie), rcky);
        self.unproven.push_back(key);
        if self.unproven.len() > 2 * self.cfg.limits.max_half_open + 64 {
            let sas = &self.sas;
            self.unproven.retain(|k| {
                sas.get(k)
                    .is_some_and(|sa| matches!(sa.state, P1State::SentSa))
            });
        }
        self.half_open += 1;
        self.sweep_by(now + self.cfg.limits.half_open_timeout_ms);
        *self.half_open_by_source.entry(from.ip()).or_insert(0) += 1;
        self.send(from, out);
    }

    /// At the global half-open cap: forgets the oldest exchange whose
    /// initiator never sent message 3 (it never proved it receives at its
    /// address: a forged message 1 looks like that). Exchanges past
    /// message 3 are kept. False when there is none to forget.
    ///
    /// IKEv1 main mode gives the responder no way to stay stateless until
    /// the initiator proves its address (message 3 carries neither the SA
    /// offer nor anything of message 1, and HASH_I covers the offer), so a
    /// forged flood costs bounded memory and, instead of locking real GMs
    /// out, only shortens how long an unanswered message 2 is remembered:
    /// at 28,000 forged messages a second and a 20,000 cap, 0.7 s, many
    /// round trips.
    fn evict_unproven(&mut self) -> bool {
        while let Some(k) = self.unproven.pop_front() {
            let Some(sa) = self.sas.get(&k) else {
                continue;
            };
            if !matches!(sa.state, P1State::SentSa) {
                continue;
            }
            let peer = sa.peer;
            self.remove_sa(&k);
            self.reject(peer, Reject::HalfOpenEvicted, None);
            return true;
        }
        false
    }

    /// Replaces the pre-shared keys. Exchanges past message 3 try the new
    /// set when their message 5 arrives, and established phase 1 SAs that
    /// a key now changed or gone made are ended, so a rotation, a clear or
    /// a switch to certificates leaves the old key opening nothing.
    pub fn set_psks(&mut self, psks: Vec<PskEntry>) {
        let changed: Vec<Credential> = self
            .cfg
            .psks
            .iter()
            .filter(|old| {
                !psks
                    .iter()
                    .any(|new| new.credential == old.credential && new.key == old.key)
            })
            .map(|e| e.credential)
            .collect();
        self.cfg.psks = psks;
        if changed.is_empty() {
            return;
        }
        let stale: Vec<[u8; 16]> = self
            .sas
            .iter()
            .filter(|(_, sa)| {
                matches!(&sa.state, P1State::Established { credentials, .. }
                    if credentials.iter().any(|c| changed.contains(c)))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.remove_sa(k);
        }
    }

    /// The PSKs to try for a source: every entry covering it, the most
    /// specific first (table order among equals), at most
    /// [`MAX_PSK_CANDIDATES`].
    fn psk_candidates(&self, addr: IpAddr) -> Vec<&PskEntry> {
        let IpAddr::V4(a) = addr else {
            return Vec::new();
        };
        let mut v: Vec<(u8, &PskEntry)> = self
            .cfg
            .psks
            .iter()
            .filter_map(|e| e.specificity(a).map(|l| (l, e)))
            .collect();
        v.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        v.truncate(MAX_PSK_CANDIDATES);
        v.into_iter().map(|(_, e)| e).collect()
    }

    /// Whether group `gi` accepts any of `credentials`.
    fn accepts(&self, gi: usize, credentials: &[Credential]) -> bool {
        let Some(g) = self.cfg.groups.get(gi) else {
            return false;
        };
        let id = g.keys.group_id;
        match g.authentication {
            GroupAuth::Certificate => credentials.contains(&Credential::Certificate),
            GroupAuth::Psk => {
                let own = Credential::GroupPsk(id);
                if self.cfg.psks.iter().any(|e| e.credential == own) {
                    credentials.contains(&own)
                } else {
                    credentials
                        .iter()
                        .any(|c| matches!(c, Credential::Keyring(_)))
                }
            }
        }
    }

    fn mm3(&mut self, _now: Millis, from: SocketAddr, key: [u8; 16], data: &[u8]) {
        let Ok(msg) = Message::parse(data) else {
            return self.reject(from, Reject::Malformed, Some(NotifyType::PAYLOAD_MALFORMED));
        };
        let (mut ke, mut ni) = (None, None);
        for p in msg.payloads().unwrap_or_default() {
            match p {
                Payload::KeyExchange(k) => ke = Some(k.0),
                Payload::Nonce(n) => ni = Some(n.0),
                _ => {}
            }
        }
        let Some(sa) = self.sas.get(&key) else { return };
        let suite = sa.suite;
        let (icky, rcky, doi) = (sa.icky, sa.rcky, sa.doi);
        let (Some(gxi), Some(ni)) = (ke, ni) else {
            self.notify_clear(from, icky, rcky, doi, NotifyType::PAYLOAD_MALFORMED);
            return self.reject(from, Reject::Malformed, Some(NotifyType::PAYLOAD_MALFORMED));
        };
        if gxi.len() != suite.group.public_len() || !(8..=256).contains(&ni.len()) {
            self.notify_clear(from, icky, rcky, doi, NotifyType::INVALID_KEY_INFORMATION);
            return self.reject(
                from,
                Reject::Malformed,
                Some(NotifyType::INVALID_KEY_INFORMATION),
            );
        }
        if suite.auth == AuthKind::Psk && self.psk_candidates(from.ip()).is_empty() {
            return self.fail_phase1(
                key,
                from,
                Reject::AuthenticationFailed,
                NotifyType::AUTHENTICATION_FAILED,
            );
        }
        let (dh, gxr) = suite.group.generate(self.rng.as_mut(), self.cfg.dh_backend);
        let Ok(gxy) = dh.shared(gxi) else {
            return self.fail_phase1(
                key,
                from,
                Reject::Malformed,
                NotifyType::INVALID_KEY_INFORMATION,
            );
        };
        let nr = rng::bytes(self.rng.as_mut(), 32);
        let iv = phase1_iv(&suite, gxi, &gxr);
        let mut payloads = vec![
            Payload::KeyExchange(KeyExchange(&gxr)),
            Payload::Nonce(Nonce(&nr)),
        ];
        if suite.auth == AuthKind::RsaSig {
            payloads.push(Payload::CertReq(CertReq {
                encoding: gkm_wire::consts::CertEncoding::X509_SIGNATURE,
                authority: &[],
            }));
        }
        let h = IsakmpHeader {
            flags: Flags::default(),
            message_id: 0,
            ..msg.header
        };
        let Ok(out) = (Message {
            header: h,
            body: Body::Payloads(payloads),
        })
        .to_vec() else {
            return;
        };
        let Some(sa) = self.sas.get_mut(&key) else {
            return;
        };
        sa.ni_b = ni.to_vec();
        sa.nr_b = nr;
        sa.state = P1State::SentKe {
            gxy,
            gxi: gxi.to_vec(),
            gxr,
            iv,
        };
        sa.last_in = data.to_vec();
        sa.last_out = out.clone();
        self.send(from, out);
    }

    fn mm5(&mut self, now: Millis, from: SocketAddr, key: [u8; 16], data: &[u8]) {
        let Some(sa) = self.sas.get(&key) else { return };
        let P1State::SentKe { gxy, gxi, gxr, iv } = &sa.state else {
            return;
        };
        let (icky, rcky, suite) = (sa.icky, sa.rcky, sa.suite);
        let derive = |psk: Option<&[u8]>| {
            Phase1Keys::derive(&suite, psk, &sa.ni_b, &sa.nr_b, gxy, &icky, &rcky)
        };
        // The keys, the decrypted message and what authenticated the peer.
        // A wrong PSK shows up here: the message does not decrypt to a
        // chain, or its HASH_I does not verify. With pre-shared keys every
        // candidate for the source is tried (groups may share ranges).
        let mut missing_id = false;
        let found: Option<(Phase1Keys, Decrypted, Vec<Credential>)> = match suite.auth {
            AuthKind::RsaSig => {
                let keys = derive(None);
                decrypt_message(data, suite.cipher, &keys.enc_key, iv)
                    .ok()
                    .map(|dec| (keys, dec, vec![Credential::Certificate]))
            }
            AuthKind::Psk => {
                let candidates = self.psk_candidates(from.ip());
                let mut found = None;
                for (i, entry) in candidates.iter().enumerate() {
                    if candidates
                        .get(..i)
                        .is_some_and(|before| before.iter().any(|e| e.key == entry.key))
                    {
                        continue;
                    }
                    let keys = derive(Some(&entry.key));
                    let Ok(dec) = decrypt_message(data, suite.cipher, &keys.enc_key, iv) else {
                        continue;
                    };
                    let (mut idii_b, mut hash) = (None, None);
                    for r in
                        gkm_wire::payload::PayloadIter::new(dec.header.next_payload, &dec.plaintext)
                            .filter_map(Result::ok)
                    {
                        match r.payload_type {
                            PayloadType::ID => idii_b = Some(r.body),
                            PayloadType::HASH => hash = Some(r.body),
                            _ => {}
                        }
                    }
                    let Some(idii_b) = idii_b else {
                        missing_id = true;
                        continue;
                    };
                    let verified = hash.is_some_and(|h| {
                        suite.prf.verify(
                            &keys.skeyid,
                            &[gxi, gxr, &icky, &rcky, &sa.sai_b, idii_b],
                            h,
                        )
                    });
                    if verified {
                        let credentials = candidates
                            .iter()
                            .filter(|e| e.key == entry.key)
                            .map(|e| e.credential)
                            .collect();
                        found = Some((keys, dec, credentials));
                        break;
                    }
                }
                found
            }
        };
        let Some((keys, dec, credentials)) = found else {
            let notify = if missing_id {
                NotifyType::INVALID_ID_INFORMATION
            } else {
                NotifyType::AUTHENTICATION_FAILED
            };
            return self.fail_phase1(key, from, Reject::AuthenticationFailed, notify);
        };
        let (gxi, gxr, sai_b) = (gxi.clone(), gxr.clone(), sa.sai_b.clone());
        let raws: Vec<RawPayload<'_>> =
            gkm_wire::payload::PayloadIter::new(dec.header.next_payload, &dec.plaintext)
                .filter_map(Result::ok)
                .collect();
        let mut id: Option<(&[u8], IdPayload<'_>)> = None;
        let (mut hash, mut sig, mut cert, mut initial_contact) = (None, None, None, false);
        let mut vendor = sa.vendor;
        for r in &raws {
            match Payload::parse(r.payload_type, r.body, SaLayout::Phase1) {
                Ok(Payload::Id(i)) => id = Some((r.body, i)),
                Ok(Payload::Hash(h)) => hash = Some(h.0),
                Ok(Payload::Signature(s)) => sig = Some(s.0),
                Ok(Payload::Cert(c)) => cert = Some(c.data),
                Ok(Payload::Notification(n)) => {
                    initial_contact |= n.notify_type == NotifyType::INITIAL_CONTACT
                }
                Ok(Payload::VendorId(v)) => vendor.observe(v.0),
                _ => {}
            }
        }
        let Some((idii_b, idii)) = id else {
            return self.fail_phase1(
                key,
                from,
                Reject::AuthenticationFailed,
                NotifyType::INVALID_ID_INFORMATION,
            );
        };
        let transcript = Transcript {
            gxi: &gxi,
            gxr: &gxr,
            cky_i: &icky,
            cky_r: &rcky,
            sai_b: &sai_b,
        };
        let authentic = match suite.auth {
            // Checked again on the ID payload that names the peer (the
            // candidate search looked at raw payloads).
            AuthKind::Psk => {
                hash.is_some_and(|h| keys.verify_hash_i(suite.prf, &transcript, idii_b, h))
            }
            AuthKind::RsaSig => {
                let (Some(ca), Some(cert), Some(sig)) = (self.cfg.ca.as_ref(), cert, sig) else {
                    return self.fail_phase1(
                        key,
                        from,
                        Reject::AuthenticationFailed,
                        NotifyType::AUTHENTICATION_FAILED,
                    );
                };
                let verified = match ca.verify(cert, now / 1000) {
                    Ok(v) => v,
                    Err(_) => {
                        return self.fail_phase1(
                            key,
                            from,
                            Reject::InvalidCertificate,
                            NotifyType::INVALID_CERTIFICATE,
                        );
                    }
                };
                let id_matches = match idii.identity {
                    Identity::DerAsn1Dn(dn) => dn == verified.subject_der.as_slice(),
                    Identity::Ipv4Addr(a) => IpAddr::V4(a) == from.ip(),
                    _ => false,
                };
                if !id_matches {
                    return self.fail_phase1(
                        key,
                        from,
                        Reject::InvalidCertificate,
                        NotifyType::INVALID_ID_INFORMATION,
                    );
                }
                verified
                    .key
                    .verify(&keys.hash_i(suite.prf, &transcript, idii_b), sig)
                    .is_ok()
            }
        };
        if !authentic {
            return self.fail_phase1(
                key,
                from,
                Reject::AuthenticationFailed,
                NotifyType::AUTHENTICATION_FAILED,
            );
        }
        let identity = identity_string(&idii.identity);
        // MM6: IDir, then HASH_R or CERT + SIG_R.
        let idir = IdPayload {
            protocol: idii.protocol,
            port: idii.port,
            identity: Identity::Ipv4Addr(self.cfg.identity),
        };
        let mut idir_b = Vec::new();
        if idir.emit(&mut idir_b).is_err() {
            return;
        }
        let hash_r = keys.hash_r(suite.prf, &transcript, &idir_b);
        let mut out_payloads = vec![Payload::Id(idir)];
        let sig_r;
        match suite.auth {
            AuthKind::Psk => out_payloads.push(Payload::Hash(gkm_wire::payload::Hash(&hash_r))),
            AuthKind::RsaSig => {
                let Some((cert_der, signer)) = self.cfg.certificate.as_ref() else {
                    return;
                };
                sig_r = match signer.sign(self.rng.as_mut(), &hash_r) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                out_payloads.push(Payload::Cert(Cert {
                    encoding: gkm_wire::consts::CertEncoding::X509_SIGNATURE,
                    data: cert_der,
                }));
                out_payloads.push(Payload::Signature(Signature(&sig_r)));
            }
        }
        let h = IsakmpHeader {
            flags: Flags::default(),
            message_id: 0,
            ..dec.header
        };
        let mut body = Vec::new();
        let Ok(first) = gkm_wire::payload::emit_chain(&out_payloads, &mut body) else {
            return;
        };
        let h = IsakmpHeader {
            next_payload: first,
            ..h
        };
        let Ok((out, last_block)) =
            encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
        else {
            return;
        };
        let keys = keys.clone();
        let expires = now + u64::from(suite.life_secs) * 1000;
        let peer_ip = from.ip();
        if let Some(sa) = self.sas.get_mut(&key) {
            sa.vendor = vendor;
            sa.state = P1State::Established {
                keys,
                last_block,
                identity: identity.clone(),
                credentials: credentials.clone(),
                expires,
            };
            sa.last_in = data.to_vec();
            sa.last_out = out.clone();
        }
        self.half_open = self.half_open.saturating_sub(1);
        if let Some(n) = self.half_open_by_source.get_mut(&peer_ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.half_open_by_source.remove(&peer_ip);
            }
        }
        if initial_contact {
            // RFC 2407 section 4.6.3.3: the peer has no other SAs with us;
            // drop old ones. Only those the same credential made: a PSK
            // identity is the peer's claim, and one group's GM must not
            // end another group's SAs by claiming its identity.
            let stale: Vec<[u8; 16]> = self
                .by_identity
                .get(&identity)
                .into_iter()
                .flatten()
                .filter(|k| **k != key)
                .filter(|k| {
                    self.sas.get(*k).is_some_and(|sa| {
                        matches!(&sa.state, P1State::Established { credentials: c, .. } if *c == credentials)
                    })
                })
                .copied()
                .collect();
            for k in &stale {
                self.remove_sa(k);
            }
        }
        self.by_identity
            .entry(identity.clone())
            .or_default()
            .push(key);
        self.counters.phase1_established += 1;
        if self.cfg.export_keys {
            if let Some(P1State::Established { keys, .. }) = self.sas.get(&key).map(|s| &s.state) {
                self.events.push_back(KsEvent::Phase1Keys {
                    initiator_cookie: icky,
                    enc_key: keys.enc_key.clone(),
                });
            }
        }
        self.events.push_back(KsEvent::Phase1Established {
            peer: from,
            identity,
            credentials,
        });
        self.send(from, out);
    }

    fn pull(&mut self, now: Millis, from: SocketAddr, header: &IsakmpHeader, data: &[u8]) {
        if !self.rekey_state_ready {
            self.init_rekey_state(now);
        }
        if now >= self.wire_at + 1000 {
            // Remaining lifetimes handed out stay within a second of the truth.
            self.refresh_wire(now);
        }
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let mid = header.message_id;
        let Some(sa) = self.sas.get(&key) else {
            return self.reject(from, Reject::UnknownExchange, None);
        };
        let P1State::Established {
            keys,
            last_block,
            identity,
            credentials,
            ..
        } = &sa.state
        else {
            return self.reject(from, Reject::UnknownExchange, None);
        };
        if sa.peer != from || mid == 0 {
            return self.reject(from, Reject::UnknownExchange, None);
        }
        let suite = sa.suite;
        if let Some(p) = sa.pulls.get(&mid) {
            if p.last_in == data {
                let out = p.last_out.clone();
                self.send(from, out);
                return self.reject(from, Reject::Retransmit, None);
            }
        }
        match sa.pulls.get(&mid).map(|p| &p.state) {
            None if sa.pulls.len() >= MAX_PULLS_PER_SA => {
                self.reject(from, Reject::HalfOpenLimit, None)
            }
            None => {
                // Message 1: HASH(1), Ni, ID.
                let iv = phase2_iv(suite.prf, last_block, mid);
                let (dec, raws) = match open_protected(suite, keys, data, &iv, &[]) {
                    Ok(opened) => opened,
                    Err(reason) => return self.refuse_protected(key, from, reason),
                };
                let (mut ni, mut group) = (None, None);
                for (t, body) in &raws {
                    match Payload::parse(*t, body, SaLayout::Gdoi) {
                        Ok(Payload::Nonce(n)) => ni = Some(n.0.to_vec()),
                        Ok(Payload::Id(i)) if i.identity.id_type() == IdType::KEY_ID => {
                            group = i.identity.group_id()
                        }
                        _ => {}
                    }
                }
                let Some(ni) = ni.filter(|n| (8..=128).contains(&n.len())) else {
                    self.notify_protected(key, NotifyType::PAYLOAD_MALFORMED);
                    return self.reject(
                        from,
                        Reject::Malformed,
                        Some(NotifyType::PAYLOAD_MALFORMED),
                    );
                };
                let Some(group_idx) = group.and_then(|g| self.serving_index(g)) else {
                    self.notify_protected(key, NotifyType::INVALID_ID_INFORMATION);
                    return self.reject(
                        from,
                        Reject::UnknownGroup,
                        Some(NotifyType::INVALID_ID_INFORMATION),
                    );
                };
                let identity = identity.clone();
                if !self.accepts(group_idx, credentials) {
                    self.notify_protected(key, NotifyType::INVALID_ID_INFORMATION);
                    return self.reject(
                        from,
                        Reject::CredentialNotAccepted,
                        Some(NotifyType::INVALID_ID_INFORMATION),
                    );
                }
                if !self.cfg.groups[group_idx]
                    .authorization
                    .allows(from.ip(), &identity)
                {
                    self.notify_protected(key, NotifyType::INVALID_ID_INFORMATION);
                    return self.reject(
                        from,
                        Reject::Unauthorized,
                        Some(NotifyType::INVALID_ID_INFORMATION),
                    );
                }
                let nr = rng::bytes(self.rng.as_mut(), 32);
                let Some(sa) = self.sas.get(&key) else { return };
                let class = self.classify(from, &sa.vendor);
                let group = &self.cfg.groups[group_idx];
                let with_ack = group.rekey.transport.is_unicast()
                    && group.rekey.ack.kek_ack_requested(class).is_some();
                let Some(wire) = self.wire.get(group_idx) else {
                    return;
                };
                let rest = [
                    (PayloadType::NONCE, nr.as_slice()),
                    (PayloadType::SA, wire.sa[usize::from(with_ack)].as_slice()),
                ];
                let Ok((first, body)) =
                    hashed_raw_chain(suite.prf, &keys.skeyid_a, mid, &[&ni], &rest)
                else {
                    return;
                };
                let h = IsakmpHeader {
                    next_payload: first,
                    flags: Flags::default(),
                    ..dec.header
                };
                let Ok((out, next_iv)) =
                    encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
                else {
                    return;
                };
                if let Some(sa) = self.sas.get_mut(&key) {
                    sa.pulls.insert(
                        mid,
                        Pull {
                            ni_b: ni,
                            nr_b: nr,
                            iv: next_iv,
                            state: PullState::SentMsg2 { group_idx },
                            started: now,
                            last_in: data.to_vec(),
                            last_out: out.clone(),
                        },
                    );
                }
                self.sweep_by(now + self.cfg.limits.pull_timeout_ms);
                self.send(from, out);
            }
            Some(PullState::SentMsg2 { group_idx }) => {
                let group_idx = *group_idx;
                let Some(p) = sa.pulls.get(&mid) else { return };
                let (dec, raws) =
                    match open_protected(suite, keys, data, &p.iv, &[&p.ni_b, &p.nr_b]) {
                        Ok(opened) => opened,
                        Err(reason) => return self.refuse_protected(key, from, reason),
                    };
                let sid_request = raws.iter().find_map(|(t, body)| {
                    match Payload::parse(*t, body, SaLayout::Gdoi) {
                        Ok(Payload::Gap(Gap {
                            sender_id_request: Some(n),
                            ..
                        })) => Some(n),
                        _ => None,
                    }
                });
                let identity = identity.clone();
                let (ni_b, nr_b) = (p.ni_b.clone(), p.nr_b.clone());
                let keys = keys.clone();
                let vendor = sa.vendor;
                let group_id = self.cfg.groups[group_idx].keys.group_id;
                let sids: Vec<u32> = match sid_request {
                    Some(n) if n > 0 => {
                        let next = self.next_sid.entry(group_id).or_insert(1);
                        let n = u32::from(n.min(16));
                        let v: Vec<u32> = (*next..next.saturating_add(n))
                            .filter(|s| *s < 0xffff)
                            .collect();
                        *next = next.saturating_add(n);
                        v
                    }
                    _ => Vec::new(),
                };
                let Some(wire) = self.wire.get(group_idx) else {
                    return;
                };
                let seq = wire.keys.seq.to_be_bytes();
                let built = if sids.is_empty() {
                    let rest = [
                        (PayloadType::SEQ, seq.as_slice()),
                        (PayloadType::KEY_DOWNLOAD, wire.kd.as_slice()),
                    ];
                    Some(hashed_raw_chain(
                        suite.prf,
                        &keys.skeyid_a,
                        mid,
                        &[&ni_b, &nr_b],
                        &rest,
                    ))
                } else {
                    let material = wire.keys.kek_material();
                    let kd = wire.keys.to_kd(&material, Some((16, sids.clone())));
                    let rest = [Payload::Seq(Seq(wire.keys.seq)), Payload::KeyDownload(kd)];
                    Some(hashed_chain(
                        suite.prf,
                        &keys.skeyid_a,
                        mid,
                        &[&ni_b, &nr_b],
                        &rest,
                    ))
                };
                let Some(Ok((first, body))) = built else {
                    return;
                };
                let h = IsakmpHeader {
                    next_payload: first,
                    flags: Flags::default(),
                    ..dec.header
                };
                let Ok((out, _)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
                else {
                    return;
                };
                if let Some(sa) = self.sas.get_mut(&key) {
                    if let Some(p) = sa.pulls.get_mut(&mid) {
                        p.state = PullState::Done;
                        p.last_in = data.to_vec();
                        p.last_out = out.clone();
                    }
                }
                let class = self.classify(from, &vendor);
                self.counters.registrations += 1;
                let record = GmRecord {
                    identity,
                    addr: from,
                    group_id,
                    class,
                    version: vendor.version(),
                    features: vendor.features(),
                    sids,
                    registered_at: now,
                };
                self.member_registered(group_idx, record.clone());
                self.events.push_back(KsEvent::Registered(record));
                self.send(from, out);
            }
            Some(PullState::Done) => self.reject(from, Reject::UnknownExchange, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_identities_cannot_forge_log_lines_or_reorder_text() {
        let evil =
            b"gm.example\n2026-12-01T00:00:00Z  INFO gkm_server: forged\x1b[31m\xe2\x80\xaeabc\\";
        let shown = identity_string(&Identity::Fqdn(evil));
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert!(shown.starts_with("gm.example\\u{a}2026"), "{shown}");
        assert!(shown.ends_with("\\u{202e}abc\\u{5c}"), "{shown}");
        assert_eq!(
            identity_string(&Identity::Fqdn(b"gm1.example.com")),
            "gm1.example.com"
        );
        assert_eq!(printable("plain ascii - ok"), "plain ascii - ok");
    }
}
