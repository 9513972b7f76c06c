//! The key-server engine as the web layer sees it: API handlers send
//! commands over a channel to the GDOI loop, which owns the engine, and
//! wait for the answer. The store writer takes the engine's GM, rekey and
//! ACK state to the store in the background, so the GDOI loop never waits
//! on the database.

use std::sync::Arc;

use gkm_store::model::{GmRow, GmState, Group, RekeyRecord};
use gkm_store::Store;
use gkm_web::{Control, GroupStatus, RekeyAccepted};
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
        reply: oneshot::Sender<Result<RekeyAccepted, String>>,
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
        /// GMs need a rekey replace.
        replace: bool,
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
    async fn rekey(&self, group: u32, replace: bool) -> Result<RekeyAccepted, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Rekey {
                group,
                replace,
                reply,
            })
            .map_err(|_| GONE.to_owned())?;
        rx.await.map_err(|_| GONE.to_owned())?
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

    async fn group_changed(&self, identity: u32, group: Option<&Group>, replace: bool) {
        let psk = match group {
            Some(g) => self.store.group_psk(&g.name).await.unwrap_or_else(|e| {
                error!(group = %g.name, error = %e, "cannot read the group's PSK");
                None
            }),
            None => None,
        };
        let _ = self.tx.send(Command::GroupChanged {
            identity,
            group: group.cloned().map(Box::new),
            psk,
            replace,
        });
    }
}

/// A write for the store.
pub enum Write {
    /// GMs registered or their ACK state changed.
    Gms(Vec<GmRow>),
    /// A GM's state changed.
    GmState(u32, String, GmState),
    /// A rekey started or progressed.
    Rekey(RekeyRecord),
}

/// Runs the store writer until the channel closes: GM rows are batched.
pub async fn store_writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut gms = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Gms(g) => gms.extend(g),
                other => others.push(other),
            }
            if gms.len() < 5000 {
                next = rx.try_recv().ok();
            }
        }
        if !gms.is_empty() {
            if let Err(e) = store.put_gms(&gms).await {
                error!(error = %e, gms = gms.len(), "cannot write the GM database to the store");
            }
        }
        for w in others {
            let r = match &w {
                Write::GmState(g, id, s) => store.set_gm_state(*g, id, *s).await,
                Write::Rekey(r) => store.put_rekey(r).await,
                Write::Gms(_) => Ok(()),
            };
            if let Err(e) = r {
                error!(error = %e, "cannot write to the store");
            }
        }
    }
}
