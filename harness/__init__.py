"""One harness for running servers as real processes, shared by the end-to-end tests (``tests/``)
and the benchmark suite (``benchmarks/``).

It binds listening sockets on 127.0.0.1 and hands them to the server by descriptor (no port is
chosen, released and bound again), starts the server's processes with their output in a file,
waits for an event that says the server serves (a line it prints, or an answered request) with
a deadline, and stops every process it started by PID. Nothing here sleeps in place of an event:
the waits poll a condition until a deadline.

Repository tooling, not part of the ``zcasgi`` package: pytest finds it through the
``pythonpath`` setting in ``pyproject.toml``, ``python -m benchmarks`` from the repository root.
"""

from __future__ import annotations

from .cpus import cpu_pinning, pinned
from .env import REPO_ROOT, TESTS_DIR, server_env
from .process import (
    Answers,
    Command,
    LogLine,
    Readiness,
    ServerError,
    ServerProcess,
    wait_until,
    wait_until_async,
)
from .sockets import HOST, free_port, listen, listeners
from .uvicorn_server import UVICORN_READY_LINE, UvicornServer
from .zcasgi_server import READY_LINE, ZcasgiServer, zcasgi_argv

__all__ = [
    "HOST",
    "READY_LINE",
    "REPO_ROOT",
    "TESTS_DIR",
    "UVICORN_READY_LINE",
    "Answers",
    "Command",
    "LogLine",
    "Readiness",
    "ServerError",
    "ServerProcess",
    "UvicornServer",
    "ZcasgiServer",
    "cpu_pinning",
    "free_port",
    "listen",
    "listeners",
    "pinned",
    "server_env",
    "wait_until",
    "wait_until_async",
    "zcasgi_argv",
]
