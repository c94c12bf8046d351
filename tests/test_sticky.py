"""Sticky Engine.IO sessions with ``--workers``, on both backends.

python-socketio's own clients — default ones (long-polling, then upgrade to WebSocket),
polling-only and websocket-only ones — all from 127.0.0.1, against ``--workers 4`` serving a
stock python-socketio application (``tests/apps/sticky.py``) that acknowledges each event with
the PID of the worker that serves it. Every request of a session must reach the worker that
created it: no client loses its session (python-engineio answers 400 "Invalid session" to a
request for a session it does not hold), every acknowledgement of a session comes from one
worker, and the access log shows each request of a session served by the worker its id
names. A raw keep-alive connection (a reverse proxy's upstream connection) carries polling
requests of sessions of two workers.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import socket
from typing import Any

import aiohttp
import pytest
import socketio

from harness import HOST, ZcasgiServer
from harness.pki import Pki
from zcasgi import Config, _zcasgi
from zcasgi.sticky import make_inbox, tag_sessions

pytestmark = pytest.mark.timeout(120)

WORKERS = 4
#: Clients of each kind per worker.
CLIENTS = 2
EMITS = 5
KINDS: dict[str, list[str] | None] = {
    "default": None,
    "polling": ["polling"],
    "websocket": ["websocket"],
}


@pytest.fixture
def server(backend: str):  # type: ignore[no-untyped-def]
    with ZcasgiServer("apps.sticky:app", backend, [], workers=WORKERS) as server:
        yield server
    assert "Traceback" not in server.output(), server.output()


#: An access log line of a request of a tagged session: the worker that served it, the tag.
_SERVED = re.compile(r"\[worker (\d+) pid \d+\] .*[?&]sid=[\w-]+\.(\d+)\b")


def _assert_served_by_owner(server: ZcasgiServer) -> int:
    """Every request of every session was served by the worker whose index tags its id (the
    access log says which worker served each). Returns how many requests were checked."""
    served = [m.groups() for m in _SERVED.finditer(server.output())]
    wrong = [(worker, owner) for worker, owner in served if worker != owner]
    assert not wrong, f"requests served by another worker than their session's: {wrong}"
    return len(served)


async def _connect(
    url: str, kind: str, http: aiohttp.ClientSession
) -> tuple[socketio.AsyncClient, list[str]]:
    """A connected client of ``kind`` (a default one upgraded to WebSocket), and the list its
    unexpected disconnects go to."""
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    dropped: list[str] = []
    client.on("disconnect", lambda *reason: dropped.append(repr(reason)))
    await client.connect(url, transports=KINDS[kind], wait_timeout=10)
    if kind == "default":
        # The upgrade to WebSocket happens in the background.
        for _ in range(200):
            if client.transport() == "websocket":
                break
            await asyncio.sleep(0.02)
    return client, dropped


async def _use(
    client: socketio.AsyncClient, dropped: list[str], kind: str, n: int
) -> tuple[set[int], str]:
    """Emits with acks, then a disconnect; the PIDs that acked, and the transport it ended on."""
    try:
        pids = set()
        for i in range(EMITS):
            ack: dict[str, Any] = await client.call("whoami", [kind, n, i], timeout=10)
            assert ack["data"] == [kind, n, i]
            assert ack["sid"] == client.get_sid()
            pids.add(ack["pid"])
        transport = client.transport()
        assert not dropped, f"{kind} client {n} dropped: {dropped}"
    finally:
        await client.disconnect()
    return pids, transport


# python-engineio's client leaves the response of its last long-poll unread when the server
# answers it 400 because the client's own disconnect closed the session (as any server does):
# aiohttp then warns that the connection was not closed when it is collected.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Connection.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_every_request_of_a_session_reaches_its_worker(server: ZcasgiServer) -> None:
    """Clients of every kind connect to each worker in turn (the others stopped meanwhile, so
    that every worker holds sessions: which worker accepts is otherwise the kernel's uneven
    choice); then all of them emit at once, with every polling request on a new connection
    (``force_close``), which any worker may accept: each must reach its session's worker."""
    connector = aiohttp.TCPConnector(force_close=True)
    workers = await _each_worker_serves_its_sessions(server, "http", connector, list(KINDS))
    assert workers == WORKERS


async def _each_worker_serves_its_sessions(
    server: ZcasgiServer, scheme: str, connector: aiohttp.TCPConnector, kinds: list[str]
) -> int:
    """Makes ``CLIENTS`` clients of each of ``kinds`` on each worker in turn (the others
    stopped meanwhile), then has all of them emit at once through ``connector``: each session
    must be served by the worker that made it only, and every request by its session's worker.
    Returns how many workers made sessions."""
    url = server.url(scheme, "")
    async with aiohttp.ClientSession(connector=connector) as http:
        clients = []
        for pid in server.children():
            with server.only(pid):
                for kind in kinds:
                    for _ in range(CLIENTS):
                        clients.append((pid, kind, *await _connect(url, kind, http)))
        results = await asyncio.gather(
            *(
                _use(client, dropped, kind, n)
                for n, (_, kind, client, dropped) in enumerate(clients)
            )
        )
    for (pid, kind, *_), (pids, transport) in zip(clients, results):
        assert pids == {pid}, f"a {kind} session of worker {pid} was served by {pids}"
        assert transport == ("polling" if kind == "polling" else "websocket"), (kind, transport)
    assert _assert_served_by_owner(server) > 0
    # Collect the long-polls' responses now, under the calling test's warning filter.
    gc.collect()
    return len({pid for pid, *_ in clients})


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, query: str, body: bytes
) -> bytes:
    """One request on a keep-alive connection; its response body (sized by content-length)."""
    writer.write(
        f"{method} /socket.io/?{query} HTTP/1.1\r\nHost: x\r\ncontent-length: {len(body)}\r\n"
        "content-type: text/plain;charset=UTF-8\r\n\r\n".encode()
        + body
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 "), head
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    if b"content-length" in fields:
        return await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 10)
    assert fields.get(b"transfer-encoding") == b"chunked", head
    body = b""
    while True:
        size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 10), 16)
        chunk = await asyncio.wait_for(reader.readexactly(size + 2), 10)
        if size == 0:
            return body
        body += chunk[:-2]


async def _open_session(port: int) -> str:
    """A new Engine.IO session (a polling handshake on a connection of its own); its id."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        body = await _request(reader, writer, "GET", "EIO=4&transport=polling", b"")
    finally:
        writer.close()
    assert body.startswith(b"0{"), body
    sid: str = json.loads(body[1:])["sid"]
    return sid


async def test_one_keep_alive_connection_carries_sessions_of_two_workers(
    server: ZcasgiServer,
) -> None:
    by_worker: dict[str, str] = {}
    for pid in server.children()[:2]:
        # A session of this worker: the others are stopped while it is made.
        with server.only(pid):
            sid = await _open_session(server.require_port())
        by_worker[sid.rsplit(".", 1)[1]] = sid
    assert len(by_worker) == 2, by_worker
    reader, writer = await asyncio.open_connection(HOST, server.require_port())
    try:
        for sid in by_worker.values():
            query = f"EIO=4&transport=polling&sid={sid}"
            # The Socket.IO connect, then the poll that answers it: both reach the session's
            # worker, on one connection that alternates between the two sessions.
            assert await _request(reader, writer, "POST", query, b"40") == b"OK"
            connected = await _request(reader, writer, "GET", query, b"")
            assert connected.startswith(b"40{"), connected
        for sid in by_worker.values():
            query = f"EIO=4&transport=polling&sid={sid}"
            assert await _request(reader, writer, "POST", query, b"1") == b"OK"
    finally:
        writer.close()
    assert _assert_served_by_owner(server) >= 6


def _core(worker: Any) -> Any:
    """A ``_zcasgi.Core`` on no listener, started for ``worker``."""
    return _zcasgi.Core(
        Config("apps.sticky:app"),
        [],
        on_connect=lambda conn, scope: None,
        event_loop=None,
        logger=logging.getLogger("zcasgi"),
        access_log=None,
        state=None,
        worker=worker,
    )


def test_core_checks_the_worker_it_is_given() -> None:
    inboxes = [make_inbox(i) for i in range(2)]
    peers = [inbox.sending.fileno() for inbox in inboxes]
    own = inboxes[0].receiving.fileno()
    try:
        with pytest.raises(ValueError, match="worker index 2 must be below the worker count 2"):
            _core((2, 2, own, peers))
        with pytest.raises(ValueError, match="1 worker inboxes given for 2 workers"):
            _core((0, 2, own, peers[:1]))
        with socket.socket() as tcp, pytest.raises(ValueError, match="is not an inbox"):
            _core((0, 2, tcp.fileno(), peers))
        closed = os.dup(own)
        os.close(closed)
        with pytest.raises(OSError, match=f"worker inbox descriptor {closed}"):
            _core((0, 2, closed, peers))
        with pytest.raises(ValueError, match="length 4"):
            _core((0, 2, own))
        core = _core((1, 2, inboxes[1].receiving.fileno(), peers))
        core.shutdown()
        assert core.join(5)
    finally:
        for inbox in inboxes:
            inbox.receiving.close()
            inbox.sending.close()


def test_session_ids_carry_the_worker_index() -> None:
    from engineio.base_server import BaseServer

    original = BaseServer.generate_id
    try:
        tag_sessions(3)
        tag_sessions(2)
        server = BaseServer()
        sid = server.generate_id()
        stock, index = sid.rsplit(".", 1)
        assert index == "2" and len(stock) == 20, sid
        assert _zcasgi.tag_session_id(stock, 2) == sid
    finally:
        BaseServer.generate_id = original  # type: ignore[method-assign]


# ---- TLS terminated by zcasgi: a connection that reaches another worker than its session's
# stays in the process that holds its TLS state, which relays its plaintext to the owner.


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connections"])
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Connection.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_socketio_clients_over_https_reach_their_worker(
    backend: str, pki: Pki, keep_alive: bool
) -> None:
    """Polling-only and default clients (polling, then the upgrade to wss) over https, made on
    each of two workers in turn, then all emitting at once: any worker may accept their
    requests (on new connections, or on keep-alive ones opened by another session's request),
    and every one reaches its session's worker through the relay, with no 503."""
    server = ZcasgiServer("apps.sticky:app", backend, pki.server_args(), workers=2)
    with server:
        connector = aiohttp.TCPConnector(ssl=pki.client_context(), force_close=not keep_alive)
        kinds = ["polling", "default"]
        assert await _each_worker_serves_its_sessions(server, "https", connector, kinds) == 2
    out = server.output()
    assert " 503" not in out and "Traceback" not in out, out


async def test_a_relayed_request_has_the_scope_of_its_tls_connection(
    backend: str, pki: Pki
) -> None:
    """One https keep-alive connection whose requests name sessions of three workers in turn
    (the connection moves from its relay's owner to a third worker as a plain socket): each is
    served by the worker its session names, with the scope of the TLS connection — https, the
    client's address and the TLS extension."""
    server = ZcasgiServer("apps.echo:transport_app", backend, pki.server_args(), workers=3)
    with server:
        port = server.require_port()
        reader, writer = await asyncio.open_connection(HOST, port, ssl=pki.client_context())
        local_port = writer.get_extra_info("sockname")[1]
        by_index: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
        try:
            for _ in range(3):
                for index, pids in by_index.items():
                    query = f"EIO=4&transport=polling&sid=s.{index}"
                    scope = json.loads(await _request(reader, writer, "GET", query, b""))
                    assert scope["scheme"] == "https"
                    assert scope["client"] == [HOST, local_port]
                    assert scope["server"] == [HOST, port]
                    tls = scope["extensions"]["tls"]
                    assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----"), tls
                    assert tls["tls_version"] in (0x0303, 0x0304), tls
                    pids.add(scope["pid"])
        finally:
            writer.close()
    assert all(len(pids) == 1 for pids in by_index.values()), by_index
    assert len(set().union(*by_index.values())) == 3, by_index
    out = server.output()
    assert " 503" not in out and "Traceback" not in out, out
