//! `rtt`: one connection, one message at a time (send, wait for the echo, repeat).
//!
//! With a single connection nothing is batched or amortised anywhere, so round trips per
//! second expose the fixed per-message cost of the whole path: client write, server read,
//! framing, the hop into the application and back, server write, client read.

use std::io;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::latency::{new_histogram, summary};
use crate::net::{self, Target};
use crate::sys::{Sample, Window};
use crate::workers;
use crate::ws::{self, Event, FrameReader};
use crate::Common;

/// Arguments of `rtt`.
#[derive(Debug, Args)]
pub struct RttArgs {
    /// WebSocket URL of an echo endpoint.
    #[arg(long)]
    pub url: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message when the connection fails.
pub fn run(args: &RttArgs) -> Result<Value, String> {
    let target = Target::parse(&args.url)?;
    let common = &args.common;
    workers::block_on_local(ping_pong(args, common, &target)).map_err(|e| e.to_string())
}

async fn ping_pong(args: &RttArgs, common: &Common, target: &Target) -> io::Result<Value> {
    let source = net::source_for(&common.sources, 0);
    let request = target.upgrade_request();
    let (mut stream, rest) =
        net::ws_connect(target, &request, source, common.connect_timeout()).await?;
    let frame = ws::binary_frames(args.size, 1);
    let buf = workers::read_buf();
    let mut reader = FrameReader::new(false);
    let mut pongs = Vec::new();
    reader.feed(&rest, |_| {})?;
    let mut hist = new_histogram();
    let pids = &common.server_pids;
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.duration);
    let mut first: Option<Sample> = None;
    let mut round_trips = 0u64;
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            break;
        }
        if first.is_none() && sent >= window_start {
            first = Some(Sample::take(pids));
        }
        stream.write_all(&frame).await?;
        let mut got = 0;
        while got == 0 {
            let mut closed = false;
            workers::read_some(&stream, &buf, &mut reader, |event| match event {
                Event::Message { .. } => got += 1,
                Event::Ping(payload) => workers::queue_pong(&mut pongs, payload),
                Event::Close => closed = true,
            })
            .await?;
            if closed {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
            }
            workers::flush_pongs(&mut stream, &mut pongs).await?;
        }
        if first.is_some() {
            round_trips += 1;
            let ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
            hist.saturating_record(ns.max(1));
        }
    }
    let last = Sample::take(pids);
    let first = first.unwrap_or(last);
    let window = Window::between(&first, &last);
    let mut report = window.json(1, pids, round_trips, "server_cpu_us_per_msg");
    report["scenario"] = "rtt".into();
    report["url"] = args.url.clone().into();
    report["size"] = args.size.into();
    report["round_trips"] = round_trips.into();
    report["round_trips_per_s"] = (round_trips as f64 / window.wall.max(1e-9)).into();
    report["latency"] = summary(&hist, false);
    Ok(report)
}
