//! Process accounting: this process's CPU time, the server's CPU time and open-file limits.
//!
//! The benchmark's cost figures come from here. The load generator's own CPU time is
//! `getrusage(RUSAGE_SELF)` (user + system, every thread); the server's is `utime + stime` from
//! `/proc/PID/stat` summed over the PIDs the harness passes (the server and its workers), read at
//! the edges of each measurement window so that connection set-up and warm-up are left out.
//! Context switches are counted the same way: `voluntary_ctxt_switches` and
//! `nonvoluntary_ctxt_switches` of every thread (`/proc/PID/task/TID/status`) of those PIDs.

use std::time::Instant;

/// CPU seconds (user + system, all threads) this process has used so far.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain old data, so all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage writes only into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, std::ptr::addr_of_mut!(usage)) };
    if rc != 0 {
        return 0.0;
    }
    timeval_seconds(usage.ru_utime) + timeval_seconds(usage.ru_stime)
}

fn timeval_seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds (utime + stime) of one process, or `None` when it is gone.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 (state) is the first after ')'; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Summed CPU seconds of `pids`; a process that has exited counts as zero.
pub fn procs_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| proc_cpu_seconds(pid)).sum()
}

/// Context switches (voluntary, involuntary) of every living thread of one process.
fn proc_ctx_switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (0, 0) };
    let mut total = (0, 0);
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            let count =
                |prefix: &str| -> Option<u64> { line.strip_prefix(prefix)?.trim().parse().ok() };
            if let Some(n) = count("voluntary_ctxt_switches:") {
                total.0 += n;
            } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
                total.1 += n;
            }
        }
    }
    total
}

/// Summed context switches (voluntary, involuntary) of `pids`' threads.
pub fn procs_ctx_switches(pids: &[u32]) -> (u64, u64) {
    pids.iter().map(|&pid| proc_ctx_switches(pid)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The soft limit on open files of this process.
pub fn open_file_limit() -> u64 {
    // SAFETY: `rlimit` is plain old data, so all-zero bytes are a valid value.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, std::ptr::addr_of_mut!(limit)) };
    if rc == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

/// A point in time with the CPU clocks read at that moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock instant of the sample.
    pub at: Instant,
    /// This process's CPU seconds.
    pub self_cpu: f64,
    /// The server processes' CPU seconds (0 when no PIDs were given).
    pub server_cpu: f64,
    /// The server threads' context switches so far: (voluntary, involuntary).
    pub server_ctx: (u64, u64),
}

impl Sample {
    /// Reads the clocks now.
    pub fn take(server_pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            self_cpu: self_cpu_seconds(),
            server_cpu: procs_cpu_seconds(server_pids),
            server_ctx: procs_ctx_switches(server_pids),
        }
    }
}

/// What happened between two samples.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Wall seconds.
    pub wall: f64,
    /// This process's CPU seconds.
    pub self_cpu: f64,
    /// The server processes' CPU seconds.
    pub server_cpu: f64,
    /// The server threads' context switches: (voluntary, involuntary).
    pub server_ctx: (u64, u64),
}

impl Window {
    /// The window from `start` to `end`.
    pub fn between(start: &Sample, end: &Sample) -> Self {
        Self {
            wall: end.at.duration_since(start.at).as_secs_f64(),
            self_cpu: end.self_cpu - start.self_cpu,
            server_cpu: (end.server_cpu - start.server_cpu).max(0.0),
            server_ctx: (
                end.server_ctx.0.saturating_sub(start.server_ctx.0),
                end.server_ctx.1.saturating_sub(start.server_ctx.1),
            ),
        }
    }

    /// Share of `threads` cores the load generator kept busy (1.0 = all of them).
    pub fn self_util(&self, threads: usize) -> f64 {
        if self.wall > 0.0 {
            self.self_cpu / (self.wall * threads.max(1) as f64)
        } else {
            0.0
        }
    }

    /// JSON fields describing this window; `per` is the number of operations it covered and
    /// `per_name` the key of the server CPU microseconds per operation
    /// (`server_cpu_us_per_X`; the context switches per operation go under
    /// `server_ctx_switches_per_X`).
    pub fn json(
        &self,
        threads: usize,
        pids: &[u32],
        per: u64,
        per_name: &str,
    ) -> serde_json::Value {
        let mut out = serde_json::json!({
            "window_s": self.wall,
            "loadgen_cpu_s": self.self_cpu,
            "loadgen_cpu_util": self.self_util(threads),
        });
        if !pids.is_empty() {
            out["server_cpu_s"] = self.server_cpu.into();
            out["server_cpu_util"] =
                (if self.wall > 0.0 { self.server_cpu / self.wall } else { 0.0 }).into();
            out[per_name] = if per > 0 {
                (self.server_cpu * 1e6 / per as f64).into()
            } else {
                serde_json::Value::Null
            };
            let (voluntary, involuntary) = self.server_ctx;
            out["server_ctx_voluntary"] = voluntary.into();
            out["server_ctx_involuntary"] = involuntary.into();
            let op = per_name.strip_prefix("server_cpu_us_per_").unwrap_or(per_name);
            out[format!("server_ctx_switches_per_{op}")] = if per > 0 {
                ((voluntary + involuntary) as f64 / per as f64).into()
            } else {
                serde_json::Value::Null
            };
        }
        out
    }
}
