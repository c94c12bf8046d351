"""End-to-end WebSocket tests: the real server (``python -m zcasgi``) and the ``websockets``
client over 127.0.0.1, on every backend."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import ZcasgiServer
from zcasgi import codec
from zcasgi.codec import Frame, FrameDecoder, Opcode

pytestmark = pytest.mark.timeout(60)

SIZES = [0, 1, 125, 126, 65535, 65536, 1024 * 1024, 16 * 1024 * 1024]


@pytest.fixture
def echo(backend: str):  # type: ignore[no-untyped-def]
    with ZcasgiServer("apps.echo:app", backend) as server:
        yield server
    assert "Traceback" not in server.output(), server.output()


async def test_echo_text_and_bytes_all_sizes(echo: ZcasgiServer) -> None:
    async with connect(echo.url("ws", "/"), max_size=None) as ws:
        for size in SIZES:
            payload = os.urandom(size)
            await ws.send(payload)
            assert await ws.recv() == payload, size
            text = ("ü" * (size // 2))[: max(0, size // 2)]
            await ws.send(text)
            assert await ws.recv() == text, size


async def test_subprotocol_negotiation(echo: ZcasgiServer) -> None:
    async with connect(echo.url(), subprotocols=["other", "superchat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "superchat"
    async with connect(echo.url(), subprotocols=["other"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None


async def test_accept_headers(backend: str) -> None:
    with ZcasgiServer("apps.echo:accept_headers_app", backend) as server:
        async with connect(server.url()) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-test"] == "1"
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_app_close_with_code_and_reason(backend: str) -> None:
    with ZcasgiServer("apps.echo:close_app", backend) as server:
        async with connect(server.url("ws", "/?code=4001&reason=bye")) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4001
            assert ws.close_reason == "bye"


async def test_client_close_reaches_app(backend: str) -> None:
    with ZcasgiServer("apps.echo:lifespan_app", backend) as server:
        async with connect(server.url()) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(code=4002, reason="client done")
        assert ws.close_code == 4002  # echoed by the server


async def test_deny_with_403(backend: str) -> None:
    with ZcasgiServer("apps.echo:deny_app", backend) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url()):
                pass
        assert info.value.response.status_code == 403
    assert '"WebSocket /" 403' in server.output()


async def test_deny_with_custom_http_response(backend: str) -> None:
    with ZcasgiServer("apps.echo:http_deny_app", backend) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url()):
                pass
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"denied"


async def test_scope(backend: str) -> None:
    with ZcasgiServer("apps.echo:scope_app", backend, ["--root-path", "/base"]) as server:
        async with connect(
            server.url("ws", "/a%20b/c?x=1&y=%20"),
            subprotocols=["p1", "p2"],  # type: ignore[list-item]
            additional_headers={"X-Custom": "yes"},
        ) as ws:
            scope = json.loads(await ws.recv())
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/base/a b/c"
    assert scope["raw_path"] == "/base/a%20b/c"
    assert scope["root_path"] == "/base"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["subprotocols"] == ["p1", "p2"]
    headers = dict(scope["headers"])
    assert headers["x-custom"] == "yes"
    assert headers["upgrade"] == "websocket"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert "websocket.http.response" in scope["extensions"]
    assert scope["state"] == {}


async def test_scope_of_a_trusted_proxy_names_the_forwarded_client(backend: str) -> None:
    """``proxy_headers`` (on, trusting 127.0.0.1 by default) applies to a WebSocket's scope
    when its request carries X-Forwarded-*; a request without them keeps its peer's."""
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "X-Forwarded-Proto": "https"}
    with ZcasgiServer("apps.echo:scope_app", backend) as server:
        async with connect(server.url(), additional_headers=forwarded) as ws:
            proxied = json.loads(await ws.recv())
        async with connect(server.url(), additional_headers={"X-Forwarded-For": "::1"}) as ws:
            only_for = json.loads(await ws.recv())
        async with connect(server.url()) as ws:
            direct = json.loads(await ws.recv())
    assert (proxied["client"], proxied["scheme"]) == (["203.0.113.9", 0], "wss")
    assert (only_for["client"], only_for["scheme"]) == (["::1", 0], "ws")
    assert direct["client"][0] == "127.0.0.1"
    assert direct["client"][1] != 0
    assert direct["scheme"] == "ws"


async def test_scope_headers_are_each_requests_own(backend: str) -> None:
    """Header pairs are shared between scopes only while a value repeats: each request sees
    the values it sent, in its order."""
    values = ["a", "b", "b", "a", "x" * 300, "x" * 300]
    seen = []
    with ZcasgiServer("apps.echo:scope_app", backend) as server:
        for value in values:
            headers = {"X-Custom": value, "X-Other": value[::-1]}
            async with connect(server.url(), additional_headers=headers) as ws:
                scope = json.loads(await ws.recv())
            names = [name for name, _ in scope["headers"]]
            assert names.index("x-custom") < names.index("x-other")
            seen.append((dict(scope["headers"])["x-custom"], dict(scope["headers"])["x-other"]))
    assert seen == [(value, value[::-1]) for value in values]


async def test_scope_changes_stay_in_their_connection(backend: str) -> None:
    """Scopes share their immutable parts: what one application changes, the next never sees."""
    scopes = []
    with ZcasgiServer("apps.echo:scope_mutating_app", backend, ["--root-path", "/base"]) as server:
        for _ in range(3):
            async with connect(server.url("ws", "/p?q=1"), subprotocols=["p1"]) as ws:  # type: ignore[list-item]
                scopes.append(json.loads(await ws.recv()))
    for scope in scopes:
        scope.pop("client")
        scope["headers"] = [h for h in scope["headers"] if h[0] != "sec-websocket-key"]
    assert scopes[1] == scopes[0]
    assert scopes[2] == scopes[0]
    assert scopes[0]["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scopes[0]["subprotocols"] == ["p1"]
    assert scopes[0]["extensions"] == {"websocket.http.response": {}}
    assert scopes[0]["state"] == {}


async def test_oversize_message_closes_1009_and_server_keeps_serving(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend, ["--ws-max-size", "1000"]) as server:
        async with connect(server.url()) as ws:
            await ws.send(b"x" * 1000)
            assert await ws.recv() == b"x" * 1000
            await ws.send(b"x" * 1001)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009
        async with connect(server.url()) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"


async def test_app_exception_closes_1011_and_server_keeps_serving(backend: str) -> None:
    with ZcasgiServer("apps.echo:raise_app", backend) as server:
        async with connect(server.url()) as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1011
            assert ws.close_reason == ""  # no internal details on the wire
        async with connect(server.url()) as ws:
            await ws.send("fine")
            assert await ws.recv() == "fine"
    output = server.output()
    assert "Exception in ASGI application" in output
    assert "RuntimeError: boom" in output


async def test_app_exception_before_accept_is_500(backend: str) -> None:
    with ZcasgiServer("apps.echo:raise_before_accept_app", backend) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url()):
                pass
        assert info.value.response.status_code == 500
    assert "raised before accept" in server.output()


async def test_app_returning_an_awaitable_that_is_no_coroutine(backend: str) -> None:
    with ZcasgiServer("apps.echo:awaitable_app", backend) as server:
        async with connect(server.url()) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_app_raising_when_called_is_500_and_server_keeps_serving(backend: str) -> None:
    with ZcasgiServer("apps.echo:raise_on_call_app", backend) as server:
        for _ in range(2):
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.url()):
                    pass
            assert info.value.response.status_code == 500
    output = server.output()
    assert "Exception in ASGI application" in output
    assert "RuntimeError: raised on call" in output


async def test_thousand_connections_hundred_messages_each(echo: ZcasgiServer) -> None:
    async def client(i: int) -> None:
        async with connect(echo.url(), open_timeout=30) as ws:
            for j in range(100):
                await ws.send(f"{i}:{j}")
            for j in range(100):
                assert await ws.recv() == f"{i}:{j}"

    sem = asyncio.Semaphore(250)  # bound the client's own connect storm

    async def bounded(i: int) -> None:
        async with sem:
            await client(i)

    await asyncio.wait_for(asyncio.gather(*(bounded(i) for i in range(1000))), 50)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    assert match
    return int(match.group(1))


async def test_slow_reader_bounds_memory_and_blocks_send(backend: str) -> None:
    count, size = 2000, 64 * 1024  # 125 MiB if it were all buffered
    with ZcasgiServer("apps.echo:flood_app", backend) as server:
        url = server.url("ws", f"/?count={count}&size={size}")
        async with connect(url, max_size=None, max_queue=1, ping_interval=None) as ws:
            # The app floods while we do not read, until its send() waits: the server idles.
            assert server.wait_quiet(), "the server should be idle, waiting for the reader"
            rss_stalled = _rss_kib(server.proc.pid)
            assert "flood sent=" not in server.output(), "send() should still be waiting"
            received = 0
            while True:
                msg = await ws.recv()
                if isinstance(msg, str):
                    assert msg == f"done {count}"
                    break
                assert int.from_bytes(msg[:8], "big") == received
                received += 1
            assert received == count
    # Everything the app sent fits in a bounded window: far less than 125 MiB of buffers.
    assert rss_stalled < 80 * 1024, rss_stalled
    assert f"flood sent={count} of={count}" in server.output()


async def test_send_after_client_left_raises_oserror(backend: str) -> None:
    with ZcasgiServer("apps.echo:flood_app", backend) as server:
        async with connect(server.url("ws", "/?count=100000&size=1024")) as ws:
            await ws.recv()
        server.wait_for_output("client left")
    assert re.search(r"flood sent=\d+ of=100000 client left", server.output()), server.output()


async def test_lifespan_state_and_shutdown(backend: str) -> None:
    with ZcasgiServer("apps.echo:lifespan_app", backend) as server:
        async with connect(server.url()) as ws:
            await ws.send("__state__")
            assert json.loads(await ws.recv()) == {"marker": "started"}
    output = server.output()
    assert "lifespan startup" in output
    assert "lifespan shutdown" in output
    assert output.index("lifespan startup") < output.index("lifespan shutdown")


async def test_shutdown_closes_websockets_with_1012(backend: str) -> None:
    server = ZcasgiServer("apps.echo:lifespan_app", backend)
    with server:
        async with connect(server.url()) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            server.proc.send_signal(2)  # SIGINT
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1012
            assert ws.protocol.close_rcvd is not None, "a close frame, not a bare TCP close"
            assert server.proc.wait(10) == 0
    assert "lifespan shutdown" in server.output()


async def test_shutdown_disconnects_app_whose_client_ignores_the_close(backend: str) -> None:
    """The app gets ``websocket.disconnect`` (1012) as the server starts closing, even if its
    client never answers the close frame: it is not left to be cancelled."""
    args = ["--timeout-graceful-shutdown", "3", "--close-timeout", "60"]
    server = ZcasgiServer("apps.echo:disconnect_log_app", backend, args)
    with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        server.proc.send_signal(2)  # SIGINT
        # The close frame arrives; this client never answers it.
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x88\x02\x03\xf4"
        assert server.proc.wait(15) == 0
        writer.close()
    output = server.output()
    assert "disconnect code=1012" in output, output
    assert "Cancelling" not in output, output


async def test_plain_http_request_reaches_the_app(echo: ZcasgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 404 "), head  # the echo app's own answer
    writer.close()
    async with connect(echo.url()) as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_malformed_frame_closes_1002_and_server_keeps_serving(echo: ZcasgiServer) -> None:
    async with connect(echo.url()) as ws:
        # Reach under the client: an unmasked frame is a protocol error (RFC 6455 §5.1).
        ws.transport.write(b"\x81\x02hi")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1002
    async with connect(echo.url()) as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"


def _raw_websocket(port: int) -> socket.socket:
    """Open a WebSocket on a plain socket (5 s timeouts) and read the 101 response."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def _frames_until_close(sock: socket.socket) -> list[Frame]:
    """Every frame the server sends, up to and including its close frame."""
    decoder = FrameDecoder()
    frames: list[Frame] = []
    while not frames or frames[-1].opcode != Opcode.CLOSE:
        data = sock.recv(65536)
        assert data, f"the connection ended without a close frame after {frames}"
        frames.extend(decoder.feed(data))
    return frames


def test_reply_to_a_valid_message_goes_out_before_the_1002(echo: ZcasgiServer) -> None:
    # A valid message, a frame with a reserved opcode and another message, in one write: the
    # app's echo of the first comes back before the close frame; nothing after the violation
    # reaches the app.
    mask = bytes.fromhex("37fa213d")
    with _raw_websocket(echo.port) as sock:
        sock.sendall(
            codec.encode_frame(Opcode.TEXT, b"hello", mask=mask)
            + codec.encode_frame(0x3, b"", mask=mask)
            + codec.encode_frame(Opcode.TEXT, b"after the violation", mask=mask)
        )
        frames = _frames_until_close(sock)
    assert frames == [Frame(Opcode.TEXT, b"hello"), Frame(Opcode.CLOSE, b"\x03\xea")]


async def test_send_and_receive_from_different_tasks(backend: str) -> None:
    with ZcasgiServer("apps.echo:duplex_app", backend) as server:
        ws = await connect(server.url())

        async def sender() -> None:
            for i in range(500):
                await ws.send(str(i))

        async def receiver() -> list[str]:
            return [str(await ws.recv()) for _ in range(500)]

        _, got = await asyncio.gather(sender(), receiver())
        assert got == [str(i) for i in range(500)]
        await ws.close()


async def test_receive_parks_on_an_untracked_future_like_waiter(backend: str) -> None:
    """A task parked in ``receive()`` waits on an object asyncio takes for a future (it can time
    out and be cancelled like one) which the garbage collector does not track; no message is
    lost by a receive that was given up."""
    with ZcasgiServer("apps.echo:waiter_app", backend) as server:
        async with connect(server.url()) as ws:
            await ws.send("probe")
            probe = json.loads(await ws.recv())
            assert probe == {
                "tracked": False,
                "future": True,
                "same_loop": True,
                "done": False,
                "not_ready": True,
            }
            await ws.send("timeout")
            assert json.loads(await ws.recv()) == {"timed_out": True}
            await ws.send("cancel")
            cancelled = json.loads(await ws.recv())
            assert cancelled["receive"][0] == "cancelled"
            assert cancelled["receive"] == cancelled["future"]
            for i in range(20):
                await ws.send(f"after {i}")
                assert await ws.recv() == f"after {i}"
    assert "Traceback" not in server.output(), server.output()
