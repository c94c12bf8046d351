"""The chat of ``examples/chat.py`` on several worker processes, rooms shared through Redis.

Run it from the repository root, with a Redis server at hand::

    ZCASGI_CHAT_REDIS=redis://127.0.0.1:6379/0 zcasgi examples.chat_redis:app --workers 4

or ``zcasgi.serve("examples.chat_redis:app", workers=4)``. Give the application as an import
string: each worker then imports it and has its own python-socketio server, whose
``socketio.AsyncRedisManager`` (with a host id of its own) publishes each emit to Redis and
delivers what the others publish, so a message to a room reaches its members on every worker,
and on every machine that uses the same Redis. The events are those of ``examples/chat.py``, plus:

``where`` -> {"pid": int}
    The process id of the worker that serves this client.

Default clients (long-polling, then upgrade), polling-only and websocket-only clients all
work: zcasgi keeps each Engine.IO session on the worker that created it (docs/deployment.md).
"""

from __future__ import annotations

import os

from examples import chat

if not isinstance(chat.sio.manager, chat.socketio.AsyncRedisManager):
    raise RuntimeError(
        "examples.chat_redis needs ZCASGI_CHAT_REDIS=redis://HOST:PORT/DB (a Redis server "
        "shared by the workers)"
    )

sio = chat.sio
app = chat.app


async def where(sid: str, data: object = None) -> dict[str, int]:
    """Which worker process serves this client."""
    return {"pid": os.getpid()}


sio.on("where", where)
