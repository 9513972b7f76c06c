//! The UDP driver around the key-server engine: receive, feed, drain. The
//! engine does all protocol work; this loop only moves datagrams and time.

use std::collections::HashMap;
use std::io::ErrorKind as IoErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Result};
use gkm_proto::ks::{GmRecord, KeyServer, KsEvent, Reject};
use gkm_proto::rekey::RekeyReason;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::OsRng;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

use crate::control::{Command, StoreWrite};
use crate::keylog::KeyLog;
use crate::udp;
use crate::views::{gm_row, status_of};
use crate::Startup;
use gkm_store::model::RekeyRecord;
use gkm_web::RekeyAccepted;
use tokio::sync::{mpsc, oneshot};

/// Wall-clock milliseconds, the engine's time.
pub use gkm_model::clock::unix_ms as now_ms;

/// Datagrams sent between two looks at the receive queue while flushing a
/// large fan-out.
const SENDS_PER_RECEIVE_PASS: usize = 256;

/// Fault injection for the crash-safety test: with this variable set, the
/// server stops right after persisting a rekey's SEQ and before sending
/// it, prints one line, and waits to be killed. Only in builds with the
/// `test-hooks` feature (the test suite's); a release build has none.
#[cfg(feature = "test-hooks")]
const FAULT_PAUSE_AFTER_SEQ_PERSIST: &str = "GKM_FAULT_PAUSE_AFTER_SEQ_PERSIST";

/// How long the GDOI loop waits for the store to confirm a write of keys.
const PERSIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The loop's channels: commands from the API, writes to the store.
pub struct Channels {
    /// Commands from the web layer.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Writes for the store writer.
    pub writes: mpsc::UnboundedSender<StoreWrite>,
}

/// The driver's state besides the engine.
struct Driver {
    writes: mpsc::UnboundedSender<StoreWrite>,
    /// Rekeys in progress: (group, SEQ) → record so far.
    rekeys: HashMap<(u32, u32), RekeyRecord>,
    maker: crate::groups::KeyMaker,
    config_psks: Vec<gkm_proto::ks::PskEntry>,
    group_psks: HashMap<u32, gkm_proto::ks::PskEntry>,
    policies: HashMap<u32, String>,
    key_log: Option<KeyLog>,
    /// Prepared rekeys whose state could not be persisted yet: retried, never sent unpersisted.
    unpersisted: Vec<(u32, u32)>,
    /// The crash-safety test's fault point (feature `test-hooks` only).
    #[cfg(feature = "test-hooks")]
    pause_after_persist: bool,
    /// Rate limit of the "refused" log lines, per reason.
    refusals: crate::logthrottle::Throttles<Reject>,
    /// When each group was last rekeyed through the API.
    last_manual_rekey: HashMap<u32, u64>,
    /// Cooperative key servers: what each group was started with, the
    /// pair PSKs, epochs waiting to be persisted.
    coop: crate::coop::CoopDriver,
    /// Prometheus metrics.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Least time between two rekeys of a group asked for through the API.
const MANUAL_REKEY_SPACING_MS: u64 = 1000;

impl Driver {
    /// Queues a group's keys and SEQ for the store, behind the GM rows
    /// queued before them.
    fn queue_state(
        &self,
        ks: &KeyServer,
        group_id: u32,
        done: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<()> {
        let state = ks
            .group_state(group_id)
            .ok_or_else(|| anyhow!("group {group_id} has no state"))?;
        let policy = self.policies.get(&group_id).cloned().unwrap_or_default();
        let plain = crate::state::encode_group(&policy, &state)?;
        self.writes
            .send(StoreWrite::GroupState {
                name: crate::state::secret_name(group_id),
                plain,
                done,
            })
            .map_err(|_| anyhow!("the store writer stopped"))
    }

    /// Makes a group's keys and SEQ durable (with every GM row queued
    /// before them) and waits for the store to confirm. The GDOI loop
    /// waits too: no registration can take keys the store does not hold.
    pub async fn persist(&self, ks: &KeyServer, group_id: u32) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.queue_state(ks, group_id, Some(done))?;
        match tokio::time::timeout(PERSIST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r.map_err(|e| anyhow!(e)),
            Ok(Err(_)) => Err(anyhow!("the store writer stopped")),
            Err(_) => Err(anyhow!(
                "the store did not confirm the write within {} s",
                PERSIST_TIMEOUT.as_secs()
            )),
        }
    }

    /// Writes a group's TEKs to the key log, if the operator turned it on.
    fn log_teks(&mut self, ks: &KeyServer, group_id: u32) {
        if let (Some(log), Some(s)) = (self.key_log.as_mut(), ks.group_state(group_id)) {
            if let Err(e) = log.teks(&s.keys) {
                warn!(error = %e, "key log write failed");
            }
        }
    }

    /// Persists then releases prepared rekeys; a failure keeps them for retry.
    async fn release(&mut self, ks: &mut KeyServer) {
        let waiting = std::mem::take(&mut self.unpersisted);
        for (group_id, seq) in waiting {
            match self.persist(ks, group_id).await {
                Ok(()) => {
                    #[cfg(feature = "test-hooks")]
                    if self.pause_after_persist {
                        eprintln!("fault point: paused after persisting SEQ {seq} of group {group_id}, before sending");
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    if let Err(e) = ks.rekey_persisted(now_ms(), group_id, seq) {
                        error!(group = group_id, seq, error = %e, "rekey not sent");
                    }
                }
                Err(e) => {
                    error!(group = group_id, seq, error = %format!("{e:#}"), "cannot persist the rekey state: the rekey waits (nothing is sent with an unpersisted SEQ)");
                    self.unpersisted.push((group_id, seq));
                }
            }
        }
    }

    /// Makes the COOP epochs the engine asked for durable, then lets it act
    /// on them; one the store does not take is retried (the engine stays
    /// secondary meanwhile).
    async fn persist_epochs(&mut self, ks: &mut KeyServer) {
        for (group_id, epoch) in self.coop.take_epochs() {
            let (done, rx) = oneshot::channel();
            let sent = self.writes.send(StoreWrite::GroupState {
                name: crate::coop::epoch_secret(group_id),
                plain: zeroize::Zeroizing::new(epoch.to_be_bytes().to_vec()),
                done: Some(done),
            });
            let r = match (sent, tokio::time::timeout(PERSIST_TIMEOUT, rx).await) {
                (Ok(()), Ok(Ok(r))) => r,
                _ => Err("the store writer did not confirm".into()),
            };
            match r {
                Ok(()) => ks.coop_epoch_persisted(now_ms(), group_id, epoch),
                Err(e) => {
                    error!(group = group_id, epoch, error = %e, "cannot persist the COOP epoch: it waits");
                    self.coop.retry_epoch(group_id, epoch);
                    return;
                }
            }
        }
    }

    async fn events(&mut self, ks: &mut KeyServer) {
        // Epochs are written once per call: one the store refuses waits for
        // the loop's retry timer, not a busy loop.
        let mut epochs_tried = false;
        loop {
            while let Some(e) = ks.poll_event() {
                self.event(ks, e);
            }
            if self.coop.has_epochs() && !epochs_tried {
                epochs_tried = true;
                self.persist_epochs(ks).await;
                continue;
            }
            if self.unpersisted.is_empty() {
                return;
            }
            let before = self.unpersisted.len();
            self.release(ks).await;
            if self.unpersisted.len() == before {
                return;
            }
        }
    }

    fn event(&mut self, ks: &KeyServer, e: KsEvent) {
        self.metrics.on_event(ks, &e);
        match e {
            // Timed in the metrics only.
            KsEvent::PullCompleted { .. } => {}
            KsEvent::Registered(r) => {
                let _ = self.writes.send(StoreWrite::Gms(vec![gm_row(&r, None)]));
                info!(
                    gm = %r.gm_identity, addr = %r.addr, group = r.group_id, class = %r.class,
                    version = %r.version.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    features = r.features.0, sids = ?r.sids, "GM registered"
                );
            }
            KsEvent::Phase1Established {
                peer,
                peer_identity,
                credentials,
                method,
                ..
            } => {
                let by: Vec<String> = credentials.iter().map(ToString::to_string).collect();
                debug!(%peer, identity = %peer_identity, credentials = ?by, ?method, "phase 1 established")
            }
            KsEvent::Phase1Keys {
                initiator_cookie,
                enc_key,
            } => {
                if let Some(log) = self.key_log.as_mut() {
                    if let Err(e) = log.phase1(&initiator_cookie, &enc_key) {
                        warn!(error = %e, "key log write failed");
                    }
                }
            }
            KsEvent::RekeyPrepared {
                group_id,
                seq,
                reason,
            } => {
                info!(group = group_id, seq, %reason, "rekey prepared");
                self.unpersisted.push((group_id, seq));
            }
            KsEvent::RekeySent {
                group_id,
                seq,
                reason,
                datagrams,
            } => {
                info!(group = group_id, seq, %reason, datagrams, "rekey sent");
                let record = RekeyRecord {
                    group: group_id,
                    seq,
                    reason: reason.to_string(),
                    started_at: i64::try_from(now_ms()).unwrap_or(i64::MAX),
                    sent: u32::try_from(datagrams).unwrap_or(u32::MAX),
                    acked: 0,
                    duration_ms: None,
                };
                let _ = self.writes.send(StoreWrite::Rekey(record.clone()));
                self.rekeys.insert((group_id, seq), record);
                // The KEK in use for pushes may have rolled: keep it too (no
                // new SEQ, so nothing waits for this write).
                if let Err(e) = self.queue_state(ks, group_id, None) {
                    error!(group = group_id, error = %format!("{e:#}"), "cannot persist the group state after a rekey");
                }
                self.log_teks(ks, group_id);
            }
            KsEvent::RekeyAcked {
                group_id,
                seq,
                gms,
                elapsed_ms,
            } => {
                info!(
                    group = group_id,
                    seq, gms, elapsed_ms, "rekey acknowledged by every GM"
                );
                if let Some(r) = self.rekeys.get_mut(&(group_id, seq)) {
                    r.acked = u32::try_from(gms).unwrap_or(u32::MAX);
                    r.duration_ms = i64::try_from(elapsed_ms).ok();
                    let _ = self.writes.send(StoreWrite::Rekey(r.clone()));
                }
            }
            KsEvent::RekeyRoundClosed {
                group_id,
                seq,
                acked,
                missed,
                removed,
            } => {
                info!(
                    group = group_id,
                    seq, acked, missed, removed, "rekey round closed"
                );
                if let Some(mut r) = self.rekeys.remove(&(group_id, seq)) {
                    r.acked = u32::try_from(acked).unwrap_or(u32::MAX);
                    let _ = self.writes.send(StoreWrite::Rekey(r));
                }
                // The GM database's ACK state, for the API and the dashboard.
                let rows = ks
                    .members(group_id)
                    .map(|m| gm_row(m, ks.member_ack_state(group_id, &m.gm_identity)))
                    .collect();
                let _ = self.writes.send(StoreWrite::Gms(rows));
            }
            KsEvent::GmRemoved {
                group_id,
                gm_identity,
                addr,
                seq,
            } => {
                warn!(group = group_id, gm = %gm_identity, %addr, seq, "GM removed from the GM database after 3 consecutive unacknowledged rekeys; it gets no rekeys until it registers again");
                let _ = self.writes.send(StoreWrite::GmState(
                    group_id,
                    gm_identity.clone(),
                    gkm_store::model::GmState::Removed,
                ));
            }
            KsEvent::Coop(gkm_proto::ks::CoopEvent::PersistGroupState {
                group_id,
                seq,
                adopted,
            }) => {
                if adopted {
                    info!(group = group_id, seq, "COOP: took the primary's keys");
                } else {
                    info!(group = group_id, seq, "COOP: SEQ raised above every peer's");
                }
                // Written behind the GM rows before it; a secondary sends
                // nothing under these keys, and a primary's raised SEQ is
                // persisted again with its next rekey before that leaves.
                if let Err(e) = self.queue_state(ks, group_id, None) {
                    error!(group = group_id, error = %format!("{e:#}"), "cannot persist the COOP group state");
                }
                self.log_teks(ks, group_id);
            }
            KsEvent::Coop(gkm_proto::ks::CoopEvent::GmLearned(r)) => {
                let _ = self.writes.send(StoreWrite::Gms(vec![gm_row(&r, None)]));
                debug!(gm = %r.gm_identity, group = r.group_id, "COOP: GM learned from a peer key server");
            }
            KsEvent::Coop(ev) => self.coop.event(ev),
            KsEvent::Rejected {
                peer,
                reason: Reject::Retransmit,
                ..
            } => debug!(%peer, "retransmission answered"),
            KsEvent::Rejected {
                peer,
                reason,
                notify,
                detail,
            } => {
                // One line per reason every 10 s under a flood, with the
                // count of those not written (the counters have them all).
                // The detail comes from the peer's message: Debug-escaped.
                if let Some(suppressed) = self.refusals.admit(reason) {
                    warn!(
                        %peer, reason = ?reason, notify = %notify.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                        detail = ?detail.as_deref().unwrap_or("-"), suppressed, "refused"
                    );
                }
            }
        }
    }
}

/// The GDOI socket and what sending on it needs.
struct Io {
    socket: UdpSocket,
    /// The same socket without tokio's readiness cache: while a fan-out
    /// runs without yielding, tokio's `try_io` keeps answering WouldBlock
    /// from its cache; this one asks the kernel each time.
    raw: std::net::UdpSocket,
    /// Multicast rekey TTL per group address, and the TTL set now.
    ttl: HashMap<Ipv4Addr, u8>,
    cur_ttl: u8,
    rx: udp::RecvBatch,
    /// The socket is IPv6 (dual-stack): IPv4 destinations are mapped.
    v6: bool,
    tx: Vec<(SocketAddr, Vec<u8>)>,
    tx_headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Io {
    /// Sends what the engine queued, a batch per system call, setting each
    /// group's multicast TTL. During a long fan-out it also takes in what
    /// arrived meanwhile, so ACKs are not dropped while pushes are still
    /// going out.
    async fn flush(&mut self, ks: &mut KeyServer) {
        let mut queued = 0usize;
        while let Some(t) = ks.poll_transmit() {
            queued += 1;
            if queued % SENDS_PER_RECEIVE_PASS == 0 {
                // Take in up to four times what was sent since the last look:
                // a pass that finds the queue momentarily empty must not leave
                // the backlog to grow past the socket buffer (ACKs would be lost).
                self.send_queued().await;
                self.receive_ready(ks, 4 * SENDS_PER_RECEIVE_PASS);
            }
            if let SocketAddr::V4(a) = t.to {
                if let Some(&want) = self.ttl.get(a.ip()) {
                    if want != self.cur_ttl {
                        // The TTL is the socket's: what is queued goes first.
                        self.send_queued().await;
                        if self.socket.set_multicast_ttl_v4(u32::from(want)).is_ok() {
                            self.cur_ttl = want;
                        }
                    }
                }
            }
            self.tx.push((t.to, t.payload));
            if self.tx.len() == udp::BATCH {
                self.send_queued().await;
            }
        }
        self.send_queued().await;
    }

    /// Sends the queued datagrams, waiting while the send buffer is full;
    /// a datagram the kernel refuses is logged and dropped.
    async fn send_queued(&mut self) {
        let mut from = 0;
        while from < self.tx.len() {
            let rest = self.tx.get(from..).unwrap_or_default();
            let (raw, headers, v6) = (&self.raw, &mut self.tx_headers, self.v6);
            // Through tokio's try_io: a full send buffer clears the write
            // readiness, so `writable()` waits for room instead of spinning.
            match self
                .socket
                .try_io(Interest::WRITABLE, || udp::send(raw, headers, rest, v6))
            {
                Ok(n) => from += n.max(1),
                Err(e) if e.kind() == IoErrorKind::WouldBlock => {
                    if let Err(e) = self.socket.writable().await {
                        warn!(error = %e, "GDOI socket not writable");
                        break;
                    }
                }
                Err(e) => {
                    if let Some((to, _)) = rest.first() {
                        warn!(peer = %to, error = %e, "send failed");
                    }
                    from += 1;
                }
            }
        }
        self.tx.clear();
    }

    /// Feeds up to `max` datagrams already queued on the socket.
    fn receive_ready(&mut self, ks: &mut KeyServer, max: usize) {
        let mut left = max;
        while left > 0 {
            match self.rx.receive(&self.raw, left) {
                Ok(n) if n > 0 => {
                    left = left.saturating_sub(n);
                    for (from, data) in self.rx.datagrams() {
                        ks.handle_datagram(now_ms(), from, data);
                    }
                }
                _ => return,
            }
        }
    }

    /// Feeds one batch of what the socket holds (clearing tokio's
    /// readiness when it holds nothing); how many datagrams.
    fn receive_batch(&mut self, ks: &mut KeyServer) -> std::io::Result<usize> {
        let rx = &mut self.rx;
        let raw = &self.raw;
        let n = self
            .socket
            .try_io(Interest::READABLE, || rx.receive(raw, udp::BATCH))?;
        for (from, data) in self.rx.datagrams() {
            ks.handle_datagram(now_ms(), from, data);
        }
        Ok(n)
    }
}

/// Runs the key server until Ctrl-C or SIGTERM. SIGUSR1 rekeys every group
/// now; SIGUSR2 sends every group a rekey replace.
pub async fn run(
    socket: UdpSocket,
    startup: Startup,
    members: Vec<GmRecord>,
    key_log: Option<KeyLog>,
    channels: Channels,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<()> {
    // Signals first: one that arrives while the start-up below awaits the
    // store must be queued, not take the default action (terminate).
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let Channels {
        mut commands,
        writes,
    } = channels;
    // ChaCha20 seeded once from the OS: cookies, nonces and message IDs
    // without a getrandom system call each (ring's ECDH draws from the OS itself).
    let rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| anyhow!("seeding the generator: {e}"))?;
    let group_ids: Vec<u32> = startup.ks.groups.iter().map(|g| g.keys.group_id).collect();
    let mut ks = KeyServer::new(startup.ks, Box::new(rng));
    let restored = members.len();
    for m in members {
        ks.restore_member(m);
    }
    if restored > 0 {
        info!(gms = restored, "GM database restored");
    }
    let mut driver = Driver {
        writes,
        rekeys: HashMap::new(),
        maker: startup.maker,
        config_psks: startup.config_psks,
        group_psks: startup.group_psks,
        policies: startup.policies,
        key_log,
        unpersisted: Vec::new(),
        #[cfg(feature = "test-hooks")]
        pause_after_persist: std::env::var_os(FAULT_PAUSE_AFTER_SEQ_PERSIST).is_some(),
        refusals: crate::logthrottle::Throttles::new(Duration::from_secs(10)),
        last_manual_rekey: HashMap::new(),
        coop: crate::coop::CoopDriver::new(
            startup.own,
            startup.coop_psks,
            match startup.syslog {
                Some(to) => Some(crate::syslog::Syslog::new(to)?),
                None => None,
            },
        ),
        metrics,
    };
    for (loaded, cfg) in startup.coop {
        driver.coop.start(&mut ks, loaded, cfg);
    }
    ks.handle_timeout(now_ms());
    // Every group's keys are in the store before the first GM can take them.
    for g in &group_ids {
        driver
            .persist(&ks, *g)
            .await
            .map_err(|e| anyhow!("cannot persist the keys of group {g}: {e:#}"))?;
    }
    for g in &startup.replace {
        if let Err(e) = ks.rekey_now(now_ms(), *g, RekeyReason::Replace) {
            error!(group = g, error = %e, "rekey replace at start failed");
        }
    }
    let raw: std::net::UdpSocket = socket2::SockRef::from(&socket).try_clone()?.into();
    raw.set_nonblocking(true)?;
    let v6 = socket.local_addr()?.is_ipv6();
    let mut io = Io {
        v6,
        socket,
        raw,
        ttl: startup.multicast_ttl,
        cur_ttl: 1,
        rx: udp::RecvBatch::default(),
        tx: Vec::with_capacity(udp::BATCH),
        tx_headers: udp::send_headers(),
    };
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        driver.events(&mut ks).await;
        io.flush(&mut ks).await;
        let retry = if driver.unpersisted.is_empty() && !driver.coop.has_epochs() {
            None
        } else {
            Some(now_ms() + 1000)
        };
        let wait = [ks.poll_timeout(), retry]
            .into_iter()
            .flatten()
            .min()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            r = io.socket.readable() => {
                r?;
                // Serve what is queued a batch at a time, answering each
                // batch at once (at most 8 batches before timers and
                // commands get their turn).
                for _ in 0..8 {
                    match io.receive_batch(&mut ks) {
                        Ok(0) => break,
                        Ok(_) => io.flush(&mut ks).await,
                        Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                ks.handle_timeout(now_ms());
                if !driver.unpersisted.is_empty() {
                    driver.release(&mut ks).await;
                }
            }
            Some(cmd) = commands.recv() => driver.command(&mut ks, &mut io.ttl, cmd).await,
            _ = usr1.recv() => manual(&mut ks, &group_ids, RekeyReason::Manual),
            _ = usr2.recv() => manual(&mut ks, &group_ids, RekeyReason::Replace),
            _ = term.recv() => {
                info!(registrations = ks.counters().registrations, "SIGTERM: shutting down");
                return Ok(());
            }
            _ = &mut shutdown => {
                info!(registrations = ks.counters().registrations, "shutting down");
                return Ok(());
            }
        }
    }
}

impl Driver {
    async fn command(&mut self, ks: &mut KeyServer, ttl: &mut HashMap<Ipv4Addr, u8>, cmd: Command) {
        match cmd {
            Command::Rekey {
                group,
                replace,
                reply,
            } => {
                let reason = if replace {
                    RekeyReason::Replace
                } else {
                    RekeyReason::Manual
                };
                let now = now_ms();
                let recent = self
                    .last_manual_rekey
                    .get(&group)
                    .is_some_and(|t| now < t + MANUAL_REKEY_SPACING_MS);
                let r = if ks.rekey_in_flight(group) || recent {
                    warn!(group, %reason, "rekey refused: the previous one is still in flight");
                    Err(gkm_web::RekeyRefused::InFlight(format!(
                        "group {group}: the previous rekey is still in flight (GMs have yet to acknowledge it, or it was asked for less than {} s ago); try again shortly",
                        MANUAL_REKEY_SPACING_MS / 1000
                    )))
                } else {
                    info!(group, %reason, "rekey requested through the API");
                    self.last_manual_rekey.insert(group, now);
                    ks.rekey_now(now, group, reason)
                        .map(|()| RekeyAccepted { group, replace })
                        .map_err(|e| gkm_web::RekeyRefused::Unavailable(e.to_string()))
                };
                let _ = reply.send(r);
            }
            Command::Eject {
                group,
                identity,
                reply,
            } => {
                if ks.eject(group, &identity) {
                    warn!(group, gm = %identity, "GM ejected through the API");
                }
                let _ = reply.send(Ok(()));
            }
            Command::Agents(agents) => {
                info!(
                    enrolled = agents.groups.len(),
                    revoked = agents.revoked.len(),
                    "enrolled agents loaded"
                );
                ks.set_enrolled_agents(agents);
            }
            Command::Status { group, reply } => {
                let _ = reply.send(status_of(ks, group));
            }
            Command::CoopStatus { group, reply } => {
                let _ = reply.send(ks.coop_status(group, now_ms()));
            }
            Command::Metrics { reply } => {
                self.metrics.refresh(ks, now_ms());
                let _ = reply.send(self.metrics.encode());
            }
            Command::NotReady { reply } => {
                let _ = reply.send(crate::metrics::not_ready(ks, now_ms()));
            }
            Command::GroupChanged {
                identity,
                group,
                psk,
                coop,
                replace,
            } => {
                self.coop.changed(
                    ks,
                    identity,
                    group.as_deref().map(|g| g.name.as_str()),
                    coop,
                );
                match group {
                    None => {
                        ks.disable_group(identity);
                        self.group_psks.remove(&identity);
                        info!(group = identity, "group deleted: no longer served");
                    }
                    Some(g) => match self.maker.make(&g.name, g.group_id, &g.policy) {
                        Ok(made) => {
                            self.policies.insert(g.group_id, made.fingerprint);
                            if let Some((addr, t)) = made.multicast {
                                ttl.insert(addr, t);
                            }
                            match psk.as_deref().and_then(|k| crate::group_psk(&g, k)) {
                                Some(entry) => {
                                    self.group_psks.insert(g.group_id, entry);
                                }
                                None => {
                                    self.group_psks.remove(&g.group_id);
                                }
                            }
                            match ks.set_group(now_ms(), made.group, replace) {
                                Ok(r) => {
                                    info!(group = %g.name, rekey = ?r, "group policy applied");
                                    // A new group's keys (a changed one's are
                                    // persisted with the rekey it prepared).
                                    if let Err(e) = self.persist(ks, g.group_id).await {
                                        error!(group = %g.name, error = %format!("{e:#}"), "cannot persist the group's keys");
                                    }
                                    self.log_teks(ks, g.group_id);
                                }
                                Err(e) => {
                                    error!(group = %g.name, error = %e, "group policy not applied")
                                }
                            }
                        }
                        Err(e) => {
                            error!(group = %g.name, error = %format!("{e:#}"), "group policy not applied")
                        }
                    },
                }
                ks.set_psks(crate::psk_table(
                    &self.config_psks,
                    &self.group_psks,
                    self.coop.psks(),
                ));
            }
        }
    }
}

fn manual(ks: &mut KeyServer, groups: &[u32], reason: RekeyReason) {
    for g in groups {
        info!(group = g, %reason, "rekey requested by signal");
        if let Err(e) = ks.rekey_now(now_ms(), *g, reason) {
            error!(group = g, error = %e, "rekey refused");
        }
    }
}
