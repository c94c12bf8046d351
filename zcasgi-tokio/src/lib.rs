//! The tokio transport backend of zcasgi.
//!
//! [`TokioBackend`] serves connections on a multi-thread tokio runtime with
//! [`ServerConfig::io_threads`] workers (named `zcasgi-tokio-N`). It only moves bytes and wakes
//! tasks up; every protocol decision is made by [`zcasgi_core::driver::Driver`], which it shares
//! with the mio backend. The structure follows tokio's mini-redis:
//!
//! - `server`: one accept loop per listener. A [`tokio::sync::Semaphore`] with
//!   [`ServerConfig::max_connections`] permits is acquired *before* `accept`, so excess clients
//!   wait in the listen backlog. Accept errors are skipped or back off as the shared policy
//!   (`zcasgi_transport::accept`) says. Listeners and connections of either kind (TCP, Unix)
//!   are `AsyncFd`s over the transport's sockets; each connection gets its own task. In a
//!   worker process, one more loop takes the connections other workers hand over from the
//!   worker's inbox (an `AsyncFd` too), under the same semaphore.
//! - `conn`: the connection task, a biased `select!` over the shutdown signal, the
//!   connection's wake-up (a [`tokio::sync::Notify`] the application side pokes through
//!   [`zcasgi_core::backend::ConnHandle`]), socket writability while output is pending, the
//!   driver's deadline and socket readability. Reads, vectored writes and the linger are the
//!   shared steps of `zcasgi_transport`, and so is the hand-off of a connection whose request
//!   names another worker's Engine.IO session: the task then ends without closing the socket.
//! - `shutdown`: a `watch` channel the accept loops listen on, and a flag with one `Notify`
//!   for the connections (a smaller wait for every connection's task). Every task also holds
//!   a guard of the server's `zcasgi_transport::Tracker`, which [`RunningServer::join`] waits
//!   on from any thread, tokio or not.
//!
//! [`RunningServer::shutdown`] stops the accept loops (dropping the listeners) and tells every
//! connection to close (open WebSockets get [`ServerConfig::shutdown_close_code`] and finish
//! the close handshake). [`RunningServer::join`] waits for every task, aborts whatever is left
//! at the timeout (those connections still report a disconnect to the application) and shuts
//! the runtime down.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use zcasgi_core::backend::{Backend, Event, EventSink, ServerConfig};
//! use zcasgi_tokio::TokioBackend;
//!
//! struct Ignore;
//! impl EventSink for Ignore {
//!     fn push(&self, _event: Event) {}
//! }
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let cfg = Arc::new(ServerConfig::default());
//! let server = TokioBackend.start(cfg, vec![listener.into()], Arc::new(Ignore), None)?;
//! server.shutdown();
//! assert!(server.join(Duration::from_secs(5)));
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(missing_docs)]

mod conn;
mod server;
mod shutdown;

use std::sync::Arc;

use zcasgi_core::backend::{
    Backend, EventSink, Listener, RunningServer, ServerConfig, WorkerSockets,
};

/// The tokio backend: one task per connection on a multi-thread runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioBackend;

impl Backend for TokioBackend {
    fn name(&self) -> &'static str {
        "tokio"
    }

    /// Starts the runtime's threads and returns at once.
    ///
    /// # Errors
    /// If the runtime cannot be built or a listener cannot be registered with it;
    /// `InvalidInput` for `io_threads = 0`: a runtime has threads (only the mio backend runs on
    /// its caller's thread).
    fn start(
        &self,
        cfg: Arc<ServerConfig>,
        listeners: Vec<Listener>,
        sink: Arc<dyn EventSink>,
        worker: Option<WorkerSockets>,
    ) -> std::io::Result<Box<dyn RunningServer>> {
        server::start(cfg, listeners, sink, worker)
    }
}
