//! Connections: the server's capacity, each tenant's share of it, and clients that stop
//! reading.
//!
//! A connection takes one of the server's slots when it is accepted. Until it sends a request
//! with a valid token it is *pending*; the pending ones are few, and when one more arrives the
//! oldest is closed (a client that holds connections open without speaking cannot lock the
//! others out: a real client speaks within milliseconds). The first authenticated request
//! binds the connection to its tenant, which holds it against the tenant's `connections`
//! quota until it closes (an attach keeps it past the upgrade). A connection whose client
//! reads nothing of what the server writes for `client_stall` is closed: a response is never
//! buffered for a client that does not read it.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::http::ApiError;
use super::Tenant;

/// The server's connection slots and the queue of pending connections.
pub(crate) struct Conns {
    slots: Arc<Semaphore>,
    pending: Mutex<VecDeque<Weak<Conn>>>,
    max_pending: usize,
}

/// One open connection's hold on the server's capacity.
pub(crate) struct Conn {
    _slot: OwnedSemaphorePermit,
    /// The tenant it is bound to, and that tenant's permit (`None`: still pending).
    tenant: Mutex<Option<(String, OwnedSemaphorePermit)>>,
    evict: Notify,
}

impl Conns {
    /// Room for `pending` connections not yet authenticated plus `bound` of tenants.
    pub fn new(pending: usize, bound: usize) -> Self {
        Conns {
            slots: Arc::new(Semaphore::new(pending.saturating_add(bound).max(1))),
            pending: Mutex::new(VecDeque::new()),
            max_pending: pending.max(1),
        }
    }

    /// A slot for a new connection (`None`: the server is full, close it). When the pending
    /// connections are at their limit, the oldest of them is told to close.
    pub fn admit(&self) -> Option<Arc<Conn>> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let conn = Arc::new(Conn {
            _slot: slot,
            tenant: Mutex::new(None),
            evict: Notify::new(),
        });
        let Ok(mut q) = self.pending.lock() else {
            return Some(conn);
        };
        q.retain(|w| w.upgrade().is_some_and(|c| c.is_pending()));
        while q.len() >= self.max_pending {
            if let Some(old) = q.pop_front().and_then(|w| w.upgrade()) {
                old.evict.notify_one();
            }
        }
        q.push_back(Arc::downgrade(&conn));
        Some(conn)
    }
}

impl Conn {
    fn is_pending(&self) -> bool {
        self.tenant.lock().is_ok_and(|t| t.is_none())
    }

    /// Resolves when the connection, still pending, must close to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Binds the connection to `tenant` at its first authenticated request, within the
    /// tenant's quota; a later request (whatever its tenant) rides on that binding.
    pub fn claim(&self, tenant: &Tenant) -> Result<(), ApiError> {
        let Ok(mut bound) = self.tenant.lock() else {
            return Err(ApiError::internal("connection state poisoned"));
        };
        if bound.is_some() {
            return Ok(());
        }
        let permit = tenant
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "tenant {} has {} connections open, its limit: close some first",
                        tenant.name, tenant.quotas.connections
                    ),
                )
            })?;
        *bound = Some((tenant.name.clone(), permit));
        Ok(())
    }
}

/// A connection's stream, closed when the client reads nothing for `stall`: a write (or
/// flush) that cannot proceed for that long fails with `TimedOut`.
pub(crate) struct Watched<IO> {
    io: IO,
    stall: Duration,
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, stall: Duration) -> Self {
        Watched {
            io,
            stall,
            blocked: None,
        }
    }

    /// What a write that returned `poll` means, given how long writes have been blocked.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.blocked = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .blocked
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {} s", stall.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_reads_nothing_is_cut_off_after_the_stall() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = Watched::new(a, Duration::from_millis(300));
        let t0 = tokio::time::Instant::now();
        let err = w.write_all(&[0u8; 1 << 20]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_reader_is_kept() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = Watched::new(a, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut n = 0;
            while n < 8192 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                n += tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
        });
        w.write_all(&[0u8; 8192]).await.unwrap();
        drop(w);
        reader.await.unwrap();
    }

    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let conns = Conns::new(2, 0);
        let a = conns.admit().unwrap();
        let _b = conns.admit().unwrap();
        assert!(conns.admit().is_none(), "two slots in all");
        drop(a);
        let conns = Conns::new(2, 5);
        let first = conns.admit().unwrap();
        let _second = conns.admit().unwrap();
        let _third = conns.admit().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), first.evicted())
                .await
                .expect("the first pending connection is told to close");
        });
    }
}
