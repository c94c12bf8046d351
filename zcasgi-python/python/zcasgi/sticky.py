"""Sticky Engine.IO sessions across the workers of ``workers > 1``.

Theory of operation. With several workers on one listening socket, the requests of one
Engine.IO session (a long-polling client's ``GET``s and ``POST``s, then its WebSocket upgrade)
reach arbitrary workers, and only the worker that created the session knows it. So:

- each worker tags the session ids python-engineio creates with its index
  (`tag_sessions`, a class-level wrapper of ``BaseServer.generate_id`` installed in worker
  processes only: a single-process server and the application stay unchanged); the tag format
  is the Rust core's (``_zcasgi.tag_session_id``), so Python and Rust cannot disagree;
- the supervisor makes one inbox per worker index before it forks (`make_inbox`, its
  per-index resource hook), kept across respawns;
- every worker's backend routes each request head (``EIO=`` and ``sid=`` in its query): a
  request for another worker's session is handed, with the connection and every byte read, to
  that worker's inbox, and that worker serves it (`core_worker` gives the backend its inboxes).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _zcasgi

if TYPE_CHECKING:
    from .supervisor import WorkerSlot

__all__ = ["Inbox", "core_worker", "make_inbox", "tag_sessions"]

logger = logging.getLogger("zcasgi")

#: Marks python-engineio's ``generate_id`` once `tag_sessions` wrapped it.
_WRAPPED = "__zcasgi_worker__"


class Inbox(NamedTuple):
    """One worker index's inbox: the ends of a ``SOCK_SEQPACKET`` socket pair.

    The worker of the index receives on ``receiving``; every worker sends on ``sending``.
    """

    receiving: socket.socket
    sending: socket.socket


def make_inbox(index: int) -> Inbox:
    """The inbox of worker ``index`` (the supervisor's per-index resource hook).

    Args:
        index: The worker index (each index gets an inbox of its own).

    Returns:
        Both ends, which the supervisor keeps until it exits, so that a connection handed to
        a worker being replaced waits in the inbox for its successor.
    """
    del index
    receiving, sending = _zcasgi.inbox_pair()
    return Inbox(socket.socket(fileno=receiving), socket.socket(fileno=sending))


def core_worker(slot: WorkerSlot) -> tuple[int, int, int, list[int]] | None:
    """What ``_zcasgi.Core(worker=...)`` takes for the worker of ``slot``.

    Returns:
        ``(index, count, inbox_fd, peer_fds)``, or None when the supervisor made no inboxes
        (then sessions are not routed).
    """
    inboxes: Sequence[Any] = slot.resources
    if len(inboxes) != slot.count or not all(isinstance(r, Inbox) for r in inboxes):
        return None
    own = inboxes[slot.index].receiving.fileno()
    return (slot.index, slot.count, own, [inbox.sending.fileno() for inbox in inboxes])


def tag_sessions(index: int) -> None:
    """Makes python-engineio (4.x) tag the session ids it creates in this process with ``index``.

    Does nothing if python-engineio is not installed; a second call changes the index.
    """
    if importlib.util.find_spec("engineio") is None:
        return
    try:
        from engineio.base_server import BaseServer
    except ImportError:
        logger.warning(
            "python-engineio has no engineio.base_server (a version before 4): "
            "Engine.IO sessions are not sticky across workers"
        )
        return
    generate: Callable[[Any], str] = BaseServer.generate_id
    original: Callable[[Any], str] = getattr(generate, _WRAPPED, generate)

    def generate_id(self: Any) -> str:
        return _zcasgi.tag_session_id(original(self), index)

    setattr(generate_id, _WRAPPED, original)
    generate_id.__doc__ = original.__doc__
    BaseServer.generate_id = generate_id
