"""Runs a supervisor with a per-index resource factory and shows what each worker received.

``python -m apps.slot_resources --fd N --workers W``: the factory (called in the supervisor)
makes ``"resource-<index>-made-by-<pid>"`` for each index; each worker logs
``slot index=<i> count=<n> own=<resources[i]> all=<resources>`` once it serves. Test tooling for
``tests/test_workers.py``: the hook the sticky-session inboxes plug into.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

from zcasgi import Config, Server, supervisor

from .workers import app

logger = logging.getLogger("zcasgi")


class LoggingServer(Server):
    """A worker's `Server` that logs the slot it was given."""

    async def _startup(self, sockets: list[socket.socket] | None) -> None:
        await super()._startup(sockets)
        slot = self.slot
        assert slot is not None
        logger.info(
            "slot index=%d count=%d own=%s all=%s",
            slot.index,
            slot.count,
            slot.resources[slot.index],
            ",".join(slot.resources),
        )


def make(index: int) -> Any:
    """The resource of ``index``: a name saying which process made it."""
    return f"resource-{index}-made-by-{os.getpid()}"


def main() -> None:
    """Serve `apps.workers.app` on ``--fd`` with ``--workers`` and the factory above."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--backend", default="mio")
    args = parser.parse_args()
    config = Config(app, fd=args.fd, workers=args.workers, backend=args.backend, access_log=False)
    supervisor.Server = LoggingServer  # type: ignore[misc]
    supervisor.Supervisor(config, resources=make).run()


if __name__ == "__main__":
    main()
