"""uvicorn as a server process: ``python -m uvicorn APP --fd N`` on a socket bound here."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from .env import server_env
from .process import STARTUP_TIMEOUT, Command, LogLine, ServerProcess
from .sockets import listen

#: What uvicorn prints (logger ``uvicorn.error``, level info) once it serves.
UVICORN_READY_LINE = "Uvicorn running on"


class UvicornServer(ServerProcess):
    """``python -m uvicorn APP --fd N ARGS`` for the duration of a ``with``: the same
    application under another ASGI server (python-engineio serves a `zcasgi.socketio` app
    there).

    Starting binds a listening socket on 127.0.0.1, passes it to uvicorn and waits for its
    ``Uvicorn running on`` line; leaving stops it by PID (see :class:`ServerProcess`).
    """

    def __init__(
        self,
        app: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        python: str = sys.executable,
    ) -> None:
        """Prepare the server (nothing is bound or started before the ``with`` block)."""
        super().__init__(
            "uvicorn",
            ready=LogLine(UVICORN_READY_LINE),
            env=server_env(env),
            startup_timeout=startup_timeout,
        )
        self.app = app
        self.args = list(args)
        self.python = python

    def _launch(self) -> Sequence[Command]:
        sock = listen()
        self.port = sock.getsockname()[1]
        argv = [self.python, "-m", "uvicorn", self.app, "--fd", str(sock.fileno())]
        argv += ["--log-level", "info", "--no-access-log", *self.args]
        return [Command(argv, [sock])]
