//! Issue 19's deterministic simulation with full engines: 3-5 real
//! `KeyServer`s and real `GroupMember`s in one process, on a simulated
//! clock and a simulated network that loses, duplicates, delays and so
//! reorders datagrams, partitions key servers and GMs into two sides and
//! heals them, and crashes key servers and restarts them from what they
//! had persisted (a write still queued at the crash is lost, as in the
//! server: the rekey it carried was never sent). Model: FoundationDB's and
//! TigerBeetle's simulation testing: a run is a seed, a failing seed
//! prints itself and `GKM_COOP_CHAOS_SEED=N` replays it alone, exactly
//! (ordered maps, one event queue).
//!
//! Invariants, on every seed:
//! - no key server sends a GROUPKEY-PUSH while it is not primary, and no
//!   GM accepts a push that its sender sent while not primary;
//! - every GM's accepted SEQs strictly increase;
//! - after the last heal (every key server up, no loss) plus the dead
//!   window and three check periods, exactly one primary, followed by
//!   every other key server in its epoch;
//! - after the primary's next rekey every GM in its GM database holds its
//!   KEK and TEKs and took its SEQ, unless the primary knows the GM missed
//!   it (a KEK change lost with every retransmission: docs/COOP.md); and
//!   once the TEKs that were current run out (the group's TEKs live 600
//!   s, so scheduled rekeys happen within runs), every GM holds the
//!   primary's keys (it re-registered or was rekeyed).
//!
//! Rekeys are signed with ECDSA P-256 (RSA-2048 signing cost most of a
//! run; RSA rekeys are tested elsewhere, coop_engines.rs included).
//!
//! `GKM_COOP_CHAOS_SEEDS` (default 500 per shard, four shards: 2,000
//! seeds) and `GKM_COOP_CHAOS_GMS` (default 12 GMs; the scale shard runs
//! 1,000) set the size of a longer run (docs/COOP.md, "Simulation").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use common::coop::{
    addr, coop_config, coop_ks_config_ecdsa, coop_psks, CHECK_MS, DEAD_PERIODS, GROUP_PSK, PAIR_PSK,
};
use common::{base_config, gm_addr, rng, GROUP, T0};
use gkm_proto::coop::election::Role;
use gkm_proto::gm::{GmAuth, GmEvent, GmIdentity, GroupMember};
use gkm_proto::ks::{CoopEvent, GmRecord, KeyServer, KsEvent};
use gkm_proto::rekey::{GroupState, RekeyReason};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zeroize::Zeroizing;

/// The group's TEK lifetime: scheduled rekeys (90 s before expiry) fall
/// inside a run, and a GM that fell behind re-registers within it.
const TEK_LIFE_SECS: u32 = 600;

/// ISAKMP header octet 18: the exchange type; 33 is GROUPKEY-PUSH.
const EXCHANGE_TYPE_AT: usize = 18;
const GROUPKEY_PUSH: u8 = 33;

/// A participant: key server `i` (10.0.0.i+1) or GM `j` (10.0.1.j+1...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    Ks(usize),
    Gm(usize),
}

/// A datagram in flight.
struct Datagram {
    from: Node,
    to: Node,
    payload: Vec<u8>,
    /// Its sender was primary when it sent it (key servers only).
    sent_as_primary: bool,
}

/// A write a key server queued for its store, done at `due` unless the
/// key server crashes first.
enum Write {
    /// A prepared rekey's state; then the rekey is sent.
    Rekey(u32, GroupState),
    /// Keys taken from the primary, or a SEQ raised above the peers'.
    State(GroupState),
    /// A new epoch; then the key server may act in it.
    Epoch(u64),
}

/// What a key server's store holds: all a restart keeps.
#[derive(Default)]
struct Disk {
    state: Option<GroupState>,
    epoch: u64,
    gms: BTreeMap<String, GmRecord>,
}

struct Ks {
    engine: Option<KeyServer>,
    priority: u8,
    disk: Disk,
    writes: Vec<(u64, Write)>,
    boots: u64,
}

/// The world of one seed.
struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    now: u64,
    ks: Vec<Ks>,
    gms: Vec<GroupMember>,
    by_addr: HashMap<SocketAddr, Node>,
    /// In flight, by (arrival, order of sending).
    wire: BTreeMap<(u64, u64), Datagram>,
    sent: u64,
    /// Each node's next deadline, and the same ordered.
    deadline: HashMap<Node, u64>,
    timers: BTreeSet<(u64, Node)>,
    /// Loss and duplication per mille; delay up to `jitter` ms.
    loss: u32,
    dup: u32,
    jitter: u64,
    /// Nodes on side B of a partition (others on side A); empty: none.
    side_b: BTreeSet<Node>,
    /// SEQs each GM accepted, in order.
    accepted: Vec<Vec<u32>>,
    violations: Vec<String>,
    story: String,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 3 + (rng.next_u32() % 3) as usize;
        let ks = (0..n)
            .map(|_| Ks {
                engine: None,
                priority: 1 + (rng.next_u32() % 255) as u8,
                disk: Disk::default(),
                writes: Vec::new(),
                boots: 0,
            })
            .collect();
        let loss = rng.next_u32() % 150;
        let dup = rng.next_u32() % 80;
        let jitter = [5, 50, 400, 2_000][(rng.next_u32() % 4) as usize];
        let mut sim = Self {
            seed,
            rng,
            now: T0,
            ks,
            gms: Vec::new(),
            by_addr: (0..n).map(|i| (ks_addr(i), Node::Ks(i))).collect(),
            wire: BTreeMap::new(),
            sent: 0,
            deadline: HashMap::new(),
            timers: BTreeSet::new(),
            loss,
            dup,
            jitter,
            side_b: BTreeSet::new(),
            accepted: Vec::new(),
            violations: Vec::new(),
            story: String::new(),
        };
        let prios: Vec<u8> = sim.ks.iter().map(|k| k.priority).collect();
        sim.story = format!(
            "seed {seed}: {n} KSs, priorities {prios:?}, loss {loss}‰ dup {dup}‰ delay ≤{jitter} ms"
        );
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    /// Starts key server `i` from its store (a restart keeps its keys,
    /// epoch and GM database, and starts its anti-replay numbers at the
    /// clock, as the server does).
    fn boot(&mut self, i: usize) {
        if std::env::var_os("GKM_COOP_TRACE").is_some() {
            eprintln!("{} KS {}: boot", self.now - T0, i + 1);
        }
        let n = self.ks.len();
        let peers: Vec<u8> = (0..n).filter(|&p| p != i).map(|p| p as u8 + 1).collect();
        let k = &mut self.ks[i];
        let mut cfg = coop_ks_config_ecdsa(i as u8 + 1, TEK_LIFE_SECS);
        cfg.psks = coop_psks(&peers);
        if let Some(st) = &k.disk.state {
            cfg.groups[0].keys = st.keys.clone();
            cfg.groups[0].resume = Some(st.clone());
        }
        let mut engine = KeyServer::new(cfg, rng(self.seed ^ (i as u64) << 40 ^ k.boots));
        for m in k.disk.gms.values() {
            engine.restore_member(m.clone());
        }
        let mut coop = coop_config(i as u8 + 1, k.priority, &peers, PAIR_PSK);
        coop.persisted_epoch = k.disk.epoch;
        coop.seq_start = self.now * 1_000;
        engine.set_coop_group(self.now, coop);
        k.engine = Some(engine);
        k.boots += 1;
        self.touch(Node::Ks(i));
    }

    fn crash(&mut self, i: usize) {
        if std::env::var_os("GKM_COOP_TRACE").is_some() {
            eprintln!("{} KS {}: crash", self.now - T0, i + 1);
        }
        let k = &mut self.ks[i];
        k.engine = None;
        k.writes.clear();
        self.touch(Node::Ks(i));
    }

    fn add_gm(&mut self) {
        let j = self.gms.len();
        let n = self.ks.len();
        let a = gm_addr(j as u32 + 1);
        let IpAddr::V4(v4) = a.ip() else {
            unreachable!()
        };
        let mut cfg = base_config(
            j as u32 + 1,
            GROUP,
            GmIdentity::Ipv4(v4),
            GmAuth::Psk(Zeroizing::new(GROUP_PSK.to_vec())),
        );
        // Its own key server first, then the others in order.
        cfg.key_servers = (0..n).map(|o| ks_addr((j + o) % n)).collect();
        let mut gm = GroupMember::new(cfg, rng(1_000_000 + self.seed * 10_000 + j as u64));
        gm.handle_timeout(self.now);
        self.gms.push(gm);
        self.accepted.push(Vec::new());
        self.by_addr.insert(a, Node::Gm(j));
        self.drain(Node::Gm(j), None);
    }

    fn draw(&mut self, below: u32) -> u32 {
        self.rng.next_u32() % below.max(1)
    }

    fn is_primary(&self, i: usize) -> bool {
        self.ks[i]
            .engine
            .as_ref()
            .is_some_and(|e| e.coop_role(GROUP) == Some(Role::Primary))
    }

    /// Re-reads a node's next deadline.
    fn touch(&mut self, node: Node) {
        if let Some(old) = self.deadline.remove(&node) {
            self.timers.remove(&(old, node));
        }
        let next = match node {
            Node::Ks(i) => self.ks[i].engine.as_ref().and_then(KeyServer::poll_timeout),
            Node::Gm(j) => self.gms[j].poll_timeout(),
        };
        if let Some(t) = next {
            self.deadline.insert(node, t);
            self.timers.insert((t, node));
        }
    }

    /// Puts a datagram on the wire: lost, once or twice, each copy with
    /// its own delay (so copies and later datagrams overtake each other).
    fn send(&mut self, from: Node, to: Node, payload: Vec<u8>, sent_as_primary: bool) {
        if self.side_b.contains(&from) != self.side_b.contains(&to) {
            return;
        }
        let draw = self.draw(1000);
        let copies = if draw < self.loss {
            0
        } else if draw < self.loss + self.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + u64::from(self.draw(self.jitter as u32));
            self.sent += 1;
            self.wire.insert(
                (self.now + delay, self.sent),
                Datagram {
                    from,
                    to,
                    payload: payload.clone(),
                    sent_as_primary,
                },
            );
        }
    }

    /// Takes what a node has to say after it ran. `from` is the datagram
    /// it just handled (its sender, and whether that was primary then).
    fn drain(&mut self, node: Node, from: Option<(Node, bool)>) {
        match node {
            Node::Ks(i) => self.drain_ks(i),
            Node::Gm(j) => {
                let mut out = Vec::new();
                while let Some(t) = self.gms[j].poll_transmit() {
                    out.push(t);
                }
                for t in out {
                    if let Some(&to) = self.by_addr.get(&t.to) {
                        self.send(node, to, t.payload, false);
                    }
                }
                while let Some(e) = self.gms[j].poll_event() {
                    if let GmEvent::Rekeyed { seq, .. } = e {
                        match from {
                            Some((Node::Ks(_), true)) if self.accepted[j].last() < Some(&seq) => {}
                            Some((Node::Ks(k), true)) => self.violations.push(format!(
                                "GM {j} took SEQ {seq} from KS {} after {:?}",
                                k + 1,
                                self.accepted[j]
                            )),
                            _ => self.violations.push(format!(
                                "GM {j} took SEQ {seq} from {from:?}, not a primary's push"
                            )),
                        }
                        self.accepted[j].push(seq);
                    }
                }
            }
        }
        self.touch(node);
    }

    fn drain_ks(&mut self, i: usize) {
        let now = self.now;
        let Some(engine) = self.ks[i].engine.as_mut() else {
            return;
        };
        let primary = engine.coop_role(GROUP) == Some(Role::Primary);
        let mut out = Vec::new();
        while let Some(t) = engine.poll_transmit() {
            out.push(t);
        }
        // The engine's hash maps order its fan-out at random: sorted by
        // destination (stable), each seed draws its loss and delays in
        // one order, and replays are exact.
        out.sort_by_key(|t| t.to);
        let mut events = Vec::new();
        while let Some(e) = engine.poll_event() {
            events.push(e);
        }
        // The store writes in order, each 1-300 ms after the last.
        let mut due = self.ks[i].writes.last().map_or(now, |w| w.0);
        let mut queue = Vec::new();
        for e in events {
            if std::env::var_os("GKM_COOP_TRACE").is_some()
                && !matches!(
                    e,
                    KsEvent::Coop(CoopEvent::GmLearned(_)) | KsEvent::Registered(_)
                )
            {
                eprintln!("{} KS {}: {e:?}", now - T0, i + 1);
            }
            let write = match e {
                KsEvent::RekeyPrepared { group_id, seq, .. } => {
                    let st = self.ks[i].engine.as_ref().unwrap().group_state(group_id);
                    Some(Write::Rekey(seq, st.unwrap()))
                }
                KsEvent::Coop(CoopEvent::PersistGroupState { group_id, .. }) => {
                    let st = self.ks[i].engine.as_ref().unwrap().group_state(group_id);
                    Some(Write::State(st.unwrap()))
                }
                KsEvent::Coop(CoopEvent::PersistEpoch { epoch, .. }) => Some(Write::Epoch(epoch)),
                KsEvent::Registered(r) | KsEvent::Coop(CoopEvent::GmLearned(r)) => {
                    self.ks[i].disk.gms.insert(r.gm_identity.clone(), r);
                    None
                }
                KsEvent::GmRemoved { gm_identity, .. } => {
                    self.ks[i].disk.gms.remove(&gm_identity);
                    None
                }
                _ => None,
            };
            if let Some(w) = write {
                due = due.max(now) + 1 + u64::from(self.draw(300));
                queue.push((due, w));
            }
        }
        self.ks[i].writes.extend(queue);
        for t in out {
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            if matches!(to, Node::Gm(_))
                && t.payload.get(EXCHANGE_TYPE_AT) == Some(&GROUPKEY_PUSH)
                && !primary
            {
                self.violations.push(format!(
                    "KS {} sent a GROUPKEY-PUSH while not primary",
                    i + 1
                ));
            }
            self.send(Node::Ks(i), to, t.payload, primary);
        }
    }

    /// The store finishes the writes due by now, and tells the engines.
    fn complete_writes(&mut self, i: usize) {
        let now = self.now;
        let k = &mut self.ks[i];
        let n = k.writes.iter().take_while(|w| w.0 <= now).count();
        let done: Vec<(u64, Write)> = k.writes.drain(..n).collect();
        for (_, w) in done {
            let k = &mut self.ks[i];
            let engine = k.engine.as_mut().unwrap();
            match w {
                Write::Rekey(seq, st) => {
                    k.disk.state = Some(st);
                    // Refused if it stepped down meanwhile (never sent).
                    let _ = engine.rekey_persisted(now, GROUP, seq);
                }
                Write::State(st) => k.disk.state = Some(st),
                Write::Epoch(e) => {
                    k.disk.epoch = k.disk.epoch.max(e);
                    engine.coop_epoch_persisted(now, GROUP, e);
                }
            }
            self.drain_ks(i);
        }
        self.touch(Node::Ks(i));
    }

    /// Runs every datagram, write and timer due until `until`.
    fn run_until(&mut self, until: u64) {
        loop {
            let wire = self.wire.keys().next().map(|k| k.0);
            let timer = self.timers.iter().next().map(|t| t.0);
            let write = self
                .ks
                .iter()
                .filter_map(|k| k.writes.first().map(|w| w.0))
                .min();
            let Some(next) = [wire, timer, write].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if wire == Some(next) {
                let (_, d) = self.wire.pop_first().unwrap();
                self.deliver(d);
            } else if write == Some(next) {
                for i in 0..self.ks.len() {
                    if self.ks[i].writes.first().is_some_and(|w| w.0 <= self.now) {
                        self.complete_writes(i);
                    }
                }
            } else {
                let (_, node) = self.timers.pop_first().unwrap();
                self.deadline.remove(&node);
                let now = self.now;
                match node {
                    Node::Ks(i) => {
                        if let Some(e) = self.ks[i].engine.as_mut() {
                            e.handle_timeout(now);
                        }
                    }
                    Node::Gm(j) => self.gms[j].handle_timeout(now),
                }
                self.drain(node, None);
            }
        }
        self.now = self.now.max(until);
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        let from = match d.from {
            Node::Ks(i) => ks_addr(i),
            Node::Gm(j) => gm_addr(j as u32 + 1),
        };
        match d.to {
            Node::Ks(i) => {
                let Some(e) = self.ks[i].engine.as_mut() else {
                    return;
                };
                e.handle_datagram(now, from, &d.payload);
            }
            Node::Gm(j) => self.gms[j].handle_datagram(now, from, &d.payload),
        }
        self.drain(d.to, Some((d.from, d.sent_as_primary)));
    }

    fn primaries(&self) -> Vec<usize> {
        (0..self.ks.len()).filter(|&i| self.is_primary(i)).collect()
    }

    fn heal(&mut self) {
        self.side_b.clear();
        for i in 0..self.ks.len() {
            if self.ks[i].engine.is_none() {
                self.boot(i);
            }
        }
    }

    /// One random step of the run.
    fn step(&mut self) -> Result<(), String> {
        let n = self.ks.len();
        match self.draw(5) {
            0 => {
                // A partition: a random side B of key servers and GMs.
                self.side_b.clear();
                let mut b = Vec::new();
                for i in 0..n {
                    if self.draw(2) == 0 {
                        self.side_b.insert(Node::Ks(i));
                        b.push(i + 1);
                    }
                }
                for j in 0..self.gms.len() {
                    if self.draw(2) == 0 {
                        self.side_b.insert(Node::Gm(j));
                    }
                }
                self.story += &format!("; partition KSs {b:?} from the rest");
            }
            1 => {
                let i = self.draw(n as u32) as usize;
                if self.ks[i].engine.is_some() {
                    self.crash(i);
                    self.story += &format!("; crash KS {}", i + 1);
                } else {
                    self.boot(i);
                    self.story += &format!("; restart KS {}", i + 1);
                }
            }
            2 => {
                self.heal();
                self.story += "; heal";
            }
            _ => {
                let i = self.draw(n as u32) as usize;
                let now = self.now;
                let reason = if self.draw(2) == 0 {
                    RekeyReason::Manual
                } else {
                    RekeyReason::Replace
                };
                let primary = self.is_primary(i);
                let Some(e) = self.ks[i].engine.as_mut() else {
                    return Ok(());
                };
                let result = e.rekey_now(now, GROUP, reason);
                if !primary && result.is_ok() {
                    return Err(format!("secondary KS {} took a rekey", i + 1));
                }
                self.story += &format!(
                    "; rekey at KS {} ({})",
                    i + 1,
                    if primary { "primary" } else { "secondary" }
                );
                self.drain_ks(i);
                self.touch(Node::Ks(i));
            }
        }
        Ok(())
    }

    /// The primary's TEK SPIs, KEK SPI and SEQ.
    fn keys_of(&self, i: usize) -> (Vec<u32>, [u8; 16], u32) {
        let s = self.ks[i]
            .engine
            .as_ref()
            .unwrap()
            .group_state(GROUP)
            .unwrap();
        (
            s.keys.teks.iter().map(|t| t.spi).collect(),
            s.keys.kek.as_ref().unwrap().spi,
            s.keys.seq,
        )
    }

    /// The KEK GM `j` holds and the TEK it sends on.
    fn gm_keys(&self, j: usize) -> (Option<[u8; 16]>, Option<u32>) {
        let m = &self.gms[j];
        (
            m.group().and_then(|x| x.kek.as_ref().map(|k| k.spi)),
            m.outbound_tek(self.now).map(|t| t.spi),
        )
    }

    fn check(&self) -> Result<(), String> {
        match self.violations.first() {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }
}

fn ks_addr(i: usize) -> SocketAddr {
    addr(i as u8 + 1)
}

/// One seed with `gms` GMs; what happened, or what went wrong.
fn run(seed: u64, gms: usize) -> Result<String, String> {
    let mut sim = Sim::new(seed);
    let r = one_run(&mut sim, gms);
    match r {
        Ok(()) => Ok(sim.story),
        Err(e) => Err(format!("{}: {e}", sim.story)),
    }
}

fn one_run(sim: &mut Sim, gms: usize) -> Result<(), String> {
    sim.run_until(T0 + 45_000);
    for _ in 0..gms {
        sim.add_gm();
    }
    sim.run_until(sim.now + 15_000);
    for _ in 0..8 {
        sim.step()?;
        let span = 5_000 + u64::from(sim.draw(45_000));
        sim.run_until(sim.now + span);
        sim.check()?;
    }
    // Everything heals: every key server up, no loss, short delays.
    sim.heal();
    sim.loss = 0;
    sim.dup = 0;
    sim.jitter = 5;
    sim.run_until(sim.now + u64::from(DEAD_PERIODS) * CHECK_MS + 3 * CHECK_MS);
    sim.check()?;
    let primaries = sim.primaries();
    let [p] = primaries[..] else {
        return Err(format!("primaries after the heal: {primaries:?}"));
    };
    let epoch = |i: usize| {
        sim.ks[i]
            .engine
            .as_ref()
            .unwrap()
            .coop_status(GROUP, sim.now)
            .unwrap()
    };
    let ps = epoch(p);
    for i in (0..sim.ks.len()).filter(|&i| i != p) {
        let s = epoch(i);
        if s.primary != Some(ks_addr(p).ip()) || s.epoch != ps.epoch {
            return Err(format!(
                "KS {} follows {:?} in epoch {}; KS {} is primary in {}",
                i + 1,
                s.primary,
                s.epoch,
                p + 1,
                ps.epoch
            ));
        }
    }
    // The merge (if any) is done; one more rekey from the primary.
    sim.run_until(sim.now + 5_000);
    let now = sim.now;
    sim.ks[p]
        .engine
        .as_mut()
        .unwrap()
        .rekey_now(now, GROUP, RekeyReason::Manual)
        .map_err(|e| format!("the primary KS {} refused a rekey: {e:?}", p + 1))?;
    sim.drain_ks(p);
    sim.run_until(sim.now + 10_000);
    sim.check()?;
    let (teks, kek, seq) = sim.keys_of(p);
    let engine = sim.ks[p].engine.as_ref().unwrap();
    let live: BTreeSet<String> = engine
        .members(GROUP)
        .map(|m| m.gm_identity.clone())
        .collect();
    let mut behind = 0;
    for j in 0..sim.gms.len() {
        let id = gm_addr(j as u32 + 1).ip().to_string();
        if !live.contains(&id) {
            behind += 1;
            continue;
        }
        let (held, out) = sim.gm_keys(j);
        if held != Some(kek)
            || sim.accepted[j].last() != Some(&seq)
            || !out.is_some_and(|s| teks.contains(&s))
        {
            // A GM that lost every transmission of a rekey changing the
            // KEK cannot open the pushes after it: allowed only if the
            // primary knows (it sent this rekey and holds no ACK for it).
            let state = engine.member_ack_state(GROUP, &id);
            if !state.is_some_and(|s| s.last_sent == Some(seq) && s.last_acked != Some(seq)) {
                return Err(format!(
                    "GM {j} holds KEK {:?}, last SEQ {:?}, TEK {out:?}; KS {} has {}, {seq}, {teks:?}; its ACK state there {state:?}",
                    held.map(hex::encode),
                    sim.accepted[j].last(),
                    p + 1,
                    hex::encode(kek)
                ));
            }
            behind += 1;
        }
    }
    if behind > 0 {
        // Those register again before their TEKs run out, or take a
        // rekey: every GM holds the primary's keys then.
        sim.run_until(sim.now + u64::from(TEK_LIFE_SECS) * 1000 + 100_000);
        sim.check()?;
        let primaries = sim.primaries();
        if primaries != [p] {
            return Err(format!("primaries a TEK lifetime later: {primaries:?}"));
        }
        let (teks, kek, _) = sim.keys_of(p);
        for j in 0..sim.gms.len() {
            let (held, out) = sim.gm_keys(j);
            if held != Some(kek) || !out.is_some_and(|s| teks.contains(&s)) {
                return Err(format!(
                    "GM {j} still holds KEK {:?}, TEK {out:?} a TEK lifetime later; KS {} has {}, {teks:?}",
                    held.map(hex::encode),
                    p + 1,
                    hex::encode(kek)
                ));
            }
        }
        sim.story +=
            &format!("; {behind} GM(s) behind, on the primary's keys a TEK lifetime later");
    }
    Ok(())
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs `seeds` seeds from `first` (or the one `GKM_COOP_CHAOS_SEED`
/// names) with `gms` GMs each; fails with every failing seed.
fn shard(first: u64, seeds: u64, gms: usize) {
    let range = match env("GKM_COOP_CHAOS_SEED") {
        Some(s) => s..s + 1,
        None => first..first + env("GKM_COOP_CHAOS_SEEDS").unwrap_or(seeds),
    };
    let gms = env("GKM_COOP_CHAOS_GMS").map_or(gms, |g| g as usize);
    let single = range.end - range.start == 1;
    let count = range.end - range.start;
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut behind = 0;
    for seed in range {
        match run(seed, gms) {
            Ok(story) => {
                behind += usize::from(story.contains("behind"));
                if single {
                    println!("{story}");
                }
            }
            Err(e) => failed.push(e),
        }
    }
    println!(
        "{count} seeds of {gms} GMs in {:.1} s; in {behind}, GMs fell behind and caught up",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed (replay one: GKM_COOP_CHAOS_SEED=N):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn chaos_seeds_0_to_499() {
    shard(0, 500, 12);
}

#[test]
fn chaos_seeds_500_to_999() {
    shard(500, 500, 12);
}

#[test]
fn chaos_seeds_1000_to_1499() {
    shard(1_000, 500, 12);
}

#[test]
fn chaos_seeds_1500_to_1999() {
    shard(1_500, 500, 12);
}

/// The scale: a thousand GMs across the key servers, fewer seeds.
#[test]
fn chaos_a_thousand_gms() {
    shard(1_000_000, 10, 1_000);
}
