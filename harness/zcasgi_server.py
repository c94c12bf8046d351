"""zcasgi as a server process: ``python -m zcasgi APP --fd N`` on a socket bound here."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .cpus import pinned
from .env import server_env
from .process import STARTUP_TIMEOUT, Command, LogLine, ServerProcess
from .sockets import HOST, listen

#: What zcasgi prints (logger ``zcasgi``, level info) once it serves a listening socket.
READY_LINE = "zcasgi running on"


def zcasgi_argv(
    app: str,
    fd: int,
    backend: str,
    args: Sequence[str] = (),
    *,
    python: str = sys.executable,
) -> list[str]:
    """The command line serving ``app`` on the inherited listening socket ``fd``."""
    return [python, "-m", "zcasgi", app, "--fd", str(fd), "--backend", backend, *args]


def _check_log_level(args: Sequence[str]) -> None:
    for i, arg in enumerate(args):
        level = args[i + 1] if arg == "--log-level" and i + 1 < len(args) else None
        if arg.startswith("--log-level="):
            level = arg.partition("=")[2]
        if level is not None and level.lower() in ("warning", "error", "critical"):
            raise ValueError(
                f"--log-level {level} hides {READY_LINE!r}, the line that says the server "
                "serves; pass --no-access-log for quieter output"
            )


class ZcasgiServer(ServerProcess):
    """``python -m zcasgi APP --fd N --backend BACKEND ARGS`` for the duration of a ``with``.

    Starting binds a listening socket on 127.0.0.1 (a port the kernel picks), passes it to the
    server, and waits (at most ``startup_timeout`` seconds) for the server's
    ``zcasgi running on`` line (with ``workers``: one per worker); if the process exits first or
    the time runs out, it raises :class:`harness.ServerError` carrying the server's output.
    Leaving sends SIGINT, waits up to 10 s, then SIGKILLs the PID and any worker left.

    Example::

        with ZcasgiServer("apps.echo:app", backend) as server:
            async with websockets.connect(server.url("ws", "/")) as ws:
                ...
        assert "Traceback" not in server.output()
    """

    def __init__(
        self,
        app: str,
        backend: str = "tokio",
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        cpu: int | None = None,
        log_dir: Path | None = None,
        workers: int = 1,
        python: str = sys.executable,
        own_port: bool = False,
    ) -> None:
        """Prepare the server (nothing is bound or started before the ``with`` block).

        ``cpu`` pins the server to that CPU (taskset); ``log_dir`` keeps its output file there.
        ``workers`` > 1 runs a supervisor (``--workers``) whose worker processes are its
        :meth:`children`. ``python`` is the interpreter that runs it (another virtualenv's).
        ``own_port`` has zcasgi bind ``--host``/``--port`` itself, as a user runs it (with
        workers: a ``SO_REUSEPORT`` socket per worker) instead of serving one socket bound here;
        the port is held meanwhile by a bound, not listening ``SO_REUSEPORT`` socket, which
        keeps other processes off it and takes no connections.

        Raises:
            ValueError: If ``args`` set a log level that hides the ready line.
        """
        _check_log_level(args)
        if workers > 1:
            args = [*args, "--workers", str(workers)]
        super().__init__(
            f"zcasgi-{backend}",
            ready=LogLine(READY_LINE, workers),
            env=server_env(env),
            startup_timeout=startup_timeout,
            log_dir=log_dir,
        )
        self.app = app
        self.backend = backend
        self.args = list(args)
        self.cpu = cpu
        self.python = python
        self.own_port = own_port
        self.command: list[str] = []
        self._hold: socket.socket | None = None

    def _launch(self) -> Sequence[Command]:
        if self.own_port:
            if self._hold is None:
                self._hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                self._hold.bind((HOST, 0))
            self.port = self._hold.getsockname()[1]
            argv = [self.python, "-m", "zcasgi", self.app, "--backend", self.backend]
            argv += ["--host", HOST, "--port", str(self.port), *self.args]
            self.command = pinned(argv, self.cpu)
            return [Command(self.command, [])]
        sock = listen()
        self.port = sock.getsockname()[1]
        self.command = pinned(
            zcasgi_argv(self.app, sock.fileno(), self.backend, self.args, python=self.python),
            self.cpu,
        )
        return [Command(self.command, [sock])]

    def stop(self) -> None:
        """Stops the server (see :meth:`ServerProcess.stop`) and lets go of its port."""
        try:
            super().stop()
        finally:
            if self._hold is not None:
                self._hold.close()
                self._hold = None
