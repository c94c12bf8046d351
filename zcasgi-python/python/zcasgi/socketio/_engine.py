"""The Engine.IO server of `zcasgi.socketio`: python-engineio's, or zcasgi's Rust one once attached.

Theory of operation. `EngineIOServer` is a subclass of ``engineio.AsyncServer``. Until it is
attached it *is* that server: every method is python-engineio's, so the application behaves as
the stock one under any ASGI server. When zcasgi serves it, ``zcasgi.Server`` makes a Rust
``EngineIO`` endpoint for its path (`engineio_spec` gives the path and options) and attaches it
(`EngineIOServer._zcasgi_attach`). From then on Rust answers every Engine.IO request itself
(handshake, polling, websocket transport, upgrade, heartbeats) and calls this object with
Engine.IO *messages* per session:

- ``_zcasgi_connect(sid, scope)``: a new session; the ``connect`` handler gets a WSGI-style
  environ made from the handshake's ASGI scope (as python-engineio's ASGI driver makes it);
- ``_zcasgi_message(sid, data)``: a message (for python-socketio, one encoded Socket.IO packet);
- ``_zcasgi_disconnect(sid, reason)``: the session ended (reason: ``engineio.Server.reason``).

Each runs the handler registered with ``.on()`` at once, on the loop thread, in a copy of the
current context, and finishes there unless it suspends:

- a handler known to run no application code before it suspends or ends
  (`EngineIOServer._zcasgi_inline`; python-socketio's for an event, whose handler it runs in a
  task of its own) is stepped outside any task (``coro.send(None)``): no Task is made at all;
- any other runs in a task of its own, as application code may need (``asyncio.timeout``,
  anyio's cancel scopes and the libraries built on them look for their task); from Python 3.12
  the task starts eagerly and, if it does not suspend, ends before the callback returns.

A handler that finished is reported at once (the callback returns True). One that suspends goes
on in a Task; the session is then *busy*: its later events wait in a deque (made only while
busy) and run in order once it finishes, and Rust learns each outcome through
``engine.done(sid)`` (a message) or ``engine.connected(sid, accepted)`` (a connect). Rust stops
reading a client whose unfinished messages reach ``ws_max_queue``: per-client back-pressure.

Handlers are called as python-engineio calls them (``_trigger_event``): exceptions are logged
with its messages and never reach the loop, a handler's cancellation ends it quietly, a failed
``connect`` handler refuses the connection, and a ``disconnect`` handler that takes no reason
is called with the sid alone.

Sending (``send``, ``send_packet``), ``disconnect``, sessions and ``transport`` go to the Rust
endpoint while attached, to python-engineio otherwise.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import contextvars
import functools
import inspect
import logging
import sys
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

import engineio
from engineio import packet as eio_packet

if TYPE_CHECKING:
    from .._zcasgi import EngineIO

__all__ = ["EngineIOServer", "Unsupported", "engine_options", "environ_of"]

logger = logging.getLogger("zcasgi")

_CONNECT = "connect"
_MESSAGE = "message"
_DISCONNECT = "disconnect"


class Unsupported(Exception):
    """The Engine.IO server has an option the Rust endpoint cannot honour (the message says
    which); python-engineio serves it instead."""


class EngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's ``AsyncServer``, served by zcasgi's Rust Engine.IO while attached.

    python-socketio's `zcasgi.socketio.AsyncServer` makes one (``_engineio_server_class``);
    it takes python-engineio's constructor arguments. See the module doc.
    """

    #: The Rust endpoint while attached, else None (python-engineio serves).
    _zcasgi_engine: EngineIO | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Each open session's user session (``get_session``), from connect to disconnect.
        self._zcasgi_sessions: dict[str, dict[Any, Any]] = {}
        #: The events waiting for each busy session's running handler, in arrival order.
        self._zcasgi_busy: dict[str, deque[tuple[str, Any]]] = {}
        #: The handlers that suspended, continued as tasks (held: the loop keeps weak ones).
        self._zcasgi_tasks: set[asyncio.Task[Any]] = set()

    # ---- attaching ----

    def _zcasgi_attach(self, engine: EngineIO) -> None:
        """Serves this server's sessions through the Rust endpoint ``engine`` from now on."""
        self._zcasgi_engine = engine

    def _zcasgi_detach(self) -> None:
        """Forgets the Rust endpoint and its sessions: python-engineio serves again."""
        self._zcasgi_engine = None
        self._zcasgi_sessions.clear()
        self._zcasgi_busy.clear()

    def _zcasgi_pending(self) -> set[asyncio.Task[Any]]:
        """The handlers still running as tasks (a shutdown waits for them, then cancels)."""
        return set(self._zcasgi_tasks)

    # ---- python-engineio's API ----

    async def send(self, sid: str, data: Any) -> None:
        """Sends a message to a client (python-engineio's ``send``)."""
        engine = self._zcasgi_engine
        if engine is None:
            await super().send(sid, data)
        elif not engine.send(sid, _message_data(data)):
            self.logger.warning("Cannot send to sid %s", sid)

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        """Sends an Engine.IO packet to a client (python-engineio's ``send_packet``).

        While attached, a MESSAGE is sent, a CLOSE closes the session (`disconnect`) and a
        NOOP is dropped (the client ignores it); the others are the Rust endpoint's own.

        Raises:
            ValueError: For an OPEN, PING, PONG or UPGRADE packet while attached.
        """
        if self._zcasgi_engine is None:
            await super().send_packet(sid, pkt)
        elif pkt.packet_type == eio_packet.MESSAGE:
            await self.send(sid, pkt.data)
        elif pkt.packet_type == eio_packet.CLOSE:
            await self.disconnect(sid)
        elif pkt.packet_type != eio_packet.NOOP:
            name = eio_packet.packet_names[pkt.packet_type]
            raise ValueError(f"zcasgi's Engine.IO sends {name} packets itself")

    async def disconnect(self, sid: str | None = None) -> None:
        """Closes a client's session, or every session (python-engineio's ``disconnect``).

        While attached, the ``disconnect`` handler runs here with the reason
        ``'server disconnect'``, as python-engineio runs it; events of the session that were
        still waiting are dropped.
        """
        engine = self._zcasgi_engine
        if engine is None:
            await super().disconnect(sid)
            return
        for each in [sid] if sid is not None else list(self._zcasgi_sessions):
            if not engine.disconnect(each):
                continue
            waiting = self._zcasgi_busy.get(each)
            if waiting is not None:
                waiting.clear()
            await self._zcasgi_call(_DISCONNECT, (each, self.reason.SERVER_DISCONNECT))
            self._zcasgi_sessions.pop(each, None)

    async def get_session(self, sid: str) -> dict[Any, Any]:
        """The user session of a client (python-engineio's ``get_session``).

        Raises:
            KeyError: If the client has no open session.
        """
        if self._zcasgi_engine is None:
            session: dict[Any, Any] = await super().get_session(sid)
            return session
        try:
            return self._zcasgi_sessions[sid]
        except KeyError:
            raise KeyError("Session not found") from None

    async def save_session(self, sid: str, session: dict[Any, Any]) -> None:
        """Stores the user session of a client (python-engineio's ``save_session``).

        Raises:
            KeyError: If the client has no open session.
        """
        if self._zcasgi_engine is None:
            await super().save_session(sid, session)
        elif sid not in self._zcasgi_sessions:
            raise KeyError("Session not found")
        else:
            self._zcasgi_sessions[sid] = session

    def transport(self, sid: str) -> str:
        """``'polling'`` or ``'websocket'`` (python-engineio's ``transport``).

        Raises:
            KeyError: If the client has no open session.
        """
        engine = self._zcasgi_engine
        if engine is None:
            name: str = super().transport(sid)
            return name
        return engine.transport(sid)

    # ---- called by the Rust endpoint ----

    def _zcasgi_connect(self, sid: str, scope: dict[str, Any]) -> bool | None:
        """A new session: runs the ``connect`` handler.

        Returns:
            True to accept, False to refuse (401), None if the handler still runs (then
            ``engine.connected(sid, accepted)`` follows).
        """
        self._zcasgi_sessions[sid] = {}
        finished, value = self._zcasgi_start(sid, _CONNECT, (sid, environ_of(scope)))
        if not finished:
            self._zcasgi_busy[sid] = deque()
            return None
        return self._zcasgi_accepted(sid, value)

    def _zcasgi_message(self, sid: str, data: str | bytes) -> bool:
        """A message from a session: runs the ``message`` handler, after the session's
        earlier events.

        Returns:
            True if it was handled; False if it runs on or waits (``engine.done(sid)`` follows).
        """
        waiting = self._zcasgi_busy.get(sid)
        if waiting is not None:
            waiting.append((_MESSAGE, data))
            return False
        finished, _ = self._zcasgi_start(sid, _MESSAGE, (sid, data))
        if not finished:
            self._zcasgi_busy[sid] = deque()
        return finished

    def _zcasgi_disconnect(self, sid: str, reason: str) -> None:
        """A session ended: runs the ``disconnect`` handler, after the session's earlier
        events; the session's user session goes once it has run."""
        waiting = self._zcasgi_busy.get(sid)
        if waiting is not None:
            waiting.append((_DISCONNECT, reason))
        elif sid in self._zcasgi_sessions:
            finished, _ = self._zcasgi_start(sid, _DISCONNECT, (sid, reason))
            if finished:
                del self._zcasgi_sessions[sid]
            else:
                self._zcasgi_busy[sid] = deque()

    # ---- running handlers ----

    def _zcasgi_start(self, sid: str, event: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Runs ``event``'s handler, at once where it can, in a copy of the current context.

        Returns:
            ``(True, its result)`` if it finished at once, or ``(False, None)`` when it goes on
            in a task, whose end calls `_zcasgi_finished`.
        """
        if event not in self.handlers:
            return True, None
        coro = self._zcasgi_call(event, args)
        context = contextvars.copy_context()
        if self._zcasgi_inline(event, sid, args[1]):
            try:
                yielded = context.run(coro.send, None)
            except StopIteration as stop:
                return True, stop.value
            task = _continue_in_task(coro, yielded, context)
        else:
            task = _start_task(coro, context)
            if task.done():
                return True, task.result()
        self._zcasgi_tasks.add(task)
        task.add_done_callback(functools.partial(self._zcasgi_finished, sid, event))
        return False, None

    def _zcasgi_inline(self, event: str, sid: str, data: Any) -> bool:
        """Whether the handler of this event runs no application code before it suspends or
        ends: then it is stepped outside any task (see the module doc); python-socketio's
        server (`zcasgi.socketio.AsyncServer`) knows its own handlers. Here: never."""
        del event, sid, data
        return False

    def _zcasgi_finished(self, sid: str, event: str, task: asyncio.Task[Any]) -> None:
        """A handler that went on in a task ended: tell Rust, then run the session's waiting
        events."""
        self._zcasgi_tasks.discard(task)
        # A handler catches its exceptions and its cancellation (as python-engineio's do); only
        # a task cancelled before it ran, or a KeyboardInterrupt/SystemExit (raised out of the
        # loop already), end otherwise.
        ended = task.cancelled() or task.exception() is not None
        self._zcasgi_settle(sid, event, None if ended else task.result())
        waiting = self._zcasgi_busy.get(sid)
        while waiting:
            kind, arg = waiting.popleft()
            if kind == _DISCONNECT and sid not in self._zcasgi_sessions:
                continue
            finished, value = self._zcasgi_start(sid, kind, (sid, arg))
            if not finished:
                return
            self._zcasgi_settle(sid, kind, value)
        self._zcasgi_busy.pop(sid, None)

    def _zcasgi_settle(self, sid: str, event: str, value: Any) -> None:
        """The outcome of a handler Rust was told still runs (or waits)."""
        engine = self._zcasgi_engine
        if event == _MESSAGE:
            if engine is not None:
                engine.done(sid)
        elif event == _CONNECT:
            accepted = self._zcasgi_accepted(sid, value)
            if engine is not None:
                engine.connected(sid, accepted)
        else:
            self._zcasgi_sessions.pop(sid, None)

    def _zcasgi_accepted(self, sid: str, value: Any) -> bool:
        """Whether a ``connect`` handler's result accepts (None or True, as python-engineio
        decides); a refused session is forgotten with its waiting events."""
        if value is None or value is True:
            return True
        self.logger.warning("Application rejected connection")
        self._zcasgi_sessions.pop(sid, None)
        waiting = self._zcasgi_busy.get(sid)
        if waiting is not None:
            waiting.clear()
        return False

    async def _zcasgi_call(self, event: str, args: tuple[Any, ...]) -> Any:
        """Calls ``event``'s handler as python-engineio's ``_trigger_event`` does."""
        handler = self.handlers.get(event)
        if handler is None:
            return None
        try:
            try:
                result = handler(*args)
                return (await result) if inspect.isawaitable(result) else result
            except TypeError:
                if event != _DISCONNECT or len(args) != 2:
                    raise
                # A disconnect handler of python-engineio before 4.11 takes no reason.
                result = handler(args[0])
                return (await result) if inspect.isawaitable(result) else result
        except asyncio.CancelledError:
            return None
        except Exception:
            kind = "async handler" if inspect.iscoroutinefunction(handler) else "handler"
            self.logger.exception(f"{event} {kind} error")
            return False if event == _CONNECT else None


def _continue_in_task(
    coro: Coroutine[Any, Any, Any], yielded: Any, context: contextvars.Context
) -> asyncio.Task[Any]:
    """A task that goes on with ``coro``, which was stepped once and yielded ``yielded``."""
    return _start_task(_Resumed(coro, yielded), context, eager=False)


def _start_task(
    coro: Coroutine[Any, Any, Any], context: contextvars.Context, *, eager: bool = True
) -> asyncio.Task[Any]:
    """A task running ``coro`` in ``context``; from Python 3.12 ``eager``ly: stepped at once
    (done already if ``coro`` did not suspend), with the task current meanwhile."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, context=context, eager_start=eager)
    if sys.version_info >= (3, 11):
        return loop.create_task(coro, context=context)
    # Before 3.11 a task runs in a copy of the context it is created in.
    return context.run(loop.create_task, coro)


#: `_Resumed` has handed its first yield to its task.
_HANDED = object()


class _Resumed(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine stepped once already, as a task's coroutine: the task's first step gets what
    it yielded (the future it waits for), and every later one goes to it.

    A task cancelled before its first step throws the cancellation in at once: the future
    ``coro`` waits for is cancelled then, as a task's own cancellation does it, so ``coro``
    sees the cancellation where it waits.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def send(self, value: Any) -> Any:
        yielded = self._yielded
        if yielded is _HANDED:
            return self._coro.send(value)
        self._yielded = _HANDED
        return yielded

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        yielded, self._yielded = self._yielded, _HANDED
        waits = yielded is not _HANDED and asyncio.isfuture(yielded) and not yielded.done()
        if waits and isinstance(typ, asyncio.CancelledError) and val is None:
            yielded.cancel(*typ.args[:1])
            return self._coro.send(None)
        if val is None and tb is None:
            return self._coro.throw(typ)
        # The (type, value, traceback) form, deprecated since Python 3.12.
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)


def _message_data(data: Any) -> str | bytes:
    """An Engine.IO message's data as python-engineio's ``Packet`` encodes it (without the
    packet type): text, bytes, or JSON for a dict or a list."""
    kind = type(data)
    if kind is str or kind is bytes:
        return data  # type: ignore[no-any-return]
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (dict, list)):
        text: str = eio_packet.Packet.json.dumps(data, separators=(",", ":"))
        return text
    return "" if data is None else str(data)


def environ_of(scope: dict[str, Any]) -> dict[str, Any]:
    """The WSGI-style environ python-engineio's ASGI driver (``translate_request``) makes of
    an ASGI scope, with ``asgi.scope`` but no ``asgi.receive``/``asgi.send``/``wsgi.input``
    (Rust has read the request)."""
    path = scope["path"]
    query = ""
    raw = scope.get("query_string")
    if raw:
        with contextlib.suppress(UnicodeDecodeError):
            query = raw.decode("utf-8")
    environ: dict[str, Any] = {
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.async": True,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": "asgi",
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": f"{path}?{query}" if query else path,
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        # python-engineio's values (the client is in environ["asgi.scope"]["client"]).
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "SERVER_NAME": "asgi",
        "SERVER_PORT": "0",
        "asgi.scope": scope,
    }
    for raw_name, raw_value in scope["headers"]:
        key = _environ_key(raw_name)
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if key is None:
            continue
        if key in environ and key.startswith("HTTP_"):
            value = f"{environ[key]},{value}"
        environ[key] = value
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


#: Most header names whose environ key `_environ_key` keeps (a client sends what it likes).
_KEYS_KEPT = 256
#: The environ key of each header name seen: one string for every client's environ.
_ENVIRON_KEYS: dict[bytes, str | None] = {}


def _environ_key(name: bytes) -> str | None:
    """The environ key of a header (``HTTP_USER_AGENT``, ``CONTENT_TYPE``), as python-engineio
    makes it; None for a name that is not UTF-8."""
    key = _ENVIRON_KEYS.get(name)
    if key is not None or name in _ENVIRON_KEYS:
        return key
    try:
        upper = name.upper().decode("utf-8")
    except UnicodeDecodeError:
        key = None
    else:
        if upper in ("CONTENT-TYPE", "CONTENT-LENGTH"):
            key = upper.replace("-", "_")
        else:
            key = "HTTP_" + upper.replace("-", "_")
    if len(_ENVIRON_KEYS) < _KEYS_KEPT:
        _ENVIRON_KEYS[name] = key
    return key


def engine_options(eio: EngineIOServer) -> dict[str, Any]:
    """The options of ``eio`` the Rust endpoint takes (``Core(engineio=(path, options,
    handler))``).

    Raises:
        Unsupported: For an option only python-engineio can honour: a callable
            ``cors_allowed_origins`` or cookie attribute (python-engineio calls it per request),
            a cookie attribute python-engineio could not write, or a server patched by
            python-socketio's Admin UI instrumentation.
    """
    if "_ok" in vars(eio):
        raise Unsupported(
            "it is instrumented for the Socket.IO Admin UI (instrument() patches python-engineio)"
        )
    return {
        "ping_interval": float(eio.ping_interval),
        "ping_grace": float(eio.ping_interval_grace_period),
        "ping_timeout": float(eio.ping_timeout),
        "max_http_buffer_size": int(eio.max_http_buffer_size),
        "allow_upgrades": bool(eio.allow_upgrades),
        "transports": list(eio.transports),
        "cors_allowed_origins": _origins(eio.cors_allowed_origins),
        "cors_credentials": bool(eio.cors_credentials),
        "cookie": _cookie(eio.cookie),
    }


def _origins(origins: Any) -> str | list[str] | None:
    """``cors_allowed_origins`` as the Rust endpoint takes it (None, ``"*"``, an origin, a list)."""
    if origins is None or isinstance(origins, str):
        return origins
    if callable(origins):
        raise Unsupported("cors_allowed_origins is a callable")
    listed = list(origins)
    if not all(isinstance(origin, str) for origin in listed):
        raise Unsupported("cors_allowed_origins holds something other than strings")
    return listed


def _cookie(cookie: Any) -> dict[str, str | bool] | None:
    """``cookie`` as the attributes python-engineio writes (a name alone gets its defaults)."""
    if not cookie:
        return None
    if isinstance(cookie, str):
        return {"name": cookie, "path": "/", "SameSite": "Lax"}
    attributes: dict[str, str | bool] = {}
    for key, value in dict(cookie).items():
        if callable(value):
            raise Unsupported(f"the cookie attribute {key!r} is a callable")
        if not (isinstance(value, str) or value is True):
            raise Unsupported(f"the cookie attribute {key!r} is neither a string nor True")
        attributes[str(key)] = value
    return attributes
