"""Server processes: started with their output in a file, ready on an event, stopped by PID.

A :class:`ServerProcess` runs one server configuration as one or more processes (worker
processes each get their own :class:`Command`). Entering its ``with`` block starts them and
waits, at most ``startup_timeout`` seconds, for its :class:`Readiness`; leaving sends the stop
signal, SIGKILLs what is still running after ``stop_timeout`` seconds, then every descendant
process that outlived its parent (by PID, checked against its start time). Its output stays
readable after the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from . import procfs
from .env import REPO_ROOT, server_env
from .sockets import HOST

#: Seconds between two looks at a condition that has no event to wait on (a file, /proc).
POLL_INTERVAL = 0.02
#: Default bound of the wait for a server to serve.
STARTUP_TIMEOUT = 15.0
#: Default seconds a server gets to exit after the stop signal, before SIGKILL.
STOP_TIMEOUT = 10.0


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (looked at every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_INTERVAL, left))
    return True


async def wait_until_async(condition: Callable[[], bool | Awaitable[bool]], timeout: float) -> bool:
    """Whether ``condition()`` (a function or a coroutine function) became true within
    ``timeout`` seconds, looked at every 20 ms without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(POLL_INTERVAL, left))


class ServerError(RuntimeError):
    """A server did not become ready in time, or one of its processes exited first."""


@dataclass(frozen=True)
class Command:
    """One process of a server: its command line and the listening sockets it inherits.

    The sockets are passed with ``pass_fds`` under their own descriptor numbers (so the command
    line can name them, e.g. ``--fd 5``) and closed in this process once the server started.
    """

    argv: Sequence[str]
    listeners: Sequence[socket.socket] = ()


class Readiness(Protocol):
    """The event that says a started server serves."""

    def wait(self, server: ServerProcess, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the event; whether it happened."""
        ...


@dataclass(frozen=True)
class LogLine:
    """Ready once every process of the server has printed ``text`` ``count`` times.

    zcasgi prints ``zcasgi running on`` once it serves (at log level info or lower); with
    workers, each worker prints it into the output of the supervisor that started it.
    """

    text: str
    count: int = 1

    def wait(self, server: ServerProcess, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``text`` in every process's output."""
        return wait_until(
            lambda: all(out.count(self.text) >= self.count for out in server.outputs()), timeout
        )


#: The request :class:`Answers` sends: any HTTP server answers it, an echo server echoes it.
PROBE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Answers:
    """Ready once a request to the server is answered (any byte back, or a close).

    For servers that print nothing when they are ready. The connection waits in the listen
    backlog until a server process accepts it, so the answer is the event; a refused connect
    (nothing listens yet) is retried. With several worker processes on ``SO_REUSEPORT`` sockets
    the answer comes from one of them.
    """

    #: The request; the default is answered by any HTTP server and echoed by an echo server.
    probe: bytes = PROBE
    #: A Unix socket to send it to, instead of the server's TCP port.
    path: Path | None = None

    def _connect(self, server: ServerProcess, timeout: float) -> socket.socket:
        if self.path is None:
            return socket.create_connection((server.host, server.require_port()), timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        return sock

    def wait(self, server: ServerProcess, timeout: float) -> bool:
        """Send :attr:`probe` and wait at most ``timeout`` seconds for the answer."""
        deadline = time.monotonic() + timeout
        try:
            sock = self._connect(server, timeout)
        except OSError:
            # Nothing listens yet: a refused connect returns at once.
            time.sleep(max(0.0, min(POLL_INTERVAL, deadline - time.monotonic())))
            return False
        with sock:
            try:
                sock.sendall(self.probe)
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.recv(1)
            except socket.timeout:
                return False
            except OSError:
                # Reset: a process accepted and went away (e.g. a master handing over).
                return False
        return True


class ServerProcess:
    """The processes of one server, started and stopped by PID around a ``with`` block.

    Example::

        server = ServerProcess("echo", [Command(argv, [sock])], port=port, ready=Answers())
        with server:
            ...
        assert "Traceback" not in server.output()
    """

    host = HOST

    def __init__(
        self,
        name: str,
        commands: Sequence[Command] = (),
        *,
        ready: Readiness,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        startup_timeout: float = STARTUP_TIMEOUT,
        stop_signal: signal.Signals = signal.SIGINT,
        stop_timeout: float = STOP_TIMEOUT,
        log_dir: Path | None = None,
    ) -> None:
        """Prepare the processes of ``commands`` (nothing starts before :meth:`start`).

        Args:
            name: What the server is called in errors and output file names.
            commands: One per process.
            ready: The event :meth:`start` waits for.
            port: The TCP port it serves on, if any (:meth:`url`, :class:`Answers`).
            env: The processes' environment (default :func:`harness.server_env`).
            cwd: Their working directory (default the repository root).
            startup_timeout: Bound of the wait for ``ready``.
            stop_signal: Sent first by :meth:`stop`.
            stop_timeout: Seconds between the stop signal and SIGKILL.
            log_dir: A directory to write the output files in and keep them (default: a
                temporary file per process, removed by :meth:`stop` once its output is read).
        """
        self.name = name
        self.port = port
        self._commands = list(commands)
        self._ready = ready
        self._env = env if env is not None else server_env()
        self._cwd = cwd
        self._startup_timeout = startup_timeout
        self._stop_signal = stop_signal
        self._stop_timeout = stop_timeout
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._argvs: list[list[str]] = []
        self._logs: list[Path] = []
        self._kept: list[str] | None = None
        self._pids: list[int] = []

    def _launch(self) -> Sequence[Command]:
        """The commands to start (subclasses may bind their sockets here)."""
        return self._commands

    # ---- the process ----

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The first process's ``Popen`` (while it runs, and after :meth:`stop` for its
        return code)."""
        if not self._procs:
            raise RuntimeError(f"{self.name}: not started")
        return self._procs[0]

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        """Every started process's ``Popen``, in command order."""
        return list(self._procs)

    def require_port(self) -> int:
        """The port the server serves on.

        Raises:
            RuntimeError: If it has none (a server on a Unix socket, or not started).
        """
        if self.port is None:
            raise RuntimeError(f"{self.name}: no TCP port")
        return self.port

    def url(self, scheme: str = "ws", path: str = "/") -> str:
        """URL of ``path`` on this server, e.g. ``url("ws", "/chat")`` or ``url("http")``."""
        if not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{self.host}:{self.require_port()}{path}"

    def alive(self) -> bool:
        """Whether every started process is still running."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    # ---- starting and stopping ----

    def start(self) -> None:
        """Start every process and wait for the server's readiness event.

        Raises:
            ServerError: If a process exits first or ``startup_timeout`` passes; the server is
                stopped and the message carries its output.
        """
        if self._procs:
            return
        self._kept = None
        try:
            for command in self._launch():
                self._spawn(command)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.refresh_pids()

    def _spawn(self, command: Command) -> None:
        fd, name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=self._log_dir)
        self._logs.append(Path(name))
        argv = list(command.argv)
        try:
            with os.fdopen(fd, "wb") as log:
                self._procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=self._cwd,
                        env=self._env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=[sock.fileno() for sock in command.listeners],
                    )
                )
            self._argvs.append(argv)
        finally:
            # The server holds the sockets now; this process's copies would only keep the port
            # bound after the server exited.
            for sock in command.listeners:
                sock.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                argv = self._argvs[self._procs.index(dead[0])]
                raise ServerError(
                    f"{self.name} exited with code {dead[0].returncode} before it served\n"
                    f"command: {' '.join(argv)}\n--- output ---\n{self.output()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(
                    f"{self.name} not serving after {self._startup_timeout} s\n"
                    f"--- output ---\n{self.output()}"
                )
            if self._ready.wait(self, min(left, 1.0)):
                return

    def stop(self) -> None:
        """Send the stop signal to each process, SIGKILL it after ``stop_timeout`` seconds, then
        SIGKILL any descendant (a worker) that is still running; keep the output."""
        started = [(pid, procfs.start_time(pid)) for pid in self.refresh_pids()]
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, self._stop_signal)
        deadline = time.monotonic() + self._stop_timeout
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self._stop_timeout)
        for pid, when in started:
            # Only the very process seen before (same start time), never a reused PID.
            if when is not None and procfs.start_time(pid) == when:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self._logs:
            self._kept = self.outputs()
            for path in self._logs:
                if self._log_dir is None:
                    path.unlink(missing_ok=True)
            self._logs = []

    def __enter__(self) -> ServerProcess:
        """Start the server (if :meth:`start` was not called already); leaving stops it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # ---- output ----

    def outputs(self) -> list[str]:
        """Each process's combined stdout and stderr so far (after :meth:`stop`: all of it)."""
        if not self._logs and self._kept is not None:
            return list(self._kept)
        out = []
        for path in self._logs:
            try:
                out.append(path.read_bytes().decode("utf-8", errors="replace"))
            except OSError:
                out.append("")
        return out

    def output(self) -> str:
        """All processes' output so far, one after the other."""
        return "".join(self.outputs())

    def output_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the processes printed."""
        tail: list[str] = []
        for out in self.outputs():
            tail.extend(out.splitlines()[-lines:])
        return "\n".join(tail[-lines:])

    def wait_for_output(self, text: str, timeout: float = 10.0, *, count: int = 1) -> str:
        """The output, once it holds ``text`` ``count`` times or ``timeout`` seconds passed
        (the caller asserts on it)."""
        wait_until(lambda: self.output().count(text) >= count, timeout)
        return self.output()

    # ---- resources (Linux /proc) ----

    def refresh_pids(self) -> list[int]:
        """Re-read the processes' trees (workers may have been respawned)."""
        pids: list[int] = []
        for proc in self._procs:
            if proc.poll() is None:
                pids.extend(procfs.tree(proc.pid))
        self._pids = pids
        return pids

    def children(self) -> list[int]:
        """The living child processes of the first process (a supervisor's workers)."""
        return procfs.children(self.proc.pid)

    @contextlib.contextmanager
    def only(self, worker: int) -> Iterator[None]:
        """While inside, of the first process's children only ``worker`` runs: the others are
        stopped (SIGSTOP) and continued on leaving, so every connection made meanwhile to a
        socket the workers share is accepted by ``worker``.

        Which worker accepts a connection is otherwise the kernel's choice, and an uneven one:
        this lets a test reach a given worker without opening connections until one lands.
        """
        others = [pid for pid in self.children() if pid != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            # A thread of a worker stops when it next runs: until then it may still accept.
            if not wait_until(lambda: all(procfs.stopped(pid) for pid in others), STOP_TIMEOUT):
                raise ServerError(f"{self.name}: workers {others} did not stop")
            yield
        finally:
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @property
    def pids(self) -> list[int]:
        """Every PID of the server's process trees, as last read."""
        return list(self._pids)

    @property
    def log_paths(self) -> list[Path]:
        """The output file of each process, while it runs (kept after :meth:`stop` only with
        ``log_dir``)."""
        return list(self._logs)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's processes."""
        return procfs.cpu_seconds(self.refresh_pids())

    def rss_kib(self) -> int:
        """Resident memory of the server's processes, in KiB."""
        return procfs.rss_kib(self.refresh_pids())

    def open_fds(self) -> int:
        """Open file descriptors of the server's processes."""
        return procfs.open_fds(self.refresh_pids())

    def wait_quiet(self, max_seconds: float = 10.0, idle_share: float = 0.05) -> bool:
        """Wait until the server uses under ``idle_share`` of a core over 200 ms (it has nothing
        left to do: idle, or blocked); whether that happened within ``max_seconds``."""
        deadline = time.monotonic() + max_seconds
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.cpu_seconds()
            # CPU time comes in 10 ms clock ticks: allow one.
            if now - last <= 0.2 * idle_share + 0.011:
                return True
            last = now
        return False
