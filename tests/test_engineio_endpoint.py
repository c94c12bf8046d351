"""zcasgi's Engine.IO endpoint in Rust (``__zcasgi_engineio__``), driven by python-engineio's
own client over each transport, on both backends (tests/apps/eio_raw.py is the handler)."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from typing import Any

import engineio
import pytest

from harness import ZcasgiServer, wait_until_async

pytestmark = pytest.mark.timeout(90)

TRANSPORTS = {"default": None, "polling": ["polling"], "websocket": ["websocket"]}


@pytest.fixture
def eio(backend: str):  # type: ignore[no-untyped-def]
    env = {"EIO_PING": "1,1", "EIO_MAX": "4096"}
    with ZcasgiServer("tests.apps.eio_raw:app", backend, ["--no-access-log"], env=env) as server:
        yield server
    assert "Traceback" not in server.output(), server.output()


async def _connect(
    url: str, transports: list[str] | None, query: str = ""
) -> tuple[engineio.AsyncClient, asyncio.Queue[Any]]:
    client = engineio.AsyncClient()
    got: asyncio.Queue[Any] = asyncio.Queue()

    @client.on("message")  # type: ignore[untyped-decorator]
    async def on_message(data: Any) -> None:
        await got.put(data)

    await client.connect(url + query, transports=transports)
    return client, got


async def _next(got: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(got.get(), 10)


def _fetch(request: str | urllib.request.Request) -> tuple[int, bytes]:
    """The status and body of a request (an error status too)."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


async def _handshake(server: ZcasgiServer) -> tuple[str, str]:
    """Opens a long-polling session by hand; returns its URL and session id."""
    url = server.url("http", "/engine.io/?EIO=4&transport=polling")
    status, body = await asyncio.to_thread(_fetch, url)
    assert status == 200, body
    sid = re.search(rb'"sid":"([^"]+)"', body).group(1).decode()  # type: ignore[union-attr]
    return url, sid


def _disconnects(server: ZcasgiServer) -> dict[str, str]:
    return dict(re.findall(r"eio disconnect (\S+) (.+)", server.output()))


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_messages_both_ways_and_pings_on_each_transport(
    eio: ZcasgiServer, transport: str
) -> None:
    client, got = await _connect(eio.url("http"), TRANSPORTS[transport])
    await client.send("hi")
    assert await _next(got) == "echo:hi"
    await client.send(b"\x00\xffbin")
    assert await _next(got) == b"\x00\xffbin"
    # Three ping intervals: the server's pings are answered, and the session goes on.
    await asyncio.sleep(3.2)
    await client.send("later:x")
    await client.send("after")
    # A message handled asynchronously (its handler says so, and calls done() later).
    assert {await _next(got), await _next(got)} == {"later:x", "echo:after"}
    assert client.transport() == ("polling" if transport == "polling" else "websocket")
    sid = client.sid
    await client.disconnect()
    await wait_until_async(lambda: sid in _disconnects(eio), timeout=10)


async def test_the_server_closes_a_session(eio: ZcasgiServer) -> None:
    for transports in (["polling"], ["websocket"]):
        client, _ = await _connect(eio.url("http"), transports)
        await client.send("close")
        await wait_until_async(lambda c=client: c.state == "disconnected", timeout=10)
        # The server's own close is not reported back to its handler.
        assert client.sid not in _disconnects(eio)


async def test_a_broadcast_reaches_every_session_once(eio: ZcasgiServer) -> None:
    clients = [await _connect(eio.url("http"), TRANSPORTS[t]) for t in TRANSPORTS]
    await clients[0][0].send("all:news")
    for _, got in clients:
        assert await _next(got) == "news"
        assert got.empty()
    for client, _ in clients:
        await client.disconnect()


async def test_a_refused_session_gets_401(eio: ZcasgiServer) -> None:
    url = eio.url("http", "/engine.io/?EIO=4&transport=polling&refuse=1")
    status, _ = await asyncio.to_thread(_fetch, url)
    assert status == 401


async def test_a_silent_client_is_closed_by_its_ping_timeout(eio: ZcasgiServer) -> None:
    _, sid = await _handshake(eio)
    # No poll, no pong: after the ping interval and the ping timeout the session ends.
    await wait_until_async(lambda: _disconnects(eio).get(sid) == "ping timeout", timeout=10)


@pytest.mark.parametrize(
    ("query", "headers", "status", "body"),
    [
        ("EIO=4&transport=flash", {}, 400, b'"Invalid transport"'),
        ("EIO=3&transport=polling", {}, 400, b"unsupported version"),
        ("EIO=4&transport=polling&sid=nope", {}, 400, b'"Invalid session nope"'),
        (
            "EIO=4&transport=polling",
            {"Origin": "http://elsewhere.example"},
            400,
            b'"http://elsewhere.example is not an accepted origin."',
        ),
    ],
)
async def test_bad_requests_get_python_engineios_answers(
    eio: ZcasgiServer, query: str, headers: dict[str, str], status: int, body: bytes
) -> None:
    request = urllib.request.Request(eio.url("http", f"/engine.io/?{query}"), headers=headers)
    answer = await asyncio.to_thread(_fetch, request)
    assert answer[0] == status
    assert body in answer[1]


async def test_an_oversized_post_is_refused_and_ends_the_session(eio: ZcasgiServer) -> None:
    url, sid = await _handshake(eio)
    post = urllib.request.Request(f"{url}&sid={sid}", data=b"4" + b"x" * 5000, method="POST")
    status, _ = await asyncio.to_thread(_fetch, post)
    assert status == 400
    await wait_until_async(lambda: sid in _disconnects(eio), timeout=10)


async def test_other_paths_still_reach_the_application(eio: ZcasgiServer) -> None:
    answer = await asyncio.to_thread(_fetch, eio.url("http", "/other"))
    assert answer == (404, b"not found")


async def test_each_request_has_its_access_line(backend: str) -> None:
    with ZcasgiServer("tests.apps.eio_raw:app", backend) as server:
        for transports in (None, ["polling"]):
            client, got = await _connect(server.url("http"), transports)
            await client.send("hi")
            assert await _next(got) == "echo:hi"
            await client.disconnect()
        await asyncio.to_thread(
            _fetch, server.url("http", "/engine.io/?EIO=4&transport=polling&sid=nope")
        )
        await wait_until_async(lambda: "400 Bad Request" in server.output(), timeout=10)
    out = server.output()
    assert re.search(r'"GET /engine.io/\?transport=polling&EIO=4&t=\S+ HTTP/1.1" 200 OK', out), out
    assert re.search(r'"POST /engine.io/\?transport=polling&EIO=4&sid=\S+ HTTP/1.1" 200 OK', out)
    websocket = r'"WebSocket /engine.io/\?transport=websocket&EIO=4&sid=\S+" \[accepted\]'
    assert re.search(websocket, out)
    assert '"GET /engine.io/?EIO=4&transport=polling&sid=nope HTTP/1.1" 400 Bad Request' in out
