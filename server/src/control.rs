//! The key-server engine as the web layer sees it: API handlers send
//! commands over a channel to the GDOI loop, which owns the engine, and
//! wait for the answer. The store writer takes the engine's GM, rekey and
//! ACK state to the store in the background, so the GDOI loop never waits
//! on the database.

use std::sync::Arc;

use gkm_store::model::{GmRow, GmState, Group, RekeyRecord};
use gkm_store::Store;
use gkm_web::{Control, GroupStatus, RekeyAccepted, RekeyRefused};
use tokio::sync::{mpsc, oneshot};
use tracing::error;
use zeroize::Zeroizing;

/// A command for the GDOI loop.
pub enum Command {
    /// Rekey now, or rekey replace.
    Rekey {
        /// Group identity number.
        group: u32,
        /// Replace.
        replace: bool,
        /// The answer.
        reply: oneshot::Sender<Result<RekeyAccepted, RekeyRefused>>,
    },
    /// Eject a GM.
    Eject {
        /// Group.
        group: u32,
        /// GM identity.
        identity: String,
        /// The answer.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Status for the show commands.
    Status {
        /// Group.
        group: u32,
        /// The answer.
        reply: oneshot::Sender<Option<GroupStatus>>,
    },
    /// A group was created, changed or (group: None) deleted.
    GroupChanged {
        /// Group identity number.
        identity: u32,
        /// The group now.
        group: Option<Box<Group>>,
        /// Its PSK, if set.
        psk: Option<Zeroizing<String>>,
        /// Its cooperative key servers, if any.
        coop: Option<crate::coop::CoopLoaded>,
        /// GMs need a rekey replace.
        replace: bool,
    },
    /// The metrics, their gauges set from the engine now.
    Metrics {
        /// The text exposition.
        reply: oneshot::Sender<String>,
    },
    /// What keeps the engine from serving (empty: ready).
    NotReady {
        /// The answer.
        reply: oneshot::Sender<Vec<String>>,
    },
    /// The enrolled agents changed (enrolled, revoked).
    Agents(gkm_proto::ks::EnrolledAgents),
    /// `show crypto gkm ks coop` of a group.
    CoopStatus {
        /// Group identity number.
        group: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<gkm_proto::ks::CoopStatus>>,
    },
}

/// The web layer's handle on the GDOI loop.
pub struct ControlHandle {
    /// Commands to the loop.
    pub tx: mpsc::UnboundedSender<Command>,
    /// The store (for the PSK of a changed group).
    pub store: Arc<dyn Store>,
}

const GONE: &str = "the key-server engine is not running";

#[async_trait::async_trait]
impl Control for ControlHandle {
    async fn rekey(&self, group: u32, replace: bool) -> Result<RekeyAccepted, RekeyRefused> {
        let (reply, rx) = oneshot::channel();
        let gone = || RekeyRefused::Unavailable(GONE.to_owned());
        self.tx
            .send(Command::Rekey {
                group,
                replace,
                reply,
            })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    async fn eject(&self, group: u32, identity: &str) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Eject {
                group,
                identity: identity.to_owned(),
                reply,
            })
            .map_err(|_| GONE.to_owned())?;
        rx.await.map_err(|_| GONE.to_owned())?
    }

    async fn status(&self, group: u32) -> Option<GroupStatus> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Status { group, reply }).ok()?;
        rx.await.ok().flatten()
    }

    async fn coop(&self, group: u32) -> Option<gkm_model::CoopView> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::CoopStatus { group, reply }).ok()?;
        let s = rx.await.ok().flatten()?;
        Some(crate::coop::view(&s, gkm_model::clock::unix_ms()))
    }

    async fn group_changed(&self, identity: u32, group: Option<&Group>, replace: bool) {
        let psk = match group {
            Some(g) => self.store.group_psk(&g.name).await.unwrap_or_else(|e| {
                error!(group = %g.name, error = %e, "cannot read the group's PSK");
                None
            }),
            None => None,
        };
        let coop = match group {
            Some(g) => crate::coop::load(self.store.as_ref(), g)
                .await
                .unwrap_or_else(|e| {
                    error!(group = %g.name, error = %format!("{e:#}"), "cannot read the group's COOP configuration");
                    None
                }),
            None => None,
        };
        let _ = self.tx.send(Command::GroupChanged {
            identity,
            group: group.cloned().map(Box::new),
            psk,
            coop,
            replace,
        });
    }

    async fn metrics(&self) -> String {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Metrics { reply }).is_err() {
            return String::new();
        }
        rx.await.unwrap_or_default()
    }

    async fn not_ready(&self) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::NotReady { reply }).is_err() {
            return vec![GONE.to_owned()];
        }
        rx.await.unwrap_or_else(|_| vec![GONE.to_owned()])
    }

    async fn agents_changed(&self) {
        match crate::enrollment::enrolled_agents(self.store.as_ref()).await {
            Ok(a) => {
                let _ = self.tx.send(Command::Agents(a));
            }
            Err(e) => error!(error = %format!("{e:#}"), "cannot read the enrolled agents"),
        }
    }
}

/// A write for the store.
pub enum StoreWrite {
    /// GMs registered or their ACK state changed.
    Gms(Vec<GmRow>),
    /// A GM's state changed.
    GmState(u32, String, GmState),
    /// A rekey started or progressed.
    Rekey(RekeyRecord),
    /// A group's keys and SEQ (sealed by the store under `name`); `done`
    /// hears when they are committed, after every write queued before.
    GroupState {
        /// Secret name.
        name: String,
        /// The state, plain.
        plain: Zeroizing<Vec<u8>>,
        /// Told the outcome.
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
}

/// Runs the store writer until the channel closes. Writes are applied in
/// the order they were queued, GM rows batched. GM rows that fail to be
/// written are kept and retried; a group state queued behind them is not
/// confirmed until they are in (a rekey never counts on a GM the store
/// would forget).
pub async fn store_writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<StoreWrite>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut gms: Vec<GmRow> = Vec::new();
    loop {
        if gms.is_empty() {
            match rx.recv().await {
                Some(StoreWrite::Gms(g)) => gms.extend(g),
                Some(other) => {
                    apply(store.as_ref(), other, true, &metrics).await;
                    continue;
                }
                None => return,
            }
        }
        // More GM rows while they come within GM_LINGER; the first other
        // write ends the batch at once and is applied right after it (a
        // rekey's confirmation never waits for the linger).
        let mut others = Vec::new();
        let linger = tokio::time::Instant::now() + GM_LINGER;
        while gms.len() < GM_BATCH {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(StoreWrite::Gms(g))) => gms.extend(g),
                Ok(Some(w)) => {
                    others.push(w);
                    break;
                }
                // Closed (written, then the loop ends) or lingered enough.
                Ok(None) | Err(_) => break,
            }
        }
        let gms_written = match store.put_gms(&gms).await {
            Ok(()) => {
                gms.clear();
                true
            }
            Err(e) => {
                metrics.store_error();
                error!(error = %e, gms = gms.len(), "cannot write the GM database to the store; retrying in 1 s");
                false
            }
        };
        for w in others {
            apply(store.as_ref(), w, gms_written, &metrics).await;
        }
        if !gms_written {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// GM rows written in one transaction at most.
const GM_BATCH: usize = 5000;

/// How long a GM batch waits for more rows before it is written: at a few
/// thousand registrations a second, one transaction per registration cost
/// more than the registration's own engine work (docs/BENCHMARKS.md). A GM
/// row is not key material: the delay only moves when the GM database
/// shows a GM, by at most this.
const GM_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Applies one write that is not a GM batch; `gms_ok` says whether the GM
/// rows queued before it are in the store.
async fn apply(store: &dyn Store, w: StoreWrite, gms_ok: bool, metrics: &crate::metrics::Metrics) {
    let r = match w {
        StoreWrite::GmState(g, id, s) => store.set_gm_state(g, &id, s).await,
        StoreWrite::Rekey(r) => store.put_rekey(&r).await,
        StoreWrite::Gms(g) => store.put_gms(&g).await,
        StoreWrite::GroupState { name, plain, done } => {
            let r = store.put_secret(&name, &plain).await;
            if let Some(done) = done {
                let answer = match (&r, gms_ok) {
                    (Err(e), _) => Err(e.to_string()),
                    (Ok(()), false) => Err("GM rows queued before it are not written yet".into()),
                    (Ok(()), true) => Ok(()),
                };
                let _ = done.send(answer);
            }
            r
        }
    };
    if let Err(e) = r {
        metrics.store_error();
        error!(error = %e, "cannot write to the store");
    }
}
