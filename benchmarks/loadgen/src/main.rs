//! `zcasgi-loadgen`: the load generator of the zcasgi benchmark suite.
//!
//! A WebSocket (and Engine.IO) client built to cost less per message than the servers it
//! measures: current-thread tokio runtimes (one per `--threads`, default 1, so it fits on one
//! core), frames masked once with a fixed key and rewritten from the same buffer, one read
//! buffer per thread, and payloads skipped in place rather than copied. Every subcommand prints
//! one JSON object on stdout (`hold` prints an extra line when its connections are open) with
//! its figures, the load generator's own CPU seconds (`getrusage`) and wall time, and, given
//! `--server-pids`, the server's CPU time over the measured window.
//!
//! Every run is bounded in connections and time, and only 127.0.0.0/8 addresses are accepted
//! as targets and sources.

// Figures are reported as f64 (rates, microseconds); counts far below 2^52 lose nothing.
#![allow(clippy::cast_precision_loss)]
// Durations and ratios converted back to counts are non-negative by construction.
#![allow(clippy::cast_sign_loss)]

mod acks;
mod echo;
mod fanout;
mod handshakes;
mod hold;
mod large;
mod latency;
mod net;
mod rtt;
mod sio;
mod sys;
mod tls;
mod workers;
mod ws;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

/// Most connections one process may be asked for (the per-process open-file cap is lower still).
const MAX_CONNS: usize = 60_000;

/// WebSocket load generator for the zcasgi benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "zcasgi-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo throughput: N connections, K messages in flight each.
    Echo(echo::EchoArgs),
    /// Round-trip latency percentiles at a fixed aggregate rate (open loop).
    Latency(latency::LatencyArgs),
    /// Single-connection ping-pong round trips per second.
    Rtt(rtt::RttArgs),
    /// Handshakes per second (connect, upgrade, close).
    Handshakes(handshakes::HandshakeArgs),
    /// Open N idle connections and hold them (for memory per connection).
    Hold(hold::HoldArgs),
    /// Socket.IO room broadcast: time until the last member has the message.
    Fanout(fanout::FanoutArgs),
    /// Socket.IO events with acknowledgements: N clients, one event in flight each.
    Acks(acks::AcksArgs),
    /// Large-message WebSocket echo throughput.
    Large(large::LargeArgs),
    /// The same bytes as `large` through a raw TCP echo server.
    LargeTcp(large::LargeArgs),
    /// A raw TCP echo server (the baseline for `large-tcp`).
    TcpEchoServer(large::TcpEchoArgs),
}

/// Options shared by the client subcommands.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Worker threads, each running a current-thread runtime (echo, latency, hold).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Source addresses to connect from, round-robin (127.0.0.x, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub sources: Vec<Ipv4Addr>,
    /// PIDs of the server processes whose CPU time is read at the window edges.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds allowed for one connection's connect and handshake.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Seconds allowed for opening all connections.
    #[arg(long, default_value_t = 120.0)]
    pub open_timeout: f64,
}

impl Common {
    /// Checks sources, thread count and that `conns` fits this process's open-file limit.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn check(&self, conns: usize) -> Result<(), String> {
        net::check_sources(&self.sources)?;
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads must be between 1 and 64".into());
        }
        if conns > MAX_CONNS {
            return Err(format!("at most {MAX_CONNS} connections per process"));
        }
        let limit = sys::open_file_limit();
        if conns as u64 + 64 > limit {
            return Err(format!(
                "{conns} connections need more than this process's open-file limit ({limit}); \
                 split them over several processes"
            ));
        }
        Ok(())
    }

    /// Time allowed for one connection.
    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.clamp(0.1, 600.0))
    }

    /// Time allowed for opening all connections.
    #[must_use]
    pub fn connect_timeout_total(&self) -> Duration {
        Duration::from_secs_f64(self.open_timeout.clamp(0.1, 3600.0))
    }
}

/// Prints `value` as one line of JSON on stdout and flushes.
pub fn emit(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn main() {
    let started = Instant::now();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Rtt(args) => rtt::run(args),
        Command::Handshakes(args) => handshakes::run(args),
        Command::Hold(args) => hold::run(args),
        Command::Fanout(args) => fanout::run(args),
        Command::Acks(args) => acks::run(args),
        Command::Large(args) => large::run(args, large::Transport::WebSocket),
        Command::LargeTcp(args) => large::run(args, large::Transport::Tcp),
        Command::TcpEchoServer(args) => large::serve(args),
    };
    let ok = match result {
        Ok(mut report) => {
            report["loadgen_cpu_total_s"] = sys::self_cpu_seconds().into();
            report["wall_s"] = started.elapsed().as_secs_f64().into();
            emit(&report);
            true
        }
        Err(message) => {
            emit(&serde_json::json!({"error": message, "wall_s": started.elapsed().as_secs_f64()}));
            false
        }
    };
    // Worker threads may still hold idle connections: leave without joining them.
    std::process::exit(i32::from(!ok));
}
