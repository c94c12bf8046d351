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
    "large",
]


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
    fanout_rounds: int
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
    large_size=1024 * 1024,
    large_duration=3.0,
    # Opening 10,000-50,000 connections to the slower peers takes minutes; these figures
    # vary little between runs (fan-out repeats its broadcast 5 times within each run).
    max_repeat={"memory": 1, "memory-50k": 1, "fanout": 1},
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
    large_size=1024 * 1024,
    large_duration=1.0,
    scenarios=tuple(s for s in SCENARIOS if s != "memory-50k"),
)
