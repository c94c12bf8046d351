"""Room emits fanned out by zcasgi's Rust Engine.IO: one call per encoded part, no task per
recipient.

python-socketio's ``AsyncManager.emit`` encodes the packet once, then starts one asyncio task
per recipient to queue it. `FastEmit.emit` encodes it once too, collects the recipients'
Engine.IO session ids and hands them to the Rust endpoint with one ``broadcast`` call per part
(a packet with binary attachments has several). Rust frames each part once and queues it to
every recipient, after what was queued before: each client's order is kept.

An emit with a callback (each recipient gets its own ack id), or made while the server is not
attached to zcasgi, is python-socketio's own.

`install_fast_emit` puts `FastEmit` into a manager's class just before ``AsyncManager``, so a
pub/sub manager's own ``emit`` (``AsyncRedisManager`` publishes, then its
``_handle_emit`` calls ``super().emit``) reaches it for the local recipients.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from socketio import packet

__all__ = ["FastEmit", "install_fast_emit"]

logger = logging.getLogger("zcasgi")


class FastEmit(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's ``AsyncManager`` whose emits without a callback are fanned out by
    zcasgi's Rust Engine.IO while the server is attached to it."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emits an event to a client, a room, rooms, or the whole namespace
        (``AsyncManager.emit``)."""
        engine = getattr(getattr(self.server, "eio", None), "_zcasgi_engine", None)
        if engine is None or callback:
            await super().emit(
                event,
                data,
                namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
            return
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *data]
        ).encode()
        eio_sids = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skipped
        ]
        if not eio_sids:
            return
        for part in encoded if isinstance(encoded, list) else [encoded]:
            engine.broadcast(eio_sids, part)


def install_fast_emit(manager: object) -> None:
    """Gives a python-socketio ``AsyncManager`` (or subclass) instance `FastEmit`'s ``emit``.

    Its class becomes a subclass of its class and `FastEmit` (a plain ``AsyncManager``
    becomes a `FastEmit`); any other manager is left as it is.
    """
    if not isinstance(manager, socketio.AsyncManager) or isinstance(manager, FastEmit):
        return
    try:
        manager.__class__ = fast_class(type(manager))
    except TypeError as exc:
        # A subclass with __slots__ of its own has another layout: its emits stay stock.
        logger.info("%s keeps python-socketio's emit: %s", type(manager).__name__, exc)


#: The class `fast_class` made for each manager class.
_FAST_CLASSES: dict[type[Any], type[Any]] = {}


def fast_class(cls: type[Any]) -> type[Any]:
    """``cls`` (an ``AsyncManager`` subclass) with `FastEmit` just before ``AsyncManager``
    in its method resolution order (made once per class)."""
    if cls is socketio.AsyncManager:
        return FastEmit
    fast = _FAST_CLASSES.get(cls)
    if fast is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        fast = _FAST_CLASSES[cls] = type(cls.__name__, (cls, FastEmit), namespace)
        fast.__doc__ = cls.__doc__
    return fast
