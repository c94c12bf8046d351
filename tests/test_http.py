"""End-to-end tests of the ASGI ``http`` scope: real server, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct

import httpx
import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from harness import ZcasgiServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(backend: str):  # type: ignore[no-untyped-def]
    with ZcasgiServer("apps.http:app", backend) as s:
        yield s


def _raw(port: int, data: bytes, *, read_until_close: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if not read_until_close:
            return sock.recv(65536)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _read_chunked_response(sock: socket.socket) -> bytes:
    """Read one chunked response from a kept-alive ``sock``: up to its last (empty) chunk."""
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_get_and_keep_alive_reuse(server: ZcasgiServer) -> None:
    with httpx.Client(base_url=server.url("http", "")) as client:
        for i in range(20):
            r = client.post("/echo", content=f"hello {i}".encode())
            assert r.status_code == 200
            assert r.text == f"hello {i}"
            assert r.headers["server"] == "zcasgi"
            assert re.match(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", r.headers["date"])
        r = client.get("/missing")
        assert r.status_code == 404
    # One TCP connection served all of them.
    access = [line for line in server.output().splitlines() if '"POST /echo HTTP/1.1" 200' in line]
    ports = {line.split()[1] for line in access}
    assert len(access) == 20 and len(ports) == 1, access[:3]


def test_scope(server: ZcasgiServer) -> None:
    r = httpx.get(server.url("http", "/scope?a=1&b=%20"), headers={"X-Thing": "yes"})
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert ["x-thing", "yes"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]


def test_pipelined_requests_answered_in_order(server: ZcasgiServer) -> None:
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"one", b"two", b"three")
    )
    data = _raw(
        server.port, requests + b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    bodies = re.findall(rb"\r\n\r\n(?:[0-9a-f]+\r\n)?(one|two|three|slow)", data)
    assert bodies == [b"one", b"two", b"three", b"slow"]
    assert data.count(b"HTTP/1.1 200 OK") == 4


def test_chunked_upload_and_chunked_response(server: ZcasgiServer) -> None:
    def gen():  # type: ignore[no-untyped-def]
        for i in range(50):
            yield bytes([i]) * 1000

    r = httpx.post(server.url("http", "/echo"), content=gen())
    assert r.status_code == 200
    assert r.content == b"".join(bytes([i]) * 1000 for i in range(50))
    r = httpx.get(server.url("http", "/stream?n=5&size=10"))
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.content == b"".join(bytes([i]) * 10 for i in range(5))


def test_large_streamed_response_to_slow_reader(server: ZcasgiServer) -> None:
    n, size = 1000, 65536  # 62.5 MiB
    later = '"GET /missing?after=stream HTTP/1.1" 404'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /stream?n=%d&size=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (n, size)
        )
        assert sock.recv(1), "the app is streaming"
        # While the stream waits for its reader, another request is answered and logged. Had
        # the app's send() not waited, the stream (whose sends then never yield) would have
        # finished and logged so before this request got its turn.
        assert httpx.get(server.url("http", "/missing?after=stream")).status_code == 404
        assert later in server.wait_for_output(later)
        assert server.wait_quiet(), "the server should be idle, waiting for the reader"
        assert "stream done" not in server.output(), "the app must wait for the reader"
        total = 1
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    assert total > n * size
    assert f"stream done n={n}" in server.wait_for_output("stream done")


def test_expect_100_continue(server: ZcasgiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = b""
        while not response.endswith(b"hello"):
            chunk = sock.recv(4096)
            assert chunk, response
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello")


def test_head_has_no_body(server: ZcasgiServer) -> None:
    r = httpx.head(server.url("http", "/echo"))
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "0"


def test_http10(server: ZcasgiServer) -> None:
    data = _raw(server.port, b"GET /missing HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"connection: close" in data.lower()
    assert data.endswith(b"not found")


def test_body_too_large_is_413(backend: str) -> None:
    with ZcasgiServer("apps.http:app", backend, ["--http-max-body-size", "100"]) as server:
        r = httpx.post(server.url("http", "/echo"), content=b"x" * 101)
        assert r.status_code == 413
        r = httpx.post(server.url("http", "/echo"), content=b"x" * 100)
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"400",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ],
)
def test_malformed_requests(server: ZcasgiServer, request_bytes: bytes, status: bytes) -> None:
    data = _raw(server.port, request_bytes)
    assert data.startswith(b"HTTP/1.1 " + status + b" "), data[:80]
    r = httpx.get(server.url("http", "/missing"))  # the server keeps serving
    assert r.status_code == 404


def test_stalled_body_is_timed_out(backend: str) -> None:
    """A body that stops arriving gets 408 after ``handshake_timeout`` without a byte, and the
    connection closes: it no longer holds a ``max_connections`` slot forever."""
    with ZcasgiServer("apps.http:app", backend, ["--handshake-timeout", "1"]) as server:
        request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na"
        data = _raw(server.port, request, timeout=10)
        assert data.startswith(b"HTTP/1.1 408 "), data[:80]
        assert httpx.get(server.url("http", "/missing")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhello\r\n0\r\n\n",
        b"5;ext\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n",
    ],
    ids=["last-line", "size-line-with-extension", "after-data"],
)
def test_chunked_body_with_bare_lf_is_400(server: ZcasgiServer, body: bytes) -> None:
    """RFC 9112 §7.1: chunked lines end with CRLF; a bare LF is answered 400 at once."""
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = _raw(server.port, head + body)
    assert data.startswith(b"HTTP/1.1 400 "), data[:80]


_UPGRADE_WITHOUT_HOST = (
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /missing HTTP/1.1\r\n\r\n", _UPGRADE_WITHOUT_HOST],
    ids=["http", "upgrade"],
)
def test_http11_without_host_is_400(server: ZcasgiServer, request_bytes: bytes) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request (or upgrade) without Host never reaches the app."""
    data = _raw(server.port, request_bytes)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data[:80]
    assert "GET /missing" not in server.output()


def test_absolute_form_target_reaches_the_app_as_its_path(server: ZcasgiServer) -> None:
    """RFC 9112 §3.2.2: the app sees the path of ``http://evil/scope``, and ``evil`` as Host."""
    request = b"GET http://evil/scope?a=1 HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r\n"
    data = _raw(server.port, request)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:80]
    body, chunks = b"", data.partition(b"\r\n\r\n")[2]
    while (size := int(chunks.partition(b"\r\n")[0], 16)) > 0:
        chunk = chunks.partition(b"\r\n")[2]
        body, chunks = body + chunk[:size], chunk[size + 2 :]
    scope = json.loads(body)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/scope", "/scope", "a=1")
    assert ["host", "evil"] in scope["headers"], scope["headers"]
    assert ["host", "good"] not in scope["headers"], scope["headers"]


def test_501_has_its_reason_phrase(server: ZcasgiServer) -> None:
    data = _raw(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), data[:80]


def test_app_errors(server: ZcasgiServer) -> None:
    r = httpx.get(server.url("http", "/boom"))
    assert r.status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url("http", "/boom-late"))
    r = httpx.get(server.url("http", "/noresponse"))
    assert r.status_code == 500
    assert httpx.get(server.url("http", "/missing")).status_code == 404
    output = server.wait_for_output("returned without completing")
    assert "boom before response" in output
    assert "boom mid response" in output
    assert "returned without completing the response" in output


def test_client_disconnect_mid_body_reaches_app(server: ZcasgiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        assert "hang started" in server.wait_for_output("hang started")
    assert "ConnectionError: client disconnected" in server.wait_for_output("client disconnected")


def test_client_that_leaves_mid_body_is_not_a_server_error(backend: str) -> None:
    # An app that returns without answering because the client left did nothing wrong, and a
    # remote client must not be able to fill the log with ERROR lines (issue 10, item 6).
    with ZcasgiServer("apps.http:app", backend, ["--log-level", "debug"]) as server:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc")
            # Reset the connection mid-body (SO_LINGER 0 makes close() send a RST).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        server.wait_for_output("upload got http.disconnect", count=3)
        # A later request, logged after the three uploads ended.
        assert httpx.get(server.url("http", "/noresponse")).status_code == 500
        output = server.wait_for_output("returned without completing the response", count=4)
    lines = [ln for ln in output.splitlines() if "returned without completing" in ln]
    assert len(lines) == 4, lines
    # The three clients that left are logged at debug level, the app's own fault at error.
    assert sum(ln.startswith("DEBUG") and "client had disconnected" in ln for ln in lines) == 3
    assert sum(ln.startswith("ERROR") for ln in lines) == 1, lines
    assert all(", client 127.0.0.1:" in ln for ln in lines), "they name the client"


def test_long_poll_is_not_timed_out_and_disconnect_is_seen(backend: str) -> None:
    # Short timers, so that requests held longer than them take a second, not six.
    timeout = 0.5
    args = ["--timeout-keep-alive", str(timeout), "--handshake-timeout", str(timeout)]
    with ZcasgiServer("apps.http:app", backend, args) as server:
        address = ("127.0.0.1", server.port)
        with (
            socket.create_connection(address, timeout=10) as first,
            socket.create_connection(address, timeout=10) as reused,
            socket.create_connection(address, timeout=10) as idle,
        ):
            # A long poll as a connection's first request, and one after a kept-alive exchange.
            first.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            reused.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_chunked_response(reused).startswith(b"HTTP/1.1 404 ")
            reused.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            assert server.wait_for_output("hang started", count=2).count("hang started") == 2
            # The keep-alive timer runs: it closes an idle connection ...
            idle.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_chunked_response(idle).startswith(b"HTTP/1.1 404 ")
            assert idle.recv(1) == b"", "an idle keep-alive connection is closed"
            # ... after both long polls had started: they are held longer than a timeout, and
            # one more, and still served.
            for sock in (first, reused):
                sock.settimeout(timeout)
                with pytest.raises(socket.timeout):
                    sock.recv(1)
            assert "hang got" not in server.output()
        output = server.wait_for_output("hang got http.disconnect", count=2)
    assert output.count("hang got http.disconnect") == 2


async def test_thousand_keep_alive_clients(server: ZcasgiServer) -> None:
    # Each client keeps its own connection for its three requests. (One httpx client with a
    # 1000-connection pool stalls some requests until the server's keep-alive timer closes an
    # idle connection: the test would then depend on that timer.)
    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for j in range(3):
                body = f"{i}-{j}".encode()
                writer.write(
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = re.search(rb"(?im)^content-length: *(\d+)\r$", head)
                assert length, head
                assert await reader.readexactly(int(length.group(1))) == body
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 50)


def test_websocket_and_http_on_one_listener(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as server:
        r = httpx.get(server.url("http", "/"))
        assert r.status_code == 404  # the echo app answers plain HTTP with 404
        with connect(server.url("ws", "/")) as ws:
            ws.send("both")
            assert ws.recv() == "both"


async def test_limit_concurrency_answers_503_above_the_limit(backend: str) -> None:
    """``--limit-concurrency 2``: with two WebSockets open, a third connection's HTTP request
    and upgrade get 503 (as uvicorn answers), and once one closes a new client is served.
    ``max_connections`` (which pauses accepting instead) is far above."""
    with ZcasgiServer("apps.echo:app", backend, ["--limit-concurrency", "2"]) as srv:
        first = await connect_async(srv.url("ws", "/echo"))
        second = await connect_async(srv.url("ws", "/echo"))
        try:
            async with httpx.AsyncClient() as http:
                response = await http.get(srv.url("http", "/"), timeout=10)
            assert response.status_code == 503
            with pytest.raises(InvalidStatus) as refused:
                await connect_async(srv.url("ws", "/echo"))
            assert refused.value.response.status_code == 503
            # The first two are served all along.
            await second.send("still here")
            assert await second.recv() == "still here"
        finally:
            await first.close()
        # One left: a new client is served (the server counts it as gone once it closed).
        for _ in range(50):
            try:
                async with connect_async(srv.url("ws", "/echo")) as third:
                    await third.send("in")
                    assert await third.recv() == "in"
                break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("no client served after one of two closed")
        await second.close()
