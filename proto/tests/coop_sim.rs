//! Deterministic simulation of the COOP election (docs/COOP.md,
//! "Election"): 3-5 key servers in one process on a simulated clock and
//! network that loses, duplicates, reorders and delays announcements,
//! partitions and heals, and crashes and restarts key servers (a restart
//! keeps only what was persisted: the epoch). Model: FoundationDB's and
//! TigerBeetle's simulation testing: every run is a seed; a failing seed
//! prints itself, and `GKM_COOP_SEED=N` replays it alone.
//!
//! Invariants, on every seed:
//! - a key server's epoch never goes backwards while it runs, and a
//!   restart resumes from the highest epoch it persisted;
//! - a key server acts as primary only in an epoch it persisted first;
//! - after the last heal (every key server up, no loss), within the dead
//!   window plus three check periods exactly one primary remains, every
//!   other key server follows it, and all hold its epoch;
//! - when primaries existed on both sides of a healed partition, the one
//!   that remains rekeys the whole group (a merge event) after each other
//!   primary's term began.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr};

use gkm_proto::coop::election::{
    AnnouncementHeader, Election, ElectionConfig, ElectionEvent, Rank, Role,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const REFRESH: u64 = 20_000;
const CHECK: u64 = 30_000;
const DEAD: u8 = 3;

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8))
}

struct Ks {
    e: Option<Election>,
    cfg: ElectionConfig,
    persisted_epoch: u64,
    /// Epochs waiting for their (delayed) persistence: (due, epoch).
    persisting: Vec<(u64, u64)>,
    last_epoch: u64,
    /// Each merge: when, and with whom.
    merges: Vec<(u64, IpAddr)>,
    /// When its latest term as primary began.
    term_start: u64,
}

struct Msg {
    at: u64,
    from: usize,
    to: usize,
    h: AnnouncementHeader,
}

struct Sim {
    rng: ChaCha8Rng,
    now: u64,
    ks: Vec<Ks>,
    net: Vec<Msg>,
    /// cut[a][b]: a's messages do not reach b.
    cut: Vec<Vec<bool>>,
    loss: u32,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 3 + (rng.next_u32() % 3) as usize;
        let peers: Vec<IpAddr> = (0..n).map(addr).collect();
        let ks = (0..n)
            .map(|i| {
                // Priorities often tie, so the address decides too.
                let priority = [100u8, 100, 50, 200, 150][(rng.next_u32() % 5) as usize];
                let cfg = ElectionConfig {
                    local: Rank {
                        priority,
                        addr: addr(i),
                    },
                    peers: peers.clone(),
                    refresh_ms: REFRESH,
                    check_ms: CHECK,
                    dead_periods: DEAD,
                };
                Ks {
                    e: None,
                    cfg,
                    persisted_epoch: 0,
                    persisting: Vec::new(),
                    last_epoch: 0,
                    merges: Vec::new(),
                    term_start: 0,
                }
            })
            .collect();
        let mut s = Self {
            rng,
            now: 1_000_000,
            ks,
            net: Vec::new(),
            cut: vec![vec![false; n]; n],
            loss: 10,
            seed,
        };
        for i in 0..n {
            // Staggered starts.
            s.now += u64::from(s.rng.next_u32() % 5_000);
            s.start(i);
        }
        s
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} failed at t={}: {what}\n  replay: GKM_COOP_SEED={} cargo test -p gkm-proto --test coop_sim",
            self.seed, self.now, self.seed
        )
    }

    fn start(&mut self, i: usize) {
        let k = &mut self.ks[i];
        // A restart keeps the persisted epoch; its anti-replay numbers
        // start from the clock, above any used before.
        k.e = Some(Election::new(
            k.cfg.clone(),
            k.persisted_epoch,
            self.now * 1_000,
            self.now,
        ));
        k.persisting.clear();
        // What was adopted but not persisted before a crash is forgotten.
        k.last_epoch = k.persisted_epoch;
        self.drain(i);
    }

    fn crash(&mut self, i: usize) {
        self.ks[i].e = None;
        self.ks[i].persisting.clear();
        self.net.retain(|m| m.to != i);
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(e) = self.ks[i].e.as_mut() else {
                return;
            };
            let Some(ev) = e.poll_event() else {
                break;
            };
            if std::env::var_os("GKM_COOP_TRACE").is_some() {
                println!("t={} ks{i} {ev:?}", self.now);
            }
            match ev {
                ElectionEvent::PersistEpoch(epoch) => {
                    // Persisting takes a little time.
                    let due = self.now + 1 + u64::from(self.rng.next_u32() % 200);
                    self.ks[i].persisting.push((due, epoch));
                }
                ElectionEvent::RoleChanged { role, epoch, .. } => {
                    if role == Role::Primary && self.ks[i].persisted_epoch != epoch {
                        self.fail(&format!("KS {i} primary in epoch {epoch} not persisted"));
                    }
                    if role == Role::Primary {
                        self.ks[i].term_start = self.now;
                    }
                }
                ElectionEvent::Announce { to, header } => {
                    let to = self.ks.iter().position(|k| k.cfg.local.addr == to).unwrap();
                    self.send(i, to, header);
                }
                ElectionEvent::Merged { with } => {
                    let now = self.now;
                    self.ks[i].merges.push((now, with));
                }
            }
        }
        let epoch = self.ks[i].e.as_ref().map_or(0, Election::epoch);
        let primary = self.ks[i]
            .e
            .as_ref()
            .is_some_and(|e| e.role() == Role::Primary);
        if primary && epoch > self.ks[i].persisted_epoch {
            // A merge raises a primary's epoch without a role change: it
            // too acts only in a persisted epoch.
            self.fail(&format!("KS {i} primary in epoch {epoch} not persisted"));
        }
        if epoch < self.ks[i].last_epoch {
            self.fail(&format!(
                "KS {i}'s epoch went back from {} to {epoch}",
                self.ks[i].last_epoch
            ));
        }
        self.ks[i].last_epoch = epoch;
    }

    fn send(&mut self, from: usize, to: usize, h: AnnouncementHeader) {
        if self.cut[from][to] || self.rng.next_u32() % 100 < self.loss {
            return;
        }
        let copies = if self.rng.next_u32() % 100 < 3 { 2 } else { 1 };
        for _ in 0..copies {
            // Delay up to 2 s: copies and later messages may overtake.
            let at = self.now + 1 + u64::from(self.rng.next_u32() % 2_000);
            self.net.push(Msg { at, from, to, h });
        }
    }

    /// Runs until `until`, event by event.
    fn run(&mut self, until: u64) {
        loop {
            let mut next = until;
            for m in &self.net {
                next = next.min(m.at);
            }
            for k in &self.ks {
                if let Some(e) = &k.e {
                    next = next.min(e.poll_timeout());
                }
                for &(due, _) in &k.persisting {
                    next = next.min(due);
                }
            }
            if next >= until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            let now = self.now;
            // Deliveries due now.
            let mut due = Vec::new();
            let mut i = 0;
            while i < self.net.len() {
                if self.net[i].at <= now {
                    due.push(self.net.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            for m in due {
                let from = self.ks[m.from].cfg.local.addr;
                if let Some(e) = self.ks[m.to].e.as_mut() {
                    let _ = e.handle_announcement(now, from, m.h);
                    self.drain(m.to);
                }
            }
            for i in 0..self.ks.len() {
                let ready: Vec<u64> = self.ks[i]
                    .persisting
                    .iter()
                    .filter(|(d, _)| *d <= now)
                    .map(|&(_, e)| e)
                    .collect();
                self.ks[i].persisting.retain(|(d, _)| *d > now);
                for epoch in ready {
                    if self.ks[i].e.is_some() {
                        self.ks[i].persisted_epoch = self.ks[i].persisted_epoch.max(epoch);
                        self.ks[i].e.as_mut().unwrap().epoch_persisted(now, epoch);
                        self.drain(i);
                    }
                }
                if let Some(e) = self.ks[i].e.as_mut() {
                    if e.poll_timeout() <= now {
                        e.handle_timeout(now);
                        self.drain(i);
                    }
                }
            }
        }
    }

    fn primaries(&self) -> Vec<usize> {
        (0..self.ks.len())
            .filter(|&i| {
                self.ks[i]
                    .e
                    .as_ref()
                    .is_some_and(|e| e.role() == Role::Primary)
            })
            .collect()
    }

    fn random_partition(&mut self) {
        let n = self.ks.len();
        let side: Vec<bool> = (0..n).map(|_| self.rng.next_u32() % 2 == 0).collect();
        for a in 0..n {
            for b in 0..n {
                self.cut[a][b] = side[a] != side[b];
            }
        }
    }

    fn heal(&mut self) {
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
    }
}

/// What a seed went through, so the suite can show it exercised the
/// paths it claims to.
#[derive(Default)]
struct Coverage {
    split_brains_healed: u64,
    /// Other primaries at the heal whose merge was checked.
    merges_checked: u64,
    merges: u64,
    epochs: u64,
}

/// Whether `winner` rekeyed the whole group (merged) after `since`, the
/// start of another primary's term: a merge rekeys every GM of the
/// group, whichever side it registered on, so it need not name that
/// primary (another KS's later epoch may have set it off first).
fn merged_since(s: &Sim, winner: usize, since: u64) -> bool {
    s.ks[winner].merges.iter().any(|&(t, _)| t >= since)
}

fn one_seed(seed: u64) -> Coverage {
    let mut s = Sim::new(seed);
    let n = s.ks.len();
    // A first election on a quiet network.
    let t = s.now + 5 * CHECK;
    s.run(t);
    // Chaos: partitions, heals, crashes, restarts, loss bursts.
    for _ in 0..12 {
        match s.rng.next_u32() % 6 {
            0 | 1 => s.random_partition(),
            2 => s.heal(),
            3 => {
                let i = (s.rng.next_u32() as usize) % n;
                s.crash(i);
            }
            4 => {
                for i in 0..n {
                    if s.ks[i].e.is_none() {
                        s.start(i);
                    }
                }
            }
            _ => s.loss = [0, 10, 30, 60][(s.rng.next_u32() % 4) as usize],
        }
        let t = s.now + u64::from(s.rng.next_u32() % (6 * CHECK as u32));
        s.run(t);
    }
    // The last heal: everything up, nothing lost.
    s.heal();
    s.loss = 0;
    for i in 0..n {
        if s.ks[i].e.is_none() {
            s.start(i);
        }
    }
    let at_heal: Vec<(usize, u64)> = s
        .primaries()
        .into_iter()
        .map(|i| (i, s.ks[i].term_start))
        .collect();
    let primaries_at_heal = at_heal.len();
    if std::env::var_os("GKM_COOP_TRACE").is_some() {
        println!("t={} HEAL primaries {:?}", s.now, s.primaries());
    }
    let t = s.now + u64::from(DEAD) * CHECK + 3 * CHECK;
    s.run(t);
    let p = s.primaries();
    if p.len() != 1 {
        s.fail(&format!("primaries after the heal: {p:?}"));
    }
    let primary = p[0];
    let pe = s.ks[primary].e.as_ref().unwrap();
    let (pa, pepoch) = (pe.primary(), pe.epoch());
    for (i, k) in s.ks.iter().enumerate() {
        let e = k.e.as_ref().unwrap();
        if e.primary() != pa || e.epoch() != pepoch {
            s.fail(&format!(
                "KS {i} follows {:?} in epoch {}, the primary is {pa:?} in epoch {pepoch}",
                e.primary(),
                e.epoch()
            ));
        }
    }
    // Every other primary's term (and the keys it made) was merged into
    // the one that remained: it rekeyed the whole group after that term
    // began.
    let mut merges_checked = 0;
    for &(j, began) in &at_heal {
        if j != primary {
            if !merged_since(&s, primary, began) {
                s.fail(&format!(
                    "KS {j} was primary at the heal (since t={began}); KS {primary} remained and merged nothing of it"
                ));
            }
            merges_checked += 1;
        }
    }
    Coverage {
        split_brains_healed: u64::from(primaries_at_heal >= 2),
        merges_checked,
        merges: s.ks.iter().map(|k| k.merges.len() as u64).sum(),
        epochs: s.ks.iter().map(|k| k.persisted_epoch).max().unwrap_or(0),
    }
}

#[test]
fn elections_converge_on_one_primary_under_loss_partitions_and_crashes() {
    if let Some(seed) = std::env::var("GKM_COOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        one_seed(seed);
        return;
    }
    let seeds: u64 = std::env::var("GKM_COOP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut total = Coverage::default();
    for seed in 0..seeds {
        let c = one_seed(seed);
        total.split_brains_healed += c.split_brains_healed;
        total.merges_checked += c.merges_checked;
        total.merges += c.merges;
        total.epochs += c.epochs;
    }
    println!(
        "{seeds} seeds: {} healed with two or more primaries, {} merges, {} epochs taken (takeovers and merges)",
        total.split_brains_healed, total.merges, total.epochs
    );
    // The chaos reaches the paths the invariants speak of.
    assert!(
        total.split_brains_healed * 20 >= seeds,
        "too few split brains"
    );
    assert!(total.merges_checked >= total.split_brains_healed);
    assert!(total.epochs >= 2 * seeds);
}

#[test]
fn the_best_ranked_ks_wins_a_cold_start_and_a_better_one_does_not_preempt() {
    let mut s = Sim::new(7);
    s.loss = 0;
    let t = s.now + 5 * CHECK;
    s.run(t);
    let best = (0..s.ks.len()).max_by_key(|&i| s.ks[i].cfg.local).unwrap();
    assert_eq!(s.primaries(), vec![best]);
    // A KS starting later with a better rank follows the live primary.
    let n = s.ks.len();
    s.crash(best);
    let t = s.now + u64::from(DEAD) * CHECK + 3 * CHECK;
    s.run(t);
    let second = s.primaries();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], best);
    s.start(best);
    let t = s.now + 5 * CHECK;
    s.run(t);
    assert_eq!(s.primaries(), second, "no preemption by the returning KS");
    assert!(n >= 3);
    // Replayed and forged announcements change nothing and are counted.
    let i = (second[0] + 1) % n;
    let from = s.ks[second[0]].cfg.local.addr;
    let e = s.ks[i].e.as_mut().unwrap();
    let before = (e.role(), e.epoch(), e.primary());
    let old = e.peers()[&from].last.unwrap();
    assert_eq!(
        e.handle_announcement(s.now, from, old),
        Err(gkm_proto::coop::election::Dropped::Replayed)
    );
    let forged = AnnouncementHeader {
        role: Role::Primary,
        rank: Rank {
            priority: 255,
            addr: IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        },
        epoch: 1_000,
        seq: u64::MAX,
        stepped_down_from: None,
    };
    assert_eq!(
        e.handle_announcement(s.now, forged.rank.addr, forged),
        Err(gkm_proto::coop::election::Dropped::NotAPeer)
    );
    assert_eq!(
        e.handle_announcement(s.now, from, forged),
        Err(gkm_proto::coop::election::Dropped::AddressMismatch)
    );
    assert_eq!((e.role(), e.epoch(), e.primary()), before);
    assert_eq!(e.peers()[&from].replayed, 1);
    assert_eq!(e.not_a_peer, 1);
}
