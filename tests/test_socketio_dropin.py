"""zcasgi.socketio is a drop-in for python-socketio: ``tests/apps/sio_features.py`` with either
import, on both backends and under uvicorn, answers python-socketio's ``AsyncClient`` (default,
polling-only and websocket-only transports) and raw Engine.IO requests alike.

uvicorn serving the stock import is the reference: every expectation here holds for it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from sio_helpers import KINDS, client, connect, leave, serving

from harness import ServerProcess, wait_until_async

pytestmark = pytest.mark.timeout(120)

APP = "apps.sio_features:app"

#: What serves the app, and which import it uses.
SERVED = [
    pytest.param((server, flavour), id=f"{server}-{flavour}")
    for server in ("mio", "tokio", "uvicorn")
    for flavour in ("stock", "fast")
]


#: Long polls a test left behind (its clients were cut off) do not hold the server's exit.
QUICK_EXIT = ["--timeout-graceful-shutdown", "2"]


def _serve(request: pytest.FixtureRequest, **options: Any) -> Iterator[ServerProcess]:
    server, flavour = request.param
    env = {"SIO_FLAVOUR": flavour, "SIO_OPTIONS": json.dumps(options)}
    with serving(server, APP, env, args=QUICK_EXIT) as process:
        yield process


@pytest.fixture(scope="module", params=SERVED)
def plain(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The app with python-socketio's defaults."""
    yield from _serve(request)


@pytest.fixture(scope="module", params=SERVED)
def strict(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The app with small limits: 2,000-byte messages, 1 s pings, one allowed origin, and a
    session cookie."""
    yield from _serve(
        request,
        max_http_buffer_size=2000,
        ping_interval=1,
        ping_timeout=1,
        cors_allowed_origins=["http://good.example"],
        cookie={"name": "eio", "path": "/", "HttpOnly": True, "SameSite": "Strict"},
    )


@pytest.fixture(scope="module", params=SERVED)
def always(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The app with ``always_connect``."""
    yield from _serve(request, always_connect=True)


def _url(server: ServerProcess) -> str:
    return server.url("http", "")


async def _disconnects(url: str) -> list[list[str]]:
    """What the server's disconnect handlers saw (asked by a client of its own)."""
    client = await connect(url)
    try:
        seen: list[list[str]] = await client.call("disconnects", timeout=10)
    finally:
        await leave(client)
    return seen


async def _disconnect_of(url: str, sid: str, timeout: float = 15) -> list[str]:
    """The ``[namespace, reason]`` of each disconnect of Socket.IO session ``sid``, once there is
    one."""
    found: list[list[str]] = []

    async def seen() -> bool:
        found[:] = [entry[1:] for entry in await _disconnects(url) if entry[0] == sid]
        return bool(found)

    assert await wait_until_async(seen, timeout), f"no disconnect of {sid}"
    return found[0]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_api_round_trip(plain: ServerProcess, kind: str) -> None:
    """Sessions, the connect handler's environ and auth, rooms, emit to/room/skip_sid, acks both
    ways, binary attachments, namespaces."""
    url, transports = _url(plain), KINDS[kind]
    alice = await connect(url, transports, auth={"name": "alice"}, headers={"X-Test": "yes"})
    bob = await connect(url, transports, namespaces=["/", "/chat"])
    got: dict[str, list[Any]] = {"alice": [], "bob": [], "shout": []}
    alice.on("news", got["alice"].append)
    bob.on("news", got["bob"].append)
    bob.on("shout", got["shout"].append, namespace="/chat")
    bob.on("question", lambda data: {"answer": data * 2})
    try:
        await wait_until_async(lambda: alice.transport() == transports[-1], 10)
        me = await alice.call("whoami", timeout=10)
        assert me["auth"] == {"name": "alice"} and me["header"] == "yes"
        assert me["method"] == "GET" and me["path"] == "/socket.io/"
        assert "EIO=4" in me["query"] and me["client"] is True
        assert me["scope"] == ("websocket" if kind == "websocket" else "http")
        assert me["transport"] == transports[-1] and me["rooms"] == [me["sid"]]
        assert me["hits"] == 1 and (await alice.call("whoami", timeout=10))["hits"] == 2

        assert await alice.call("join", "room", timeout=10) == 1
        assert await bob.call("join", "room", timeout=10) == 2
        spec = {"event": "news", "data": {"n": 1}, "to": "room"}
        assert await alice.call("emit", spec, timeout=10) == "ok"
        assert await alice.call("emit", {**spec, "data": {"n": 2}, "skip_me": True}) == "ok"
        blob = bytes(range(256)) * 10
        nested = {"blob": blob, "more": [b"\x00", "text"]}
        assert await alice.call("emit", {**spec, "data": nested}, timeout=10) == "ok"
        await wait_until_async(lambda: len(got["alice"]) == 2 and len(got["bob"]) == 3, 10)
        assert got["alice"] == [{"n": 1}, nested]
        assert got["bob"] == [{"n": 1}, {"n": 2}, nested]
        assert await bob.call("echo", (blob, [1, b"\x01"]), timeout=10) == (blob, [1, b"\x01"])
        acks: list[Any] = []
        await alice.emit("echo", "cb", callback=lambda *args: acks.append(args))
        await wait_until_async(lambda: bool(acks), 10)
        assert acks == [("cb",)]
        assert await bob.call("ask", 21, timeout=10) == {"answer": 42}

        await bob.call("leave", "room", timeout=10)
        await alice.call("emit", {**spec, "data": "after leave"}, timeout=10)
        await wait_until_async(lambda: len(got["alice"]) == 3, 10)
        await bob.call("join", "room", timeout=10)
        await alice.call("close", "room", timeout=10)
        await alice.call("emit", {**spec, "data": "after close"}, timeout=10)
        await alice.call("emit", {"event": "news", "data": "to all"}, timeout=10)
        await wait_until_async(lambda: len(got["alice"]) == 4 and len(got["bob"]) == 4, 10)
        assert got["alice"][2:] == ["after leave", "to all"]
        assert got["bob"][3:] == ["to all"]

        assert await bob.call("join", "ns-room", namespace="/chat", timeout=10) == "joined"
        assert await bob.call("shout", "hey", namespace="/chat", timeout=10) == "ok"
        await wait_until_async(lambda: bool(got["shout"]), 10)
        assert got["shout"] == ["hey"]
    finally:
        await leave(alice)
        await leave(bob)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_refused_connection_says_why(plain: ServerProcess, kind: str) -> None:
    """``ConnectionRefusedError`` and a connect handler returning False refuse a client; a
    connect handler that suspends before it accepts accepts."""
    url = _url(plain)
    for auth, error in [
        ({"refuse": "exception"}, {"message": "not you", "data": {"code": 4}}),
        ({"refuse": "false"}, {"message": "Connection rejected by server"}),
    ]:
        refused = client()
        errors: list[Any] = []
        refused.on("connect_error", errors.append)
        attempt = asyncio.ensure_future(
            refused.connect(url, transports=KINDS[kind], auth=auth, wait_timeout=10)
        )
        try:
            # python-socketio's polling client waits on after the refusal (with uvicorn too).
            assert await wait_until_async(lambda errors=errors: bool(errors), 10)
        finally:
            await leave(refused, attempt)
        assert errors == [error]
        assert not refused.connected
    slow = await connect(url, KINDS[kind], auth={"slow": True})
    try:
        assert (await slow.call("whoami", timeout=10))["auth"] == {"slow": True}
    finally:
        await leave(slow)


@pytest.mark.parametrize("event", ["kick", "drop"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_server_disconnect(plain: ServerProcess, kind: str, event: str) -> None:
    """``sio.disconnect(sid)`` (``kick``) and ``sio.eio.disconnect(eio_sid)`` (``drop``): the
    client and the server's disconnect handler both say ``server disconnect``."""
    url = _url(plain)
    client = await connect(url, KINDS[kind])
    reasons: list[Any] = []
    client.on("disconnect", lambda *args: reasons.append(args))
    sid = client.get_sid()
    try:
        assert await wait_until_async(lambda: client.transport() == KINDS[kind][-1], 10)
        await client.emit(event)
        assert await wait_until_async(lambda: bool(reasons), 10)
        assert reasons == [("server disconnect",)] and not client.connected
    finally:
        await leave(client)
    assert await _disconnect_of(url, sid) == ["/", "server disconnect"]


async def test_always_connect_accepts_then_disconnects_a_refused_client(
    always: ServerProcess,
) -> None:
    refused = client()
    events: list[str] = []
    refused.on("connect", lambda: events.append("connect"))
    refused.on("disconnect", lambda *args: events.append("disconnect"))
    try:
        await refused.connect(
            _url(always), transports=["websocket"], auth={"refuse": "false"}, wait_timeout=10
        )
        assert await wait_until_async(lambda: events == ["connect", "disconnect"], 10), events
    finally:
        await leave(refused)


@pytest.mark.parametrize("kind", ["polling", "websocket"])
async def test_a_message_over_max_http_buffer_size_ends_the_session(
    strict: ServerProcess, kind: str
) -> None:
    url = _url(strict)
    client = await connect(url, KINDS[kind])
    sid = client.get_sid()
    try:
        assert await client.call("size", "x" * 500, timeout=10) == 500
        await client.emit("size", "x" * 5000)
        assert await wait_until_async(lambda: not client.connected, 15)
    finally:
        await leave(client)
    namespace, reason = await _disconnect_of(url, sid)
    assert namespace == "/" and reason in (
        "server disconnect",
        "transport error",
        "transport close",
    )


async def test_an_origin_not_allowed_is_refused_and_the_cookie(strict: ServerProcess) -> None:
    polling = strict.url("http", "/socket.io/?EIO=4&transport=polling")
    async with httpx.AsyncClient(timeout=10) as http:
        bad = await http.get(polling, headers={"Origin": "http://evil.example"})
        assert bad.status_code == 400
        assert bad.json() == "http://evil.example is not an accepted origin."
        assert "access-control-allow-origin" not in bad.headers
        good = await http.get(polling, headers={"Origin": "http://good.example"})
        assert good.status_code == 200 and good.text.startswith('0{"sid":')
        assert good.headers["access-control-allow-origin"] == "http://good.example"
        assert good.headers["access-control-allow-credentials"] == "true"
        opened = json.loads(good.text[1:])
        assert opened["maxPayload"] == 2000
        assert good.headers["set-cookie"] == (
            f"eio={opened['sid']}; path=/; HttpOnly; SameSite=Strict"
        )
    ws = strict.url("ws", "/socket.io/?EIO=4&transport=websocket")
    with pytest.raises(websockets.InvalidHandshake):
        async with websockets.connect(ws, origin="http://evil.example", open_timeout=10):
            pass
    async with websockets.connect(ws, origin="http://good.example", open_timeout=10) as conn:
        assert str(await asyncio.wait_for(conn.recv(), 10)).startswith('0{"sid":')


async def test_a_silent_polling_client_times_out(strict: ServerProcess) -> None:
    """A client that stops polling (and so answers no ping) is dropped: ``ping timeout``."""
    base = strict.url("http", "/socket.io/?EIO=4&transport=polling")
    async with httpx.AsyncClient(timeout=10) as http:
        opened = await http.get(base)
        eio_sid = json.loads(opened.text[1:])["sid"]
        session = f"{base}&sid={eio_sid}"
        assert (await http.post(session, content="40")).text == "OK"
        answer = (await http.get(session)).text
        sid = json.loads(answer[answer.index("{") :])["sid"]
    assert await _disconnect_of(_url(strict), sid) == ["/", "ping timeout"]


async def test_a_silent_websocket_client_is_dropped(strict: ServerProcess) -> None:
    """A websocket client that answers no ping is dropped (python-engineio gives ``ping
    timeout`` or, when its read timeout comes first, ``transport close``)."""
    ws = strict.url("ws", "/socket.io/?EIO=4&transport=websocket")
    async with websockets.connect(ws, open_timeout=10) as conn:
        assert str(await asyncio.wait_for(conn.recv(), 10)).startswith('0{"sid":')
        await conn.send("40")
        answer = str(await asyncio.wait_for(conn.recv(), 10))
        sid = json.loads(answer[2:])["sid"]
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(conn.recv(), 15)
    namespace, reason = await _disconnect_of(_url(strict), sid)
    assert namespace == "/" and reason in ("ping timeout", "transport close")


@pytest.mark.parametrize("served", SERVED)
async def test_disconnect_handlers_finish_before_the_server_exits(
    served: tuple[str, str],
) -> None:
    """A client still connected when the server stops: its disconnect handler, which takes a
    while, runs to its end before the server exits."""
    server, flavour = served
    env = {"SIO_FLAVOUR": flavour, "SIO_OPTIONS": "{}"}
    with serving(server, APP, env) as process:
        client = await connect(_url(process), auth={"linger": True})
        sid = client.get_sid()
        try:
            # In a thread: this loop must go on serving the client (its close handshake).
            await asyncio.to_thread(process.stop)
        finally:
            await leave(client)
        assert process.proc.returncode == 0, process.output()
    assert f"disconnect handler of {sid} done" in process.output(), process.output()
