//! `handshakes`: connect, upgrade, close, as many times as possible (or at a fixed rate).
//!
//! Each cycle opens a TCP connection from the next source address, sends the upgrade request,
//! waits for the `101` head, sends a close frame (1000) and waits for the server's close frame
//! or EOF (at most [`CLOSE_WAIT`]), then drops the socket. `--concurrency` cycles run at once;
//! with `--rate` a new cycle starts on a fixed schedule instead of as soon as one ends.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::latency::{new_histogram, summary};
use crate::net::{self, Target};
use crate::sys::{Sample, Window};
use crate::workers;
use crate::ws::{self, Event, FrameReader};
use crate::Common;

/// Arguments of `handshakes`.
#[derive(Debug, Args)]
pub struct HandshakeArgs {
    /// WebSocket URL to upgrade.
    #[arg(long)]
    pub url: String,
    /// Stop after this many handshakes (default: run for --duration).
    #[arg(long)]
    pub total: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Start handshakes at this many per second instead of back to back.
    #[arg(long)]
    pub conns_per_sec: Option<f64>,
    /// CA certificate (PEM) to trust for a `wss://` URL (each handshake then includes a full
    /// TLS handshake).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// Longest wait for the server's close after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Tally {
    ok: Cell<u64>,
    errors: Cell<u64>,
    first_error: std::cell::RefCell<Option<String>>,
}

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message for bad arguments.
pub fn run(args: &HandshakeArgs) -> Result<Value, String> {
    let target = Target::parse(&args.url)?;
    args.common.check(args.concurrency)?;
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let tls = args.ca_file.as_deref().map(crate::tls::connector).transpose()?;
    Ok(workers::block_on_local(drive(args, target, tls)))
}

async fn drive(
    args: &HandshakeArgs,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Value {
    let tls = Rc::new(tls);
    let common = &args.common;
    let target = Rc::new(target);
    let request: Rc<[u8]> = target.upgrade_request().into();
    let close: Rc<[u8]> = ws::close_frame().into();
    let sources: Rc<[std::net::Ipv4Addr]> = common.sources.clone().into();
    let timeout = common.connect_timeout();
    let total = args.total.unwrap_or(u64::MAX);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let next_ticket = Rc::new(Cell::new(0u64));
    let tally = Rc::new(Tally::default());
    let hist = Rc::new(std::cell::RefCell::new(new_histogram()));
    let pids = &common.server_pids;
    let first = Sample::take(pids);
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let (target, request, close, sources) =
            (Rc::clone(&target), Rc::clone(&request), Rc::clone(&close), Rc::clone(&sources));
        let (next_ticket, tally, hist) =
            (Rc::clone(&next_ticket), Rc::clone(&tally), Rc::clone(&hist));
        let tls = Rc::clone(&tls);
        let rate = args.conns_per_sec;
        tasks.spawn_local(async move {
            loop {
                let ticket = next_ticket.get();
                if ticket >= total || Instant::now() >= end {
                    return;
                }
                next_ticket.set(ticket + 1);
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(ticket as f64 / rate);
                    if due >= end {
                        return;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let began = Instant::now();
                let source = net::source_for(&sources, ticket as usize);
                match cycle(&target, &request, &close, source, timeout, tls.as_ref().as_ref()).await
                {
                    Ok(upgraded) => {
                        tally.ok.set(tally.ok.get() + 1);
                        let ns = u64::try_from((upgraded - began).as_nanos()).unwrap_or(u64::MAX);
                        hist.borrow_mut().saturating_record(ns.max(1));
                    }
                    Err(error) => {
                        tally.errors.set(tally.errors.get() + 1);
                        tally.first_error.borrow_mut().get_or_insert_with(|| error.to_string());
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let last = Sample::take(pids);
    let window = Window::between(&first, &last);
    let ok = tally.ok.get();
    let mut report = window.json(1, pids, ok, "server_cpu_us_per_handshake");
    report["scenario"] = "handshakes".into();
    report["url"] = args.url.clone().into();
    report["concurrency"] = args.concurrency.into();
    report["conns_per_sec"] = args.conns_per_sec.into();
    report["handshakes"] = ok.into();
    report["handshakes_per_s"] = (ok as f64 / window.wall.max(1e-9)).into();
    report["errors"] = tally.errors.get().into();
    report["first_error"] = tally.first_error.borrow().clone().into();
    report["upgrade_latency"] = summary(&hist.borrow(), false);
    report
}

/// One connect-upgrade-close cycle; returns when the `101` arrived.
async fn cycle(
    target: &Target,
    request: &[u8],
    close: &[u8],
    source: Option<std::net::Ipv4Addr>,
    timeout: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> io::Result<Instant> {
    let (mut stream, rest) = net::stream_connect(target, request, source, timeout, tls).await?;
    let upgraded = Instant::now();
    stream.write_all(close).await?;
    let mut reader = FrameReader::new(false);
    let mut closed = false;
    reader.feed(&rest, |e| closed |= e == Event::Close)?;
    let mut chunk = [0u8; 1024];
    let wait = async {
        while !closed {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            reader.feed(&chunk[..n], |e| closed |= e == Event::Close)?;
        }
        Ok::<(), io::Error>(())
    };
    // A server that does not answer the close within CLOSE_WAIT still counts: it upgraded.
    let _ = tokio::time::timeout(CLOSE_WAIT, wait).await;
    Ok(upgraded)
}
