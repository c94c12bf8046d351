//! Worker threads and the state they share with the controlling (main) thread.
//!
//! Theory of operation: `--threads` OS threads each run a current-thread tokio runtime with a
//! `LocalSet`, and connection `i` lives on thread `i % threads`. The main thread never runs
//! async code in these scenarios: it waits for connections to open, moves every connection from
//! phase to phase by publishing a [`State`] (an atomic the hot path polls, plus a watch channel
//! idle connections sleep on), and reads the counters and CPU clocks at the edges of each
//! measurement window with plain `std::thread::sleep` in between.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use zcasgi_core::frame::OpCode;

use crate::net::{self, Target};
use crate::ws::{self, Event, FrameReader};

/// Phase state published by the controller: idle, running phase `p`, stopping phase `p`, done.
pub type State = u32;

/// Connections are opening; nothing is sent yet.
pub const IDLE: State = 0;
/// Every connection should finish and exit.
pub const DONE: State = u32::MAX;

/// The state "phase `p` is running".
pub fn running(p: usize) -> State {
    1 + 2 * p as u32
}

/// The state "phase `p` is stopping: send nothing more, wait for outstanding replies".
pub fn stopping(p: usize) -> State {
    2 + 2 * p as u32
}

/// The phase a running or stopping state refers to.
pub fn phase_of(state: State) -> usize {
    ((state - 1) / 2) as usize
}

/// Whether `state` is a running state.
pub fn is_running(state: State) -> bool {
    state != IDLE && state != DONE && state % 2 == 1
}

/// Per-thread counters, on their own cache line so threads do not share lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Messages received back.
    pub msgs: AtomicU64,
    /// Payload bytes received back.
    pub bytes: AtomicU64,
}

/// State shared by the main thread and the workers.
#[derive(Debug)]
pub struct Shared {
    /// Connections that completed the handshake.
    pub open: AtomicUsize,
    /// Connections that failed to open.
    pub failed: AtomicUsize,
    /// Open connections that later failed or were closed by the server.
    pub dead: AtomicUsize,
    /// Connections that finished the current phase (no reply outstanding).
    pub drained: AtomicUsize,
    /// Connections that received all their first-round replies in the current phase.
    pub warm: AtomicUsize,
    state: AtomicU32,
    state_tx: watch::Sender<State>,
    /// One set of counters per worker thread.
    pub counters: Box<[Counters]>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Shared state for `threads` workers, in state [`IDLE`].
    pub fn new(threads: usize) -> Arc<Self> {
        let (state_tx, _) = watch::channel(IDLE);
        Arc::new(Self {
            open: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dead: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            state: AtomicU32::new(IDLE),
            state_tx,
            counters: (0..threads.max(1)).map(|_| Counters::default()).collect(),
            first_error: Mutex::new(None),
        })
    }

    /// The current state (cheap: one relaxed load, for the hot path).
    pub fn state(&self) -> State {
        self.state.load(Ordering::Acquire)
    }

    /// A receiver that wakes when the state changes.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state_tx.subscribe()
    }

    /// Publishes `state` to every connection.
    pub fn set_state(&self, state: State) {
        self.state.store(state, Ordering::Release);
        self.state_tx.send_replace(state);
    }

    /// Records a failed connection attempt.
    pub fn connect_failed(&self, error: &dyn std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        self.note_error(error);
    }

    /// Records an open connection that died.
    pub fn conn_died(&self, error: &dyn std::fmt::Display) {
        self.dead.fetch_add(1, Ordering::AcqRel);
        self.note_error(error);
    }

    /// Keeps the first error message for the report.
    pub fn note_error(&self, error: &dyn std::fmt::Display) {
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert_with(|| error.to_string());
        }
    }

    /// The first error recorded, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|slot| slot.clone())
    }

    /// Messages and bytes received so far, over all threads.
    pub fn totals(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(m, b), c| {
            (m + c.msgs.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed))
        })
    }

    /// Waits until `n` connections opened or failed, or `timeout` passed; returns the number
    /// open and the seconds it took.
    pub fn wait_open(&self, n: usize, timeout: Duration) -> (usize, f64) {
        let start = Instant::now();
        wait_until(timeout, || {
            self.open.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire) >= n
        });
        (self.open.load(Ordering::Acquire), start.elapsed().as_secs_f64())
    }
}

/// Polls `done` every millisecond until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `make(thread)` on each of `threads` new threads, each with its own current-thread
/// runtime and `LocalSet` (so tasks may use `spawn_local` and `Rc`).
///
/// # Panics
/// If a runtime or thread cannot be created.
pub fn spawn<F, Fut>(threads: usize, make: F) -> Vec<JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let make = Arc::new(make);
    (0..threads.max(1))
        .map(|thread| {
            let make = Arc::clone(&make);
            std::thread::Builder::new()
                .name(format!("loadgen-{thread}"))
                .spawn(move || block_on_local(make(thread)))
                .expect("cannot spawn a worker thread")
        })
        .collect()
}

/// Runs `future` to completion on a new current-thread runtime inside a `LocalSet`.
///
/// # Panics
/// If the runtime cannot be created.
pub fn block_on_local<T>(future: impl Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// How connections are opened: target, request bytes, source addresses and time limit.
#[derive(Debug)]
pub struct Dialer {
    /// Where to connect.
    pub target: Target,
    /// The upgrade request, built once.
    pub request: Vec<u8>,
    /// Source addresses, used round-robin.
    pub sources: Vec<Ipv4Addr>,
    /// Time allowed for one connection's TCP connect and handshake.
    pub timeout: Duration,
}

impl Dialer {
    /// A dialer for `target` from `sources`.
    pub fn new(target: Target, sources: Vec<Ipv4Addr>, timeout: Duration) -> Self {
        let request = target.upgrade_request();
        Self { target, request, sources, timeout }
    }

    /// Opens connection `index` (connect and upgrade), without counting it.
    ///
    /// # Errors
    /// The connect or the upgrade failed or timed out.
    pub async fn connect(&self, index: usize) -> io::Result<(TcpStream, Vec<u8>)> {
        let source = net::source_for(&self.sources, index);
        net::ws_connect(&self.target, &self.request, source, self.timeout).await
    }

    /// Opens connection `index` while holding a permit of `gate`; counts it in `shared`.
    pub async fn dial(
        &self,
        shared: &Shared,
        index: usize,
        gate: &Semaphore,
    ) -> Option<(TcpStream, Vec<u8>)> {
        let _permit = gate.acquire().await.ok()?;
        match self.connect(index).await {
            Ok(conn) => {
                shared.open.fetch_add(1, Ordering::AcqRel);
                Some(conn)
            }
            Err(error) => {
                shared.connect_failed(&error);
                None
            }
        }
    }
}

/// The read buffer shared by the connections of one thread (they never read concurrently).
pub type ReadBuf = Rc<RefCell<Vec<u8>>>;

/// Size of each thread's read buffer.
pub const READ_BUF_LEN: usize = 256 * 1024;

/// A new thread read buffer.
pub fn read_buf() -> ReadBuf {
    Rc::new(RefCell::new(vec![0; READ_BUF_LEN]))
}

/// Waits until `stream` has data, reads once into `buf` and feeds it to `reader`.
///
/// # Errors
/// I/O errors, `UnexpectedEof` when the server closed, or the reader's framing errors.
pub async fn read_some(
    stream: &TcpStream,
    buf: &RefCell<Vec<u8>>,
    reader: &mut FrameReader,
    on: impl FnMut(Event<'_>),
) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let mut bytes = buf.borrow_mut();
        match stream.try_read(&mut bytes) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed")),
            Ok(n) => {
                reader.feed(&bytes[..n], on)?;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes a pong for each ping `reader` reported into `pongs`, then clears it.
///
/// # Errors
/// The write error.
pub async fn flush_pongs(stream: &mut TcpStream, pongs: &mut Vec<u8>) -> io::Result<()> {
    if !pongs.is_empty() {
        stream.write_all(pongs).await?;
        pongs.clear();
    }
    Ok(())
}

/// Appends a masked pong answering `ping` to `pongs` (RFC 6455 §5.5.3).
pub fn queue_pong(pongs: &mut Vec<u8>, ping: &[u8]) {
    pongs.extend_from_slice(&ws::masked_frame(OpCode::Pong, ping));
}

/// Keeps an open connection alive (answering pings) until the state satisfies `wanted`;
/// returns that state.
///
/// # Errors
/// The connection failed or the server closed it.
pub async fn idle_until(
    stream: &mut TcpStream,
    buf: &RefCell<Vec<u8>>,
    reader: &mut FrameReader,
    rx: &mut watch::Receiver<State>,
    wanted: impl Fn(State) -> bool,
) -> io::Result<State> {
    let mut pongs = Vec::new();
    loop {
        let state = *rx.borrow_and_update();
        if wanted(state) {
            return Ok(state);
        }
        let mut closed = false;
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(DONE);
                }
            }
            read = read_some(stream, buf, reader, |event| match event {
                Event::Ping(payload) => queue_pong(&mut pongs, payload),
                Event::Close => closed = true,
                Event::Message { .. } => {}
            }) => {
                read?;
            }
        }
        if closed {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
        }
        flush_pongs(stream, &mut pongs).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert!(!is_running(IDLE));
        assert!(!is_running(DONE));
        assert!(is_running(running(0)) && is_running(running(3)));
        assert!(!is_running(stopping(3)));
        assert_eq!(phase_of(running(3)), 3);
        assert_eq!(phase_of(stopping(3)), 3);
    }
}
