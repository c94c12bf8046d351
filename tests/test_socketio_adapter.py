"""zcasgi.socketio's Python side against a pure-Python stand-in for the Rust Engine.IO endpoint.

`FakeEngine` implements the methods of ``zcasgi._zcasgi.EngineIO`` (stubbed in
``zcasgi/_zcasgi.pyi``) and records the calls; the tests call the adapter's
``_zcasgi_*`` callbacks as the endpoint does. This checks the eager dispatch, per-session order,
the python-engineio API while attached, the fan-out and the start-up detection without a
server; the end-to-end tests (``tests/test_socketio.py``, ``tests/test_socketio_dropin.py``)
run the real endpoint.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import engineio
import pytest
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as engineio_asgi

import zcasgi.socketio as zs
from zcasgi._zcasgi import EngineIO
from zcasgi.socketio._emit import FastEmit, fast_class, install_fast_emit
from zcasgi.socketio._engine import EngineIOServer, environ_of

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/socket.io/",
    "raw_path": b"/socket.io/",
    "query_string": b"EIO=4&transport=polling&t=N1",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"test"),
        (b"x-dup", b"a"),
        (b"X-Dup", b"b"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"0"),
        (b"bad", b"\xff"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


class FakeEngine:
    """Records the adapter's calls; sessions in ``open`` are open."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.sent: list[tuple[str, str | bytes]] = []
        self.broadcasts: list[tuple[list[str], str | bytes]] = []
        self.disconnected: list[str] = []
        self.done_calls: list[str] = []
        self.connected_calls: list[tuple[str, bool]] = []

    def send(self, sid: str, data: str | bytes) -> bool:
        if sid not in self.open:
            return False
        self.sent.append((sid, data))
        return True

    def broadcast(self, sids: Sequence[str], data: str | bytes) -> int:
        self.broadcasts.append((list(sids), data))
        return sum(1 for sid in sids if sid in self.open)

    def disconnect(self, sid: str) -> bool:
        if sid not in self.open:
            return False
        self.open.remove(sid)
        self.disconnected.append(sid)
        return True

    def transport(self, sid: str) -> str:
        if sid not in self.open:
            raise KeyError(sid)
        return "websocket"

    def done(self, sid: str) -> None:
        self.done_calls.append(sid)

    def connected(self, sid: str, accepted: bool) -> None:
        self.connected_calls.append((sid, accepted))

    def is_open(self, sid: str) -> bool:
        return sid in self.open

    def __len__(self) -> int:
        return len(self.open)

    def texts(self, sid: str) -> list[str | bytes]:
        """What was sent to ``sid``."""
        return [data for to, data in self.sent if to == sid]


#: Whether a handler run in a task starts at once (an eager task, Python 3.12+).
EAGER_TASKS = sys.version_info >= (3, 12)


def test_the_fake_engine_has_the_real_ones_methods() -> None:
    real = {name for name in dir(EngineIO) if not name.startswith("_")}
    assert real <= set(dir(FakeEngine)), real - set(dir(FakeEngine))


def attached(inline: bool = True, **options: Any) -> tuple[EngineIOServer, FakeEngine]:
    """An attached adapter whose handlers run outside a task (``inline``) or in tasks."""
    eio = EngineIOServer(async_mode="asgi", **options)
    engine = FakeEngine()
    eio._zcasgi_attach(engine)
    eio._zcasgi_inline = lambda event, sid, data: inline
    return eio, engine


@pytest.fixture(params=[True, False], ids=["inline", "in-task"])
def inline(request: pytest.FixtureRequest) -> bool:
    """Handlers stepped outside any task, or run in tasks (eagerly from Python 3.12)."""
    value: bool = request.param
    return value


def at_once(inline: bool) -> bool:
    """Whether a handler that does not suspend has finished when its callback returns."""
    return inline or EAGER_TASKS


def open_session(eio: EngineIOServer, engine: FakeEngine, sid: str) -> bool | None:
    engine.open.add(sid)
    return eio._zcasgi_connect(sid, SCOPE)


async def settle() -> None:
    """Lets the loop run what is ready (a few rounds)."""
    for _ in range(20):
        await asyncio.sleep(0)


# ---- eager dispatch ----


async def test_handlers_that_do_not_suspend_run_at_once_without_a_task() -> None:
    eio, engine = attached()
    calls: list[tuple[str, Any]] = []

    async def connect(sid: str, environ: dict[str, Any]) -> None:
        calls.append(("connect", environ["PATH_INFO"]))

    async def message(sid: str, data: Any) -> None:
        calls.append(("message", data))

    def disconnect(sid: str, reason: str) -> None:
        calls.append(("disconnect", reason))

    eio.on("connect", connect)
    eio.on("message", message)
    eio.on("disconnect", disconnect)
    tasks = len(asyncio.all_tasks())
    assert open_session(eio, engine, "s1") is True
    assert eio._zcasgi_message("s1", "hello") is True
    assert eio._zcasgi_message("s1", b"\x00\x01") is True
    eio._zcasgi_disconnect("s1", "client disconnect")
    assert len(asyncio.all_tasks()) == tasks
    assert calls == [
        ("connect", "/socket.io/"),
        ("message", "hello"),
        ("message", b"\x00\x01"),
        ("disconnect", "client disconnect"),
    ]
    assert not eio._zcasgi_busy and not eio._zcasgi_tasks
    assert engine.done_calls == [] and engine.connected_calls == []
    with pytest.raises(KeyError):
        await eio.get_session("s1")


async def test_handlers_not_run_inline_run_in_a_task_of_their_own() -> None:
    """Application code may need its task: ``asyncio.timeout``, anyio's cancel scopes."""
    eio, engine = attached(inline=False)
    seen: list[Any] = []

    async def connect(sid: str, environ: dict[str, Any]) -> None:
        seen.append(asyncio.current_task())
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
        with anyio.fail_after(5):
            await asyncio.sleep(0)
        seen.append(asyncio.current_task())

    def message(sid: str, data: Any) -> None:
        seen.append(data)

    eio.on("connect", connect)
    eio.on("message", message)
    assert open_session(eio, engine, "s1") is None
    assert eio._zcasgi_message("s1", "after") is False
    await settle()
    assert seen[0] is not None and seen[0] is seen[1] and seen[2] == "after"
    assert engine.connected_calls == [("s1", True)] and engine.done_calls == ["s1"]
    assert eio._zcasgi_message("s1", "alone") is EAGER_TASKS
    await settle()
    assert seen[3] == "alone" and not eio._zcasgi_busy and not eio._zcasgi_tasks


async def test_a_suspended_handler_goes_on_in_a_task_and_later_events_wait_in_order(
    inline: bool,
) -> None:
    eio, engine = attached(inline)
    release = asyncio.Event()
    seen: list[str] = []

    async def message(sid: str, data: str) -> None:
        seen.append(f"start {data}")
        if data == "slow":
            await release.wait()
        seen.append(f"end {data}")

    async def disconnect(sid: str, reason: str) -> None:
        seen.append(f"disconnect {reason}")

    eio.on("message", message)
    eio.on("disconnect", disconnect)
    assert open_session(eio, engine, "s1") is True
    assert eio._zcasgi_message("s1", "slow") is False
    assert eio._zcasgi_message("s1", "next") is False
    eio._zcasgi_disconnect("s1", "transport close")
    # Another session is not held up by the busy one.
    assert open_session(eio, engine, "s2") is True
    assert eio._zcasgi_message("s2", "other") is at_once(inline)
    await settle()
    assert seen == ["start slow", "start other", "end other"]
    assert engine.done_calls == ([] if at_once(inline) else ["s2"])
    engine.done_calls.clear()
    release.set()
    await settle()
    assert seen == [
        "start slow",
        "start other",
        "end other",
        "end slow",
        "start next",
        "end next",
        "disconnect transport close",
    ]
    # One done() per message answered False, in order, once each had finished.
    assert engine.done_calls == ["s1", "s1"]
    assert "s1" not in eio._zcasgi_busy and not eio._zcasgi_tasks
    assert "s1" not in eio._zcasgi_sessions and "s2" in eio._zcasgi_sessions


async def test_a_waiting_event_that_suspends_makes_a_task_of_its_own(inline: bool) -> None:
    eio, engine = attached(inline)
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    seen: list[str] = []

    async def message(sid: str, data: str) -> None:
        await gates[data].wait()
        seen.append(data)

    eio.on("message", message)
    open_session(eio, engine, "s1")
    assert eio._zcasgi_message("s1", "a") is False
    assert eio._zcasgi_message("s1", "b") is False
    gates["b"].set()
    await settle()
    assert seen == [] and engine.done_calls == []
    gates["a"].set()
    await settle()
    assert seen == ["a", "b"] and engine.done_calls == ["s1", "s1"]
    assert not eio._zcasgi_busy


async def test_a_connect_handler_that_suspends_decides_through_connected(inline: bool) -> None:
    eio, engine = attached(inline)
    verdicts: dict[str, asyncio.Future[Any]] = {}

    async def connect(sid: str, environ: dict[str, Any]) -> Any:
        verdicts[sid] = asyncio.get_running_loop().create_future()
        return await verdicts[sid]

    eio.on("connect", connect)
    assert open_session(eio, engine, "yes") is None
    assert open_session(eio, engine, "no") is None
    # The client goes away while its connect handler runs: its disconnect waits.
    eio._zcasgi_disconnect("no", "transport close")
    await settle()
    verdicts["yes"].set_result(True)
    verdicts["no"].set_result(False)
    await settle()
    assert engine.connected_calls == [("yes", True), ("no", False)]
    assert await eio.get_session("yes") == {}
    with pytest.raises(KeyError):
        await eio.get_session("no")
    assert not eio._zcasgi_busy


async def test_connect_verdicts_as_python_engineio_decides_them(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    eio, engine = attached(inline)
    results: dict[str, Any] = {"none": None, "true": True, "false": False, "text": "go away"}

    def connect(sid: str, environ: dict[str, Any]) -> Any:
        if sid == "raise":
            raise RuntimeError("boom")
        return results[sid]

    eio.on("connect", connect)
    with caplog.at_level(logging.WARNING, logger="engineio.server"):
        verdicts = {sid: open_session(eio, engine, sid) for sid in [*results, "raise"]}
        await settle()
    expected = {"none": True, "true": True, "false": False, "text": False, "raise": False}
    if at_once(inline):
        assert verdicts == expected
        assert engine.connected_calls == []
    else:
        assert set(verdicts.values()) == {None}
        assert engine.connected_calls == list(expected.items())
    assert set(eio._zcasgi_sessions) == {"none", "true"}
    assert "connect handler error" in caplog.text
    assert "Application rejected connection" in caplog.text


async def test_handler_exceptions_are_logged_as_python_engineio_logs_them(
    inline: bool, caplog: pytest.LogCaptureFixture
) -> None:
    eio, engine = attached(inline)

    async def message(sid: str, data: str) -> None:
        if data == "late":
            await asyncio.sleep(0)
        raise ValueError(data)

    eio.on("message", message)
    open_session(eio, engine, "s1")
    with caplog.at_level(logging.ERROR, logger="engineio.server"):
        assert eio._zcasgi_message("s1", "early") is at_once(inline)
        await settle()
        assert eio._zcasgi_message("s1", "late") is False
        await settle()
    assert caplog.text.count("message async handler error") == 2
    assert "ValueError: late" in caplog.text
    assert engine.done_calls == ["s1"] * (1 if at_once(inline) else 2)
    # The loop and the session go on.
    assert eio._zcasgi_message("s1", "early") is at_once(inline)


@pytest.mark.parametrize("started", [False, True], ids=["before-its-task-ran", "running"])
async def test_a_cancelled_handler_ends_quietly_and_the_session_goes_on(
    inline: bool, started: bool
) -> None:
    eio, engine = attached(inline)
    seen: list[str] = []
    forever = asyncio.Event()

    async def message(sid: str, data: str) -> None:
        if data == "stuck":
            try:
                await forever.wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        seen.append(data)

    eio.on("message", message)
    open_session(eio, engine, "s1")
    assert eio._zcasgi_message("s1", "stuck") is False
    assert eio._zcasgi_message("s1", "after") is False
    [task] = eio._zcasgi_pending()
    if started:
        await settle()
    task.cancel()
    await settle()
    # A handler that never ran (a task cancelled before its first step) runs not at all.
    ran = inline or started or EAGER_TASKS
    assert seen == (["cancelled", "after"] if ran else ["after"])
    assert engine.done_calls == ["s1", "s1"]
    # python-engineio's handler wrapper ends on a cancellation: the task is not cancelled.
    assert task.done() and task.cancelled() is not ran


async def test_handlers_run_in_a_context_of_their_own(inline: bool) -> None:
    eio, engine = attached(inline)
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[Any] = []

    async def message(sid: str, data: str) -> None:
        seen.append(var.get())
        var.set(data)
        await asyncio.sleep(0)
        seen.append((var.get(), asyncio.current_task()))

    eio.on("message", message)
    open_session(eio, engine, "s1")
    assert eio._zcasgi_message("s1", "one") is False
    [task] = eio._zcasgi_pending()
    assert eio._zcasgi_message("s1", "two") is False
    await settle()
    assert seen[0] == "unset" and seen[1] == ("one", task)
    assert seen[2] == "unset" and seen[3][0] == "two"
    assert var.get() == "unset"


async def test_a_disconnect_handler_without_a_reason_is_called_with_the_sid(inline: bool) -> None:
    eio, engine = attached(inline)
    seen: list[str] = []
    eio.on("disconnect", lambda sid: seen.append(sid))
    open_session(eio, engine, "s1")
    eio._zcasgi_disconnect("s1", "ping timeout")
    await settle()
    assert seen == ["s1"] and not eio._zcasgi_sessions


# ---- python-engineio's API while attached ----


async def test_send_and_send_packet_go_to_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    eio, engine = attached()
    open_session(eio, engine, "s1")
    await eio.send("s1", "text")
    await eio.send("s1", b"\x00bin")
    await eio.send("s1", bytearray(b"ba"))
    await eio.send("s1", {"a": [1, 2]})
    await eio.send("s1", [1, "x"])
    await eio.send("s1", 5)
    await eio.send("s1", None)
    await eio.send_packet("s1", eio_packet.Packet(eio_packet.MESSAGE, data="pkt"))
    await eio.send_packet("s1", eio_packet.Packet(eio_packet.NOOP))
    assert engine.texts("s1") == [
        "text",
        b"\x00bin",
        b"ba",
        '{"a":[1,2]}',
        '[1,"x"]',
        "5",
        "",
        "pkt",
    ]
    # What python-engineio would have written after the packet type.
    for data in ({"a": [1, 2]}, [1, "x"], 5, None):
        encoded = eio_packet.Packet(eio_packet.MESSAGE, data=data).encode()
        assert encoded[1:] in engine.texts("s1")
    with pytest.raises(ValueError, match="PING"):
        await eio.send_packet("s1", eio_packet.Packet(eio_packet.PING))
    with caplog.at_level(logging.WARNING, logger="engineio.server"):
        await eio.send("gone", "x")
    assert "Cannot send to sid gone" in caplog.text
    await eio.send_packet("s1", eio_packet.Packet(eio_packet.CLOSE))
    assert engine.disconnected == ["s1"]


async def test_server_disconnect_runs_the_disconnect_handler_once() -> None:
    eio, engine = attached()
    reasons: list[tuple[str, str]] = []
    eio.on("disconnect", lambda sid, reason: reasons.append((sid, reason)))
    for sid in ("a", "b", "c"):
        open_session(eio, engine, sid)
    await eio.disconnect("a")
    await eio.disconnect("a")
    await eio.disconnect("nobody")
    assert reasons == [("a", "server disconnect")]
    with pytest.raises(KeyError):
        await eio.get_session("a")
    await eio.disconnect()
    assert sorted(reasons) == [(s, "server disconnect") for s in ("a", "b", "c")]
    assert engine.disconnected == ["a", "b", "c"] or sorted(engine.disconnected) == ["a", "b", "c"]
    assert not eio._zcasgi_sessions


async def test_a_server_disconnect_drops_the_waiting_events() -> None:
    eio, engine = attached()
    gate = asyncio.Event()
    seen: list[Any] = []

    async def message(sid: str, data: str) -> None:
        await gate.wait()
        seen.append(data)

    eio.on("message", message)
    eio.on("disconnect", lambda sid, reason: seen.append(reason))
    open_session(eio, engine, "s1")
    assert eio._zcasgi_message("s1", "running") is False
    assert eio._zcasgi_message("s1", "waiting") is False
    await eio.disconnect("s1")
    gate.set()
    await settle()
    assert seen == ["server disconnect", "running"]
    assert not eio._zcasgi_busy


async def test_sessions_and_transport() -> None:
    eio, engine = attached()
    open_session(eio, engine, "s1")
    assert await eio.get_session("s1") == {}
    await eio.save_session("s1", {"user": "ann"})
    async with eio.session("s1") as session:
        session["seen"] = 1
    assert await eio.get_session("s1") == {"user": "ann", "seen": 1}
    assert eio.transport("s1") == "websocket"
    with pytest.raises(KeyError):
        await eio.get_session("nope")
    with pytest.raises(KeyError):
        await eio.save_session("nope", {})
    with pytest.raises(KeyError):
        eio.transport("nope")


async def test_detached_it_is_python_engineio(caplog: pytest.LogCaptureFixture) -> None:
    eio, engine = attached()
    open_session(eio, engine, "s1")
    eio._zcasgi_detach()
    assert eio._zcasgi_engine is None and not eio._zcasgi_sessions
    with caplog.at_level(logging.WARNING, logger="engineio.server"):
        await eio.send("s1", "x")
    assert "Cannot send to sid s1" in caplog.text
    assert engine.sent == []
    with pytest.raises(KeyError, match="Session not found"):
        eio.transport("s1")
    with pytest.raises(KeyError, match="Session not found"):
        await eio.get_session("s1")
    assert isinstance(eio, engineio.AsyncServer)


async def test_the_environ_is_python_engineios() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(message)

    odd = {**SCOPE, "headers": [(b"\xff", b"x"), (b"content-type", b"a"), (b"Content-Type", b"b")]}
    for scope in (SCOPE, {**SCOPE, "query_string": b"", "type": "websocket"}, odd):
        expected = await engineio_asgi.translate_request(scope, receive, send)
        for key in ("wsgi.input", "asgi.receive", "asgi.send"):
            del expected[key]
        assert environ_of(scope) == expected
    assert environ_of(SCOPE)["HTTP_X_DUP"] == "a,b"
    # Every client's environ shares the header keys.
    ours, theirs = environ_of(SCOPE), environ_of({**SCOPE, "headers": list(SCOPE["headers"])})
    assert all(a is b for a, b in zip(ours, theirs))
    assert environ_of(odd)["CONTENT_TYPE"] == "b"
    proxied = {**SCOPE, "headers": [(b"x-forwarded-proto", b"https")]}
    assert environ_of(proxied)["wsgi.url_scheme"] == "https"


# ---- python-socketio on the adapter ----


def socketio_server(**options: Any) -> tuple[zs.AsyncServer, FakeEngine]:
    sio = zs.AsyncServer(async_mode="asgi", **options)
    engine = FakeEngine()
    sio.eio._zcasgi_attach(engine)
    return sio, engine


async def deliver(sio: zs.AsyncServer, eio_sid: str, data: str | bytes) -> None:
    """Hands a message to the server as the endpoint does, and lets it be handled."""
    sio.eio._zcasgi_message(eio_sid, data)
    await settle()


async def join(sio: zs.AsyncServer, engine: FakeEngine, eio_sid: str, namespace: str = "/") -> str:
    """Opens ``eio_sid`` and connects it to ``namespace``; returns its Socket.IO sid."""
    engine.open.add(eio_sid)
    assert sio.eio._zcasgi_connect(eio_sid, SCOPE) is True
    prefix = "" if namespace == "/" else namespace + ","
    await deliver(sio, eio_sid, "0" + prefix)
    answer = engine.texts(eio_sid)[-1]
    assert isinstance(answer, str) and answer.startswith("0" + prefix)
    sid: str = json.loads(answer[1 + len(prefix) :])["sid"]
    return sid


async def test_packets_that_run_no_application_code_are_handled_inline() -> None:
    sio, engine = socketio_server()
    await join(sio, engine, "e1")
    inline = sio.eio._zcasgi_inline
    assert inline("connect", "e2", {})
    for data in (
        '2["x"]',
        '2/chat,["x"]',
        '4{"message":"no"}',
        '51-["x",{"_placeholder":true}]',
        '61-3[{"_placeholder":true}]',
    ):
        assert inline("message", "e1", data), data
    for data in ("0", '0{"auth":1}', "1", '31["ack"]', ""):
        assert not inline("message", "e1", data), data
    assert not inline("disconnect", "e1", "ping timeout")
    # Attachments: of an event (python-socketio's task runs the handler), of an ack (inline).
    assert not inline("message", "e1", b"\x00")
    await deliver(sio, "e1", '51-["x",{"_placeholder":true,"num":0}]')
    assert inline("message", "e1", b"\x00")
    await deliver(sio, "e1", b"\x00")
    await deliver(sio, "e1", '61-3[{"_placeholder":true,"num":0}]')
    assert not inline("message", "e1", b"\x00")
    # An event is handled at once, by a task of python-socketio's own.
    assert sio.eio._zcasgi_message("e1", '2["nothing"]') is True
    assert not sio.eio._zcasgi_tasks
    sio.async_handlers = False
    assert not inline("message", "e1", '2["x"]')
    # Another serializer (msgpack...) may encode packets otherwise.
    other, _ = socketio_server(serializer=type("Other", (socketio.packet.Packet,), {}))
    assert not other.eio._zcasgi_inline("message", "e1", '2["x"]')
    custom, _ = socketio_server()
    custom.eio.on("message", lambda sid, data: None)
    assert not custom.eio._zcasgi_inline("message", "e1", '2["x"]')


async def test_a_room_emit_is_one_broadcast_per_part() -> None:
    sio, engine = socketio_server()
    sids = {eio_sid: await join(sio, engine, eio_sid) for eio_sid in ("e1", "e2", "e3", "e4")}
    for eio_sid in ("e1", "e2", "e3"):
        await sio.enter_room(sids[eio_sid], "room")
    tasks = len(asyncio.all_tasks())
    await sio.emit("news", {"n": 1}, room="room", skip_sid=sids["e2"])
    assert engine.broadcasts == [(["e1", "e3"], '2["news",{"n":1}]')]
    assert len(asyncio.all_tasks()) == tasks
    engine.broadcasts.clear()
    await sio.emit("blob", (b"\x01\x02", "x"), to=["room"], skip_sid=[sids["e1"], sids["e3"]])
    assert engine.broadcasts == [
        (["e2"], '51-["blob",{"_placeholder":true,"num":0},"x"]'),
        (["e2"], b"\x01\x02"),
    ]
    engine.broadcasts.clear()
    await sio.emit("all", None)
    assert engine.broadcasts == [(["e1", "e2", "e3", "e4"], '2["all"]')]
    engine.broadcasts.clear()
    await sio.emit("nobody", 1, room="empty")
    await sio.emit("nobody", 1, namespace="/unused")
    assert engine.broadcasts == []


async def test_an_emit_with_a_callback_is_python_socketios() -> None:
    sio, engine = socketio_server()
    sid = await join(sio, engine, "e1")
    acks: list[Any] = []
    await sio.emit("ask", "q", to=sid, callback=lambda *args: acks.append(args))
    assert engine.broadcasts == []
    assert engine.texts("e1")[-1] == '21["ask","q"]'
    await deliver(sio, "e1", '31["yes",2]')
    assert acks == [("yes", 2)]


async def test_call_and_client_acks_round_trip() -> None:
    sio, engine = socketio_server()
    sid = await join(sio, engine, "e1")

    async def double(sid: str, n: int) -> int:
        return 2 * n

    sio.on("double", double)
    # An event is python-socketio's own task (async_handlers); its ack follows.
    await deliver(sio, "e1", '27["double",21]')
    await settle()
    assert engine.texts("e1")[-1] == "37[42]"
    call = asyncio.ensure_future(sio.call("question", 1, to=sid, timeout=5))
    await settle()
    assert engine.texts("e1")[-1] == '21["question",1]'
    await deliver(sio, "e1", '31["answer"]')
    assert await call == "answer"


async def test_binary_events_from_a_client_are_reassembled() -> None:
    sio, engine = socketio_server()
    await join(sio, engine, "e1")
    got: list[Any] = []

    async def upload(sid: str, data: Any) -> str:
        got.append(data)
        return "ok"

    sio.on("upload", upload)
    await deliver(sio, "e1", '51-3["upload",{"_placeholder":true,"num":0}]')
    await deliver(sio, "e1", b"\xff\x00")
    await settle()
    assert got == [b"\xff\x00"]
    assert engine.texts("e1")[-1] == '33["ok"]'


async def test_the_connect_handler_gets_the_environ_and_auth_and_may_refuse() -> None:
    sio, engine = socketio_server()
    seen: list[Any] = []

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        seen.append((environ["HTTP_USER_AGENT"], environ["asgi.scope"]["client"], auth))
        if auth == {"let": "me"}:
            await sio.save_session(sid, {"auth": auth})
            return
        raise socketio.exceptions.ConnectionRefusedError("no", {"code": 7})

    sio.on("connect", connect)
    engine.open.update({"e1", "e2"})
    for eio_sid in ("e1", "e2"):
        assert sio.eio._zcasgi_connect(eio_sid, SCOPE) is True
    await deliver(sio, "e1", '0{"let":"me"}')
    await deliver(sio, "e2", '0{"let":"you"}')
    assert seen == [("test", ("127.0.0.1", 50000), {"let": "me"})] * 1 + [
        ("test", ("127.0.0.1", 50000), {"let": "you"})
    ]
    first = engine.texts("e1")[-1]
    assert isinstance(first, str) and first.startswith('0{"sid":')
    sid = json.loads(first[1:])["sid"]
    assert await sio.get_session(sid) == {"auth": {"let": "me"}}
    assert engine.texts("e2")[-1] == '4{"message":"no","data":{"code":7}}'


async def test_namespace_handlers_and_disconnects() -> None:
    sio, engine = socketio_server()
    reasons: list[Any] = []

    class Chat(socketio.AsyncNamespace):  # type: ignore[misc]
        async def on_ping(self, sid: str, data: Any) -> str:
            return "pong"

        async def on_disconnect(self, sid: str, reason: str) -> None:
            reasons.append(reason)

    sio.register_namespace(Chat("/chat"))
    await join(sio, engine, "e1", "/chat")
    await deliver(sio, "e1", '2/chat,5["ping",null]')
    await settle()
    assert engine.texts("e1")[-1] == '3/chat,5["pong"]'
    sio.eio._zcasgi_disconnect("e1", "ping timeout")
    await settle()
    assert reasons == ["ping timeout"]


# ---- FastEmit in the managers' classes ----


def test_fast_emit_comes_just_before_async_manager() -> None:
    assert fast_class(socketio.AsyncManager) is FastEmit
    for manager in (socketio.AsyncRedisManager, socketio.AsyncAioPikaManager):
        mro = fast_class(manager).__mro__
        assert mro.index(FastEmit) + 1 == mro.index(socketio.AsyncManager), mro
        assert mro[1] is manager
        assert fast_class(manager) is fast_class(manager)
    assert zs.AsyncServer(async_mode="asgi").manager.__class__ is FastEmit


async def test_a_pubsub_managers_local_delivery_goes_through_fast_emit() -> None:
    manager = socketio.AsyncRedisManager("redis://127.0.0.1:1/0")
    sio, engine = socketio_server(client_manager=manager)
    assert type(manager).__name__ == "AsyncRedisManager" and isinstance(manager, FastEmit)
    # Not initialized: the manager would connect to Redis.
    sio.manager_initialized = True
    sid = await join(sio, engine, "e1")
    await sio.enter_room(sid, "r")
    # What another host published, as the listening task hands it over.
    message = {"method": "emit", "event": "hi", "data": ["x"], "namespace": "/", "room": "r"}
    await manager._handle_emit({**message, "skip_sid": None, "callback": None, "host_id": "h"})
    await sio.emit("local", 1, room="r", ignore_queue=True)
    assert engine.broadcasts == [(["e1"], '2["hi","x"]'), (["e1"], '2["local",1]')]


async def test_detached_emits_are_python_socketios() -> None:
    sio, engine = socketio_server()
    sids = [await join(sio, engine, eio_sid) for eio_sid in ("e1", "e2")]
    sio.eio._zcasgi_detach()
    sent: list[tuple[str, str]] = []

    async def send_eio_packet(eio_sid: str, pkt: Any) -> None:
        sent.append((eio_sid, pkt.encode()))

    sio._send_eio_packet = send_eio_packet
    await sio.emit("e", 1, skip_sid=sids[0])
    assert sent == [("e2", '42["e",1]')]
    assert engine.broadcasts == []


def test_managers_of_other_kinds_are_left_alone() -> None:
    class Plain:
        pass

    plain = Plain()
    install_fast_emit(plain)
    assert type(plain) is Plain
    fast = FastEmit()
    install_fast_emit(fast)
    assert type(fast) is FastEmit


# ---- detection at start-up ----


@pytest.mark.parametrize(
    ("given", "path"),
    [("socket.io", "/socket.io/"), ("/a/b", "/a/b/"), ("x/", "/x/"), (None, None)],
)
def test_the_spec_of_an_app(given: str | None, path: str | None) -> None:
    sio = zs.AsyncServer(async_mode="asgi", ping_interval=(10, 2), cookie="sid")
    spec = zs._engineio_spec(zs.ASGIApp(sio, socketio_path=given))
    assert spec is not None
    assert spec[0] == path and spec[2] is sio.eio
    assert spec[1] == {
        "ping_interval": 10.0,
        "ping_grace": 2.0,
        "ping_timeout": 20.0,
        "max_http_buffer_size": 1_000_000,
        "allow_upgrades": True,
        "transports": ["polling", "websocket"],
        "cors_allowed_origins": None,
        "cors_credentials": True,
        "cookie": {"name": "sid", "path": "/", "SameSite": "Lax"},
    }
    # The hook zcasgi's server calls.
    assert zs.ASGIApp(sio).__zcasgi_engineio__() == zs._engineio_spec(zs.ASGIApp(sio))
    # A stock ASGIApp has no hook: python-engineio serves it.
    assert zs._engineio_spec(socketio.ASGIApp(sio)) is None


def test_options_as_given() -> None:
    sio = zs.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=("https://a.example", "https://b.example"),
        cors_credentials=False,
        max_http_buffer_size=4096,
        transports=["websocket"],
        allow_upgrades=False,
        cookie={"name": "io", "Secure": True, "path": "/"},
    )
    spec = zs._engineio_spec(zs.ASGIApp(sio))
    assert spec is not None
    options = spec[1]
    assert options["cors_allowed_origins"] == ["https://a.example", "https://b.example"]
    assert options["cors_credentials"] is False
    assert options["max_http_buffer_size"] == 4096
    assert options["transports"] == ["websocket"] and options["allow_upgrades"] is False
    assert options["cookie"] == {"name": "io", "Secure": True, "path": "/"}
    for origins in ("*", [], ["*"], "https://a.example"):
        sio = zs.AsyncServer(async_mode="asgi", cors_allowed_origins=origins)
        spec = zs._engineio_spec(zs.ASGIApp(sio))
        assert spec is not None and spec[1]["cors_allowed_origins"] == origins


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"cors_allowed_origins": lambda origin: True}, "cors_allowed_origins is a callable"),
        ({"cors_allowed_origins": ["a", 1]}, "other than strings"),
        ({"cookie": {"name": "io", "expires": lambda: "soon"}}, "'expires' is a callable"),
        ({"cookie": {"name": "io", "Secure": False}}, "'Secure' is neither"),
    ],
)
def test_options_only_python_engineio_honours_decline(
    options: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    sio = zs.AsyncServer(async_mode="asgi", **options)
    with caplog.at_level(logging.INFO, logger="zcasgi"):
        assert zs._engineio_spec(zs.ASGIApp(sio)) is None
    assert "served by python-engineio" in caplog.text and reason in caplog.text


def test_an_instrumented_server_declines(caplog: pytest.LogCaptureFixture) -> None:
    sio = zs.AsyncServer(async_mode="asgi")
    sio.instrument(auth=False)
    with caplog.at_level(logging.INFO, logger="zcasgi"):
        assert zs._engineio_spec(zs.ASGIApp(sio)) is None
    assert "Admin UI" in caplog.text


def test_other_apps_are_not_served_by_the_rust_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    stock = socketio.AsyncServer(async_mode="asgi")
    assert zs._engineio_spec(socketio.ASGIApp(stock)) is None
    assert zs._engineio_spec(object()) is None
    assert caplog.text == ""
    with caplog.at_level(logging.INFO, logger="zcasgi"):
        assert zs._engineio_spec(zs.ASGIApp(stock)) is None
    assert "not a zcasgi.socketio.AsyncServer" in caplog.text


# ---- the module ----


def test_python_socketios_names_are_reexported() -> None:
    assert zs.AsyncRedisManager is socketio.AsyncRedisManager
    assert zs.AsyncNamespace is socketio.AsyncNamespace
    assert zs.AsyncClient is socketio.AsyncClient
    assert zs.exceptions is socketio.exceptions
    assert issubclass(zs.AsyncServer, socketio.AsyncServer)
    assert issubclass(zs.ASGIApp, socketio.ASGIApp)
    assert set(socketio.__all__) <= set(zs.__all__)
    assert all(hasattr(zs, name) for name in zs.__all__)
    assert "AsyncRedisManager" in dir(zs)
    with pytest.raises(AttributeError, match=r"zcasgi\.socketio"):
        _ = zs.NoSuchName


def test_importing_zcasgi_does_not_import_socketio() -> None:
    code = "import sys, zcasgi, zcasgi.server; print({'socketio', 'engineio'} & set(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"
