//! The listener: accepts connections up to `serving.max_connections` (one more is answered 503 and closed,
//! never left waiting), and bounds each connection in time: the headers of every request must arrive within
//! `serving.header_read_timeout_ms` (which also closes an idle keep-alive connection), and a response write
//! that a client does not read fails after `serving.write_timeout_ms`. Graceful shutdown stops accepting,
//! lets requests in flight finish and closes idle connections.
//!
//! Each accepted connection is served to its end on one of [`ConnectionWorkers`]: a thread per runtime worker,
//! each with a runtime of its own, the connection going to the thread with the fewest open. A request is
//! read, scored and answered on one thread with its own epoll, so no other thread is woken for it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Sleep;

use crate::ops::Metrics;

/// Refusals answered at once; beyond them a connection is closed without an answer, so a flood of
/// connections cannot make the refusals themselves unbounded.
const MAX_REFUSING: usize = 64;
/// Request bytes read (and dropped) before a refusal closes, so the client sees the 503 rather than a reset.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
}

/// An accepted connection on its way to a worker, with the slot it holds under `serving.max_connections`.
struct Accepted {
    stream: std::net::TcpStream,
    slot: OwnedSemaphorePermit,
}

/// Threads that each serve their connections on a single-threaded runtime of their own.
///
/// Why not the shared multi-threaded runtime: there one worker at a time waits on the shared epoll and wakes others to
/// take the connections it finds ready, and tasks move between threads. With the same instructions per request, keeping
/// each connection on one thread served 7% more single-row requests under wrk on two cores, and 30% more with other
/// work on the machine (`docs/benchmarks.md`, serving). The cost: a connection's requests wait for the others on its
/// thread, where an idle worker could have taken them.
pub struct ConnectionWorkers {
    runtimes: Vec<WorkerRuntime>,
}

/// A worker's runtime, shut down without waiting when dropped: a runtime dropped the ordinary way inside an
/// async function (a server bound and never run) would panic.
struct WorkerRuntime(Option<tokio::runtime::Runtime>);

impl WorkerRuntime {
    fn block_on<F: Future>(&self, f: F) -> Option<F::Output> {
        self.0.as_ref().map(|rt| rt.block_on(f))
    }
}

impl Drop for WorkerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl ConnectionWorkers {
    /// `count` runtimes (at least one), built here so that a failure is reported before the server binds.
    pub fn new(count: usize) -> io::Result<Self> {
        let runtimes = (0..count.max(1))
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| WorkerRuntime(Some(rt)))
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { runtimes })
    }

    /// As many workers as the current runtime has (`--threads`, or one per core).
    pub fn per_runtime_worker() -> io::Result<Self> {
        Self::new(tokio::runtime::Handle::current().metrics().num_workers())
    }
}

/// The running workers: where to send a connection, and how many each has open.
struct Dispatch {
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    open: Vec<Arc<AtomicUsize>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Dispatch {
    fn start(
        workers: ConnectionWorkers,
        app: &Router,
        limits: ConnectionLimits,
        metrics: &Arc<Metrics>,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let mut d = Dispatch {
            queues: Vec::new(),
            open: Vec::new(),
            threads: Vec::new(),
        };
        for (i, rt) in workers.runtimes.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                app: app.clone(),
                limits,
                metrics: metrics.clone(),
                stop: stop.clone(),
                open: open.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("trialflow-conn-{i}"))
                .spawn(move || {
                    rt.block_on(worker.run(rx));
                })?;
            d.queues.push(tx);
            d.open.push(open);
            d.threads.push(thread);
        }
        Ok(d)
    }

    /// Hands `accepted` to the worker with the fewest open connections.
    fn send(&self, accepted: Accepted) {
        let least = (0..self.open.len())
            .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.open[least].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queues[least].send(accepted) {
            // the worker's thread has ended (it cannot, short of a panic): the connection closes, its slot frees
            self.open[least].fetch_sub(1, Ordering::Relaxed);
            drop(e);
            tracing::warn!(worker = least, "connection worker gone; connection closed");
        }
    }

    /// Ends the workers once their connections have closed.
    async fn finish(self) {
        drop(self.queues);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

struct Worker {
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Accepted>) {
        while let Some(Accepted { stream, slot }) = queue.recv().await {
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "connection could not be registered");
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            };
            let (app, limits, metrics, stop, open) = (
                self.app.clone(),
                self.limits,
                self.metrics.clone(),
                self.stop.clone(),
                self.open.clone(),
            );
            tokio::spawn(async move {
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                connection(stream, app, limits, stop).await;
                open.fetch_sub(1, Ordering::Relaxed);
                metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: returns once every connection closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    workers: ConnectionWorkers,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatch = Dispatch::start(workers, &app, limits, &metrics, &stop_rx)?;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // e.g. EMFILE: wait for descriptors to free rather than spin on the error
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Small responses: send at once rather than wait for the previous segment's ACK (Nagle).
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => match stream.into_std() {
                Ok(stream) => dispatch.send(Accepted { stream, slot }),
                Err(e) => tracing::debug!(error = %e, "connection could not be handed over"),
            },
            Err(_) => {
                metrics.rejected[3].fetch_add(1, Ordering::Relaxed);
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, limits).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // every slot back: every connection has closed
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    dispatch.finish().await;
    Ok(())
}

/// Errors that concern one connection only (the peer went away during the handshake).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers 503 to a connection over the cap, then reads a little of its request so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream, limits: ConnectionLimits) {
    let body = format!(
        "{{\"error\":\"server busy: {} connections open (serving.max_connections); retry later\"}}",
        limits.max_connections
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(limits.write_timeout.min(Duration::from_secs(1)), answer).await;
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for the peer to take bytes.
struct WriteTimeout<T> {
    inner: T,
    limit: Duration,
    pending_since: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            pending_since: None,
        }
    }

    /// Called when a write is pending: starts the clock, or fails the write once it has run out.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = self.limit;
        let deadline = self
            .pending_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read the response (serving.write_timeout_ms)",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => match self.poll_deadline(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            ready => {
                self.pending_since = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.on_write(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_at_the_limit_and_one_it_reads_does_not() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(near, Duration::from_millis(200));
        let start = std::time::Instant::now();
        let e = w.write_all(&vec![7u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(200));

        let (near, mut far2) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(near, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far2.read_to_end(&mut all).await.map(|_| all.len())
        });
        // slower than the limit in total, but never stalled for as long as the limit
        for _ in 0..8 {
            w.write_all(&[1u8; 512]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        w.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 8 * 512);
        drop(far.read(&mut [0u8; 1]).await);
    }
}

#[cfg(test)]
mod worker_tests {
    use super::*;

    /// One request on a new connection; the answer's body (the name of the thread that served it).
    async fn ask(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the answer");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && body.ends_with('|')
            {
                return body.trim_end_matches('|').to_string();
            }
        }
    }

    /// Connections go to the worker with the fewest open, each is served on its worker's thread to its end,
    /// and shutdown returns once they have closed, with the workers' threads ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_spread_over_the_workers_and_shutdown_ends_them() {
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                format!("{}|", std::thread::current().name().unwrap_or("?"))
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        };
        let metrics = Arc::new(Metrics::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            limits,
            metrics.clone(),
            ConnectionWorkers::new(2).unwrap(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let first = ask(&mut a).await;
        let mut b = TcpStream::connect(addr).await.unwrap();
        let second = ask(&mut b).await;
        assert!(first.starts_with("trialflow-conn-"), "{first}");
        assert!(second.starts_with("trialflow-conn-"), "{second}");
        assert_ne!(
            first, second,
            "the second connection went to the busier worker"
        );
        // a connection stays on its worker's thread for every request
        for _ in 0..3 {
            assert_eq!(ask(&mut a).await, first);
            assert_eq!(ask(&mut b).await, second);
        }
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 2);
        // a closed connection frees its worker: the next one goes there
        drop(a);
        while metrics.connections_open.load(Ordering::Relaxed) != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut c).await, first);
        stop_tx.send(()).unwrap();
        drop((b, c));
        let served = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("shutdown drains and returns")
            .unwrap();
        served.unwrap();
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 0);
    }
}
