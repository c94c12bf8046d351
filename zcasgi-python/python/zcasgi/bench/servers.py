"""The servers under test: how each is started, pinned, watched and stopped.

Every server serves the same two applications from the repository: the raw ASGI echo app
(``tests.apps.echo:app``) and the python-socketio chat app (``examples.chat:app``). Each runs
as one process (plus the worker processes its design has, counted as a process tree) pinned
to CPU 0, with access logs off and the log level at warning. Limits that would stop a peer
from holding 10,000 or more connections at all (gunicorn's ``--worker-connections``,
granian's ``--backpressure``, listen backlogs) are raised to what the scenarios need; nothing
else is tuned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import procfs

#: The server every ratio is taken against.
BASELINE = "uvicorn"

ECHO_APP = "tests.apps.echo:app"
CHAT_APP = "examples.chat:app"

HOST = "127.0.0.1"
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


def _zcasgi(backend: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        where = (
            ["--fd", str(launch.fd)]
            if launch.fd is not None
            else ["--host", HOST, "--port", str(launch.port)]
        )
        return [
            launch.python,
            "-m",
            "zcasgi",
            launch.app,
            *where,
            "--backend",
            backend,
            "--backlog",
            BACKLOG,
            "--log-level",
            "warning",
            "--no-access-log",
        ]

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
        ServerSpec("zcasgi-mio", "zcasgi", "zcasgi, backend=mio", _zcasgi("mio"), True),
        ServerSpec("zcasgi-tokio", "zcasgi", "zcasgi, backend=tokio", _zcasgi("tokio"), True),
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
    "uvicorn",
    "uvicorn-wsproto",
    "hypercorn",
    "granian",
    "gunicorn",
    "socketify",
]
#: Servers of a ``--quick`` run.
QUICK_SERVERS = ["zcasgi-mio", "zcasgi-tokio", "uvicorn"]


def cpu_pinning() -> tuple[int | None, int | None]:
    """CPUs for (server, load generator): 0 and 1 when this process may use both, else none."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on ``cpu`` (with taskset), or unchanged when ``cpu`` is None."""
    if cpu is None:
        return list(argv)
    taskset = shutil.which("taskset")
    if taskset is None:
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def reuseport_sockets(port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``port`` sharing it with ``SO_REUSEPORT``.

    The kernel spreads new connections over them by hash, so each worker process gets an even
    share (a single shared socket lets the busiest worker take most of them).
    """
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        sock.listen(int(BACKLOG))
        sock.set_inheritable(True)
        socks.append(sock)
    return socks


def port_accepts(port: int) -> bool:
    """Whether 127.0.0.1:``port`` accepts a TCP connection now."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerError(RuntimeError):
    """A server did not start, or died."""


class RunningServer:
    """One or more processes of a server configuration, started and stopped by PID."""

    def __init__(
        self,
        spec: ServerSpec,
        commands: list[list[str]],
        *,
        port: int,
        cwd: Path,
        env: dict[str, str],
        pass_fds: Sequence[Sequence[int]] = (),
    ) -> None:
        """Prepare ``commands`` (one per process); ``pass_fds[i]`` are inherited by process i."""
        self.spec = spec
        self.port = port
        self._commands = commands
        self._cwd = cwd
        self._env = env
        self._pass_fds = [tuple(fds) for fds in pass_fds] or [() for _ in commands]
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []
        self._pids: list[int] = []

    def start(self, timeout: float = 30.0) -> None:
        """Start every process and wait until the port accepts connections.

        Raises:
            ServerError: If a process exits first or ``timeout`` passes.
        """
        for command, fds in zip(self._commands, self._pass_fds):
            fd, name = tempfile.mkstemp(prefix=f"zcasgi-bench-{self.spec.name}-", suffix=".log")
            self._logs.append(Path(name))
            with os.fdopen(fd, "wb") as log:
                self._procs.append(
                    subprocess.Popen(
                        command,
                        cwd=self._cwd,
                        env=self._env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=fds,
                    )
                )
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            dead = [p for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"exited with {dead[0].returncode}" if dead else f"not up after {timeout} s"
                tail = self.output_tail()
                self.stop()
                raise ServerError(f"{self.spec.name} {why}:\n{tail}")
            time.sleep(0.05)
        # Worker processes (gunicorn, granian, hypercorn) may still be starting.
        time.sleep(0.3)
        self.refresh_pids()

    def refresh_pids(self) -> list[int]:
        """Re-read the process trees (workers may have been respawned)."""
        pids: list[int] = []
        for proc in self._procs:
            pids.extend(procfs.tree(proc.pid))
        self._pids = pids
        return pids

    @property
    def pids(self) -> list[int]:
        """Every PID of the server's process trees, as last read."""
        return list(self._pids)

    def alive(self) -> bool:
        """Whether every started process is still running."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's processes."""
        return procfs.cpu_seconds(self.refresh_pids())

    def rss_kib(self) -> int:
        """Resident memory of the server's processes, in KiB."""
        return procfs.rss_kib(self.refresh_pids())

    def wait_quiet(self, max_seconds: float = 10.0, idle_share: float = 0.05) -> float:
        """Wait until the server uses under ``idle_share`` of a core over 200 ms; return the
        seconds waited (at most ``max_seconds``)."""
        start = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - start < max_seconds:
            time.sleep(0.2)
            now = self.cpu_seconds()
            if now - last <= 0.2 * idle_share + 0.011:
                break
            last = now
        return time.monotonic() - start

    def output_tail(self, lines: int = 20) -> str:
        """The last lines the server processes printed."""
        out = []
        for path in self._logs:
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out[-lines:])

    def stop(self, grace: float = 3.0) -> None:
        """SIGINT each process, SIGKILL what is left after ``grace`` seconds, then reap any
        worker processes by PID."""
        started = [(pid, procfs.start_time(pid)) for pid in self.refresh_pids()]
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid, when in started:
            # Only the very process seen before (same start time), never a reused PID.
            if when is not None and procfs.start_time(pid) == when:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for path in self._logs:
            path.unlink(missing_ok=True)
        self._procs = []
        self._logs = []

    def __enter__(self) -> RunningServer:
        """The server (already started): leaving the block stops it."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
