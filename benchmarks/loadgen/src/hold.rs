//! `hold`: open many idle connections and keep them open.
//!
//! With `--socketio`, each connection is a python-socketio client on the websocket transport:
//! it counts as open once connected to the default namespace, and answers Engine.IO pings.
//!
//! Prints a first JSON line (`"event": "open"`) once every connection has opened or failed,
//! so the harness can read the server's memory, then holds the connections (answering pings)
//! until `--duration` passes or stdin reaches EOF, and prints a final line (`"event": "done"`).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::Target;
use crate::sio;
use crate::workers::{self, Dialer, ReadBuf, Shared};
use crate::ws::FrameReader;
use crate::{emit, Common};

/// Arguments of `hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// WebSocket URL to connect to (with `--socketio`, the server's base URL).
    #[arg(long)]
    pub url: String,
    /// Connect python-socketio clients (Engine.IO v4 over websocket) instead of bare WebSockets.
    #[arg(long)]
    pub socketio: bool,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Longest time to hold them, in seconds (stdin EOF ends it sooner).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug)]
struct Ctx {
    dialer: Dialer,
    shared: Arc<Shared>,
    conns: usize,
    threads: usize,
    concurrency: usize,
    socketio: bool,
}

/// Runs the scenario; prints the "open" line itself and returns the final report.
///
/// # Errors
/// A message for bad arguments.
pub fn run(args: &HoldArgs) -> Result<Value, String> {
    let common = &args.common;
    common.check(args.conns)?;
    let mut target = Target::parse(&args.url)?;
    if args.socketio {
        target = target.join(sio::WEBSOCKET_PATH);
    }
    let threads = common.threads.max(1);
    let shared = Shared::new(threads);
    let ctx = Arc::new(Ctx {
        dialer: Dialer::new(target, common.sources.clone(), common.connect_timeout()),
        shared: Arc::clone(&shared),
        conns: args.conns,
        threads,
        concurrency: common.connect_concurrency,
        socketio: args.socketio,
    });
    let worker_ctx = Arc::clone(&ctx);
    let _handles =
        workers::spawn(threads, move |thread| thread_main(thread, Arc::clone(&worker_ctx)));

    let (open, connect_s) = shared.wait_open(args.conns, common.connect_timeout_total());
    emit(&json!({
        "event": "open",
        "scenario": "hold",
        "conns": args.conns,
        "open": open,
        "connect_errors": shared.failed.load(Ordering::Acquire),
        "connect_s": connect_s,
        "first_error": shared.first_error(),
    }));

    let eof = Arc::new(AtomicBool::new(false));
    let eof_flag = Arc::clone(&eof);
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        eof_flag.store(true, Ordering::Release);
    });
    let held = Instant::now();
    workers::wait_until(Duration::from_secs_f64(args.duration), || eof.load(Ordering::Acquire));
    shared.set_state(workers::DONE);
    Ok(json!({
        "event": "done",
        "scenario": "hold",
        "conns": args.conns,
        "open": open,
        "connect_s": connect_s,
        "held_s": held.elapsed().as_secs_f64(),
        "closed_by_server": shared.dead.load(Ordering::Acquire),
        "errors": shared.dead.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire),
        "first_error": shared.first_error(),
    }))
}

async fn thread_main(thread: usize, ctx: Arc<Ctx>) {
    let buf = workers::read_buf();
    let gate = Arc::new(Semaphore::new((ctx.concurrency / ctx.threads).max(1)));
    let mut tasks = JoinSet::new();
    for index in (thread..ctx.conns).step_by(ctx.threads) {
        let (ctx, buf, gate) = (Arc::clone(&ctx), buf.clone(), Arc::clone(&gate));
        tasks.spawn_local(async move {
            if ctx.socketio {
                hold_socketio(&ctx, index, &buf, &gate).await;
                return;
            }
            let Some((mut stream, rest)) = ctx.dialer.dial(&ctx.shared, index, &gate).await else {
                return;
            };
            drop(gate);
            let mut reader = FrameReader::new(false);
            let mut rx = ctx.shared.subscribe();
            let held = async {
                reader.feed(&rest, |_| {})?;
                workers::idle_until(&mut stream, &buf, &mut reader, &mut rx, |s| s == workers::DONE)
                    .await
            };
            if let Err(error) = held.await {
                ctx.shared.conn_died(&error);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One python-socketio client: open once connected to the namespace, then idle until done.
async fn hold_socketio(ctx: &Ctx, index: usize, buf: &ReadBuf, gate: &Semaphore) {
    let mut reader = FrameReader::new(true);
    let mut inbox = Vec::new();
    let connected = async {
        let _permit = gate.acquire().await.map_err(io::Error::other)?;
        let (mut stream, rest) = ctx.dialer.connect(index).await?;
        sio::connect(&mut stream, buf, &mut reader, &mut inbox, &rest).await?;
        Ok::<_, io::Error>(stream)
    };
    let mut stream = match tokio::time::timeout(ctx.dialer.timeout, connected).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return ctx.shared.connect_failed(&error),
        Err(_) => return ctx.shared.connect_failed(&"socket.io connect timed out"),
    };
    ctx.shared.open.fetch_add(1, Ordering::AcqRel);
    let mut rx = ctx.shared.subscribe();
    if let Err(error) =
        sio::idle_until_done(&mut stream, buf, &mut reader, &mut inbox, &mut rx).await
    {
        ctx.shared.conn_died(&error);
    }
}
