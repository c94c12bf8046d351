//! `acks`: Socket.IO events with acknowledgements, closed loop over many clients.
//!
//! Each client is an Engine.IO v4 client on the websocket transport connected to the default
//! namespace (as in `fanout`). Once every client is connected, each emits
//! `42<id>["<event>","<arg>-<index>"]` (an event that asks for an acknowledgement) and waits for
//! the server's `43<id>[...]` before it emits the next one: one event in flight per client,
//! answering Engine.IO pings meanwhile. After `--warmup` seconds, acknowledgements are counted
//! for `--duration` seconds, with the server's CPU time over the same window. With the chat
//! example's `join` event and a room of its own per client, every event runs a handler that
//! enters the room (already entered after the first) and answers with the member count (1).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::latency::{new_histogram, summary};
use crate::net::Target;
use crate::sio;
use crate::sys::{Sample, Window};
use crate::workers::{self, Dialer, ReadBuf};
use crate::ws::{Event, FrameReader};
use crate::Common;

/// Arguments of `acks`.
#[derive(Debug, Args)]
pub struct AcksArgs {
    /// Base HTTP URL of the Socket.IO server (the chat example), e.g. `http://127.0.0.1:8000/`.
    #[arg(long)]
    pub url: String,
    /// Clients, each with one event in flight.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// The event emitted.
    #[arg(long, default_value = "join")]
    pub event: String,
    /// Its argument, followed by `-<client index>` (a room of its own for `join`).
    #[arg(long, default_value = "ack")]
    pub arg: String,
    /// Unmeasured seconds of events first.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Clients are connecting; no event is sent yet.
const CONNECTING: u8 = 0;
/// Clients emit events.
const RUNNING: u8 = 1;
/// Clients finish the event in flight and stop.
const STOPPING: u8 = 2;

/// How long clients may take to receive their last acknowledgement after the window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Totals {
    open: Cell<usize>,
    failed: Cell<usize>,
    dead: Cell<usize>,
    finished: Cell<usize>,
    acks: Cell<u64>,
    /// Acknowledgements whose id was not the one in flight.
    wrong_acks: Cell<u64>,
    in_window: Cell<bool>,
    /// Nanoseconds from an event's write to its acknowledgement, inside the window.
    latency: RefCell<Histogram<u64>>,
    first_error: RefCell<Option<String>>,
}

impl Totals {
    fn error(&self, error: &dyn std::fmt::Display) {
        self.first_error.borrow_mut().get_or_insert_with(|| error.to_string());
    }
}

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message for bad arguments.
pub fn run(args: &AcksArgs) -> Result<Value, String> {
    args.common.check(args.conns)?;
    if args.conns == 0 || args.duration <= 0.0 {
        return Err("--conns and --duration must be positive".into());
    }
    let target = Target::parse(&args.url)?.join(sio::WEBSOCKET_PATH);
    Ok(workers::block_on_local(drive(args, target)))
}

async fn drive(args: &AcksArgs, target: Target) -> Value {
    let common = &args.common;
    let totals = Rc::new(Totals {
        open: Cell::new(0),
        failed: Cell::new(0),
        dead: Cell::new(0),
        finished: Cell::new(0),
        acks: Cell::new(0),
        wrong_acks: Cell::new(0),
        in_window: Cell::new(false),
        latency: RefCell::new(new_histogram()),
        first_error: RefCell::new(None),
    });
    let dialer = Rc::new(Dialer::new(target, common.sources.clone(), common.connect_timeout()));
    let gate = Rc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let buf = workers::read_buf();
    let (state_tx, state_rx) = watch::channel(CONNECTING);
    let event = json!(args.event).to_string();
    let started = Instant::now();
    for index in 0..args.conns {
        let client = Client {
            index,
            dialer: Rc::clone(&dialer),
            body: format!("[{event},{}]", json!(format!("{}-{index}", args.arg))),
            totals: Rc::clone(&totals),
            buf: buf.clone(),
        };
        let (gate, state) = (Rc::clone(&gate), state_rx.clone());
        tokio::task::spawn_local(async move {
            let totals = Rc::clone(&client.totals);
            let opened = client.run(&gate, state).await;
            if let Err(error) = opened {
                totals.error(&format!("client {}: {error}", client.index));
                totals.dead.set(totals.dead.get() + 1);
            }
            totals.finished.set(totals.finished.get() + 1);
        });
    }
    drop(state_rx);
    let deadline = started + common.connect_timeout_total();
    while totals.open.get() + totals.failed.get() < args.conns && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    let open = totals.open.get();

    let pids = &common.server_pids;
    state_tx.send_replace(RUNNING);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(0.0))).await;
    let (before, acks_before) = (Sample::take(pids), totals.acks.get());
    totals.in_window.set(true);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    totals.in_window.set(false);
    let (after, acks_after) = (Sample::take(pids), totals.acks.get());
    state_tx.send_replace(STOPPING);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while totals.finished.get() < args.conns && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let window = Window::between(&before, &after);
    let acks = acks_after - acks_before;
    let mut report = window.json(1, pids, acks, "server_cpu_us_per_event");
    let extra = json!({
        "scenario": "acks",
        "url": args.url,
        "event": args.event,
        "conns": args.conns,
        "open": open,
        "connect_s": connect_s,
        "acks": acks,
        "events_per_s": if window.wall > 0.0 { acks as f64 / window.wall } else { 0.0 },
        "latency": summary(&totals.latency.borrow(), false),
        "wrong_acks": totals.wrong_acks.get(),
        "connect_errors": totals.failed.get(),
        "dead": totals.dead.get(),
        "drained": totals.finished.get() >= args.conns,
        "errors": totals.failed.get() + totals.dead.get() + totals.wrong_acks.get() as usize,
        "first_error": totals.first_error.borrow().clone(),
    });
    if let (Value::Object(report), Value::Object(extra)) = (&mut report, extra) {
        report.extend(extra);
    }
    report
}

struct Client {
    index: usize,
    dialer: Rc<Dialer>,
    /// The event's JSON array, after the packet type and id.
    body: String,
    totals: Rc<Totals>,
    buf: ReadBuf,
}

impl Client {
    /// Connects, waits for the start, then emits and awaits acknowledgements until stopped.
    /// A client that cannot connect is counted as failed and returns `Ok`.
    async fn run(&self, gate: &Semaphore, mut state: watch::Receiver<u8>) -> io::Result<()> {
        let mut reader = FrameReader::new(true);
        let mut inbox = Vec::new();
        let connected = async {
            let _permit = gate.acquire().await.map_err(io::Error::other)?;
            let (mut stream, rest) = self.dialer.connect(self.index).await?;
            sio::connect(&mut stream, &self.buf, &mut reader, &mut inbox, &rest).await?;
            Ok::<_, io::Error>(stream)
        };
        let mut stream = match tokio::time::timeout(self.dialer.timeout, connected).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.connect_failed(&error);
                return Ok(());
            }
            Err(_) => {
                self.connect_failed(&"socket.io connect timed out");
                return Ok(());
            }
        };
        self.totals.open.set(self.totals.open.get() + 1);
        self.wait_for_start(&mut stream, &mut reader, &mut inbox, &mut state).await?;
        let mut id: u64 = 0;
        while *state.borrow() == RUNNING {
            let sent = Instant::now();
            sio::send_text(&mut stream, &format!("42{id}{}", self.body)).await?;
            self.await_ack(&mut stream, &mut reader, &mut inbox, id).await?;
            self.totals.acks.set(self.totals.acks.get() + 1);
            if self.totals.in_window.get() {
                let ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                // Out-of-range values saturate at the histogram's bound.
                let _ = self.totals.latency.borrow_mut().record(ns.max(1));
            }
            id += 1;
        }
        Ok(())
    }

    fn connect_failed(&self, error: &dyn std::fmt::Display) {
        self.totals.failed.set(self.totals.failed.get() + 1);
        self.totals.error(&format!("client {}: {error}", self.index));
    }

    /// Answers pings until the state leaves `CONNECTING`.
    async fn wait_for_start(
        &self,
        stream: &mut TcpStream,
        reader: &mut FrameReader,
        inbox: &mut Vec<Vec<u8>>,
        state: &mut watch::Receiver<u8>,
    ) -> io::Result<()> {
        loop {
            for message in std::mem::take(inbox) {
                sio::handle(stream, &message).await?;
            }
            if *state.borrow_and_update() != CONNECTING {
                return Ok(());
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                read = self.read(stream, reader, inbox) => read?,
            }
        }
    }

    /// Reads until the acknowledgement of `id` arrives, answering pings meanwhile.
    async fn await_ack(
        &self,
        stream: &mut TcpStream,
        reader: &mut FrameReader,
        inbox: &mut Vec<Vec<u8>>,
        id: u64,
    ) -> io::Result<()> {
        loop {
            let mut acked = false;
            for message in std::mem::take(inbox) {
                match ack_id(&message) {
                    Some(got) if got == id => acked = true,
                    Some(_) => self.totals.wrong_acks.set(self.totals.wrong_acks.get() + 1),
                    None => sio::handle(stream, &message).await?,
                }
            }
            if acked {
                return Ok(());
            }
            self.read(stream, reader, inbox).await?;
        }
    }

    async fn read(
        &self,
        stream: &TcpStream,
        reader: &mut FrameReader,
        inbox: &mut Vec<Vec<u8>>,
    ) -> io::Result<()> {
        let mut closed = false;
        workers::read_some(stream, &self.buf, reader, |e| {
            closed |= e == Event::Close;
            sio::collect(inbox, e);
        })
        .await?;
        if closed {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
        }
        Ok(())
    }
}

/// The id of an acknowledgement on the default namespace, `43<id>[...]`.
fn ack_id(message: &[u8]) -> Option<u64> {
    let rest = message.strip_prefix(b"43")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b'[' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::ack_id;

    #[test]
    fn parses_ack_ids() {
        assert_eq!(ack_id(b"430[1]"), Some(0));
        assert_eq!(ack_id(b"4312345[\"ok\"]"), Some(12345));
        assert_eq!(ack_id(b"43[1]"), None);
        assert_eq!(ack_id(b"43/chat,1[1]"), None);
        assert_eq!(ack_id(b"421[\"message\"]"), None);
        assert_eq!(ack_id(b"437"), None);
    }
}
