"""The servers under test: each one's command line, how it shows it serves, and pinning.

Every server serves the same two applications from the repository: the raw ASGI echo app
(``tests.apps.echo:app``) and the python-socketio chat app (``examples.chat:app``). Two more
entries serve the Socket.IO scenarios only, with the same chat app written against
``zcasgi.socketio`` (``examples.chat_fast:app``, one import changed) on either zcasgi backend.
Each runs
as one process (plus the worker processes its design has, counted as a process tree) pinned
to CPU 0, with access logs off and the log level at warning (zcasgi at info, which then prints
only its start-up and shutdown lines). The harness (``harness/``) starts and stops them.
Limits that would stop a peer from holding 10,000 or more connections at all (gunicorn's
``--worker-connections``, granian's ``--backpressure``, listen backlogs) are raised to what the
scenarios need; nothing else is tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness import HOST, READY_LINE, zcasgi_argv

#: The server every ratio is taken against.
BASELINE = "uvicorn"

ECHO_APP = "tests.apps.echo:app"
CHAT_APP = "examples.chat:app"
#: The chat app with ``import zcasgi.socketio as socketio`` instead of python-socketio's.
CHAT_FAST_APP = "examples.chat_fast:app"

BACKLOG = "4096"


@dataclass(frozen=True)
class Launch:
    """What a command line needs: the interpreter, the app, and a port or listening socket."""

    python: str
    app: str
    port: int
    fd: int | None = None


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration under test."""

    name: str
    #: The peer group (env.PEER_GROUPS) it needs, or "zcasgi".
    group: str
    description: str
    argv: Callable[[Launch], list[str]]
    #: Whether it can serve on an inherited listening socket (for the multi-worker point).
    serves_fd: bool = False
    #: Whether it always serves on a listening socket bound by the suite (``--fd``); the others
    #: bind their own port, as their users run them, except in the multi-worker point.
    inherits_socket: bool = False
    #: A line it prints once it serves; without one, the suite waits for an answered request.
    ready_line: str | None = None
    #: The Socket.IO chat app it serves.
    chat_app: str = CHAT_APP
    #: Whether it runs only the Socket.IO scenarios (a variant of the app, not of the server).
    socketio_only: bool = False


def _zcasgi(backend: str, *extra: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        if launch.fd is None:
            raise ValueError("zcasgi serves on a listening socket bound by the suite")
        # Log level info prints only start-up and shutdown lines once the access log is off,
        # the ready line among them.
        options = ["--backlog", BACKLOG, "--log-level", "info", "--no-access-log", *extra]
        return zcasgi_argv(launch.app, launch.fd, backend, options, python=launch.python)

    return argv


def _uvicorn(ws: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        where = (
            ["--fd", str(launch.fd)]
            if launch.fd is not None
            else ["--host", HOST, "--port", str(launch.port)]
        )
        return [
            launch.python,
            "-m",
            "uvicorn",
            launch.app,
            *where,
            "--ws",
            ws,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--backlog",
            BACKLOG,
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "on",
        ]

    return argv


def _hypercorn(launch: Launch) -> list[str]:
    return [
        launch.python,
        "-m",
        "hypercorn",
        launch.app,
        "--bind",
        f"{HOST}:{launch.port}",
        "--worker-class",
        "uvloop",
        "--backlog",
        BACKLOG,
        "--log-level",
        "warning",
    ]


def _granian(launch: Launch) -> list[str]:
    return [
        launch.python,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        HOST,
        "--port",
        str(launch.port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--backlog",
        BACKLOG,
        "--backpressure",
        "60000",
        "--log-level",
        "warning",
        "--no-access-log",
        launch.app,
    ]


def _gunicorn(launch: Launch) -> list[str]:
    return [
        launch.python,
        "-m",
        "gunicorn",
        "-k",
        "asgi",
        "--workers",
        "1",
        "--bind",
        f"{HOST}:{launch.port}",
        "--worker-connections",
        "60000",
        "--backlog",
        BACKLOG,
        "--log-level",
        "warning",
        launch.app,
    ]


def _socketify(launch: Launch) -> list[str]:
    return [
        launch.python,
        "-m",
        "socketify",
        launch.app,
        "--host",
        HOST,
        "--port",
        str(launch.port),
        "--interface",
        "asgi",
    ]


#: Every server the suite knows, in report order.
SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec(
            "zcasgi-mio",
            "zcasgi",
            "zcasgi, backend=mio (its defaults: pinned to one CPU, the reactor runs in the "
            "asyncio loop, io_threads=0)",
            _zcasgi("mio"),
            serves_fd=True,
            inherits_socket=True,
            ready_line=READY_LINE,
        ),
        ServerSpec(
            "zcasgi-mio-thread",
            "zcasgi",
            "zcasgi, backend=mio, io_threads=1 (one I/O thread beside the asyncio loop: the "
            "default with more than one CPU)",
            _zcasgi("mio", "--io-threads", "1"),
            serves_fd=True,
            inherits_socket=True,
            ready_line=READY_LINE,
        ),
        ServerSpec(
            "zcasgi-tokio",
            "zcasgi",
            "zcasgi, backend=tokio",
            _zcasgi("tokio"),
            serves_fd=True,
            inherits_socket=True,
            ready_line=READY_LINE,
        ),
        ServerSpec(
            "zcasgi-sio-mio",
            "zcasgi",
            "zcasgi, backend=mio, serving the chat app written against zcasgi.socketio "
            "(examples/chat_fast.py)",
            _zcasgi("mio"),
            inherits_socket=True,
            ready_line=READY_LINE,
            chat_app=CHAT_FAST_APP,
            socketio_only=True,
        ),
        ServerSpec(
            "zcasgi-sio-tokio",
            "zcasgi",
            "zcasgi, backend=tokio, serving the chat app written against zcasgi.socketio "
            "(examples/chat_fast.py)",
            _zcasgi("tokio"),
            inherits_socket=True,
            ready_line=READY_LINE,
            chat_app=CHAT_FAST_APP,
            socketio_only=True,
        ),
        ServerSpec(
            "uvicorn",
            "uvicorn",
            "uvicorn, default ws (websockets-sansio), uvloop, httptools",
            _uvicorn("websockets-sansio"),
            True,
        ),
        ServerSpec(
            "uvicorn-wsproto", "uvicorn", "uvicorn, --ws wsproto, uvloop", _uvicorn("wsproto")
        ),
        ServerSpec(
            "uvicorn-websockets",
            "uvicorn",
            "uvicorn, --ws websockets (legacy implementation), uvloop",
            _uvicorn("websockets"),
        ),
        ServerSpec("hypercorn", "hypercorn", "hypercorn, uvloop worker", _hypercorn),
        ServerSpec("granian", "granian", "granian --interface asgi, 1 worker", _granian),
        ServerSpec("gunicorn", "gunicorn", "gunicorn -k asgi (its own ASGI worker)", _gunicorn),
        ServerSpec("socketify", "socketify", "socketify ASGI adapter", _socketify),
    ]
}

#: Servers of a full run.
FULL_SERVERS = [
    "zcasgi-mio",
    "zcasgi-tokio",
    "zcasgi-sio-mio",
    "zcasgi-sio-tokio",
    "uvicorn",
    "uvicorn-wsproto",
    "hypercorn",
    "granian",
    "gunicorn",
    "socketify",
]
#: Servers of a ``--quick`` run.
QUICK_SERVERS = ["zcasgi-mio", "zcasgi-tokio", "zcasgi-sio-mio", "zcasgi-sio-tokio", "uvicorn"]
#: The zcasgi.socketio variants (skipped when zcasgi.socketio does not import).
SOCKETIO_VARIANTS = [name for name, spec in SERVERS.items() if spec.chat_app == CHAT_FAST_APP]
