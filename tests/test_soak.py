"""The soak in miniature: a few hundred clients of the soak's mix, then no descriptor and no
application task may be left.

The mix (``benchmarks/soak/clients.py``, the one ``make soak`` runs for half an hour per
backend; see docs/soak.md) opens and closes connections every way a client can: clean closes,
WebSocket and permessage-deflate messages, slow readers that make the app's ``send()`` wait,
trickled heads and bodies, RSTs mid-handshake, mid-frame, mid-body and mid-stream, keep-alive
HTTP. The soak application (``tests/apps/soak.py``) reports how many of its calls are running,
so the test waits for an event (no call runs, the descriptor count is steady), not for a time.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import clients
from harness import ZcasgiServer

pytestmark = pytest.mark.timeout(300)

#: Clients of the measured mix: 50 of each kind.
CYCLES = 50 * len(clients.QUICK.kinds())
#: Clients at once.
WORKERS = 8
#: Most seconds to wait for the server to become quiet (it takes well under one).
SETTLE_TIMEOUT = 30.0


async def test_no_descriptor_or_task_left_after_the_soak_mix(backend: str) -> None:
    with ZcasgiServer(clients.APP, backend, clients.SERVER_ARGS) as server:
        port = server.require_port()
        # One round of each kind first, so that what the server creates once and keeps
        # (threads' buffers, lazily opened descriptors) is in the baseline.
        warm = clients.cycle_plan(clients.QUICK, 2 * len(clients.QUICK.kinds()))
        await clients.run_mix(
            port, warm, tuning=clients.QUICK, workers=WORKERS, counts=clients.Counts()
        )
        baseline = await clients.wait_settled(port, server.open_fds, timeout=SETTLE_TIMEOUT)
        assert baseline["settled"], baseline

        counts = await clients.run_mix(
            port,
            clients.cycle_plan(clients.QUICK, CYCLES),
            tuning=clients.QUICK,
            workers=WORKERS,
            counts=clients.Counts(),
        )
        assert not counts.errors, counts.first_error
        assert sum(counts.kinds.values()) == CYCLES

        after = await clients.wait_settled(
            port, server.open_fds, timeout=SETTLE_TIMEOUT, fds=baseline["fds"]
        )
        assert after["tasks"] == 0, f"application calls still running: {after}"
        assert after["connection_objects"] == 0, f"connection objects left: {after}"
        assert after["fds"] == baseline["fds"], f"descriptors: {baseline} -> {after}"
        assert after["asyncio_tasks"] == baseline["asyncio_tasks"], (baseline, after)
    assert "Traceback" not in server.output(), server.output_tail(40)
