"""``--workers``: a supervisor and its worker processes, on both backends.

The application (``tests/apps/workers.py``) answers with the PID of the worker that serves it,
so a test sees which worker each connection landed on; the workers are the supervisor's child
processes. Most tests pass one listening socket with ``--fd``, which every worker shares: which
one accepts a connection is up to the kernel, and uneven, so a test that needs a given worker
stops the others meanwhile (`ServerProcess.only`). On ``--host``/``--port`` (``own_port=True``)
each worker has a socket of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness import (
    HOST,
    REPO_ROOT,
    Command,
    LogLine,
    ServerProcess,
    ZcasgiServer,
    listen,
    server_env,
    wait_until,
    zcasgi_argv,
)

pytestmark = pytest.mark.timeout(120)

WORKERS = 4
#: Requests the spread test makes at most before two workers have answered.
ATTEMPTS = 400


def _server(backend: str, app: str = "apps.workers:app") -> ZcasgiServer:
    return ZcasgiServer(app, backend, ["--no-access-log"], workers=WORKERS)


async def _pid_over_http(server: ZcasgiServer) -> int:
    """The PID of the worker that answers one request on a new connection."""
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return int(body)


async def _open(server: ZcasgiServer) -> tuple[int, ClientConnection]:
    ws = await connect(server.url())
    return int(await asyncio.wait_for(ws.recv(), 10)), ws


@contextlib.asynccontextmanager
async def _one_websocket_per_worker(
    server: ZcasgiServer, wanted: int = WORKERS
) -> AsyncIterator[dict[int, ClientConnection]]:
    """One WebSocket on each of ``wanted`` workers, each opened while the other workers are
    stopped (`ServerProcess.only`); yields them by worker PID."""
    held: dict[int, ClientConnection] = {}
    try:
        for pid in server.children()[:wanted]:
            with server.only(pid):
                served_by, ws = await _open(server)
            held[served_by] = ws
            assert served_by == pid
        yield held
    finally:
        for ws in held.values():
            await ws.close()


async def _echoes(ws: ClientConnection, text: str) -> bool:
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10) == text


def _gone(pids: list[int]) -> bool:
    return not any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_workers_serve_http_and_websocket(backend: str) -> None:
    with _server(backend) as server:
        workers = server.children()
        assert len(workers) == WORKERS
        async with _one_websocket_per_worker(server) as held:
            for pid, ws in held.items():
                assert await _echoes(ws, f"hello {pid}")
        # Left to the kernel, new connections land on more than one worker.
        answered: set[int] = set()
        for _ in range(ATTEMPTS):
            answered.add(await _pid_over_http(server))
            if len(answered) > 1:
                break
        assert len(answered) > 1 and answered <= set(workers), answered
        output = server.output()
    for index in range(WORKERS):
        assert f"Started worker {index} (pid " in output
        assert f"[worker {index} pid " in output
    assert "Traceback" not in output, output


async def test_killed_worker_is_replaced_and_the_others_keep_serving(backend: str) -> None:
    with _server(backend) as server:
        before = server.children()
        async with _one_websocket_per_worker(server, 2) as held:
            victim, survivor = list(held)
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(held[victim].recv(), 10)
            replaced = wait_until(lambda: len(set(server.children()) - set(before)) == 1, 15)
            assert replaced, server.output()
            [newcomer] = set(server.children()) - set(before)
            server.wait_for_output(f"pid {newcomer}] zcasgi running on", 15)
            with server.only(newcomer):
                assert await _pid_over_http(server) == newcomer
            assert await _echoes(held[survivor], "still here")
        output = server.output()
    assert f"(pid {victim}) died (killed by SIGKILL)" in output, output


async def test_sigterm_closes_every_worker_gracefully(backend: str) -> None:
    server = _server(backend)
    with server:
        workers = server.children()
        async with _one_websocket_per_worker(server) as held:
            tree = server.refresh_pids()
            server.proc.send_signal(signal.SIGTERM)
            for ws in held.values():
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 15)
                assert ws.close_code == 1012
            assert server.proc.wait(20) == 0
            assert wait_until(lambda: _gone(tree), 10), tree
    output = server.output()
    for pid in workers:
        assert f"lifespan shutdown pid={pid}" in output, output
        assert f"disconnect pid={pid} code=1012" in output, output
    assert "Traceback" not in output, output


def test_lifespan_startup_failure_stops_the_supervisor_with_3(backend: str) -> None:
    sock = listen()
    argv = zcasgi_argv("apps.lifespan_fail:app", sock.fileno(), backend, ["--workers", "2"])
    try:
        result = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=server_env(),
            pass_fds=[sock.fileno()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        sock.close()
    assert result.returncode == 3, result.stderr
    assert "application startup failed; stopping" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_need_the_main_thread() -> None:
    code = (
        "import threading, zcasgi\n"
        "async def app(scope, receive, send): pass\n"
        "errors = []\n"
        "def run():\n"
        "    try:\n"
        "        zcasgi.serve(app, port=0, workers=2)\n"
        "    except RuntimeError as exc:\n"
        "        errors.append(str(exc))\n"
        "t = threading.Thread(target=run); t.start(); t.join()\n"
        "print(errors)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "must be started from the main thread" in result.stdout, result


async def test_sighup_replaces_every_worker_and_refuses_no_connection(backend: str) -> None:
    with _server(backend) as server:
        before = set(server.children())
        refused: list[BaseException] = []
        answered: list[int] = []
        done = asyncio.Event()

        async def client() -> None:
            while not done.is_set():
                try:
                    answered.append(await _pid_over_http(server))
                except OSError as exc:
                    refused.append(exc)

        loop = asyncio.create_task(client())
        try:
            server.proc.send_signal(signal.SIGHUP)
            replaced = await asyncio.to_thread(
                server.wait_for_output, f"Replaced all {WORKERS} workers", 60
            )
            assert f"Replaced all {WORKERS} workers" in replaced, replaced
            assert await asyncio.to_thread(wait_until, lambda: _gone(list(before)), 20)
            after = set(server.children())
            assert len(after) == WORKERS and not after & before, (before, after)
            served = len(answered)
            await asyncio.to_thread(wait_until, lambda: len(answered) > served + 2 * WORKERS, 20)
        finally:
            done.set()
            await loop
        assert not refused, refused
        assert after & set(answered), "no request reached a new worker"
        assert server.alive()
    assert "Traceback" not in server.output()


def test_a_worker_dying_at_start_is_restarted_with_backoff(backend: str) -> None:
    """Workers that die before they serve are started again after 0.5 s, 1 s, 2 s...; the
    supervisor keeps going (only exit code 3 stops it) and stops cleanly."""
    sock = listen()
    args = ["--workers", "2", "--no-access-log"]
    argv = zcasgi_argv("apps.workers:crash_app", sock.fileno(), backend, args)
    lines: list[str] = []
    with subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=server_env(),
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        sock.close()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "starting a new one in 2.0 s" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            lines.extend(proc.stdout)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    output = "".join(lines)
    for delay in ("0.5", "1.0", "2.0"):
        assert f"died (exit code 1); starting a new one in {delay} s" in output, output
    assert "Supervisor finished" in output


async def test_workers_stop_when_the_supervisor_is_killed(backend: str) -> None:
    with _server(backend) as server:
        workers = server.children()
        async with _one_websocket_per_worker(server, 1) as held:
            server.proc.kill()
            for ws in held.values():
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 15)
                assert ws.close_code == 1012
        assert await asyncio.to_thread(wait_until, lambda: _gone(workers), 20), workers
        output = server.output()
    for pid in workers:
        assert f"lifespan shutdown pid={pid}" in output, output


async def test_a_second_signal_kills_the_workers(backend: str) -> None:
    args = ["--no-access-log", "--timeout-graceful-shutdown", "60"]
    server = ZcasgiServer("apps.workers:stuck_app", backend, args, workers=2)
    with server:
        tree = server.refresh_pids()
        async with _one_websocket_per_worker(server, 1):
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for_output("Shutting down", 10)
            server.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.proc.wait, 20) == 1
        assert wait_until(lambda: _gone(tree), 10), tree
    assert "Stopping now (SIGTERM): killing " in server.output()


def test_slot_resources_are_made_once_and_kept_across_respawns(backend: str) -> None:
    """The hook for per-worker resources: made by the supervisor for each index before the
    first worker starts, given whole to every worker with its index, and given again, the same,
    to the worker that replaces one."""
    sock = listen()
    fd = sock.fileno()
    argv = [sys.executable, "-m", "apps.slot_resources", "--fd", str(fd), "--workers", "2"]
    server = ServerProcess(
        "slot-resources",
        [Command([*argv, "--backend", backend], [sock])],
        ready=LogLine("slot index=", 2),
        port=sock.getsockname()[1],
    )
    with server:
        supervisor = server.proc.pid
        every = f"resource-0-made-by-{supervisor},resource-1-made-by-{supervisor}"
        for index in (0, 1):
            own = f"resource-{index}-made-by-{supervisor}"
            line = f"slot index={index} count=2 own={own} all={every}"
            assert line in server.output(), server.output()
        victim = server.children()[0]
        os.kill(victim, signal.SIGKILL)
        output = server.wait_for_output("slot index=", 15, count=3)
        assert output.count(f"all={every}") == 3, output
    assert "Traceback" not in server.output()


def test_an_app_objects_socketio_managers_get_a_host_id_per_worker() -> None:
    """An application object passed to ``serve(app, workers=N)`` was made before the fork: its
    python-socketio pub/sub managers would share one ``host_id`` (and drop each other's
    broadcasts); each worker gives them a new one."""
    import socketio

    from zcasgi.supervisor import _rekey_socketio_managers

    managers = [
        socketio.AsyncRedisManager("redis://127.0.0.1:1/0"),
        socketio.RedisManager("redis://127.0.0.1:1/0"),
    ]
    before = [m.host_id for m in managers]
    _rekey_socketio_managers()
    after = [m.host_id for m in managers]
    assert all(a != b for a, b in zip(after, before)), (before, after)
    assert after[0] != after[1]


def test_rekeying_passes_over_dead_weak_proxies_in_the_heap() -> None:
    """The heap walk meets weak proxies whose target is gone (the full test run leaves some);
    asking one for its class raises ReferenceError, which must not stop a worker starting."""
    import weakref

    import socketio

    from zcasgi.supervisor import _rekey_socketio_managers

    class Gone:
        pass

    target = Gone()
    dead = [weakref.proxy(target)]
    del target
    manager = socketio.AsyncRedisManager("redis://127.0.0.1:1/0")
    before = manager.host_id
    _rekey_socketio_managers()
    assert manager.host_id != before
    assert len(dead) == 1


def _newcomers(server: ZcasgiServer, known: set[int]) -> set[int]:
    """The workers not in ``known``, once there is one (at most 15 s)."""
    wait_until(lambda: bool(set(server.children()) - known), 15)
    return set(server.children()) - known


def _own_port_server(backend: str, workers: int = WORKERS) -> ZcasgiServer:
    args = ["--no-access-log"]
    return ZcasgiServer("apps.workers:app", backend, args, workers=workers, own_port=True)


def _listeners_on(port: int) -> int:
    """How many TCP sockets listen on ``port`` (``/proc/net/tcp``, state 0A)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "0A")


async def test_each_worker_has_its_own_listening_socket_and_an_even_share(backend: str) -> None:
    """On ``--host``/``--port`` every worker listens on a ``SO_REUSEPORT`` socket of its own,
    and the kernel spreads new connections over them by address: each of 4 workers gets a
    share of 200 connections from one client address (binomial: 50 ± 6 expected)."""
    with _own_port_server(backend) as server:
        assert _listeners_on(server.require_port()) == WORKERS
        counts: dict[int, int] = {}
        for _ in range(200):
            pid = await _pid_over_http(server)
            counts[pid] = counts.get(pid, 0) + 1
        assert set(counts) == set(server.children()), counts
        assert min(counts.values()) >= 20, counts
        output = server.output()
    assert "a listening socket per worker" in output, output
    assert "Traceback" not in output, output


async def test_a_worker_in_back_off_leaves_new_connections_to_the_others(backend: str) -> None:
    """A worker killed again and again waits longer and longer before it is replaced; meanwhile
    its listening socket is closed, so no connection waits for it: every one is served by the
    other worker at once."""
    with _own_port_server(backend, 2) as server:
        victim = server.children()[0]
        delay = 0.0
        for _ in range(8):
            others = set(server.children()) - {victim}
            os.kill(victim, signal.SIGKILL)
            died = f"(pid {victim}) died (killed by SIGKILL); starting a new one in "
            output = server.wait_for_output(died, 15)
            delay = float(output.split(died)[1].split(" s")[0])
            if delay >= 4.0:
                break
            newcomers = await asyncio.to_thread(_newcomers, server, others)
            assert len(newcomers) == 1, output
            [victim] = newcomers
            server.wait_for_output(f"pid {victim}] zcasgi running on", 15)
        assert delay >= 4.0, server.output()
        [survivor] = server.children()
        for _ in range(20):
            assert await asyncio.wait_for(_pid_over_http(server), 2.0) == survivor
        assert _listeners_on(server.require_port()) in (1, 2)
    assert "Traceback" not in server.output()
