"""How much to measure: the full run and the ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Scenario names, in run and report order.
SCENARIOS = [
    "echo",
    "latency",
    "rtt",
    "handshakes",
    "memory",
    "memory-50k",
    "fanout",
    "sio-idle",
    "sio-ack",
    "large",
]
#: The Socket.IO scenarios (the only ones the zcasgi.socketio variants run).
SOCKETIO_SCENARIOS = ("fanout", "sio-idle", "sio-ack")


@dataclass(frozen=True)
class Profile:
    """Sizes, counts and durations of every scenario."""

    name: str
    #: echo: connection counts, message sizes, in-flight depths (1 = ping-pong), seconds.
    echo_conns: tuple[int, ...]
    echo_sizes: tuple[int, ...]
    echo_inflight: tuple[int, ...]
    echo_warmup: float
    echo_duration: float
    #: The window extends until it holds 2 full rounds of replies, up to this many seconds.
    echo_max_window: float
    #: latency: fixed aggregate rate (messages/s) over this many connections.
    latency_rate: float
    latency_conns: int
    latency_duration: float
    rtt_duration: float
    handshake_duration: float
    handshake_concurrency: int
    #: memory: idle connections held by one server process.
    memory_conns: tuple[int, ...]
    #: memory-50k: connections over several worker processes (0 = skip).
    memory_multi_conns: int
    memory_multi_workers: int
    fanout_members: tuple[int, ...]
    #: Broadcasts per room size: at least this many, and enough for ``fanout_min_copies``
    #: copies delivered (CPU time is read in 10 ms clock ticks).
    fanout_rounds: int
    fanout_min_copies: int
    #: sio-idle: Socket.IO clients held idle, the Engine.IO ping interval every server's
    #: chat app gets (``ZCASGI_CHAT_PING_INTERVAL``, s) and the seconds of idle CPU measured.
    sio_idle_clients: int
    sio_ping_interval: int
    sio_idle_window: float
    #: sio-ack: clients, each with one acknowledged event in flight; seconds.
    sio_ack_clients: int
    sio_ack_warmup: float
    sio_ack_duration: float
    large_size: int
    large_duration: float
    #: Scenarios that run fewer repetitions than --repeat (slow to set up, low variance).
    max_repeat: dict[str, int] = field(default_factory=dict)
    #: Default scenarios.
    scenarios: tuple[str, ...] = tuple(SCENARIOS)


FULL = Profile(
    name="full",
    echo_conns=(1, 100, 1000, 10000),
    echo_sizes=(64, 4096),
    echo_inflight=(1, 8),
    echo_warmup=0.25,
    echo_duration=0.8,
    echo_max_window=8.0,
    latency_rate=4000.0,
    latency_conns=100,
    latency_duration=5.0,
    rtt_duration=3.0,
    handshake_duration=3.0,
    handshake_concurrency=16,
    memory_conns=(10000, 19000),
    memory_multi_conns=50000,
    memory_multi_workers=4,
    fanout_members=(1000, 10000),
    fanout_rounds=5,
    fanout_min_copies=50_000,
    sio_idle_clients=10_000,
    sio_ping_interval=5,
    sio_idle_window=20.0,
    sio_ack_clients=1000,
    sio_ack_warmup=1.0,
    sio_ack_duration=5.0,
    large_size=1024 * 1024,
    large_duration=3.0,
    # Opening 10,000-50,000 connections to the slower peers takes minutes; these figures
    # vary little between runs (fan-out repeats its broadcast 5 to 50 times within each run,
    # sio-idle averages thousands of pings).
    max_repeat={"memory": 1, "memory-50k": 1, "fanout": 1, "sio-idle": 1},
)

QUICK = Profile(
    name="quick",
    echo_conns=(1, 100),
    echo_sizes=(64, 4096),
    echo_inflight=(1, 8),
    echo_warmup=0.2,
    echo_duration=0.5,
    echo_max_window=2.0,
    latency_rate=2000.0,
    latency_conns=50,
    latency_duration=2.0,
    rtt_duration=1.0,
    handshake_duration=1.0,
    handshake_concurrency=8,
    memory_conns=(1000,),
    memory_multi_conns=0,
    memory_multi_workers=0,
    fanout_members=(100,),
    fanout_rounds=3,
    fanout_min_copies=1000,
    sio_idle_clients=300,
    sio_ping_interval=1,
    sio_idle_window=3.0,
    sio_ack_clients=50,
    sio_ack_warmup=0.3,
    sio_ack_duration=1.0,
    large_size=1024 * 1024,
    large_duration=1.0,
    scenarios=tuple(s for s in SCENARIOS if s != "memory-50k"),
)
