"""python-socketio's AsyncClient against examples/chat.py and its one-import twin
examples/chat_fast.py (zcasgi.socketio), on both backends, and the twin under uvicorn, where
python-engineio serves it (the fallback)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
import socketio
from conftest import RedisServer
from sio_helpers import KINDS, connect, leave, serving

from harness import ServerProcess, ZcasgiServer, wait_until_async

pytestmark = pytest.mark.timeout(90)

STOCK = "examples.chat:app"
FAST = "examples.chat_fast:app"

#: Each chat app and what serves it: zcasgi's backends serve both, uvicorn the zcasgi.socketio
#: one (python-engineio serves it there).
SERVED = [
    pytest.param(("mio", STOCK), id="mio-stock"),
    pytest.param(("mio", FAST), id="mio-fast"),
    pytest.param(("tokio", STOCK), id="tokio-stock"),
    pytest.param(("tokio", FAST), id="tokio-fast"),
    pytest.param(("uvicorn", FAST), id="uvicorn-fast"),
]


@pytest.fixture(params=SERVED)
def chat(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server, app = request.param
    with serving(server, app) as process:
        yield process


async def test_connect_join_message_ack_binary_disconnect(chat: ServerProcess) -> None:
    url = chat.url("http", "")
    alice = await connect(url, auth={"name": "alice"})
    bob = await connect(url, auth={"name": "bob"})
    got: dict[str, list[Any]] = {"alice": [], "bob": []}
    binaries: list[bytes] = []
    alice.on("message", lambda data: got["alice"].append(data))
    bob.on("message", lambda data: got["bob"].append(data))
    bob.on("binary", lambda data: binaries.append(data))
    try:
        assert await alice.call("join", "lobby", timeout=5) == 1
        assert await bob.call("join", "lobby", timeout=5) == 2
        assert await alice.call("message", {"room": "lobby", "text": "hi"}, timeout=5) == "ok"
        blob = bytes(range(256)) * 40
        assert await alice.call("binary", {"room": "lobby", "data": blob}, timeout=5) == "ok"
        await wait_until_async(lambda: bool(got["bob"] and got["alice"] and binaries), 5)
        expected = {"room": "lobby", "from": "alice", "text": "hi"}
        assert got["alice"] == [expected]
        assert got["bob"] == [expected]
        assert binaries == [blob]
        await bob.call("leave", "lobby", timeout=5)
        assert await alice.call("join", "lobby", timeout=5) == 1
    finally:
        await leave(alice)
        await leave(bob)
    assert not alice.connected and not bob.connected


async def test_broadcast_to_hundred_clients(chat: ServerProcess) -> None:
    url = chat.url("http", "")
    counts: Counter[int] = Counter()
    clients = []
    try:
        for i in range(100):
            c = await connect(url, auth={"name": f"user{i}"})
            c.on("message", lambda data, i=i: counts.update([i]))
            assert await c.call("join", "room", timeout=10) == i + 1
            clients.append(c)
        senders = clients[:5]
        for n, sender in enumerate(senders):
            for k in range(4):
                text = f"{n}-{k}"
                assert (
                    await sender.call("message", {"room": "room", "text": text}, timeout=10) == "ok"
                )
        await wait_until_async(lambda: sum(counts.values()) >= 100 * 20, 20)
        assert all(counts[i] == 20 for i in range(100)), counts
    finally:
        await asyncio.gather(*(leave(c) for c in clients))


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["polling"]])
async def test_default_and_polling_transports(chat: ServerProcess, transports: list[str]) -> None:
    url = chat.url("http", "")
    alice = await connect(url, transports, auth={"name": "alice"})
    bob = await connect(url, transports, auth={"name": "bob"})
    got: list[Any] = []
    blobs: list[bytes] = []
    bob.on("message", lambda data: got.append(data))
    bob.on("binary", lambda data: blobs.append(data))
    try:
        # With the default transports the client upgrades from polling to websocket.
        await wait_until_async(
            lambda: alice.transport() == transports[-1] and bob.transport() == transports[-1], 5
        )
        assert alice.transport() == transports[-1]
        assert await alice.call("join", "r", timeout=10) == 1
        assert await bob.call("join", "r", timeout=10) == 2
        for i in range(10):
            assert await alice.call("message", {"room": "r", "text": str(i)}, timeout=10) == "ok"
        blob = bytes(range(256)) * 8
        assert await alice.call("binary", {"room": "r", "data": blob}, timeout=10) == "ok"
        await wait_until_async(lambda: len(got) == 10 and bool(blobs), 5)
        assert [m["text"] for m in got] == [str(i) for i in range(10)]
        assert blobs == [blob]
    finally:
        for client in (alice, bob):
            await leave(client)


async def test_companion_app_health_and_static_file(backend: str) -> None:
    import httpx

    with ZcasgiServer("apps.companion:app", backend, ["--no-access-log"]) as server:
        async with httpx.AsyncClient(base_url=server.url("http", "")) as http:
            r = await http.get("/health")
            assert (r.status_code, r.text) == (200, "ok")
            r = await http.get("/static/hello.txt")
            assert r.status_code == 200
            assert r.text == "hello from a static file\n"
            assert (await http.get("/nope")).status_code == 404
        client = await connect(server.url("http", ""), KINDS["default"], auth={"name": "carol"})
        try:
            assert await client.call("join", "x", timeout=10) == 1
        finally:
            await leave(client)
    assert "Traceback" not in server.output()


async def _subscribers(url: str, wanted: int, channel: str = "socketio") -> bool:
    """Whether python-socketio's Redis channel has ``wanted`` subscribers (``PUBSUB NUMSUB``)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        [(_, count)] = await client.pubsub_numsub(channel)
    finally:
        await client.aclose()
    return int(count) == wanted


@pytest.mark.parametrize("app", [STOCK, FAST], ids=["stock", "fast"])
async def test_rooms_across_processes_through_redis(redis_server: RedisServer, app: str) -> None:
    """Two server processes (one per backend) share rooms through a real redis-server."""
    env = {"ZCASGI_CHAT_REDIS": redis_server.url}
    with serving("mio", app, env) as one, serving("tokio", app, env) as two:
        alice = await connect(one.url("http", ""), auth={"name": "alice"})
        bob = await connect(two.url("http", ""), auth={"name": "bob"})
        got: list[Any] = []
        bob.on("message", lambda data: got.append(data))
        try:
            await alice.call("join", "global", timeout=10)
            await bob.call("join", "global", timeout=10)
            # Both servers' Redis managers listen before anything is published.
            assert await wait_until_async(lambda: _subscribers(redis_server.url, 2), 10)
            for i in range(5):
                ack = await alice.call("message", {"room": "global", "text": f"m{i}"}, timeout=10)
                assert ack == "ok"
            await wait_until_async(lambda: len(got) == 5, 5)
            assert [m["text"] for m in got] == [f"m{i}" for i in range(5)]
            assert all(m["from"] == "alice" for m in got)
        finally:
            await leave(alice)
            await leave(bob)


@pytest.mark.parametrize(
    "app", ["examples.chat_redis:app", "apps.chat_fast_redis:app"], ids=["stock", "fast"]
)
async def test_rooms_across_workers_through_redis(
    backend: str, app: str, redis_server: RedisServer
) -> None:
    """``--workers 4``: default, polling-only and websocket-only clients on every worker (zcasgi
    keeps each Engine.IO session on its worker) share one room through a real redis-server; a
    broadcast from one reaches the clients of every worker."""
    env = {"ZCASGI_CHAT_REDIS": redis_server.url}
    workers = 4
    with serving(backend, app, env, workers) as server:
        url = server.url("http", "")
        clients: dict[socketio.AsyncClient, int] = {}
        inboxes: dict[socketio.AsyncClient, list[Any]] = {}
        names: dict[socketio.AsyncClient, str] = {}

        async def join(name: str, transports: list[str]) -> None:
            client = await connect(url, transports, auth={"name": name})
            clients[client] = (await client.call("where", timeout=10))["pid"]
            names[client] = name
            inboxes[client] = []
            client.on("message", inboxes[client].append)

        try:
            # A client of each kind on each worker, each connected while the other workers are
            # stopped: a new session stays with the worker that accepted its first request,
            # which is otherwise the kernel's (uneven) choice.
            for pid in server.children():
                with server.only(pid):
                    for kind, transports in KINDS.items():
                        await join(f"{kind}-{pid}", transports)
            assert set(clients.values()) == set(server.children()), Counter(clients.values())
            for client in clients:
                assert await client.call("join", "global", timeout=10) >= 1
            # Every worker's Redis manager listens before anything is published.
            assert await wait_until_async(lambda: _subscribers(redis_server.url, workers), 10)
            sender = next(iter(clients))
            ack = await sender.call("message", {"room": "global", "text": "hi all"}, timeout=10)
            assert ack == "ok"
            everyone = lambda: all(inbox for inbox in inboxes.values())  # noqa: E731
            assert await wait_until_async(everyone, 10), [
                names[c] for c in clients if not inboxes[c]
            ]
            for client, inbox in inboxes.items():
                expected = {"room": "global", "from": names[sender], "text": "hi all"}
                assert inbox == [expected], names[client]
            assert {c.transport() for c in clients} == {"websocket", "polling"}
        finally:
            for client in clients:
                await leave(client)
