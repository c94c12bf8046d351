//! `latency`: round-trip latency at a fixed aggregate rate (open loop).
//!
//! Each of `conns` connections sends on its own schedule, `conns / rate` seconds apart, the
//! schedules staggered so that the aggregate is `rate` messages per second. Sends do not wait
//! for replies (open loop): a stalled server meets a backlog, as it would in production. Each
//! reply is matched to its send (replies come back in order) and the round trip is recorded
//! twice: from the moment the frame was written, and from the moment the schedule said it
//! should have been (the second figure includes send lag, so coordinated omission cannot hide
//! a stall; it also includes the timer's granularity of about a millisecond).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::Target;
use crate::sys::{Sample, Window};
use crate::workers::{self, Dialer, ReadBuf, Shared};
use crate::ws::{self, Event, FrameReader};
use crate::Common;

/// Arguments of `latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// WebSocket URL of an echo endpoint.
    #[arg(long)]
    pub url: String,
    /// Aggregate messages per second over all connections.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Connections sharing the rate.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds before the window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Latency histograms: from the actual write, and from the scheduled send time.
#[derive(Debug, Clone)]
pub struct Hists {
    /// Nanoseconds from write to reply.
    pub sent: Histogram<u64>,
    /// Nanoseconds from scheduled send to reply.
    pub scheduled: Histogram<u64>,
    /// Messages sent inside the window.
    pub sent_in_window: u64,
    /// Largest lag of a send behind its schedule, in nanoseconds.
    pub max_send_lag_ns: u64,
}

impl Hists {
    fn new() -> Self {
        Self {
            sent: new_histogram(),
            scheduled: new_histogram(),
            sent_in_window: 0,
            max_send_lag_ns: 0,
        }
    }

    fn merge(&mut self, other: &Self) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.sent.add(&other.sent);
        let _ = self.scheduled.add(&other.scheduled);
        self.sent_in_window += other.sent_in_window;
        self.max_send_lag_ns = self.max_send_lag_ns.max(other.max_send_lag_ns);
    }
}

/// A histogram of nanoseconds from 1 ns to 100 s with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentile summary (µs) of a nanosecond histogram, with a CDF sample list for plots.
pub fn summary(hist: &Histogram<u64>, with_cdf: bool) -> Value {
    let us = |ns: u64| ns as f64 / 1e3;
    let mut out = json!({
        "samples": hist.len(),
        "mean_us": hist.mean() / 1e3,
        "min_us": us(hist.min()),
        "p50_us": us(hist.value_at_quantile(0.5)),
        "p90_us": us(hist.value_at_quantile(0.9)),
        "p99_us": us(hist.value_at_quantile(0.99)),
        "p999_us": us(hist.value_at_quantile(0.999)),
        "max_us": us(hist.max()),
    });
    if with_cdf {
        // Quantiles 1 - 10^-x for x = 0, 0.1, ..., 4 (up to p99.99), then the maximum.
        let mut cdf: Vec<Value> = (0..=40)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-f64::from(i) / 10.0);
                json!({"q": q, "us": us(hist.value_at_quantile(q))})
            })
            .collect();
        cdf.push(json!({"q": 1.0, "us": us(hist.max())}));
        out["cdf"] = cdf.into();
    }
    out
}

#[derive(Debug)]
struct Ctx {
    dialer: Dialer,
    shared: Arc<Shared>,
    frame: Vec<u8>,
    conns: usize,
    threads: usize,
    concurrency: usize,
    period: Duration,
    warmup: Duration,
    duration: Duration,
    /// Time zero of every schedule, set by the controller when sending starts.
    start: OnceLock<Instant>,
}

/// How long connections wait for outstanding replies after the window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message for bad arguments or when no connection could be opened.
pub fn run(args: &LatencyArgs) -> Result<Value, String> {
    let common = &args.common;
    common.check(args.conns)?;
    if args.rate.is_nan() || args.rate <= 0.0 || args.conns == 0 {
        return Err("--rate and --conns must be positive".into());
    }
    let target = Target::parse(&args.url)?;
    let threads = common.threads.max(1);
    let shared = Shared::new(threads);
    let ctx = Arc::new(Ctx {
        dialer: Dialer::new(target, common.sources.clone(), common.connect_timeout()),
        shared: Arc::clone(&shared),
        frame: ws::binary_frames(args.size, 1),
        conns: args.conns,
        threads,
        concurrency: common.connect_concurrency,
        period: Duration::from_secs_f64(args.conns as f64 / args.rate),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        start: OnceLock::new(),
    });
    let (tx, rx) = std::sync::mpsc::channel::<Hists>();
    let worker_ctx = Arc::clone(&ctx);
    let handles = workers::spawn(threads, move |thread| {
        thread_main(thread, Arc::clone(&worker_ctx), tx.clone())
    });

    let (open, connect_s) = shared.wait_open(args.conns, common.connect_timeout_total());
    if open == 0 {
        return Err(format!("no connection opened: {:?}", shared.first_error()));
    }
    let pids = &common.server_pids;
    let start = Instant::now();
    let _ = ctx.start.set(start);
    shared.set_state(workers::running(0));
    std::thread::sleep(ctx.warmup.saturating_sub(start.elapsed()));
    let (msgs0, _) = shared.totals();
    let first = Sample::take(pids);
    std::thread::sleep((ctx.warmup + ctx.duration).saturating_sub(start.elapsed()));
    let (msgs1, _) = shared.totals();
    let last = Sample::take(pids);
    shared.set_state(workers::stopping(0));
    for handle in handles {
        let _ = handle.join();
    }
    let mut hists = Hists::new();
    for part in rx.try_iter() {
        hists.merge(&part);
    }
    let window = Window::between(&first, &last);
    let received = msgs1 - msgs0;
    let mut report = window.json(threads, pids, received, "server_cpu_us_per_msg");
    report["scenario"] = "latency".into();
    report["url"] = args.url.clone().into();
    report["rate"] = args.rate.into();
    report["achieved_rate"] = (hists.sent_in_window as f64 / args.duration).into();
    report["received_per_s"] = (received as f64 / window.wall).into();
    report["conns"] = args.conns.into();
    report["open"] = open.into();
    report["connect_s"] = connect_s.into();
    report["size"] = args.size.into();
    report["threads"] = threads.into();
    report["max_send_lag_us"] = (hists.max_send_lag_ns as f64 / 1e3).into();
    report["errors"] =
        (shared.dead.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire)).into();
    report["first_error"] = shared.first_error().into();
    report["latency"] = summary(&hists.sent, true);
    report["latency_from_schedule"] = summary(&hists.scheduled, false);
    Ok(report)
}

async fn thread_main(thread: usize, ctx: Arc<Ctx>, out: std::sync::mpsc::Sender<Hists>) {
    let buf = workers::read_buf();
    let gate = Arc::new(Semaphore::new((ctx.concurrency / ctx.threads).max(1)));
    let hists = Rc::new(RefCell::new(Hists::new()));
    let mut tasks = JoinSet::new();
    for index in (thread..ctx.conns).step_by(ctx.threads) {
        let (ctx, buf, gate, hists) =
            (Arc::clone(&ctx), buf.clone(), Arc::clone(&gate), Rc::clone(&hists));
        tasks.spawn_local(async move {
            let Some((mut stream, rest)) = ctx.dialer.dial(&ctx.shared, index, &gate).await else {
                return;
            };
            drop(gate);
            if let Err(error) = connection(&ctx, index, &mut stream, &rest, &buf, &hists).await {
                ctx.shared.conn_died(&error);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = out.send(hists.borrow().clone());
}

async fn connection(
    ctx: &Ctx,
    index: usize,
    stream: &mut TcpStream,
    rest: &[u8],
    buf: &ReadBuf,
    hists: &RefCell<Hists>,
) -> io::Result<()> {
    let shared = &ctx.shared;
    let mut rx = shared.subscribe();
    let mut reader = FrameReader::new(false);
    let mut pongs = Vec::new();
    reader.feed(rest, |_| {})?;
    workers::idle_until(stream, buf, &mut reader, &mut rx, |s| s != workers::IDLE).await?;
    let Some(&t0) = ctx.start.get() else { return Ok(()) };
    let window_start = t0 + ctx.warmup;
    let window_end = window_start + ctx.duration;
    // Stagger the schedules: connection i starts i/conns of a period after t0.
    let mut next = t0 + ctx.period.mul_f64(index as f64 / ctx.conns as f64);
    let mut pending: VecDeque<(Instant, Instant)> = VecDeque::with_capacity(64);
    let mut local = Hists::new();
    let sleep = tokio::time::sleep_until(next.into());
    tokio::pin!(sleep);
    let drain_deadline = tokio::time::sleep_until((window_end + DRAIN_TIMEOUT).into());
    tokio::pin!(drain_deadline);
    loop {
        let sending = next < window_end && shared.state() == workers::running(0);
        if !sending && pending.is_empty() {
            break;
        }
        let mut closed = false;
        let mut replies = 0usize;
        tokio::select! {
            biased;
            read = workers::read_some(stream, buf, &mut reader, |event| match event {
                Event::Message { .. } => replies += 1,
                Event::Ping(payload) => workers::queue_pong(&mut pongs, payload),
                Event::Close => closed = true,
            }) => {
                read?;
                let now = Instant::now();
                for _ in 0..replies {
                    let Some((scheduled, sent)) = pending.pop_front() else { break };
                    if sent >= window_start && sent < window_end {
                        local.sent.saturating_record(nanos(now - sent));
                        local.scheduled.saturating_record(nanos(now - scheduled));
                    }
                }
                shared.counters[index % ctx.threads].msgs.fetch_add(replies as u64, Ordering::Relaxed);
                if closed {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
                }
                workers::flush_pongs(stream, &mut pongs).await?;
            }
            () = &mut sleep, if sending => {
                let now = Instant::now();
                stream.write_all(&ctx.frame).await?;
                pending.push_back((next, now));
                if now >= window_start && now < window_end {
                    local.sent_in_window += 1;
                    local.max_send_lag_ns = local.max_send_lag_ns.max(nanos(now - next));
                }
                next += ctx.period;
                sleep.as_mut().reset(next.into());
            }
            () = &mut drain_deadline, if !sending => {
                shared.note_error(&"replies still outstanding after the drain timeout");
                break;
            }
        }
    }
    hists.borrow_mut().merge(&local);
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}
