"""Fixtures for the end-to-end tests.

Servers run as real subprocesses through the harness shared with the benchmarks
(``harness/``, on ``sys.path`` through pyproject's ``pythonpath``): test modules start zcasgi
with ``harness.ZcasgiServer``, which binds the listening socket itself, passes it with ``--fd``
and waits for the server's ready line; every wait is time-bounded and every process is stopped
by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import Answers, Command, ServerProcess
from harness.pki import Pki

#: Backends every end-to-end test runs against.
BACKENDS = ["mio", "tokio"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the transport backend under test."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and certificates for TLS servers (``harness.pki``)."""
    return Pki.make(tmp_path_factory.mktemp("tls"))


@dataclass(frozen=True)
class RedisServer:
    """A running ``redis-server`` owned by the test session, on a Unix socket."""

    socket_path: Path
    process: ServerProcess

    @property
    def url(self) -> str:
        """``unix://`` URL of database 0 (redis-py's ``Redis.from_url`` takes it, so
        python-socketio's ``AsyncRedisManager`` does)."""
        return f"unix://{self.socket_path}?db=0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a Unix socket in a temporary directory (no TCP port), without
    persistence, stopped at session end.

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
    socket_path = workdir / "redis.sock"
    argv = [
        executable,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    server = ServerProcess(
        "redis-server",
        [Command(argv)],
        ready=Answers(b"PING\r\n", socket_path),
        cwd=workdir,
        stop_signal=signal.SIGTERM,
    )
    with server:
        yield RedisServer(socket_path=socket_path, process=server)
