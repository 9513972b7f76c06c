//! The HTTP listener's connection discipline: a cap on open connections,
//! a header-read timeout, an idle keep-alive timeout and a TLS handshake
//! timeout, so neither many idle connections nor slow ones (slowloris)
//! can starve the API and dashboard of file descriptors or workers.
//!
//! Every connection is in the [`Table`]. A connection is *busy* while one
//! of its requests is being answered and *waiting* otherwise (before its
//! first request, between keep-alive requests, or while its request
//! headers trickle in). A waiting connection is closed when no byte came
//! for the idle timeout, or when the headers of its next request did not
//! complete within the header timeout of their first byte. At the cap, a
//! new connection closes the longest-waiting one instead of being refused:
//! whoever holds many idle connections holds them only until somebody
//! else connects, and a fresh request is served at once. Busy connections
//! are never closed for a newcomer; when every connection is busy, accepting
//! waits until one ends.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once (plain and TLS together).
    pub max_connections: usize,
    /// A request's headers must be complete this long after their first byte.
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this long without a byte.
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this long.
    pub handshake_timeout: Duration,
}

/// One connection's shared state.
pub struct Conn {
    id: u64,
    epoch: Instant,
    busy: AtomicBool,
    /// Milliseconds since `epoch` when the connection last began waiting.
    waiting_since: AtomicU64,
    /// Milliseconds since `epoch` of the first byte of a request not yet
    /// answered (0: none yet).
    first_byte: AtomicU64,
    close: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The connection arrived (its place may have been taken earlier):
    /// its idle time starts now.
    pub fn accepted(&self) {
        self.waiting_since.store(self.now(), Ordering::Release);
    }

    /// A request begins to be answered.
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// The answer is written: the connection waits for its next request.
    pub fn end(&self) {
        self.first_byte.store(0, Ordering::Release);
        self.waiting_since.store(self.now(), Ordering::Release);
        self.busy.store(false, Ordering::Release);
    }

    fn saw_bytes(&self) {
        if !self.busy.load(Ordering::Acquire) && self.first_byte.load(Ordering::Acquire) == 0 {
            self.first_byte.store(self.now(), Ordering::Release);
        }
    }

    /// When this waiting connection must be closed, or None while busy.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = match self.first_byte.load(Ordering::Acquire) {
            0 => self
                .waiting_since
                .load(Ordering::Acquire)
                .saturating_add(ms(limits.idle_timeout)),
            first => first.saturating_add(ms(limits.header_timeout)),
        };
        Some(self.epoch + Duration::from_millis(at))
    }

    /// Resolves when the connection must close: evicted for a newcomer,
    /// idle too long, or its headers too slow. Never while busy.
    pub async fn expired(&self, limits: Limits) {
        loop {
            let wait = match self.deadline(&limits) {
                Some(at) if at <= Instant::now() => return,
                Some(at) => tokio::time::sleep_until(at.into()),
                // Busy: look again when the answer is likely written.
                None => tokio::time::sleep(limits.idle_timeout.min(Duration::from_secs(1))),
            };
            tokio::select! {
                () = wait => {}
                () = self.close.notified() => return,
            }
        }
    }
}

/// The open connections.
pub struct Table {
    limits: Limits,
    epoch: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    freed: Notify,
}

/// A connection's place in the table; dropping it frees the place.
pub struct Slot {
    table: Arc<Table>,
    /// The connection.
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().remove(&self.conn.id);
        self.table.freed.notify_one();
    }
}

impl Table {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            epoch: Instant::now(),
            next: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// The limits.
    #[cfg(test)]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // Every change is one insert or remove: a poisoned table is consistent.
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// A place for a new connection: at once below the cap; at the cap,
    /// by closing the connection that has waited longest; when all are
    /// busy, once one ends.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut t = self.lock();
                let open = t.len();
                if open >= self.limits.max_connections {
                    let victim = t
                        .values()
                        .filter(|c| !c.busy.load(Ordering::Acquire))
                        .min_by_key(|c| {
                            (
                                c.waiting_since.load(Ordering::Acquire),
                                c.first_byte.load(Ordering::Acquire),
                            )
                        })
                        .cloned();
                    if let Some(v) = victim {
                        // It leaves the table now; its task closes it.
                        t.remove(&v.id);
                        v.close.notify_one();
                    }
                }
                if t.len() < self.limits.max_connections {
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    let conn = Arc::new(Conn {
                        id,
                        epoch: self.epoch,
                        busy: AtomicBool::new(false),
                        waiting_since: AtomicU64::new(0),
                        first_byte: AtomicU64::new(0),
                        close: Notify::new(),
                    });
                    conn.waiting_since.store(conn.now(), Ordering::Release);
                    t.insert(id, conn.clone());
                    return Slot {
                        table: self.clone(),
                        conn,
                    };
                }
            }
            freed.await;
        }
    }
}

/// A stream that tells its connection when request bytes arrive.
pub struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.saw_bytes();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_waiting_connection_makes_room() {
        let t = Table::new(limits(3));
        let a = t.admit().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = t.admit().await;
        let c = t.admit().await;
        b.conn.begin();
        assert_eq!(t.len(), 3);
        let d = t.admit().await;
        assert_eq!(t.len(), 3, "one left to make room");
        // `a` waited longest and was told to close; `b` is busy and stays.
        tokio::time::timeout(Duration::from_millis(100), a.conn.expired(t.limits()))
            .await
            .expect("a is closed");
        let lock = t.lock();
        assert!(!lock.contains_key(&a.conn.id));
        assert!(lock.contains_key(&b.conn.id));
        assert!(lock.contains_key(&c.conn.id) && lock.contains_key(&d.conn.id));
    }

    #[tokio::test]
    async fn busy_connections_are_never_evicted() {
        let t = Table::new(limits(1));
        let a = t.admit().await;
        a.conn.begin();
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.admit().await.conn.id }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room while the only one is busy");
        drop(a);
        let id = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(id > 1);
    }

    #[tokio::test]
    async fn idle_and_header_deadlines() {
        let t = Table::new(Limits {
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(5),
            ..limits(10)
        });
        let s = t.admit().await;
        let c = &s.conn;
        let d0 = c.deadline(&t.limits()).unwrap();
        assert!(
            d0 >= Instant::now() + Duration::from_secs(29),
            "idle deadline"
        );
        c.saw_bytes();
        let d1 = c.deadline(&t.limits()).unwrap();
        assert!(
            d1 <= Instant::now() + Duration::from_secs(6),
            "header deadline once bytes came"
        );
        c.begin();
        assert!(c.deadline(&t.limits()).is_none(), "busy: none");
        c.end();
        assert!(c.deadline(&t.limits()).unwrap() >= Instant::now() + Duration::from_secs(29));
    }
}
