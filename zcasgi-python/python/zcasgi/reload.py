"""``reload``: serve from a process that is replaced whenever a watched file changes.

For development, as uvicorn's ``--reload``. The `Reloader` (this process) binds the listening
sockets once and watches the ``reload_dirs`` with watchfiles; the server runs in a child process
started with multiprocessing's *spawn* method, so that it imports the application afresh. On a
change the child gets SIGTERM (its graceful shutdown, SIGKILL after ``timeout_graceful_shutdown``
and a little more), and a new one serves the same sockets: connections that arrive meanwhile wait
in the backlog. A child that fails (an edit with a syntax error) is replaced at the next change.
SIGINT or SIGTERM stop the child, then the reloader.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from types import FrameType
from typing import Any

import watchfiles

from .config import Config
from .server import Server, configure_logging
from .sockets import bind_sockets, close_sockets

__all__ = ["DEFAULT_EXCLUDES", "DEFAULT_INCLUDES", "FileFilter", "Reloader"]

logger = logging.getLogger("zcasgi")

#: Files watched whatever ``reload_includes`` adds.
DEFAULT_INCLUDES = ("*.py",)
#: Files ignored unless ``reload_includes`` names the same pattern: hidden files, compiled
#: Python, editor swap and backup files.
DEFAULT_EXCLUDES = (".*", "*.py[cod]", "*.sw.*", "~*")
#: Seconds a stopping server gets beyond ``timeout_graceful_shutdown`` before SIGKILL.
_STOP_GRACE = 5.0


class FileFilter(watchfiles.DefaultFilter):
    """Which changes restart the server: a file matching an include glob and no exclude glob
    (on its name or its path), outside the directories watchfiles ignores (``.git``,
    ``__pycache__``, ``.venv``, ``node_modules``, ...).

    Args:
        includes: Globs watched besides `DEFAULT_INCLUDES`.
        excludes: Globs ignored besides `DEFAULT_EXCLUDES` (a default that ``includes`` names
            again is dropped).
    """

    def __init__(self, includes: Sequence[str] = (), excludes: Sequence[str] = ()) -> None:
        super().__init__()
        self.includes = [*DEFAULT_INCLUDES, *includes]
        self.excludes = [*(e for e in DEFAULT_EXCLUDES if e not in includes), *excludes]

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        file = Path(path)

        def matches(pattern: str) -> bool:
            return fnmatch(file.name, pattern) or file.match(pattern)

        return any(map(matches, self.includes)) and not any(map(matches, self.excludes))


def _serve(config: Config, sockets: list[socket.socket]) -> None:
    """The server process: serves ``sockets`` (the reloader's) until SIGTERM."""
    Server(config).run(sockets)


class Reloader:
    """Runs the server of ``config`` in a child process, replaced when a watched file changes.

    Args:
        config: The configuration (``reload`` set; `Config` checked the rest).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dirs = [os.path.abspath(d) for d in config.reload_dirs] or [os.getcwd()]
        self.filter = FileFilter(config.reload_includes, config.reload_excludes)
        self._stop = threading.Event()
        self._child: Any = None
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> None:
        """Serves until SIGINT/SIGTERM, restarting the server on each change.

        Raises:
            RuntimeError: if called outside the main thread (signals need it).
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("reload must be started from the main thread")
        config = self.config
        configure_logging(config.log_level, "", config.log_config, config.use_colors)
        sockets = bind_sockets(config)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            logger.info("Will watch for changes in these directories: %s", self.dirs)
            logger.info("Started reloader process [%d] using WatchFiles", os.getpid())
            self._start(sockets)
            for changes in watchfiles.watch(
                *self.dirs,
                watch_filter=self.filter,
                stop_event=self._stop,
                raise_interrupt=False,
            ):
                shown = sorted({os.path.relpath(path) for _, path in changes})
                logger.warning("WatchFiles detected changes in %s. Reloading...", ", ".join(shown))
                self._stop_child()
                self._start(sockets)
        finally:
            self._stop_child()
            close_sockets(sockets)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            logger.info("Stopping reloader process [%d]", os.getpid())

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _start(self, sockets: list[socket.socket]) -> None:
        child = self._context.Process(target=_serve, args=(self.config, sockets), daemon=False)
        child.start()
        self._child = child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.is_alive():
            child.terminate()
            child.join(self.config.timeout_graceful_shutdown + _STOP_GRACE)
            if child.is_alive():
                logger.warning("Server process [%d] did not stop in time: killed", child.pid)
                child.kill()
        child.join()
