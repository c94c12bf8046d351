"""A python-socketio application that tells which worker process serves each event.

The ``whoami`` event is acknowledged with the serving process's PID and the data it was sent,
so a test sees that every event of a session reaches the same worker. The application is stock
python-socketio: zcasgi's sticky sessions need no change to it.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

# A short ping interval: a polling client's disconnect waits for its pending long-poll, which
# python-engineio answers at the next ping (25 s by default, with any server).
sio = socketio.AsyncServer(async_mode="asgi", ping_interval=1)
app = socketio.ASGIApp(sio)


@sio.event
async def whoami(sid: str, data: Any) -> dict[str, Any]:
    """Acknowledge with the PID of the worker that serves this session, and ``data``."""
    return {"pid": os.getpid(), "sid": sid, "data": data}
