"""End-to-end tests of the mio backend with no I/O thread (``io_threads=0``): its reactor runs
inside the asyncio loop.

The tests are the other modules' own, collected here a second time with this module's
``backend`` fixture, which serves them with ``ZCASGI_IO_THREADS=0`` in the server's
environment: WebSocket echo, HTTP, lifespan, shutdown with open connections, TLS, Engine.IO,
Socket.IO and worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sio_helpers import serving

# The tests below, and the fixtures they use, collected again in this module.
from test_engineio_endpoint import (  # noqa: F401
    eio,
    test_a_broadcast_reaches_every_session_once,
    test_a_silent_client_is_closed_by_its_ping_timeout,
    test_messages_both_ways_and_pings_on_each_transport,
    test_the_server_closes_a_session,
)
from test_http import (  # noqa: F401
    server,
    test_get_and_keep_alive_reuse,
    test_large_streamed_response_to_slow_reader,
    test_long_poll_is_not_timed_out_and_disconnect_is_seen,
    test_stalled_body_is_timed_out,
    test_thousand_keep_alive_clients,
)
from test_socketio import (  # noqa: F401
    FAST,
    STOCK,
    test_connect_join_message_ack_binary_disconnect,
    test_default_and_polling_transports,
)
from test_tls import (  # noqa: F401
    test_https_get_and_post,
    test_stalled_handshake_is_closed_after_the_handshake_timeout,
    test_wss_echo_and_scope,
    tls_server,
)
from test_websocket import (  # noqa: F401
    echo,
    test_app_exception_closes_1011_and_server_keeps_serving,
    test_echo_text_and_bytes_all_sizes,
    test_lifespan_state_and_shutdown,
    test_send_and_receive_from_different_tasks,
    test_shutdown_closes_websockets_with_1012,
    test_shutdown_disconnects_app_whose_client_ignores_the_close,
    test_slow_reader_bounds_memory_and_blocks_send,
    test_thousand_connections_hundred_messages_each,
)
from test_workers import (  # noqa: F401
    test_sigterm_closes_every_worker_gracefully,
    test_workers_serve_http_and_websocket,
)

from harness import ServerProcess, ZcasgiServer


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """The mio backend, with ``io_threads=0`` for every server the test starts."""
    monkeypatch.setenv("ZCASGI_IO_THREADS", "0")
    return "mio"


@pytest.fixture(params=[STOCK, FAST], ids=["stock", "fast"])
def chat(request: pytest.FixtureRequest, backend: str) -> Iterator[ServerProcess]:
    """The chat app, with python-socketio's Engine.IO and with zcasgi.socketio's."""
    with serving(backend, request.param) as process:
        yield process


def test_the_reactor_runs_on_the_loop_thread(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as zcasgi:
        assert "(backend mio, I/O on the event loop's thread;" in zcasgi.output()
        (pid,) = zcasgi.refresh_pids()
        names = [
            (task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()
        ]
        assert not [name for name in names if name.startswith("zcasgi-mio")], names
