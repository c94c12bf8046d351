//! `fanout`: broadcast to a python-socketio room, time until the last member has it.
//!
//! Each member is an Engine.IO v4 client on the websocket transport only
//! (`/socket.io/?EIO=4&transport=websocket`): it receives the open packet `0{...}`, connects to
//! the default namespace (`40` → `40{...}`), joins the room with an acknowledged event
//! (`42<id>["join",room]` → `43<id>[count]`) and answers Engine.IO pings (`2` → `3`). Then, for
//! each round, member 0 emits `message` {room, text: "fanout-<round>"}, which the chat app
//! broadcasts to the room (sender included), and the round's figure is the time from member 0's
//! write to the moment the last member read its copy. The report also has the server's CPU
//! time over all rounds (`span`: from the first round's emit to the last round's last copy,
//! pauses included) per copy delivered.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use zcasgi_core::frame::OpCode;

use crate::net::{self, Target};
use crate::sio;
use crate::sys::{Sample, Window};
use crate::workers::{self, ReadBuf};
use crate::ws::{self, Event, FrameReader};
use crate::Common;

/// Arguments of `fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Base HTTP URL of the Socket.IO server (the chat example), e.g. `http://127.0.0.1:8000/`.
    #[arg(long)]
    pub url: String,
    /// Members in the room.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Broadcasts to time.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Room name.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Longest wait for one broadcast to reach every member, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub round_timeout: f64,
    /// Pause between rounds, in seconds.
    #[arg(long, default_value_t = 0.3)]
    pub pause: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Marker in the broadcast text, followed by the round number.
const MARK: &str = "\"text\":\"fanout-";

#[derive(Debug, Default)]
struct Room {
    joined: Cell<usize>,
    failed: Cell<usize>,
    dead: Cell<usize>,
    sent_at: RefCell<Vec<Option<Instant>>>,
    arrivals: RefCell<Vec<usize>>,
    first: RefCell<Vec<Option<Instant>>>,
    last: RefCell<Vec<Option<Instant>>>,
    first_error: RefCell<Option<String>>,
}

impl Room {
    fn error(&self, error: &dyn std::fmt::Display) {
        self.first_error.borrow_mut().get_or_insert_with(|| error.to_string());
    }

    fn arrived(&self, round: usize, now: Instant) {
        if let Some(count) = self.arrivals.borrow_mut().get_mut(round) {
            *count += 1;
            self.last.borrow_mut()[round] = Some(now);
            self.first.borrow_mut()[round].get_or_insert(now);
        }
    }
}

/// Runs the scenario and returns its report.
///
/// # Errors
/// A message for bad arguments.
pub fn run(args: &FanoutArgs) -> Result<Value, String> {
    args.common.check(args.members)?;
    if args.members == 0 || args.rounds == 0 {
        return Err("--members and --rounds must be positive".into());
    }
    let base = Target::parse(&args.url)?;
    let target = base.join(sio::WEBSOCKET_PATH);
    Ok(workers::block_on_local(drive(args, target)))
}

async fn drive(args: &FanoutArgs, target: Target) -> Value {
    let common = &args.common;
    let rounds = args.rounds as usize;
    let room = Rc::new(Room {
        sent_at: RefCell::new(vec![None; rounds]),
        arrivals: RefCell::new(vec![0; rounds]),
        first: RefCell::new(vec![None; rounds]),
        last: RefCell::new(vec![None; rounds]),
        ..Room::default()
    });
    let target = Rc::new(target);
    let request: Rc<[u8]> = target.upgrade_request().into();
    let gate = Rc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let buf = workers::read_buf();
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<usize>();
    let mut trigger_rx = Some(trigger_rx);
    let started = Instant::now();
    for index in 0..args.members {
        let member = Member {
            index,
            target: Rc::clone(&target),
            request: Rc::clone(&request),
            source: net::source_for(&common.sources, index),
            timeout: common.connect_timeout(),
            room_name: args.room.clone(),
            room: Rc::clone(&room),
            buf: buf.clone(),
        };
        let gate = Rc::clone(&gate);
        let trigger = if index == 0 { trigger_rx.take() } else { None };
        tokio::task::spawn_local(async move {
            let room = Rc::clone(&member.room);
            if let Err(error) = member.run(&gate, trigger).await {
                room.error(&error);
                room.dead.set(room.dead.get() + 1);
            }
        });
    }
    let connect_deadline = started + common.connect_timeout_total();
    while room.joined.get() + room.failed.get() < args.members && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    let joined = room.joined.get();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pids = &common.server_pids;
    let mut round_reports = Vec::new();
    let mut times = Vec::new();
    let mut span: Option<(Sample, Sample)> = None;
    let mut copies = 0u64;
    for r in 0..rounds {
        if joined == 0 || trigger_tx.send(r).is_err() {
            break;
        }
        let before = Sample::take(pids);
        let deadline = Instant::now() + Duration::from_secs_f64(args.round_timeout);
        let expected = joined.saturating_sub(room.dead.get());
        while room.arrivals.borrow()[r] < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let after = Sample::take(pids);
        span = Some((span.map_or(before, |(first, _)| first), after));
        let delivered = room.arrivals.borrow()[r];
        copies += delivered as u64;
        let sent = room.sent_at.borrow()[r];
        let ms = |at: Option<Instant>| match (sent, at) {
            (Some(s), Some(a)) => Value::from(a.saturating_duration_since(s).as_secs_f64() * 1e3),
            _ => Value::Null,
        };
        let last_ms = ms(room.last.borrow()[r]);
        if delivered >= expected {
            times.push(last_ms.as_f64().unwrap_or(f64::NAN));
        }
        let window = Window::between(&before, &after);
        let mut entry = window.json(1, pids, delivered as u64, "server_cpu_us_per_delivery");
        entry["round"] = r.into();
        entry["ms"] = last_ms;
        entry["first_ms"] = ms(room.first.borrow()[r]);
        entry["delivered"] = delivered.into();
        entry["complete"] = (delivered >= expected).into();
        round_reports.push(entry);
        tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| -> Value {
        if times.is_empty() {
            Value::Null
        } else {
            let i = ((times.len() - 1) as f64 * q).round() as usize;
            times[i].into()
        }
    };
    json!({
        "scenario": "fanout",
        "url": args.url,
        "members": args.members,
        "joined": joined,
        "connect_s": connect_s,
        "connect_errors": room.failed.get(),
        "dead": room.dead.get(),
        "complete_rounds": times.len(),
        "p50_ms": pick(0.5),
        "min_ms": pick(0.0),
        "max_ms": pick(1.0),
        "rounds": round_reports,
        "span": span.map(|(first, last)| {
            Window::between(&first, &last).json(1, pids, copies, "server_cpu_us_per_delivery")
        }),
        "errors": room.failed.get() + room.dead.get(),
        "first_error": room.first_error.borrow().clone(),
    })
}

struct Member {
    index: usize,
    target: Rc<Target>,
    request: Rc<[u8]>,
    source: Option<std::net::Ipv4Addr>,
    timeout: Duration,
    room_name: String,
    room: Rc<Room>,
    buf: ReadBuf,
}

impl Member {
    async fn run(
        &self,
        gate: &Semaphore,
        mut trigger: Option<mpsc::UnboundedReceiver<usize>>,
    ) -> io::Result<()> {
        let connected = async {
            let _permit = gate.acquire().await.map_err(io::Error::other)?;
            let (mut stream, rest) =
                net::ws_connect(&self.target, &self.request, self.source, self.timeout).await?;
            let mut reader = FrameReader::new(true);
            let mut inbox = Vec::new();
            sio::connect(&mut stream, &self.buf, &mut reader, &mut inbox, &rest).await?;
            let join = format!("421[\"join\",{}]", json!(self.room_name));
            sio::send_text(&mut stream, &join).await?;
            sio::expect(&mut stream, &self.buf, &mut reader, &mut inbox, "431").await?;
            Ok::<_, io::Error>((stream, reader, inbox))
        };
        let joined = match tokio::time::timeout(self.timeout, connected).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "join timed out")),
        };
        let (mut stream, mut reader, mut inbox) = match joined {
            Ok(parts) => parts,
            Err(error) => {
                // A failed join is counted apart from members that die after joining.
                self.room.failed.set(self.room.failed.get() + 1);
                self.room.error(&format!("member {}: {error}", self.index));
                return Ok(());
            }
        };
        self.room.joined.set(self.room.joined.get() + 1);
        for message in std::mem::take(&mut inbox) {
            sio::handle(&mut stream, &message).await?;
        }
        loop {
            let mut closed = false;
            tokio::select! {
                read = workers::read_some(&stream, &self.buf, &mut reader, |e| {
                    closed |= e == Event::Close;
                    sio::collect(&mut inbox, e);
                }) => {
                    read?;
                    let now = Instant::now();
                    for message in inbox.drain(..) {
                        if let Some(round) = round_of(&message) {
                            self.room.arrived(round, now);
                        } else {
                            sio::handle(&mut stream, &message).await?;
                        }
                    }
                    if closed {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server sent close"));
                    }
                }
                Some(round) = recv(&mut trigger) => {
                    let event = format!(
                        "42{}[\"message\",{}]",
                        100 + round,
                        json!({"room": self.room_name, "text": format!("fanout-{round}")})
                    );
                    let frame = ws::masked_frame(OpCode::Text, event.as_bytes());
                    self.room.sent_at.borrow_mut()[round] = Some(Instant::now());
                    stream.write_all(&frame).await?;
                }
            }
        }
    }
}

async fn recv(trigger: &mut Option<mpsc::UnboundedReceiver<usize>>) -> Option<usize> {
    match trigger {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The round number of a broadcast `42["message",{..."text":"fanout-<n>"}]`.
fn round_of(message: &[u8]) -> Option<usize> {
    if !message.starts_with(b"42[\"message\"") {
        return None;
    }
    let text = std::str::from_utf8(message).ok()?;
    let digits = &text[text.find(MARK)? + MARK.len()..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::round_of;

    #[test]
    fn parses_rounds() {
        let m = br#"42["message",{"room":"bench","from":"x","text":"fanout-12"}]"#;
        assert_eq!(round_of(m), Some(12));
        assert_eq!(round_of(br#"43101["ok"]"#), None);
        assert_eq!(round_of(br#"42["message",{"text":"hello"}]"#), None);
    }
}
