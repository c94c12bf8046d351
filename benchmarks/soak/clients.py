"""The soak's clients: one mix of what a server meets from real clients, each kind one connection.

Every kind opens one connection to the soak application (``tests/apps/soak.py``), does one
thing with it and leaves; :func:`run_mix` runs kinds from several workers at once. The same mix
serves the long soak run (``python -m benchmarks.soak``, by time) and the bounded leak test in
the test suite (``tests/test_soak.py``, by count), with :class:`Tuning` setting the sizes and
pauses. The kinds:

- ``churn``: upgrade, one message and its echo, a clean close handshake;
- ``chatter``: a ``websockets`` client exchanging messages of random sizes, then closing;
- ``deflate``: the same with permessage-deflate (the server must accept it);
- ``slow_reader``: a stream the client stops reading, with a small receive buffer, so that the
  application's ``send()`` waits on back-pressure; then it reads all and closes, or resets;
- ``slow_writer``: the upgrade head and a message trickled a few bytes at a time, or an HTTP
  body trickled the same way;
- ``reset``: ``SO_LINGER 0`` closes (a TCP RST) mid-handshake, mid-frame, mid-body, with a
  message in flight, or while the server is sending;
- ``http``: a keep-alive connection with a few plain requests;
- ``abandon`` (soak only): a stream the client stops reading for good and keeps open, until the
  server's keepalive ping and close timeouts drop it.

Only loopback addresses are used. A client that fails in a way its kind does not expect is
counted in :attr:`Counts.errors` with the first message seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect

from zcasgi.codec import FrameDecoder, Opcode, encode_frame

#: The server options of the soak and of the leak test: permessage-deflate on, and timeouts
#: short enough that clients which stop reading or go quiet are dropped within seconds.
SERVER_ARGS = [
    "--ws-per-message-deflate",
    "true",
    "--io-threads",
    "2",
    "--handshake-timeout",
    "3",
    "--close-timeout",
    "3",
    "--ws-ping-interval",
    "5",
    "--ws-ping-timeout",
    "5",
    "--no-access-log",
]
#: The application both serve.
APP = "apps.soak:app"

#: Masking key of the raw clients' frames (RFC 6455 §5.7's example key).
MASK = bytes.fromhex("37fa213d")
#: Seconds one client may take before it counts as an error (every wait below is bounded).
CLIENT_TIMEOUT = 60.0
#: Receive buffer of a slow reader, so that the server's side fills quickly.
SLOW_RCVBUF = 8192


@dataclass(frozen=True)
class Tuning:
    """Sizes and pauses of the mix."""

    #: Largest message of ``chatter`` and ``deflate``, in bytes.
    max_message: int
    #: Messages per ``chatter``/``deflate`` connection.
    messages: tuple[int, int]
    #: Messages and their size in a slow reader's stream: more in all than a loopback socket's
    #: largest send buffer (``tcp_wmem``, 4 MiB by default), so the app's ``send()`` must wait.
    flood_count: int
    flood_size: int
    #: Seconds a slow reader stops reading.
    pause: tuple[float, float]
    #: Seconds between two trickled pieces of a slow writer.
    trickle: tuple[float, float]
    #: Seconds an abandoning client keeps its connection without reading (0: no such clients).
    abandon_hold: float

    def kinds(self) -> list[str]:
        """The kinds this tuning runs."""
        return [k for k in KINDS if k != "abandon" or self.abandon_hold > 0]


#: The long soak run.
SOAK = Tuning(
    max_message=65536,
    messages=(5, 40),
    flood_count=400,
    flood_size=16384,
    pause=(0.2, 3.0),
    trickle=(0.001, 0.02),
    abandon_hold=25.0,
)
#: The bounded leak test: the same kinds, smaller and without waits on the server's timeouts.
QUICK = Tuning(
    max_message=8192,
    messages=(2, 6),
    flood_count=400,
    flood_size=16384,
    pause=(0.02, 0.1),
    trickle=(0.0, 0.002),
    abandon_hold=0.0,
)


@dataclass
class Counts:
    """What the clients did."""

    #: Connections opened (TCP connects that succeeded).
    connections: int = 0
    #: WebSocket messages sent and echoed back.
    messages: int = 0
    #: Slow readers' streams, in messages received.
    streamed: int = 0
    #: Plain HTTP requests answered.
    http_requests: int = 0
    #: Connections ended by a RST from the client.
    resets: int = 0
    #: Clients run, per kind.
    kinds: Counter[str] = field(default_factory=Counter)
    #: Unexpected failures per kind, and the first message of each.
    errors: Counter[str] = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON values."""
        return {
            "connections": self.connections,
            "messages": self.messages,
            "streamed": self.streamed,
            "http_requests": self.http_requests,
            "resets": self.resets,
            "kinds": dict(self.kinds),
            "errors": dict(self.errors),
            "first_error": dict(self.first_error),
        }


class Unexpected(Exception):
    """The server answered something a client of this kind did not expect."""


# ---- raw connections ----


class Raw:
    """A client connection over plain asyncio streams, for the kinds that need control over
    every byte: trickles, resets, a stalled reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap an open connection."""
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.frames: list[Any] = []

    @classmethod
    async def open(cls, port: int, counts: Counts, *, rcvbuf: int | None = None) -> Raw:
        """Connect to ``127.0.0.1:port`` (with a small receive buffer, if given)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            # A slow reader's stream buffer must not absorb what the socket would not.
            limit = rcvbuf if rcvbuf is not None else 2**16
            reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        except BaseException:
            sock.close()
            raise
        counts.connections += 1
        return cls(reader, writer)

    def reset(self, counts: Counts) -> None:
        """Close with ``SO_LINGER 0``: the kernel sends a RST, not a FIN."""
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        counts.resets += 1

    async def close(self) -> None:
        """Close with a FIN and wait until the transport is gone."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def send(self, data: bytes, trickle: tuple[float, float] | None = None) -> None:
        """Send ``data``, in pieces of 1 to 16 bytes with a pause after each when trickling."""
        if trickle is None:
            self.writer.write(data)
        else:
            i = 0
            while i < len(data):
                step = random.randint(1, 16)
                self.writer.write(data[i : i + step])
                await self.writer.drain()
                await asyncio.sleep(random.uniform(*trickle))
                i += step
        await self.writer.drain()

    async def read_head(self) -> bytes:
        """Read a response head, up to and including its empty line."""
        return await self.reader.readuntil(b"\r\n\r\n")

    async def upgrade(self, path: str = "/", trickle: tuple[float, float] | None = None) -> None:
        """Send the upgrade request for ``path`` and read the ``101`` response."""
        await self.send(upgrade_request(path), trickle)
        head = await self.read_head()
        if not head.startswith(b"HTTP/1.1 101 "):
            raise Unexpected(f"upgrade answered {head[:40]!r}")

    async def frame(self) -> Any:
        """The next frame from the server, answering pings on the way."""
        while True:
            while self.frames:
                frame = self.frames.pop(0)
                if frame.opcode == Opcode.PING:
                    self.writer.write(encode_frame(Opcode.PONG, frame.payload, mask=MASK))
                    continue
                return frame
            data = await self.reader.read(65536)
            if not data:
                raise Unexpected("the server closed without a close frame")
            self.frames.extend(self.decoder.feed(data))

    async def echo(
        self, payload: bytes, counts: Counts, trickle: tuple[float, float] | None = None
    ) -> None:
        """Send ``payload`` as a binary message (trickled, if given) and check the echo."""
        await self.send(encode_frame(Opcode.BINARY, payload, mask=MASK), trickle)
        frame = await self.frame()
        if frame.opcode != Opcode.BINARY or frame.payload != payload:
            raise Unexpected(f"echo of {len(payload)} bytes came back as {frame!r:.80}")
        counts.messages += 1

    async def close_handshake(self) -> None:
        """Send a close frame, wait for the server's, then close the socket."""
        self.writer.write(encode_frame(Opcode.CLOSE, struct.pack("!H", 1000), mask=MASK))
        await self.writer.drain()
        while (await self.frame()).opcode != Opcode.CLOSE:
            pass
        await self.close()


def upgrade_request(path: str) -> bytes:
    """An RFC 6455 §4.1 upgrade request for ``path``."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def http_request(method: str, path: str, body: bytes = b"", *, close: bool = False) -> bytes:
    """An HTTP/1.1 request with a ``Content-Length`` body."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(conn: Raw) -> tuple[int, bytes]:
    """Read one response with a ``Content-Length`` body: its status and body."""
    head = await conn.read_head()
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await conn.reader.readexactly(length)
    return status, body


async def stats(port: int) -> dict[str, Any]:
    """The soak application's ``/stats``: running application calls and asyncio tasks.

    The connection is closed by the client after the answer, so it holds no server descriptor
    once the server has seen the close.
    """
    return await _stats_request(port, "GET", "/stats")


async def trim(port: int) -> dict[str, Any]:
    """Ask the soak application to call ``malloc_trim(0)``; the stats after it."""
    return await _stats_request(port, "POST", "/trim")


async def _stats_request(port: int, method: str, path: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        conn = Raw(reader, writer)
        await conn.send(http_request(method, path, close=True))
        status, body = await read_response(conn)
        if status != 200:
            raise Unexpected(f"{path} answered {status}")
        value: dict[str, Any] = json.loads(body)
        # Wait for the server's FIN, so that its descriptor is closed when this returns.
        await reader.read()
        return value
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# ---- the kinds ----

Kind = Callable[[int, Tuning, Counts], Awaitable[None]]


def _payload(size: int) -> bytes:
    return os.urandom(size)


def _text(size: int) -> str:
    """Compressible text of ``size`` characters."""
    words = ("socket ", "frame ", "deflate ", "message ", "zcasgi ", "soak ")
    out = "".join(random.choice(words) for _ in range(size // 6 + 1))
    return out[:size]


async def churn(port: int, tuning: Tuning, counts: Counts) -> None:
    """Upgrade, one message and its echo, a clean close handshake."""
    conn = await Raw.open(port, counts)
    await conn.upgrade()
    await conn.echo(_payload(random.randint(0, 256)), counts)
    await conn.close_handshake()


async def _chat(port: int, tuning: Tuning, counts: Counts, compression: str | None) -> None:
    uri = f"ws://127.0.0.1:{port}/"
    async with connect(uri, compression=compression, max_size=None) as ws:
        counts.connections += 1
        agreed = ws.response.headers.get("sec-websocket-extensions") if ws.response else None
        if compression is not None and not agreed:
            raise Unexpected("permessage-deflate was not negotiated")
        for _ in range(random.randint(*tuning.messages)):
            size = random.randint(0, tuning.max_message)
            message: str | bytes = _text(size) if compression else _payload(size)
            await ws.send(message)
            if await ws.recv() != message:
                raise Unexpected("echo differs")
            counts.messages += 1


async def chatter(port: int, tuning: Tuning, counts: Counts) -> None:
    """A ``websockets`` client exchanging messages of random sizes, then closing."""
    await _chat(port, tuning, counts, None)


async def deflate(port: int, tuning: Tuning, counts: Counts) -> None:
    """:func:`chatter` with permessage-deflate and compressible text."""
    await _chat(port, tuning, counts, "deflate")


async def _open_flood(port: int, tuning: Tuning, counts: Counts) -> Raw:
    conn = await Raw.open(port, counts, rcvbuf=SLOW_RCVBUF)
    await conn.upgrade(f"/flood?count={tuning.flood_count}&size={tuning.flood_size}")
    frame = await conn.frame()
    if frame.opcode != Opcode.BINARY:
        raise Unexpected(f"flood began with {frame!r:.80}")
    counts.streamed += 1
    return conn


async def slow_reader(port: int, tuning: Tuning, counts: Counts) -> None:
    """Stop reading a stream so that the server's back-pressure engages; then read to its
    end and close, or reset."""
    conn = await _open_flood(port, tuning, counts)
    await asyncio.sleep(random.uniform(*tuning.pause))
    if random.random() < 0.5:
        conn.reset(counts)
        return
    while True:
        frame = await conn.frame()
        if frame.opcode == Opcode.TEXT:
            if frame.payload != f"done {tuning.flood_count}".encode():
                raise Unexpected(f"flood ended with {frame!r:.80}")
            break
        counts.streamed += 1
    await conn.close_handshake()


async def slow_writer(port: int, tuning: Tuning, counts: Counts) -> None:
    """Trickle an upgrade head and a message, or an HTTP request with its body."""
    conn = await Raw.open(port, counts)
    if random.random() < 0.5:
        await conn.upgrade(trickle=tuning.trickle)
        await conn.echo(_payload(random.randint(1, 2048)), counts, tuning.trickle)
        await conn.close_handshake()
    else:
        body = _payload(random.randint(1, 2048))
        await conn.send(http_request("POST", "/echo", body, close=True), tuning.trickle)
        status, got = await read_response(conn)
        if (status, got) != (200, body):
            raise Unexpected(f"trickled POST answered {status}")
        counts.http_requests += 1
        await conn.close()


#: Where a ``reset`` client resets.
RESET_POINTS = ("connect", "head", "frame", "body", "in_flight", "streaming")


async def reset(port: int, tuning: Tuning, counts: Counts) -> None:
    """Reset (``SO_LINGER 0``) at one of :data:`RESET_POINTS`."""
    point = random.choice(RESET_POINTS)
    if point == "streaming":
        conn = await _open_flood(port, tuning, counts)
        conn.reset(counts)
        return
    conn = await Raw.open(port, counts)
    if point == "head":
        request = upgrade_request("/")
        await conn.send(request[: random.randint(1, len(request) - 1)])
    elif point == "body":
        # /upload gives up quietly when the client leaves (apps.http).
        body = _payload(4096)
        request = http_request("POST", "/upload", body)
        await conn.send(request[: len(request) - random.randint(1, len(body))])
    elif point in ("frame", "in_flight"):
        await conn.upgrade()
        frame = encode_frame(Opcode.BINARY, _payload(random.randint(2, 4096)), mask=MASK)
        cut = random.randint(1, len(frame) - 1) if point == "frame" else len(frame)
        await conn.send(frame[:cut])
    conn.reset(counts)


async def http(port: int, tuning: Tuning, counts: Counts) -> None:
    """A keep-alive connection with one to five requests."""
    conn = await Raw.open(port, counts)
    for _ in range(random.randint(1, 5)):
        if random.random() < 0.5:
            body = _payload(random.randint(0, 8192))
            await conn.send(http_request("POST", "/echo", body))
            expected = (200, body)
        else:
            await conn.send(http_request("GET", "/echo"))
            expected = (200, b"")
        if await read_response(conn) != expected:
            raise Unexpected("HTTP echo differs")
        counts.http_requests += 1
    await conn.close()


async def abandon(port: int, tuning: Tuning, counts: Counts) -> None:
    """Open a stream, stop reading it and keep the connection; then read what is left and
    expect the server to have dropped the connection meanwhile."""
    conn = await _open_flood(port, tuning, counts)
    await asyncio.sleep(tuning.abandon_hold)
    try:
        while await conn.reader.read(65536):
            pass
    except ConnectionResetError:
        pass
    await conn.close()


#: Every kind, by name.
KINDS: dict[str, Kind] = {
    "churn": churn,
    "chatter": chatter,
    "deflate": deflate,
    "slow_reader": slow_reader,
    "slow_writer": slow_writer,
    "reset": reset,
    "http": http,
    "abandon": abandon,
}


def cycle_plan(tuning: Tuning, cycles: int) -> Iterator[str]:
    """``cycles`` kinds, each kind in turn."""
    return itertools.islice(itertools.cycle(tuning.kinds()), cycles)


def timed_plan(tuning: Tuning, until: float) -> Iterator[str]:
    """Kinds at random until the loop time ``until`` (``abandon`` rarely: it holds a
    connection for a long time)."""
    kinds = tuning.kinds()
    weights = [0.02 if kind == "abandon" else 1.0 for kind in kinds]
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        yield random.choices(kinds, weights)[0]


async def run_one(kind: str, port: int, tuning: Tuning, counts: Counts) -> None:
    """Run one client of ``kind``, counting an unexpected failure or a timeout as an error."""
    counts.kinds[kind] += 1
    try:
        await asyncio.wait_for(
            KINDS[kind](port, tuning, counts), CLIENT_TIMEOUT + tuning.abandon_hold
        )
    except Exception as exc:  # any failure of a client is a finding: counted, not raised
        counts.errors[kind] += 1
        counts.first_error.setdefault(kind, f"{type(exc).__name__}: {exc}"[:300])


async def run_mix(
    port: int, plan: Iterator[str], *, tuning: Tuning, workers: int, counts: Counts
) -> Counts:
    """Run the kinds of ``plan`` from ``workers`` concurrent clients; return ``counts``."""

    async def worker() -> None:
        for kind in plan:
            await run_one(kind, port, tuning, counts)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return counts


async def wait_settled(
    port: int, open_fds: Callable[[], int], *, timeout: float, fds: int | None = None
) -> dict[str, Any]:
    """Wait until no application call runs, no per-connection object is left and the server's
    descriptor count is steady (and equal to ``fds``, if given), at most ``timeout`` seconds;
    the last look either way: ``{"fds": ..., "tasks": ..., "asyncio_tasks": ...,
    "connection_objects": ..., "settled": bool}``.

    The count is read twice, 0.2 s apart and after the ``/stats`` connection has closed, so the
    look's own connection is not in it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            app = await stats(port)
        except (OSError, EOFError, ValueError, Unexpected):
            # A look that failed on a loaded machine: look again.
            app = {"tasks": -1, "asyncio_tasks": -1, "connection_objects": -1}
        await asyncio.sleep(0.2)
        first = open_fds()
        await asyncio.sleep(0.2)
        last = open_fds()
        settled = (
            app["tasks"] == 0
            and app["connection_objects"] in (0, None)
            and first == last
            and (fds is None or last == fds)
        )
        if settled or loop.time() >= deadline:
            return {
                "fds": last,
                "tasks": app["tasks"],
                "asyncio_tasks": app["asyncio_tasks"],
                "connection_objects": app["connection_objects"],
                "settled": settled,
            }
