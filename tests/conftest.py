"""Shared helpers and fixtures for the end-to-end tests.

Servers run as real subprocesses (``python -m zcasgi ...``) and are started and stopped by PID;
every wait is time-bounded. Test modules import the helpers with
``from conftest import ServerProcess, free_port`` (``tests/`` is not a package, so pytest puts it
on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"

#: Backends every end-to-end test runs against.
BACKENDS = ["mio", "tokio"]

STARTUP_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for server subprocesses.

    ``PYTHONPATH`` gets the repository root and ``tests/``, so ``examples.chat:app``,
    ``tests.apps.echo:app`` and ``apps.echo:app`` all import.
    """
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(TESTS_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], first_signal: signal.Signals, timeout: float) -> None:
    """Send ``first_signal`` to ``proc``; SIGKILL its PID if still alive after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, first_signal)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class ServerProcess:
    """Run ``python -m zcasgi <app>`` in a subprocess for the duration of a ``with`` block.

    Entering starts the server and waits (at most 15 s) until its port accepts TCP connections;
    if the process exits first or the time runs out, it raises ``RuntimeError`` carrying the
    server's output. Leaving sends SIGINT, waits up to 10 s, then SIGKILLs the PID.

    stdout and stderr go to one temporary file; :meth:`output` returns what has been written so
    far, and still works after the block has ended.

    Example::

        with ServerProcess("apps.echo:app", backend) as server:
            async with websockets.connect(server.url("ws", "/")) as ws:
                ...
        assert "Traceback" not in server.output()
    """

    host = "127.0.0.1"

    def __init__(
        self,
        app: str,
        backend: str = "tokio",
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.app = app
        self.backend = backend
        self.port = port if port is not None else free_port()
        self.command = [
            sys.executable,
            "-m",
            "zcasgi",
            app,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend",
            backend,
            *args,
        ]
        self._env = subprocess_env(env)
        self._startup_timeout = startup_timeout
        self._log_path: Path | None = None
        self._output: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The server's ``Popen`` object (only inside the ``with`` block)."""
        if self._proc is None:
            raise RuntimeError("server process not started")
        return self._proc

    def url(self, scheme: str = "ws", path: str = "/") -> str:
        """URL of ``path`` on this server, e.g. ``url("ws", "/chat")`` or ``url("http")``."""
        if not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{self.host}:{self.port}{path}"

    def output(self) -> str:
        """The server's combined stdout and stderr so far."""
        if self._output is not None:
            return self._output
        if self._log_path is None:
            return ""
        return self._log_path.read_bytes().decode("utf-8", errors="replace")

    def __enter__(self) -> ServerProcess:
        fd, name = tempfile.mkstemp(prefix="zcasgi-server-", suffix=".log")
        self._log_path = Path(name)
        self._output = None
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_listening()
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shutdown()

    def _wait_until_listening(self) -> None:
        proc = self.proc
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"server exited with code {code} before listening on port {self.port}\n"
                    f"command: {' '.join(self.command)}\n--- output ---\n{self.output()}"
                )
            if _port_accepts(self.host, self.port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server not listening on port {self.port} after {self._startup_timeout} s\n"
                    f"command: {' '.join(self.command)}\n--- output ---\n{self.output()}"
                )
            time.sleep(0.05)

    def _shutdown(self) -> None:
        if self._proc is not None:
            _stop(self._proc, signal.SIGINT, SHUTDOWN_TIMEOUT)
        if self._log_path is not None:
            self._output = self.output()
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the transport backend under test."""
    name: str = request.param
    return name


@dataclass(frozen=True)
class RedisServer:
    """A running ``redis-server`` owned by the test session."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port, without persistence, killed at session end.

    ``make test`` installs redis-server (scripts/system-deps.sh). Outside CI a missing
    redis-server skips the test; with ``CI`` set it fails it.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        message = (
            "redis-server is not on PATH; `make test` installs it "
            "(or run `apt-get install -y redis-server`)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                executable,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _redis_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start on port {port}\n--- output ---\n"
                    + log_path.read_text(errors="replace")
                )
            time.sleep(0.05)
        yield RedisServer(port=port, proc=proc)
    finally:
        _stop(proc, signal.SIGTERM, SHUTDOWN_TIMEOUT)
