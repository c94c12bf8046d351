//! A backend adapter for the test matrix: servers with no I/O thread (`io_threads = 0`), whose
//! loop a thread of the test's turns as an event loop would.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use zcasgi_core::backend::{
    Backend, EventSink, InlineReactor, Listener, RunningServer, ServerConfig, WorkerSockets,
};

/// The longest the turning thread waits between two looks at whether the server finished.
const LOOK: Duration = Duration::from_millis(20);

/// `B` started with `io_threads = 0`, whatever the scenario asks: its servers' loops are
/// turned by one thread each, which waits for the loop's descriptor or its next deadline,
/// then turns it, as the asyncio binding does.
///
/// ```text
/// zcasgi_transport::backend_matrix!(zcasgi_transport::testing::Inline(zcasgi_mio::MioBackend));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline<B>(pub B);

impl<B: Backend> Backend for Inline<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn start(
        &self,
        cfg: Arc<ServerConfig>,
        listeners: Vec<Listener>,
        sink: Arc<dyn EventSink>,
        worker: Option<WorkerSockets>,
    ) -> std::io::Result<Box<dyn RunningServer>> {
        let cfg = Arc::new(ServerConfig { io_threads: 0, ..(*cfg).clone() });
        let server: Arc<dyn RunningServer> = self.0.start(cfg, listeners, sink, worker)?.into();
        assert!(server.inline().is_some(), "{} has no inline reactor", self.0.name());
        let turned = server.clone();
        let turner = std::thread::Builder::new()
            .name("inline-turner".to_owned())
            .spawn(move || turn_until_finished(&*turned))?;
        Ok(Box::new(Turned { server, turner: Mutex::new(Some(turner)) }))
    }
}

/// Turns `server`'s loop until it finished: on readiness of its descriptor and at its deadlines.
fn turn_until_finished(server: &dyn RunningServer) {
    let inline = server.inline().expect("an inline reactor");
    while !server.is_finished() {
        let wait = inline
            .next_deadline()
            .map_or(LOOK, |at| at.saturating_duration_since(Instant::now()).min(LOOK));
        wait_readable(inline, wait);
        inline.turn();
    }
}

/// Waits until the loop's descriptor is readable or `timeout` passed.
fn wait_readable(inline: &dyn InlineReactor, timeout: Duration) {
    let fd = inline.fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).expect("a short timeout");
    // EINTR, or anything else: the caller turns and looks again.
    let _ = poll(&mut fds, Some(&timeout));
}

/// A server started by [`Inline`], and the thread turning it.
struct Turned {
    server: Arc<dyn RunningServer>,
    turner: Mutex<Option<JoinHandle<()>>>,
}

impl RunningServer for Turned {
    fn shutdown(&self) {
        self.server.shutdown();
    }

    fn join(&self, timeout: Duration) -> bool {
        let finished = self.server.join(timeout);
        // Finished now (or dropped by force): the turner stops at its next look.
        let turner = self.turner.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(turner) = turner {
            turner.join().expect("the turning thread panicked");
        }
        finished
    }

    fn connection_count(&self) -> usize {
        self.server.connection_count()
    }

    fn is_finished(&self) -> bool {
        self.server.is_finished()
    }

    fn inline(&self) -> Option<&dyn InlineReactor> {
        self.server.inline()
    }
}

impl Drop for Turned {
    fn drop(&mut self) {
        // Dropped while serving: stop it now, as a backend's server does, and its turner.
        if self.turner.get_mut().unwrap_or_else(PoisonError::into_inner).is_some() {
            let _ = self.join(Duration::ZERO);
        }
    }
}
