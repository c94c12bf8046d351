"""Rooms across two machines: two network namespaces, each running zcasgi with workers, and
Redis in a third.

The test builds its network itself: a bridge in this namespace, with an address so that the
clients (this process) reach both hosts, and one veth pair per namespace. Each "host" runs
``examples/chat.py`` with ``--workers 2`` on its own address, both with python-socketio's
``AsyncRedisManager`` on the Redis host's address. Building the network needs root and
iproute2's ``ip``: without them the test skips and says which is missing. Everything it creates
(processes by PID, namespaces, links) is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import socketio

from harness import READY_LINE, Command, LogLine, ServerProcess, server_env, wait_until_async
from harness.process import Answers

pytestmark = pytest.mark.timeout(180)

#: The roles of the namespaces, each one "machine" with its own address on the bridge.
ROLES = ("redis", "a", "b")
REDIS_PORT = 6379
HTTP_PORT = 8000
WORKERS = 2
#: Clients to open at most until every worker of both hosts holds one.
MAX_CLIENTS = 60


@dataclass(frozen=True)
class Network:
    """The namespaces by role and their addresses."""

    namespaces: dict[str, str]
    addresses: dict[str, str]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _why_not() -> str | None:
    """Why network namespaces can't be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"zcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """Three namespaces on a bridge of their own, in a /24 picked at random."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"no network namespaces: {reason}")
    tag = f"zc{os.getpid() % 100_000}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    bridge = f"{tag}br"
    namespaces = {role: f"{tag}-{role}" for role in ROLES}
    addresses = {role: f"{subnet}.{i}" for i, role in enumerate(ROLES, 1)}
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for role, ns in namespaces.items():
            outside, inside = f"{tag}{role[0]}h", f"{tag}{role[0]}n"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addresses[role]}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Network(namespaces, addresses)
    finally:
        for ns in namespaces.values():
            # Deleting a namespace deletes the veth pair inside it.
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


def _in(network: Network, role: str, argv: list[str]) -> list[str]:
    """``argv`` run in the namespace of ``role`` (``ip netns exec`` execs it: same PID)."""
    return ["ip", "netns", "exec", network.namespaces[role], *argv]


def _redis(network: Network, tmp: Path) -> ServerProcess:
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server is not on PATH; `make test` installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    argv = [executable, "--bind", network.addresses["redis"], "--port", str(REDIS_PORT)]
    argv += ["--protected-mode", "no", "--save", "", "--appendonly", "no"]
    server = ServerProcess(
        "redis-server",
        [Command(_in(network, "redis", argv))],
        ready=Answers(b"PING\r\n"),
        port=REDIS_PORT,
        cwd=tmp,
        stop_signal=signal.SIGTERM,
    )
    server.host = network.addresses["redis"]
    return server


def _host(network: Network, role: str, backend: str) -> ServerProcess:
    """zcasgi with workers serving the chat example on ``role``'s address."""
    argv = [sys.executable, "-m", "zcasgi", "examples.chat:app", "--backend", backend]
    argv += ["--host", network.addresses[role], "--port", str(HTTP_PORT)]
    argv += ["--workers", str(WORKERS), "--no-access-log"]
    redis_url = f"redis://{network.addresses['redis']}:{REDIS_PORT}/0"
    server = ServerProcess(
        f"zcasgi-{role}",
        [Command(_in(network, role, argv))],
        ready=LogLine(READY_LINE, WORKERS),
        port=HTTP_PORT,
        env=server_env({"ZCASGI_CHAT_REDIS": redis_url}),
        startup_timeout=60.0,
    )
    server.host = network.addresses[role]
    return server


#: The clients' transports, in turn: python-socketio's default (long-polling, then upgrade to
#: websocket), websocket only, long-polling only. The polling ones need every request of their
#: session to reach the worker that holds it (sticky sessions, docs/deployment.md).
TRANSPORTS: tuple[list[str] | None, ...] = (None, ["websocket"], ["polling"])


async def _client(
    url: str, name: str, transports: list[str] | None, got: list[tuple[str, Any]]
) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    client.on("message", lambda data: got.append((name, data)))
    await client.connect(url, transports=transports, auth={"name": name}, wait_timeout=10)
    return client


async def _leave(client: socketio.AsyncClient) -> None:
    """Disconnects ``client``; a polling-only one is aborted: python-engineio's client waits
    for its pending long-poll to end (about 30 s, whatever the server) before it returns."""
    if client.transport() == "polling":
        await client.eio.disconnect(abort=True)
    else:
        await client.disconnect()


async def _subscribers(url: str) -> int:
    """Subscribers of python-socketio's Redis channel (one per worker process)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        [(_, count)] = await client.pubsub_numsub("socketio")
    finally:
        await client.aclose()
    return int(count)


async def test_a_room_spans_two_hosts_with_workers_through_redis(
    network: Network, backend: str, tmp_path: Path
) -> None:
    """A broadcast from a client of either host reaches every client of both hosts, whatever
    its transport."""
    with (
        _redis(network, tmp_path) as broker,
        _host(network, "a", backend) as a,
        _host(network, "b", backend) as b,
    ):
        redis_url = f"redis://{broker.host}:{REDIS_PORT}/0"

        async def all_workers_subscribed() -> bool:
            return await _subscribers(redis_url) == 2 * WORKERS

        got: list[tuple[str, Any]] = []
        clients: dict[str, socketio.AsyncClient] = {}
        try:
            # A worker's Redis manager subscribes when its first client connects: add clients
            # (of every transport) to both hosts until every worker of both holds one (the
            # kernel picks the worker of a new session).
            for i in range(MAX_CLIENTS):
                host = (a, b)[i % 2]
                name = f"{host.name}-{i // 2}"
                transports = TRANSPORTS[(i // 2) % len(TRANSPORTS)]
                clients[name] = await _client(host.url("http", ""), name, transports, got)
                assert await clients[name].call("join", "global", timeout=10) >= 1
                if i >= 2 * WORKERS and await all_workers_subscribed():
                    break
            assert await wait_until_async(all_workers_subscribed, 20), (
                f"{await _subscribers(redis_url)} of {2 * WORKERS} workers reached "
                f"by {len(clients)} clients"
            )
            for sender in ("zcasgi-a-0", "zcasgi-b-0"):
                text = f"from {sender}"
                ack = await clients[sender].call("message", {"room": "global", "text": text})
                assert ack == "ok"

                def everyone_has(text: str = text) -> bool:
                    return {n for n, d in got if d["text"] == text} == set(clients)

                assert await wait_until_async(everyone_has, 10), (
                    f"missing: {sorted(set(clients) - {n for n, d in got if d['text'] == text})}"
                )
                assert all(d["from"] == sender for _, d in got if d["text"] == text)
        finally:
            await asyncio.gather(*(_leave(c) for c in clients.values()))
    for server in (a, b):
        assert "Traceback" not in server.output(), server.output()
