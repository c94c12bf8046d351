//! `large`, `large-tcp` and `tcp-echo-server`: big messages against a raw TCP baseline.
//!
//! `large` echoes messages of `--size` bytes (1 MiB by default) over one WebSocket connection,
//! one at a time, writing the frame and reading the echo concurrently. `large-tcp` moves the
//! same bytes through `tcp-echo-server`, a plain TCP echo server (the harness pins it to the
//! server's core), so the report can give WebSocket throughput as a fraction of raw TCP on the
//! same machine through the same client.

use std::io;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::net::{self, Target};
use crate::sys::{Sample, Window};
use crate::tls::Stream;
use crate::workers;
use crate::ws::{self, Event, FrameReader};
use crate::{emit, Common};

/// Arguments of `large` and `large-tcp`.
#[derive(Debug, Args)]
pub struct LargeArgs {
    /// URL of the echo endpoint: ws://... for `large`, tcp://127.0.0.x:PORT for `large-tcp`.
    #[arg(long)]
    pub url: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// CA certificate (PEM) to trust for a `wss://` URL.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `tcp-echo-server`.
#[derive(Debug, Args)]
pub struct TcpEchoArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    pub port: u16,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub max_seconds: f64,
}

/// Which protocol `large` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket frames.
    WebSocket,
    /// Raw bytes.
    Tcp,
}

/// Runs `large` or `large-tcp` and returns the report.
///
/// # Errors
/// A message when the connection fails.
pub fn run(args: &LargeArgs, transport: Transport) -> Result<Value, String> {
    let target = Target::parse(&args.url)?;
    let tls = args.ca_file.as_deref().map(crate::tls::connector).transpose()?;
    workers::block_on_local(echo_large(args, &target, transport, tls.as_ref()))
        .map_err(|e| e.to_string())
}

async fn echo_large(
    args: &LargeArgs,
    target: &Target,
    transport: Transport,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> io::Result<Value> {
    let common = &args.common;
    let source = net::source_for(&common.sources, 0);
    let (mut stream, rest, message) = match transport {
        Transport::WebSocket => {
            let request = target.upgrade_request();
            let timeout = common.connect_timeout();
            let (stream, rest) =
                net::stream_connect(target, &request, source, timeout, tls).await?;
            (stream, rest, ws::binary_frames(args.size, 1))
        }
        Transport::Tcp => {
            let tcp = net::tcp_connect(target.addr, source).await?;
            (Stream::Plain(tcp), Vec::new(), ws::payload(args.size))
        }
    };
    let mut reader = FrameReader::new(false);
    reader.feed(&rest, |_| {})?;
    let mut buf = vec![0u8; workers::READ_BUF_LEN];
    let pids = &common.server_pids;
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.duration);
    let mut first: Option<Sample> = None;
    let mut messages = 0u64;
    while Instant::now() < window_end {
        if first.is_none() && Instant::now() >= window_start {
            first = Some(Sample::take(pids));
        }
        let (mut rd, mut wr) = tokio::io::split(&mut stream);
        let write = wr.write_all(&message);
        let read = async {
            match transport {
                Transport::WebSocket => loop {
                    let n = rd.read(&mut buf).await?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
                    }
                    let mut done = false;
                    let mut closed = false;
                    reader.feed(&buf[..n], |e| match e {
                        Event::Message { .. } => done = true,
                        Event::Close => closed = true,
                        Event::Ping(_) => {}
                    })?;
                    if closed {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed"));
                    }
                    if done {
                        return Ok(());
                    }
                },
                Transport::Tcp => {
                    let mut left = args.size;
                    while left > 0 {
                        let n = rd.read(&mut buf[..left.min(workers::READ_BUF_LEN)]).await?;
                        if n == 0 {
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
                        }
                        left -= n;
                    }
                    Ok(())
                }
            }
        };
        let (written, echoed) = tokio::join!(write, read);
        written?;
        echoed?;
        if first.is_some() {
            messages += 1;
        }
    }
    let last = Sample::take(pids);
    let first = first.unwrap_or(last);
    let window = Window::between(&first, &last);
    let bytes = messages * args.size as u64;
    let mut report = window.json(1, pids, messages, "server_cpu_us_per_msg");
    report["scenario"] = match transport {
        Transport::WebSocket => "large",
        Transport::Tcp => "large-tcp",
    }
    .into();
    report["url"] = args.url.clone().into();
    report["size"] = args.size.into();
    report["msgs"] = messages.into();
    report["msgs_per_s"] = (messages as f64 / window.wall.max(1e-9)).into();
    report["mb_per_s"] = (bytes as f64 / 1e6 / window.wall.max(1e-9)).into();
    Ok(report)
}

/// Runs the raw TCP echo server until killed or `--max-seconds` pass.
///
/// # Errors
/// A message when the port cannot be bound.
pub fn serve(args: &TcpEchoArgs) -> Result<Value, String> {
    let addr = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, args.port);
    let limit = Duration::from_secs_f64(args.max_seconds);
    workers::block_on_local(async move {
        let listener = TcpListener::bind(addr).await?;
        emit(&json!({"event": "listening", "port": listener.local_addr()?.port()}));
        let accept = async {
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::task::spawn_local(echo_tcp(stream));
            }
        };
        match tokio::time::timeout(limit, accept).await {
            Ok(result) => result,
            Err(_) => Ok::<(), io::Error>(()),
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(json!({"event": "done", "scenario": "tcp-echo-server"}))
}

async fn echo_tcp(mut stream: TcpStream) {
    let mut buf = vec![0u8; workers::READ_BUF_LEN];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
