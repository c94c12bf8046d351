"""`serve()` and `Server`: the asyncio side of zcasgi.

One asyncio loop runs in the thread that calls `serve()`. The backend's I/O threads hand it
events in batches through one eventfd (see the bridge in ``zcasgi-python/src/bridge/``); with
``io_threads=0`` the mio backend's reactor runs in the loop itself, its epoll descriptor watched
with ``loop.add_reader``. Each WebSocket runs the application as its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import logging.config
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _zcasgi, sticky
from .colors import LevelFormatter, wants_colors
from .config import Config
from .lifespan import Lifespan, LifespanFailure
from .sockets import bind_sockets, close_sockets, describe

if TYPE_CHECKING:
    from typing import ParamSpec

    from .supervisor import WorkerSlot

    P = ParamSpec("P")

__all__ = ["Server", "run", "serve"]

logger = logging.getLogger("zcasgi")
access_logger = logging.getLogger("zcasgi.access")

#: uvicorn's TRACE level, below DEBUG: connection open and close, and WebSocket frame summaries.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds between two looks at the open connections while a shutdown waits for them.
_SHUTDOWN_POLL = 0.02


#: The console handler `configure_logging` gave the ``zcasgi`` loggers, if it did.
_console: list[logging.Handler] = []
#: Loggers whose level `configure_logging` set (it may set them again; not those set elsewhere).
_levels_set: set[str] = set()
#: Whether `configure_logging` applied a ``log_config`` in this process (a forked worker inherits
#: the configuration and the flag).
_configured: list[bool] = []


def configure_logging(
    level: int,
    tag: str = "",
    log_config: dict[str, Any] | str | None = None,
    use_colors: bool | None = None,
) -> None:
    """Applies ``log_config``, sets the ``zcasgi`` loggers' level, and gives them a console
    handler unless logging is configured already.

    Args:
        level: The level of the ``zcasgi`` loggers that nothing else set: a level set by
            ``log_config`` or the application's own logging setup is kept.
        tag: Shown in brackets before each message of this process (``worker 1 pid 42``); a
            later call (in a forked worker) replaces the tag of the handler made before.
        log_config: A `logging.config.dictConfig` dict or a `logging.config.fileConfig` path
            (`Config` has read a JSON or YAML file into a dict); applied once per process.
        use_colors: Colour the level names of the console handler; None: when its stream
            (stderr) is a terminal.
    """
    if log_config is not None and not _configured:
        if isinstance(log_config, dict):
            logging.config.dictConfig(log_config)
        else:
            logging.config.fileConfig(log_config, disable_existing_loggers=False)
        _configured.append(True)
    for name in ("zcasgi", "zcasgi.access"):
        log = logging.getLogger(name)
        if log.level == logging.NOTSET or name in _levels_set:
            log.setLevel(level)
            _levels_set.add(name)
    if not _console:
        if logging.getLogger().handlers or logging.getLogger("zcasgi").handlers:
            return
        _console.append(logging.StreamHandler(sys.stderr))
        for name in ("zcasgi", "zcasgi.access"):
            log = logging.getLogger(name)
            log.addHandler(_console[0])
            log.propagate = False
    shown = f"[{tag}] " if tag else ""
    console = _console[0]
    stream = console.stream if isinstance(console, logging.StreamHandler) else sys.stderr
    colors = wants_colors(use_colors, stream)
    console.setFormatter(LevelFormatter(f"%(levelname)-9s {shown}%(message)s", colors))


class Server:
    """A zcasgi server for one `Config`.

    Use `run()` to own the event loop, or ``await server.serve()`` inside a running loop.

    Args:
        config: The configuration.
        slot: This worker's place under a `zcasgi.supervisor.Supervisor` (``workers > 1``),
            or None for a server of its own.
    """

    def __init__(self, config: Config, slot: WorkerSlot | None = None) -> None:
        self.config = config
        self.slot = slot
        self.should_exit = False
        self.force_exit = False
        self.started = False
        self.sockets: list[socket.socket] = []
        self._core: Any = None
        #: The running loop, once started (`_on_connect` runs on it).
        self._loop: Any = None
        self._engineio_handler: Any = None
        #: Each running application task, with the connection and scope it serves.
        self._tasks: dict[asyncio.Future[Any], tuple[Any, dict[str, Any]]] = {}
        # Made once: a bound method made per connection would live as long as it does.
        self._on_app_done = self._app_done
        self._exit_event: asyncio.Event | None = None
        self._app: Any = None
        self._lifespan: Lifespan | None = None

    # ---- running ----

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Runs the server until SIGINT/SIGTERM (a worker: SIGTERM), in a new event loop.

        Args:
            sockets: Listening sockets to serve instead of binding the configured ones.

        Raises:
            SystemExit: with code 3 if the application's lifespan startup failed.
        """
        self._configure_logging()
        factory = self._loop_factory()
        if factory is None:
            asyncio.run(self.serve(sockets))
        elif sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self.serve(sockets))
        else:
            loop = factory()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(sockets))
            finally:
                loop.close()

    def _configure_logging(self) -> None:
        tag = "" if self.slot is None else self.slot.tag
        configure_logging(
            self.config.log_level, tag, self.config.log_config, self.config.use_colors
        )

    def _loop_factory(self) -> Any:
        if self.config.loop == "asyncio":
            return None
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serves until `should_exit` is set (by a signal or by the caller)."""
        self._configure_logging()
        self._exit_event = asyncio.Event()
        try:
            await self._startup(sockets)
        except LifespanFailure:
            # The lifespan logged why (the application's message, or its exception).
            logger.error("Application startup failed. Exiting.")
            raise SystemExit(3) from None
        if self.should_exit:
            self._exit_event.set()
        await self._exit_event.wait()
        await self._shutdown()

    def request_exit(self) -> None:
        """Starts a graceful shutdown (a second call forces it)."""
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    async def _startup(self, sockets: list[socket.socket] | None) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        self._app = self._load_app()
        worker = None if self.slot is None else sticky.core_worker(self.slot)
        if worker is not None:
            # Before any session exists: the lifespan startup may create some.
            sticky.tag_sessions(worker[0])
        # Bound before the application starts: a port in use stops the start-up before the
        # application has done anything (its lifespan never starts, so nothing to undo).
        self.sockets = sockets if sockets is not None else bind_sockets(config)
        try:
            await self._start(loop, worker)
        except BaseException:
            if sockets is None:
                # Ours to undo: a Unix socket's file must not outlive a start-up that failed.
                close_sockets(self.sockets)
            raise
        threads = (
            "I/O on the event loop's thread"
            if config.io_threads == 0
            else f"{config.io_threads} I/O thread{'' if config.io_threads == 1 else 's'}"
        )
        for sock in self.sockets:
            logger.info(
                "zcasgi running on %s (backend %s, %s; %s)",
                describe(sock, "https" if config.ssl_certfile else "http"),
                config.backend,
                threads,
                "CTRL+C to quit" if self.slot is None else self.slot.tag,
            )
        if self.slot is not None:
            self.slot.notify_ready()

    async def _start(self, loop: asyncio.AbstractEventLoop, worker: Any) -> None:
        """The lifespan startup, then the core on the bound sockets; a core that cannot start
        gives the application its lifespan shutdown before the error goes on."""
        config = self.config
        self._loop = loop
        self._lifespan = Lifespan(self._app, config.lifespan)
        await self._lifespan.startup()
        engineio = _engineio_spec(self._app)
        try:
            self._core = _zcasgi.Core(
                config,
                [s.fileno() for s in self.sockets],
                on_connect=self._on_connect,
                event_loop=loop,
                logger=logger,
                access_log=access_logger if config.access_log else None,
                state=self._lifespan.state if self._lifespan.supported else None,
                worker=worker,
                resolve_client=self._apply_proxy_headers if config.proxy_headers else None,
                engineio=engineio,
            )
        except BaseException:
            # The application started: it gets its lifespan shutdown before the error goes on.
            await self._lifespan.shutdown()
            raise
        if engineio is not None:
            self._engineio_handler = engineio[2]
            self._engineio_handler._zcasgi_attach(self._core.engineio)
        loop.add_reader(self._core.fileno(), self._core.drain)
        # With io_threads=0 the backend's reactor takes its first turn at once (and arms its
        # timer); with I/O threads, this only looks at the event queue.
        loop.call_soon(self._core.drain)
        self._install_signal_handlers(loop)
        self.started = True

    def _load_app(self) -> Any:
        try:
            return self.config.load_app()
        except Exception as exc:
            if self.slot is None:
                raise
            # A worker imports the application itself (see zcasgi.supervisor); failing to is a
            # startup failure: its supervisor stops rather than start it again and again.
            logger.error("Could not load the application", exc_info=exc)
            raise SystemExit(3) from None

    def _handled_signals(self) -> tuple[signal.Signals, ...]:
        # A worker leaves SIGINT to its supervisor, which sends it SIGTERM.
        return _HANDLED_SIGNALS if self.slot is None else (signal.SIGTERM,)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self._handled_signals():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        # A worker may get SIGTERM twice (from its supervisor, from systemd killing the whole
        # control group, from the kernel when the supervisor dies): only its supervisor forces
        # it, with SIGKILL.
        if self.slot is None or not self.should_exit:
            self.request_exit()

    # ---- connections ----

    def _on_connect(self, conn: Any, scope: dict[str, Any]) -> None:
        # The core applied ``proxy_headers`` to the scope already (`_apply_proxy_headers`).
        # The application's coroutine is the task's own (no wrapper: every idle WebSocket
        # keeps its task's coroutines), and its outcome is handled by `_app_done`, run in the
        # task's context as code after an `await` in the task would be (Python 3.11+).
        context = contextvars.copy_context()
        try:
            # ``receive`` is the connection itself (calling it is ``conn.receive()``): one
            # bound method fewer kept by every idle WebSocket.
            app = context.run(self._app, scope, conn, conn.send)
            coro = app if inspect.iscoroutine(app) else _awaited(app)
            if sys.version_info >= (3, 11):
                task = self._loop.create_task(coro, context=context)
            else:
                # Before 3.11 the task runs in a copy of the context it is created in, so
                # `_app_done` does not see the variables the application set.
                task = context.run(self._loop.create_task, coro)
        except Exception as exc:
            _app_failed(conn, scope, exc)
            return
        self._tasks[task] = (conn, scope)
        task.add_done_callback(self._on_app_done, context=context)

    def _app_done(self, task: asyncio.Future[Any]) -> None:
        """Ends what the finished application task left: its failure stays local."""
        conn, scope = self._tasks.pop(task)
        if task.cancelled():
            conn.abort()
            return
        exc = task.exception()
        if isinstance(exc, Exception):
            _app_failed(conn, scope, exc)
        elif exc is None:
            _app_returned(conn, scope)

    def _apply_proxy_headers(self, scope: dict[str, Any]) -> None:
        client = scope.get("client")
        if not self.config.trusted_proxy(None if client is None else client[0]):
            return
        headers = dict(scope["headers"])
        proto = headers.get(b"x-forwarded-proto")
        if proto is not None:
            scheme = proto.decode("latin-1").split(",")[0].strip().lower()
            if scope["type"] == "websocket":
                scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
            scope["scheme"] = scheme
        forwarded_for = headers.get(b"x-forwarded-for")
        if forwarded_for is not None:
            host = forwarded_for.decode("latin-1").split(",")[0].strip()
            if host:
                scope["client"] = (host, 0)

    # ---- shutdown ----

    def _running(self) -> set[asyncio.Future[Any]]:
        """The application's unfinished tasks: its ASGI calls, and the Engine.IO handlers that
        went on in tasks of their own (``zcasgi.socketio``)."""
        running: set[asyncio.Future[Any]] = set(self._tasks)
        pending = getattr(self._engineio_handler, "_zcasgi_pending", None)
        if pending is not None:
            running |= pending()
        return running

    async def _shutdown(self) -> None:
        logger.info("Shutting down")
        loop = asyncio.get_running_loop()
        core = self._core
        if core is not None:
            # Stop accepting; every open WebSocket gets a close frame and its app a disconnect.
            # A request already on its way is still served (a connection accepted just before,
            # e.g. from the backlog a worker shares): events are dispatched until the backend
            # has stopped accepting and closed its last connection.
            core.shutdown()
            deadline = loop.time() + self.config.timeout_graceful_shutdown
            while not self.force_exit and loop.time() < deadline:
                running = self._running()
                if not running and core.finished:
                    # The events queued with the last connections' ends (an Engine.IO
                    # session's end, for its disconnect handler) are dispatched before the
                    # reader goes.
                    core.drain()
                    running = self._running()
                    if not running:
                        break
                if running:
                    await asyncio.wait(running, timeout=min(0.1, deadline - loop.time()))
                else:
                    await asyncio.sleep(min(_SHUTDOWN_POLL, deadline - loop.time()))
            running = self._running()
            if running:
                logger.warning("Cancelling %d unfinished application task(s)", len(running))
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            loop.remove_reader(core.fileno())
            remaining = 0.0 if self.force_exit else max(0.5, deadline - loop.time())
            if not core.join(remaining):
                logger.warning("Some connections did not close in time and were dropped")
            if self._engineio_handler is not None:
                self._engineio_handler._zcasgi_detach()
                self._engineio_handler = None
        close_sockets(self.sockets)
        if self._lifespan is not None:
            await self._lifespan.shutdown()
        for sig in self._handled_signals():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        logger.info("Finished server process")


def _engineio_spec(app: Any) -> tuple[str | None, dict[str, Any], Any] | None:
    """The Engine.IO endpoint the application asks zcasgi to serve in Rust, if any.

    An application object with a ``__zcasgi_engineio__()`` method (``zcasgi.socketio.ASGIApp``)
    returns ``(path, options, handler)``, or None to be served as any ASGI application.
    """
    hook = getattr(app, "__zcasgi_engineio__", None)
    if hook is None:
        return None
    spec: tuple[str | None, dict[str, Any], Any] | None = hook()
    return spec


async def _awaited(awaitable: Any) -> None:
    """A coroutine for an application that returned an awaitable other than a coroutine."""
    await awaitable


def _app_failed(conn: Any, scope: dict[str, Any], exc: Exception) -> None:
    """The application raised: log it, and close its connection (1011, or 500 before accept)."""
    logger.error("Exception in ASGI application, client %s", _client(scope), exc_info=exc)
    conn.abort()


def _app_returned(conn: Any, scope: dict[str, Any]) -> None:
    """The application returned: finish its connection; leaving it unfinished is an error."""
    # Checked before finish(): an unfinished response to a client that already left is the
    # client's doing, not the application's, and must not let clients fill the log.
    client_left = conn.disconnected
    if conn.finish():
        if client_left:
            logger.debug(
                "ASGI callable returned without completing the response "
                "(the client had disconnected), client %s",
                _client(scope),
            )
        else:
            logger.error(
                "ASGI callable returned without completing the response, client %s",
                _client(scope),
            )


def _client(scope: dict[str, Any]) -> str:
    """The scope's client as ``host:port`` (``-`` when unknown), for log lines."""
    client = scope.get("client")
    return "-" if not client else f"{client[0]}:{client[1]}"


def run(config: Config) -> None:
    """Serves ``config`` until SIGINT/SIGTERM: in this process, with ``workers > 1`` in
    worker processes under a supervisor (`zcasgi.supervisor.Supervisor`), or with ``reload``
    in a process restarted on changes (`zcasgi.reload.Reloader`).

    Raises:
        SystemExit: with code 3 if the application's lifespan startup failed.
    """
    if config.reload:
        from .reload import Reloader

        Reloader(config).run()
        return
    if config.workers == 1:
        Server(config).run()
        return
    from .supervisor import Supervisor

    # One inbox per worker index: Engine.IO sessions stay with the worker that made them.
    Supervisor(config, resources=sticky.make_inbox).run()


def _takes_the_options_of(
    config: Callable[P, Config],
) -> Callable[[Callable[..., None]], Callable[P, None]]:
    """Gives the decorated function `Config`'s parameters: for type checkers (through the
    ParamSpec) and for `inspect.signature` (``__signature__``)."""

    def decorate(function: Callable[..., None]) -> Callable[P, None]:
        signature = inspect.signature(config).replace(return_annotation="None")
        function.__signature__ = signature  # type: ignore[attr-defined]
        return function

    return decorate


@_takes_the_options_of(Config)
def serve(*args: Any, **options: Any) -> None:
    """Serves ``app`` until SIGINT/SIGTERM, or with ``reload`` until a watched file changes,
    then anew.

    Args:
        app: An ASGI application, or an import string ``"module:attribute"``.
        **options: The keywords of `Config`, e.g. ``host``, ``port``, ``backend="mio"``,
            ``workers=4``; a type checker checks their names and types.

    Raises:
        ValueError: for a bad option value, before anything starts.
        TypeError: for an unknown keyword or a value of the wrong type.
        SystemExit: with code 3 if the application's lifespan startup failed.
    """
    run(Config(*args, **options))
