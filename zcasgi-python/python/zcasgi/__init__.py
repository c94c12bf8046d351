"""zcasgi: a WebSocket-first ASGI server whose network and protocol work runs in Rust.

import zcasgi
zcasgi.serve(app, host="127.0.0.1", port=8000, backend="mio")
"""

from ._zcasgi import (
    BACKENDS,
    ClientDisconnected,
    HandshakeError,
    ProtocolError,
    ZcasgiError,
    __version__,
)
from .config import Config
from .server import Server, serve

__all__ = [
    "BACKENDS",
    "ClientDisconnected",
    "Config",
    "HandshakeError",
    "ProtocolError",
    "Server",
    "ZcasgiError",
    "__version__",
    "serve",
]
