"""``workers=N``: one supervising process and N worker processes serving the same sockets.

Theory of operation. The supervisor binds the listening sockets once (`bind_sockets`), builds
the optional per-index resources, and forks N workers. It stays single-threaded and never
starts a Rust runtime or an asyncio loop, so forking it is safe. Each worker runs a `Server`
with its own asyncio loop and backend on the inherited sockets, and its own lifespan. An
application given as an import string is imported by each worker after the fork (as gunicorn
does without ``--preload``), so what a module makes at import is each worker's own: python-
socketio's ``AsyncRedisManager`` gets one host id per process, and ignores messages from its
own id. An application object is inherited as it is, made once for all workers.

Every worker has a slot: a stable index ``0..N-1`` that a replacement inherits, and the
resources the supervisor made for every index before the first fork (`WorkerSlot`).

Listening sockets. On a TCP address each slot has a listening socket of its own, all bound to
the same port with ``SO_REUSEPORT``: the kernel spreads new connections evenly over them by
their addresses, where workers sharing one socket take what they win in a race, and the worker
that wins most fills up first. A worker serves only its slot's socket; the supervisor keeps
them all, so a replacement takes over the queue of the worker it replaces. A slot whose worker
died and is waiting out a back-off has its socket closed meanwhile (new connections then go to
the other workers; the few queued on it are reset, or moved to the others where the
``net.ipv4.tcp_migrate_req`` sysctl is set) and bound anew for its next worker. A Unix socket
or a socket passed with ``fd`` (or to `Supervisor`) has no such groups: every worker shares it.

A worker tells the supervisor it serves by writing one byte to a pipe once its lifespan startup
is done and its backend accepts.

The supervisor waits in one ``select`` on a self-pipe written by its signal handlers and on
those ready pipes, and reaps exited workers with ``waitpid``:

- a worker that exits unasked is replaced at once, or after an exponential back-off if it keeps
  dying before it has served for `STABLE_SECONDS`; the other workers are not touched;
- a worker that exits with code 3 before it was ready (it could not import the application,
  or its lifespan startup failed) stops everything: the supervisor exits 3, as uvicorn does,
  instead of starting it forever;
- SIGINT/SIGTERM: each worker gets one SIGTERM (close 1012 to its WebSockets, drain, lifespan
  shutdown) and the supervisor exits 0 once all have exited; a second signal SIGKILLs them and
  the supervisor exits 1;
- SIGHUP: the workers are replaced one at a time, the new one started and ready before the old
  one is stopped; the listening sockets stay open in the supervisor throughout, so connection
  attempts wait in the backlog meanwhile and none is refused.

Workers ignore SIGINT and SIGHUP (a terminal's Ctrl+C reaches the whole process group; the
supervisor decides) and exit gracefully on SIGTERM, which the kernel also sends them if the
supervisor dies (``PR_SET_PDEATHSIG``): no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .server import Server, configure_logging
from .sockets import bind_sockets, close_sockets, describe, port_of

__all__ = ["STABLE_SECONDS", "STARTUP_FAILED", "Supervisor", "WorkerSlot"]

logger = logging.getLogger("zcasgi")

#: Exit code of a worker, and of the supervisor, when a worker could not load the application
#: or its lifespan startup failed.
STARTUP_FAILED = 3
#: A worker that dies before it has served this long counts towards the respawn back-off.
STABLE_SECONDS = 5.0
#: First respawn delay after a worker died early, doubled for each further early death.
BACKOFF_FIRST = 0.5
#: Longest respawn delay.
BACKOFF_MAX = 30.0
#: Seconds workers get beyond their own shutdown bounds before a graceful stop SIGKILLs them.
STOP_GRACE = 5.0

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class WorkerSlot:
    """One worker's place under the supervisor: its index, and what was made for every index.

    A replacement worker (after a crash or on SIGHUP) gets the same index and the same
    resources, which the supervisor keeps until it exits. During a SIGHUP replacement the old
    and the new worker of an index run side by side for a moment.
    """

    def __init__(self, index: int, count: int, resources: Sequence[Any], ready_fd: int) -> None:
        """A slot for the worker of ``index`` among ``count``, which writes to ``ready_fd``."""
        #: This worker's index, ``0 <= index < count``, stable across replacements.
        self.index = index
        #: How many workers the supervisor runs.
        self.count = count
        #: What the supervisor's resource factory made for each index (empty without one);
        #: ``resources[index]`` is this worker's own.
        self.resources = tuple(resources)
        self._ready_fd: int | None = ready_fd

    def __repr__(self) -> str:
        return f"WorkerSlot(index={self.index}, count={self.count})"

    @property
    def tag(self) -> str:
        """How this worker names itself in its log lines."""
        return f"worker {self.index} pid {os.getpid()}"

    def notify_ready(self) -> None:
        """Tells the supervisor that this worker serves (once; later calls do nothing)."""
        fd, self._ready_fd = self._ready_fd, None
        if fd is not None:
            try:
                os.write(fd, b"r")
            finally:
                os.close(fd)


@dataclass(eq=False)
class _Worker:
    """One worker process as the supervisor sees it."""

    index: int
    pid: int
    generation: int
    started: float
    ready_fd: int | None
    ready: bool = False
    #: SIGTERM was sent: its exit is expected.
    stopping: bool = False


@dataclass(eq=False)
class _Slot:
    """The supervisor's side of one index: its worker, a SIGHUP replacement, the back-off."""

    index: int
    current: _Worker | None = None
    #: A replacement started by SIGHUP, not ready yet.
    successor: _Worker | None = None
    #: Early deaths in a row.
    failures: int = 0
    respawn_at: float = 0.0
    retiring: list[_Worker] = field(default_factory=list)
    #: The listening sockets this index's workers serve (None while closed for a back-off).
    sockets: list[socket.socket] | None = None


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _die_with_parent(parent: int) -> None:
    """Asks the kernel for SIGTERM when ``parent`` exits (Linux); exits if it is gone already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _rekey_socketio_managers() -> None:
    """Gives this worker's python-socketio pub/sub managers (``AsyncRedisManager`` and the
    like) a host id of their own.

    A manager created before the fork has the same ``host_id`` in every worker, and a manager
    drops the messages that carry its own ``host_id`` as its own: the workers of one supervisor
    would never deliver each other's broadcasts.
    """
    kinds = tuple(
        kind
        for module, name in (
            ("socketio.async_pubsub_manager", "AsyncPubSubManager"),
            ("socketio.pubsub_manager", "PubSubManager"),
        )
        if isinstance(kind := getattr(sys.modules.get(module), name, None), type)
    )
    if not kinds:
        return
    for obj in gc.get_objects():
        # type(), not isinstance(): the heap holds weak proxies too, and asking a dead one for
        # its class raises ReferenceError (a live one's target is in the heap itself).
        if issubclass(type(obj), kinds):
            setattr(obj, "host_id", uuid.uuid4().hex)  # noqa: B010 (typed as a plain object)


class Supervisor:
    """Runs ``config.workers`` worker processes on sockets it binds once (see the module doc).

    Args:
        config: The server configuration; ``workers`` says how many.
        sockets: Listening sockets to serve instead of binding ``config``'s.
        resources: Called once per index ``0..workers-1`` before the first worker starts; its
            results reach every worker as `WorkerSlot.resources` and outlive respawns.
    """

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket] | None = None,
        resources: Callable[[int], Any] | None = None,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.resources: tuple[Any, ...] = ()
        self._factory = resources
        self._slots = [_Slot(i) for i in range(config.workers)]
        self._workers: dict[int, _Worker] = {}
        self._generation = 0
        self._reloading = False
        self._signals: list[int] = []
        self._stopping = False
        self._kill_at = 0.0
        self._exit_code = 0
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[int, int] | None = None
        self._pid = os.getpid()
        #: Each slot binds its own ``SO_REUSEPORT`` socket (a TCP address) on this port.
        self._port: int | None = None

    # ---- the supervisor's loop ----

    def run(self) -> None:
        """Serves until SIGINT/SIGTERM, then stops every worker.

        Raises:
            SystemExit: with code 3 if a worker's lifespan startup failed, 1 if a second signal
                forced the stop (or the sockets could not be bound).
            RuntimeError: if called outside the main thread (signals need it).
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("workers > 1 must be started from the main thread")
        self._pid = os.getpid()
        configure_logging(
            self.config.log_level,
            f"supervisor pid {self._pid}",
            self.config.log_config,
            self.config.use_colors,
        )
        self._bind()
        if self._factory is not None:
            self.resources = tuple(self._factory(i) for i in range(self.config.workers))
        previous = self._install_signals()
        try:
            self._log_serving()
            for slot in self._slots:
                slot.current = self._spawn(slot)
            while not (self._stopping and not self._workers):
                self._step()
        finally:
            self._restore_signals(previous)
            close_sockets(self._listening())
        logger.info("Supervisor finished")
        if self._exit_code:
            raise SystemExit(self._exit_code)

    def _bind(self) -> None:
        """Binds the listening sockets: one ``SO_REUSEPORT`` socket per slot for a TCP address,
        else one set every worker shares (see the module doc)."""
        config = self.config
        if self.sockets is not None or config.fd is not None or config.uds is not None:
            self.sockets = self.sockets if self.sockets is not None else bind_sockets(config)
            for slot in self._slots:
                slot.sockets = self.sockets
            return
        try:
            for slot in self._slots:
                slot.sockets = bind_sockets(config, reuse_port=True, port=self._port)
                self._port = port_of(slot.sockets)
        except SystemExit:
            close_sockets(self._listening())
            raise

    def _listening(self) -> list[socket.socket]:
        """Every listening socket the supervisor holds, each once."""
        seen: dict[int, socket.socket] = {}
        for slot in self._slots:
            for sock in slot.sockets or ():
                seen.setdefault(id(sock), sock)
        return list(seen.values())

    def _log_serving(self) -> None:
        config = self.config
        per_worker = self._port is not None
        first = self._slots[0].sockets or []
        for sock in first:
            logger.info(
                "Supervisor (pid %d) serving %s with %d workers (backend %s%s)",
                self._pid,
                describe(sock, "https" if config.ssl_certfile else "http"),
                config.workers,
                config.backend,
                ", a listening socket per worker" if per_worker else "",
            )

    def _step(self) -> None:
        """Waits for a signal, a ready worker or a deadline, then acts on what happened."""
        assert self._selector is not None and self._wake is not None
        for key, _ in self._selector.select(self._timeout()):
            if key.fd == self._wake[0]:
                with contextlib.suppress(BlockingIOError):
                    while os.read(key.fd, 512):
                        pass
            else:
                self._read_ready(key.data)
        signals, self._signals = self._signals, []
        for signum in signals:
            self._on_signal(signum)
        self._reap()
        self._reconcile()

    def _timeout(self) -> float | None:
        """Seconds until the next deadline: a respawn, or the kill of a stop (None: no deadline).

        Deadlines already passed were acted on by `_reconcile` just before.
        """
        now = time.monotonic()
        deadlines = [self._kill_at] if self._stopping else [s.respawn_at for s in self._slots]
        due = [d for d in deadlines if now < d < float("inf")]
        return min(due) - now if due else None

    # ---- signals ----

    def _install_signals(self) -> dict[int, Any]:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake = (wake_r, wake_w)
        self._selector = selectors.DefaultSelector()
        self._selector.register(wake_r, selectors.EVENT_READ)
        previous: dict[int, Any] = {}
        for signum in (*_STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD):
            previous[signum] = signal.signal(signum, self._record_signal)
        previous[-1] = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if self._selector is not None:
            self._selector.close()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)

    def _record_signal(self, signum: int, frame: object) -> None:
        # Runs between two bytecodes of the loop: only note it, the loop acts on it.
        self._signals.append(signum)

    def _on_signal(self, signum: int) -> None:
        if signum in _STOP_SIGNALS:
            if self._stopping:
                self._force_stop(signal.Signals(signum).name)
            else:
                logger.info("Received %s: stopping the workers", signal.Signals(signum).name)
                self._begin_stop(0)
        elif signum == signal.SIGHUP and not self._stopping:
            self._generation += 1
            self._reloading = True
            logger.info("Received SIGHUP: replacing the workers one at a time")

    # ---- workers ----

    def _spawn(self, slot: _Slot) -> _Worker:
        """Forks the worker of ``slot``'s index (its listening socket bound already)."""
        ready_r, ready_w = os.pipe()
        # Never a blocking read: a process the worker started may hold the other end open.
        os.set_blocking(ready_r, False)
        # Output buffered now would be written twice: by the supervisor and by the worker.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            os._exit(self._worker_main(slot.index, ready_w))
        os.close(ready_w)
        worker = _Worker(slot.index, pid, self._generation, time.monotonic(), ready_r)
        self._workers[pid] = worker
        assert self._selector is not None
        self._selector.register(ready_r, selectors.EVENT_READ, worker)
        logger.info("Started worker %d (pid %d)", slot.index, pid)
        return worker

    def _worker_main(self, index: int, ready_fd: int) -> int:
        """The worker process's life; returns its exit code (it never returns to the caller)."""
        code = 1
        try:
            self._become_worker(index)
            _rekey_socketio_managers()
            slot = WorkerSlot(index, self.config.workers, self.resources, ready_fd)
            server = Server(self.config, slot=slot)

            def stop_when_started(signum: int, frame: object) -> None:
                # SIGTERM before the server's loop handles it (until its lifespan startup is
                # done): it stops as soon as it has started, and its lifespan shutdown runs.
                if not server.should_exit:
                    server.request_exit()

            signal.signal(signal.SIGTERM, stop_when_started)
            server.run(self._slots[index].sockets)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("Worker %d failed", index)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        return code

    def _become_worker(self, index: int) -> None:
        """Drops what is the supervisor's in a freshly forked worker of slot ``index``."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent(self._pid)
        if self._selector is not None:
            for key in list(self._selector.get_map().values()):
                os.close(key.fd)
            self._selector.close()
        if self._wake is not None:
            os.close(self._wake[1])
        # Another slot's socket held here would outlive that slot's closing for a back-off.
        own = {id(sock) for sock in self._slots[index].sockets or ()}
        for sock in self._listening():
            if id(sock) not in own:
                sock.close()

    def _read_ready(self, worker: _Worker) -> None:
        """Takes ``worker``'s ready byte, or the end of its pipe."""
        fd = worker.ready_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        assert self._selector is not None
        self._selector.unregister(fd)
        os.close(fd)
        worker.ready_fd = None
        if not data:
            return
        worker.ready = True
        slot = self._slots[worker.index]
        if worker is slot.successor:
            old, slot.current, slot.successor = slot.current, worker, None
            if old is not None:
                logger.info(
                    "Worker %d: pid %d serves, stopping pid %d", worker.index, worker.pid, old.pid
                )
                self._terminate(old)
                slot.retiring.append(old)

    def _terminate(self, worker: _Worker) -> None:
        worker.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)

    def _reap(self) -> None:
        """Collects every exited worker (only workers: other children are not the supervisor's)."""
        for worker in list(self._workers.values()):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 255 << 8
            if pid == worker.pid:
                del self._workers[pid]
                self._read_ready(worker)
                self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        slot = self._slots[worker.index]
        if worker is slot.current:
            slot.current = None
        elif worker is slot.successor:
            slot.successor = None
        elif worker in slot.retiring:
            slot.retiring.remove(worker)
        if worker.ready_fd is not None:
            assert self._selector is not None
            self._selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None
        if worker.stopping or self._stopping:
            logger.info(
                "Worker %d (pid %d) exited (%s)", worker.index, worker.pid, _exit_status(code)
            )
            return
        if code == STARTUP_FAILED and not worker.ready:
            logger.error(
                "Worker %d (pid %d): application startup failed; stopping", worker.index, worker.pid
            )
            self._begin_stop(STARTUP_FAILED)
            return
        now = time.monotonic()
        if worker.ready and now - worker.started >= STABLE_SECONDS:
            slot.failures = 0
        else:
            slot.failures += 1
        delay = 0.0 if not slot.failures else BACKOFF_FIRST * 2 ** (slot.failures - 1)
        delay = min(delay, BACKOFF_MAX)
        slot.respawn_at = now + delay
        if delay and self._port is not None and slot.current is None and slot.successor is None:
            # Nobody would accept what the kernel queues on this slot's socket meanwhile.
            close_sockets(slot.sockets or [])
            slot.sockets = None
        logger.warning(
            "Worker %d (pid %d) died (%s); starting a new one in %.1f s",
            worker.index,
            worker.pid,
            _exit_status(code),
            delay,
        )

    def _reconcile(self) -> None:
        """Starts what is missing: a dead worker's replacement, the next SIGHUP replacement."""
        if self._stopping:
            if time.monotonic() >= self._kill_at:
                self._force_stop("the shutdown deadline")
            return
        now = time.monotonic()
        for slot in self._slots:
            due = slot.current is None and slot.successor is None and now >= slot.respawn_at
            if due and self._rebind(slot):
                slot.current = self._spawn(slot)
        if not self._reloading or any(slot.successor for slot in self._slots):
            return
        for slot in self._slots:
            old = slot.current
            if old is not None and old.generation < self._generation:
                if old.ready and now >= slot.respawn_at:
                    slot.successor = self._spawn(slot)
                return
        if all(slot.current is not None and slot.current.ready for slot in self._slots):
            self._reloading = False
            logger.info("Replaced all %d workers", len(self._slots))

    def _rebind(self, slot: _Slot) -> bool:
        """Binds ``slot``'s socket again if a back-off closed it; False (retried in a second)
        if the port cannot be bound now."""
        if slot.sockets is not None:
            return True
        try:
            slot.sockets = bind_sockets(self.config, reuse_port=True, port=self._port)
        except SystemExit:
            slot.respawn_at = time.monotonic() + 1.0
            return False
        return True

    # ---- stopping ----

    def _begin_stop(self, code: int) -> None:
        self._stopping = True
        self._reloading = False
        self._exit_code = code
        config = self.config
        bound = config.timeout_graceful_shutdown + config.close_timeout + STOP_GRACE
        self._kill_at = time.monotonic() + bound
        for worker in self._workers.values():
            if not worker.stopping:
                self._terminate(worker)

    def _force_stop(self, reason: str) -> None:
        logger.warning("Stopping now (%s): killing %d worker(s)", reason, len(self._workers))
        self._exit_code = self._exit_code or 1
        self._kill_at = float("inf")
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
