//! `echo`: closed-loop echo throughput over many connections.
//!
//! Every connection keeps `inflight` messages outstanding: it writes that many frames, and each
//! time replies arrive it writes as many new frames in one `write` (pipelining when
//! `inflight > 1`). Several sizes and in-flight depths run as consecutive phases over the same
//! connections; each phase has a warm-up, a measured window, and a drain in which connections
//! stop sending and wait for their outstanding replies, so phases never overlap.
//!
//! The warm-up lasts `--warmup` seconds and, beyond that, until every connection has had its
//! first `inflight` replies (at most [`WARMUP_LIMIT`]): with 10,000 connections x 8 messages
//! in flight a slow server needs seconds just to answer the first burst, and a window that
//! starts earlier would measure that burst rather than the steady state. Likewise the measured
//! window lasts `--duration` seconds and, beyond that, until it has seen `--min-rounds` full
//! rounds (`conns x inflight` replies each), at most `--max-window` seconds: a window shorter
//! than one round would count at most one reply per connection.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::Target;
use crate::sys::{Sample, Window};
use crate::workers::{self, Dialer, ReadBuf, Shared, State};
use crate::ws::{self, Event, FrameReader};
use crate::Common;

/// Arguments of `echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// WebSocket URL of an echo endpoint (ws://127.0.0.x:PORT/PATH).
    #[arg(long)]
    pub url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Message sizes in bytes; several (comma-separated) run as consecutive phases.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub size: Vec<usize>,
    /// Messages in flight per connection (1 = ping-pong; more = pipelined); several allowed.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub inflight: Vec<usize>,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Full rounds (every connection's in-flight messages answered) each window must contain.
    #[arg(long, default_value_t = 2.0)]
    pub min_rounds: f64,
    /// Longest measured window in seconds, whatever the rounds.
    #[arg(long, default_value_t = 10.0)]
    pub max_window: f64,
    #[command(flatten)]
    pub common: Common,
}

/// One phase: a message size and an in-flight depth, with its frames built once.
#[derive(Debug)]
struct Phase {
    size: usize,
    inflight: usize,
    frame_len: usize,
    /// `inflight` copies of the masked frame, back to back.
    frames: Vec<u8>,
}

#[derive(Debug)]
struct Ctx {
    dialer: Dialer,
    shared: Arc<Shared>,
    phases: Vec<Phase>,
    conns: usize,
    threads: usize,
    concurrency: usize,
}

/// How long connections get to receive their outstanding replies at the end of a phase.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest warm-up spent waiting for every connection's first round of replies.
const WARMUP_LIMIT: Duration = Duration::from_secs(20);

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message for bad arguments or when no connection could be opened.
pub fn run(args: &EchoArgs) -> Result<Value, String> {
    let common = &args.common;
    common.check(args.conns)?;
    if args.size.is_empty() || args.inflight.contains(&0) {
        return Err("--size needs a value and --inflight values must be at least 1".into());
    }
    let target = Target::parse(&args.url)?;
    let phases = args
        .size
        .iter()
        .flat_map(|&size| {
            args.inflight.iter().map(move |&inflight| {
                let frames = ws::binary_frames(size, inflight);
                Phase { size, inflight, frame_len: frames.len() / inflight, frames }
            })
        })
        .collect();
    let threads = common.threads.max(1);
    let shared = Shared::new(threads);
    let ctx = Arc::new(Ctx {
        dialer: Dialer::new(target, common.sources.clone(), common.connect_timeout()),
        shared: Arc::clone(&shared),
        phases,
        conns: args.conns,
        threads,
        concurrency: common.connect_concurrency,
    });
    let worker_ctx = Arc::clone(&ctx);
    let _handles =
        workers::spawn(threads, move |thread| thread_main(thread, Arc::clone(&worker_ctx)));

    let (open, connect_s) = shared.wait_open(args.conns, common.connect_timeout_total());
    let mut report = json!({
        "scenario": "echo",
        "url": args.url,
        "conns": args.conns,
        "open": open,
        "connect_errors": shared.failed.load(Ordering::Acquire),
        "connect_s": connect_s,
        "threads": threads,
    });
    if open == 0 {
        report["first_error"] = shared.first_error().into();
        return Err(format!("no connection opened: {report}"));
    }

    let pids = &common.server_pids;
    let mut phase_reports = Vec::new();
    let (mut all_msgs, mut all_bytes, mut all_wall) = (0u64, 0u64, 0f64);
    for (p, phase) in ctx.phases.iter().enumerate() {
        let dead_before = shared.dead.load(Ordering::Acquire);
        shared.drained.store(0, Ordering::Release);
        shared.warm.store(0, Ordering::Release);
        let phase_start = Instant::now();
        shared.set_state(workers::running(p));
        let alive = open - dead_before;
        std::thread::sleep(Duration::from_secs_f64(args.warmup));
        let warmed = workers::wait_until(WARMUP_LIMIT, || {
            shared.warm.load(Ordering::Acquire) + shared.dead.load(Ordering::Acquire) - dead_before
                >= alive
        });
        let warmup_s = phase_start.elapsed().as_secs_f64();
        let (msgs0, bytes0) = shared.totals();
        let start = Sample::take(pids);
        std::thread::sleep(Duration::from_secs_f64(args.duration));
        let round = (alive * phase.inflight) as f64;
        let max_window = Duration::from_secs_f64(args.max_window.max(args.duration));
        let left = max_window.saturating_sub(start.at.elapsed());
        workers::wait_until(left, || (shared.totals().0 - msgs0) as f64 >= args.min_rounds * round);
        let (msgs1, bytes1) = shared.totals();
        let end = Sample::take(pids);
        shared.set_state(workers::stopping(p));
        let drained = workers::wait_until(DRAIN_TIMEOUT, || {
            shared.drained.load(Ordering::Acquire) + shared.dead.load(Ordering::Acquire)
                - dead_before
                >= alive
        });
        let window = Window::between(&start, &end);
        let (msgs, bytes) = (msgs1 - msgs0, bytes1 - bytes0);
        all_msgs += msgs;
        all_bytes += bytes;
        all_wall += window.wall;
        let mut entry = window.json(threads, pids, msgs, "server_cpu_us_per_msg");
        entry["size"] = phase.size.into();
        entry["inflight"] = phase.inflight.into();
        entry["msgs"] = msgs.into();
        entry["msgs_per_s"] = (msgs as f64 / window.wall).into();
        entry["bytes_per_s"] = (bytes as f64 / window.wall).into();
        entry["errors"] = (shared.dead.load(Ordering::Acquire) - dead_before).into();
        entry["drained"] = drained.into();
        entry["warmed"] = warmed.into();
        entry["warmup_s"] = warmup_s.into();
        entry["rounds"] = (msgs as f64 / round.max(1.0)).into();
        phase_reports.push(entry);
    }
    shared.set_state(workers::DONE);
    report["phases"] = phase_reports.into();
    report["msgs"] = all_msgs.into();
    report["msgs_per_s"] = (all_msgs as f64 / all_wall.max(1e-9)).into();
    report["bytes_per_s"] = (all_bytes as f64 / all_wall.max(1e-9)).into();
    report["errors"] =
        (shared.dead.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire)).into();
    report["first_error"] = shared.first_error().into();
    Ok(report)
}

async fn thread_main(thread: usize, ctx: Arc<Ctx>) {
    let buf = workers::read_buf();
    let gate = Arc::new(Semaphore::new((ctx.concurrency / ctx.threads).max(1)));
    let mut tasks = JoinSet::new();
    for index in (thread..ctx.conns).step_by(ctx.threads) {
        let (ctx, buf, gate) = (Arc::clone(&ctx), buf.clone(), Arc::clone(&gate));
        tasks.spawn_local(async move {
            let Some((mut stream, rest)) = ctx.dialer.dial(&ctx.shared, index, &gate).await else {
                return;
            };
            drop(gate);
            if let Err(error) = connection(&ctx, thread, &mut stream, &rest, &buf).await {
                ctx.shared.conn_died(&error);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    ctx: &Ctx,
    thread: usize,
    stream: &mut TcpStream,
    rest: &[u8],
    buf: &ReadBuf,
) -> io::Result<()> {
    let shared = &ctx.shared;
    let counters = &shared.counters[thread];
    let mut rx = shared.subscribe();
    let mut reader = FrameReader::new(false);
    let mut pongs = Vec::new();
    reader.feed(rest, |event| {
        if let Event::Ping(payload) = event {
            workers::queue_pong(&mut pongs, payload);
        }
    })?;
    workers::flush_pongs(stream, &mut pongs).await?;
    let mut last: Option<State> = None;
    loop {
        let state = workers::idle_until(stream, buf, &mut reader, &mut rx, |s| {
            s == workers::DONE || (workers::is_running(s) && Some(s) != last)
        })
        .await?;
        if state == workers::DONE {
            return Ok(());
        }
        last = Some(state);
        let phase = &ctx.phases[workers::phase_of(state)];
        stream.write_all(&phase.frames).await?;
        let mut outstanding = phase.inflight;
        let mut first_round = phase.inflight;
        while outstanding > 0 {
            let mut done = 0usize;
            let mut closed = false;
            workers::read_some(stream, buf, &mut reader, |event| match event {
                Event::Message { .. } => done += 1,
                Event::Ping(payload) => workers::queue_pong(&mut pongs, payload),
                Event::Close => closed = true,
            })
            .await?;
            if closed {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
            }
            if done > 0 {
                if first_round > 0 {
                    first_round = first_round.saturating_sub(done);
                    if first_round == 0 {
                        shared.warm.fetch_add(1, Ordering::AcqRel);
                    }
                }
                counters.msgs.fetch_add(done as u64, Ordering::Relaxed);
                counters.bytes.fetch_add((done * phase.size) as u64, Ordering::Relaxed);
                let done = done.min(outstanding);
                outstanding -= done;
                if shared.state() == state {
                    stream.write_all(&phase.frames[..done * phase.frame_len]).await?;
                    outstanding += done;
                }
            }
            workers::flush_pongs(stream, &mut pongs).await?;
        }
        shared.drained.fetch_add(1, Ordering::AcqRel);
    }
}
