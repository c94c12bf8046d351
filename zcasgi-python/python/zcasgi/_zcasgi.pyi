"""Type stubs for ``zcasgi._zcasgi``, the compiled part of zcasgi.

The compiled items carry their docstrings here (Google style). Sections follow the Rust source
files that define them; append new sections at the end of the file.
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, Literal, TypeAlias, TypedDict, final, type_check_only

from typing_extensions import Never, Self

from .config import Config

# The compiled module defines __all__ (PyO3 adds every name it registers): list new names here too.
__all__ = [
    "BACKENDS",
    "AsgiConn",
    "ClientDisconnected",
    "Connection",
    "Core",
    "EngineIO",
    "Frame",
    "FrameDecoder",
    "HandshakeError",
    "ProtocolError",
    "Ready",
    "SendWait",
    "Utf8Validator",
    "Waiter",
    "ZcasgiError",
    "__version__",
    "accept_key",
    "apply_mask",
    "eio_decode_packet",
    "eio_decode_payload",
    "eio_encode_packet",
    "eio_encode_payload",
    "encode_frame",
    "inbox_pair",
    "parse_handshake",
    "server_defaults",
    "server_limits",
    "tag_session_id",
    "validate_config",
    "validate_utf8_stream",
]

__version__: str
"""Version of the zcasgi package (the Rust crate version)."""

# --- exceptions (zcasgi-python/src/errors.rs) --------------------------------------------------

class ZcasgiError(Exception):
    """Base class of the errors zcasgi raises."""

class ProtocolError(ZcasgiError):
    """The peer broke RFC 6455 or a configured limit.

    This is the only error ``zcasgi.codec`` raises for bad input bytes.

    Attributes:
        close_code: The close code the connection is failed with: 1002 (protocol error),
            1007 (invalid UTF-8) or 1009 (message too big); 1011 for a keepalive timeout.
    """

    close_code: int

class HandshakeError(ZcasgiError):
    """A malformed or unsupported opening handshake.

    Attributes:
        status: The HTTP status to reject the request with (400, 414, 426 or 431).
    """

    status: int

class ClientDisconnected(OSError):
    """The client has gone: the message could not be sent (ASGI websocket spec 2.4)."""

# --- codec (zcasgi-python/src/codec.rs) --------------------------------------------------------

def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """Encode one WebSocket frame (RFC 6455 §5.2).

    The header uses the minimal length encoding (7, 16 or 64 bits). No protocol rule is checked
    beyond the ranges below, so invalid frames (reserved opcodes, long control frames, RSV bits)
    can be built on purpose.

    Args:
        opcode: The opcode, 0 to 15.
        payload: The payload, unmasked.
        fin: The FIN bit.
        rsv: RSV1, RSV2 and RSV3 as the low three bits (RSV1 = 0b100), 0 to 7.
        mask: A 4-byte masking key; when given, the mask bit is set and the payload is masked
            (RFC 6455 §5.3).

    Returns:
        The header followed by the (masked) payload.

    Raises:
        ValueError: If ``opcode`` or ``rsv`` is out of range or ``mask`` is not 4 bytes long.
    """

def apply_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with a masking key (RFC 6455 §5.3); masking is its own inverse.

    Args:
        data: The bytes to (un)mask.
        mask: The 4-byte masking key.
        offset: Position of ``data`` within the payload, so a payload can be unmasked in pieces:
            byte ``i`` of ``data`` is XORed with ``mask[(i + offset) % 4]``.

    Returns:
        The (un)masked bytes.

    Raises:
        ValueError: If ``mask`` is not 4 bytes long or ``offset`` is negative.
    """

def validate_utf8_stream(chunks: Iterable[bytes]) -> bool:
    """Validate the concatenation of ``chunks`` as UTF-8, one chunk at a time.

    Uses the incremental validator the connection applies to text messages, so code points may
    be split anywhere between chunks.

    Args:
        chunks: Pieces of the text, in order.

    Returns:
        Whether the whole text is valid UTF-8 (an unfinished code point at the end is invalid).
    """

def accept_key(key: bytes) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    Args:
        key: The client's ``Sec-WebSocket-Key`` header value, as sent.

    Returns:
        The base64-encoded SHA-1 of the key and the RFC 6455 GUID.
    """

@type_check_only
class _HandshakeRequest(TypedDict):
    method: str
    http_version: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    subprotocols: list[str]
    extensions: list[str]
    accept_key: str
    head_length: int

def parse_handshake(data: bytes) -> _HandshakeRequest | None:
    """Parse and validate a WebSocket opening handshake request (RFC 6455 §4.2.1).

    Args:
        data: The bytes received so far; only the request head is read.

    Returns:
        ``None`` while the head (up to the blank line) is incomplete. Otherwise a dict with
        ``method``, ``http_version`` (``"1.1"``), ``path`` (percent-decoded), ``raw_path`` and
        ``query_string`` (bytes, as sent), ``headers`` (``(name, value)`` byte pairs in order,
        names lower-cased), ``subprotocols`` and ``extensions`` (offers in order),
        ``accept_key`` (the ``Sec-WebSocket-Accept`` to answer with) and ``head_length`` (bytes
        of ``data`` the head takes).

    Raises:
        HandshakeError: If the request is malformed, too large or not a valid WebSocket upgrade;
            ``status`` is the HTTP status to reject it with.
    """

@final
class Frame:
    """One decoded frame; the payload is already unmasked.

    Frames compare equal when all their fields are equal, and are hashable.
    """

    def __new__(
        cls,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = False,
    ) -> Self:
        """Build a frame, e.g. the one a test expects to decode.

        Raises:
            ValueError: If ``opcode`` is not in 0..15 or ``rsv`` not in 0..7.
        """

    @property
    def fin(self) -> bool:
        """The FIN bit: this is the final fragment of a message."""

    @property
    def rsv(self) -> int:
        """RSV1, RSV2 and RSV3 as the low three bits (RSV1 = 0b100)."""

    @property
    def opcode(self) -> int:
        """The opcode, 0 to 15 (see ``zcasgi.codec.Opcode``)."""

    @property
    def masked(self) -> bool:
        """Whether the frame was masked on the wire."""

    @property
    def payload(self) -> bytes:
        """The payload, unmasked."""

    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class FrameDecoder:
    """Streaming frame decoder: bytes in, frames out.

    A pure header/payload decoder. It checks only the rules of the header bytes themselves
    (a 64-bit length with its top bit set) and the optional size limit. It knows nothing about
    message state (fragmentation, control frame rules, masking direction, UTF-8): that is
    ``Connection``'s job.

    An error stops the decoder. Frames completed before the bad header are not lost: the call
    that meets the error returns them, and the error is raised by the next call (``feed(b"")``
    surfaces it) and by every call after it.
    """

    def __new__(cls, max_size: int | None = None) -> Self:
        """Create a decoder.

        Args:
            max_size: Largest payload accepted, in bytes; ``None`` for no limit.

        Raises:
            ValueError: If ``max_size`` is negative.
        """

    def feed(self, data: bytes) -> list[Frame]:
        """Feed received bytes and return the frames they complete.

        Args:
            data: The next bytes of the stream, in any split.

        Returns:
            The frames completed by ``data``, in order (possibly none).

        Raises:
            ProtocolError: ``close_code`` 1002 for a 64-bit length with its most significant bit
                set (RFC 6455 §5.2), 1009 for a payload longer than ``max_size``; raised as soon
                as the header is complete, before the payload arrives.
        """

    @property
    def buffered(self) -> int:
        """Bytes held for the frame not yet complete."""

_Event: TypeAlias = (
    tuple[Literal["text"], str]
    | tuple[Literal["binary"], bytes]
    | tuple[Literal["ping"], bytes]
    | tuple[Literal["pong"], bytes]
    | tuple[Literal["closed"], int, str]
)

@final
class Connection:
    """A server-side WebSocket connection after the handshake, sans I/O.

    The connection zcasgi runs for every client (RFC 6455 §5-§7): fragment reassembly,
    incremental UTF-8 validation, control frames between fragments, automatic pongs, the
    closing handshake, keepalive pings and size limits. It has four verbs: feed bytes
    (``receive_data``), feed end of stream (``receive_eof``), take events (``events``) and take
    bytes to send (``data_to_send``). Time is an input too (``on_tick``); nothing reads a clock.

    Example:
        >>> conn = Connection()
        >>> conn.receive_data(encode_frame(1, b"hi", mask=b"abcd"))
        >>> conn.events()
        [('text', 'hi')]
        >>> conn.send_text("hello")
        >>> conn.data_to_send()
        b'\\x81\\x05hello'
    """

    def __new__(
        cls,
        max_message_size: int = 16_777_216,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        close_timeout: float = 10.0,
    ) -> Self:
        """Create a connection in the open state.

        Args:
            max_message_size: Largest message accepted, in bytes; a larger one fails the
                connection with 1009 as soon as its header says so.
            ping_interval: Seconds between keepalive pings; ``None`` disables them.
            ping_timeout: Seconds to wait for the pong to a keepalive ping before failing the
                connection with 1011; ``None`` waits forever.
            close_timeout: Seconds to wait for the peer's close frame after sending ours.

        Raises:
            ValueError: If a size is negative or a time is negative, not finite, or (for
                ``ping_interval``) zero.
        """

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the client, in any split.

        Args:
            data: The next bytes of the stream.

        Raises:
            ProtocolError: If the client broke RFC 6455 or a limit. The connection is then
                closed: the close frame (with ``close_code``) is in ``data_to_send()`` and the
                ``("closed", close_code, "")`` event in ``events()``.
        """

    def receive_eof(self) -> None:
        """Feed the end of the client's stream (a ``("closed", 1006, "")`` event if still open)."""

    def events(self) -> list[_Event]:
        """Take the events received since the last call.

        Returns:
            Events in order: ``("text", str)``, ``("binary", bytes)``, ``("ping", bytes)`` (already
            answered with a pong), ``("pong", bytes)``, and ``("closed", code, reason)`` once
            (1005: the close frame had no code, 1006: no close frame at all, or the code the
            connection was failed with).
        """

    def send_text(self, data: str) -> None:
        """Queue a text message.

        Raises:
            ClientDisconnected: If the closing handshake has started.
        """

    def send_binary(self, data: bytes) -> None:
        """Queue a binary message.

        Raises:
            ClientDisconnected: If the closing handshake has started.
        """

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping.

        Raises:
            ValueError: If ``data`` is longer than 125 bytes (RFC 6455 §5.5).
            ClientDisconnected: If the closing handshake has started.
        """

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; a second call is a no-op.

        Args:
            code: The close code; 1000-1003, 1007-1014 or 3000-4999 (RFC 6455 §7.4).
            reason: The close reason, at most 123 bytes of UTF-8.

        Raises:
            ValueError: If the code may not be sent or the reason is too long.
        """

    def data_to_send(self) -> bytes:
        """Take the bytes to write to the client (frames are never masked by a server)."""

    def on_tick(self, now: float) -> float | None:
        """Advance the timers (keepalive ping, pong timeout, close timeout) to ``now``.

        Args:
            now: The current time in seconds on any monotonic timeline, e.g.
                ``time.monotonic()``; use the same timeline for every call.

        Returns:
            When to call again, on the same timeline, or ``None`` if no timer is running.

        Raises:
            ValueError: If ``now`` is not finite.
        """

    @property
    def is_open(self) -> bool:
        """Whether messages may still be sent (no close frame sent or received yet)."""

    @property
    def is_closed(self) -> bool:
        """Whether the connection is closed: write ``data_to_send()``, then close the socket."""

@final
class Utf8Validator:
    """Incremental UTF-8 validator that carries state across chunks (RFC 6455 §8.1).

    It fails on the first byte that cannot be part of valid UTF-8, before the rest of the text
    arrives, as a connection does with a text message.
    """

    def __new__(cls) -> Self: ...
    def feed(self, data: bytes) -> bool:
        """Validate the next chunk.

        Returns:
            Whether the text so far is still a valid prefix of UTF-8 (once ``False``, always
            ``False``).
        """

    def finish(self) -> bool:
        """Whether the whole text fed so far is valid UTF-8 (not ending inside a code point)."""

# ---- Engine.IO v4 packets and payloads (zcasgi-python/src/codec.rs) ----

def eio_decode_packet(frame: str | bytes) -> tuple[int, str | bytes]:
    """The Engine.IO packet one WebSocket frame carries.

    Args:
        frame: A text frame's text (type digit, then the data), or a binary frame's bytes (a
            binary message, type 4).

    Returns:
        ``(type, data)``: the type 0 (open) to 6 (noop), and the text, or the bytes of a binary
        message.

    Raises:
        ValueError: If the text is empty or does not start with a digit 0 to 6.
    """

def eio_encode_packet(kind: int, data: str | bytes) -> str | bytes:
    """The WebSocket frame payload of an Engine.IO packet: ``str`` (a text frame) for text data,
    ``bytes`` (a binary frame) for a binary message.

    Raises:
        ValueError: If ``kind`` is not 0 to 6, or binary data is given for a type other than 4.
    """

def eio_decode_payload(
    body: bytes, *, max_bytes: int = 1_000_000, max_packets: int = 16
) -> list[tuple[int, str | bytes]]:
    """The packets of a long-polling request body: packets separated by ``\\x1e``, a binary
    message written ``b`` and base64 (an empty body holds none).

    Raises:
        ValueError: If the body is longer than ``max_bytes``, holds more than ``max_packets``
            packets, is not UTF-8, or a packet does not decode (empty, an unknown type, bad
            base64).
    """

def eio_encode_payload(packets: Sequence[tuple[int, str | bytes]]) -> str:
    """A long-polling response body of ``packets``, each ``(type, data)``.

    Raises:
        ValueError: As `eio_encode_packet`.
    """

# ---- server and bridge (zcasgi-python/src/server.rs, bridge/) ----

BACKENDS: list[str]
"""Names of the transport backends, in the order they are listed to users."""

@final
class Core:
    """A transport backend serving on listening sockets and feeding one asyncio loop.

    Used by `zcasgi.Server`; not meant to be used directly.
    """

    def __new__(
        cls,
        config: Config,
        fds: list[int],
        *,
        on_connect: Callable[[AsgiConn, dict[str, Any]], object],
        event_loop: Any,
        logger: Any,
        access_log: Any | None,
        state: dict[str, Any] | None,
        worker: tuple[int, int, int, list[int]] | None = None,
        resolve_client: Callable[[dict[str, Any]], object] | None = None,
        engineio: tuple[str | None, dict[str, Any], Any] | None = None,
    ) -> Self:
        """Start the backend ``config.backend`` on the listening sockets ``fds``.

        Args:
            config: The options; the core's are read by attribute name, as
                ``validate_config`` reads them, plus ``backend`` and ``root_path``.
            fds: Listening sockets, duplicated (not taken).
            on_connect: Called with each new connection and its ASGI scope.
            event_loop: The asyncio loop the connections' awaitables belong to.
            logger: Where records from the I/O threads are logged; they are made only at its
                effective level (read now) and above.
            access_log: Where each request's outcome is logged (uvicorn's access record), the
                requests the server answers itself included, or ``None``.
            state: The lifespan state copied into each scope, or ``None``.
            worker: In a worker process of a server with several workers,
                ``(index, count, inbox_fd, peer_fds)``: this worker's index ``0..count``, the
                receiving end of its inbox, and the sending end of every worker's inbox by
                index (all from ``inbox_pair``, duplicated, not taken). Requests for the
                Engine.IO sessions of another worker are handed to it through its inbox.
            resolve_client: Applies ``proxy_headers`` to a scope in place; called on each
                scope whose request carries ``X-Forwarded-For`` or ``X-Forwarded-Proto``
                (without them it would change nothing), before the application or the access
                record sees it.
            engineio: ``(path, options, handler)`` to serve the application's Engine.IO
                endpoint in Rust (see `EngineIO`): requests whose path, with a trailing slash,
                starts with ``path`` (every request if ``None``) go to it instead of the
                application.

        Raises:
            ValueError: For an unknown backend, an option out of range, or a ``worker``
                whose index is not below its count, whose peers are not one per worker, or
                whose descriptors are not inboxes.
            TypeError: For an option of the wrong type.
            OSError: If the backend cannot start, or a ``worker`` descriptor is not open.
        """

    def fileno(self) -> int:
        """The descriptor to register with ``loop.add_reader(fd, core.drain)``: the event
        queue's eventfd, or with ``io_threads=0`` the backend's own (its epoll descriptor)."""

    def drain(self) -> None:
        """Dispatch every queued event: connections, messages, disconnects, wake-ups, logs.

        With ``io_threads=0``, first run a turn of the backend's loop (on this thread), and
        after, arm one loop timer at its next deadline. A failure to dispatch an event is
        logged (``zcasgi``) and the other events are dispatched all the same.

        Raises:
            BaseException: Only one that is not an `Exception` (`KeyboardInterrupt`).
        """

    def _tick(self) -> None:
        """Run a turn of the backend's loop at its deadline (``io_threads=0``; the loop
        timer's callback)."""

    def shutdown(self) -> None:
        """Stop accepting and close every connection (WebSockets get the shutdown code)."""

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every connection and I/O thread to finish."""

    @property
    def backend(self) -> str:
        """The backend's name."""

    @property
    def connection_count(self) -> int:
        """Connections the backend holds open."""

    @property
    def finished(self) -> bool:
        """Whether the backend has ended every thread and connection (after ``shutdown``: no
        event will come any more)."""

    @property
    def tracked(self) -> int:
        """Connections the application side still tracks."""

    @property
    def engineio(self) -> EngineIO | None:
        """The Engine.IO endpoint served in Rust, if the application has one."""

@final
class EngineIO:
    """A server's Engine.IO v4 endpoint, its sessions served in Rust.

    Made by `Core` from ``engineio=(path, options, handler)``. The handler (the
    ``zcasgi.socketio`` adapter) is called on the loop thread with
    ``_zcasgi_connect(sid, scope) -> bool | None`` (True accepts, False refuses, None: answered
    later with `connected`), ``_zcasgi_message(sid, data) -> bool`` (False: still handling it,
    `done` follows) and ``_zcasgi_disconnect(sid, reason)``. ``options`` keys: ping_interval,
    ping_grace, ping_timeout (seconds), max_http_buffer_size, max_queued_bytes, allow_upgrades,
    transports, cors_allowed_origins, cors_credentials, cookie (python-engineio's meanings).
    """

    def send(self, sid: str, data: str | bytes) -> bool:
        """Send a text or binary message to session ``sid``; False if it is not open."""

    def broadcast(self, sids: Iterable[str], data: str | bytes) -> int:
        """Send one message to every open session of ``sids``, framed once; how many got it."""

    def disconnect(self, sid: str) -> bool:
        """Close session ``sid`` (no disconnect call comes back); False if it was not open."""

    def transport(self, sid: str) -> str:
        """``"polling"`` or ``"websocket"``.

        Raises:
            KeyError: For an unknown session.
        """

    def done(self, sid: str) -> None:
        """The handler finished the oldest message of ``sid`` it answered False for."""

    def connected(self, sid: str, accepted: bool) -> None:
        """The handler's answer to a connect it answered None for."""

    def is_open(self, sid: str) -> bool:
        """Whether session ``sid`` is open."""

    def __len__(self) -> int:
        """Number of sessions."""

    def _tick(self) -> None:
        """Run the heartbeats and events due (``call_soon`` after a call that made events)."""

    def _timer(self) -> None:
        """The loop timer's callback: the timer is spent; runs `_tick`."""

@final
class AsgiConn:
    """One WebSocket connection or one HTTP request as the application sees it.

    Its ``receive`` and ``send`` follow the ASGI protocol of the scope it was created with
    (``websocket`` or ``http``).
    """

    def receive(self) -> Self:
        """ASGI ``receive()``: the connection is its own awaitable (nothing is allocated).

        ``websocket``: ``websocket.connect``, one ``websocket.receive`` per message, then
        ``websocket.disconnect``. ``http``: ``http.request`` pieces, then ``http.disconnect`` once
        the client has gone or the response is complete.
        """

    def __call__(self, *args: Never, **kwargs: Never) -> Self:
        """``receive()``: the connection is the ``receive`` callable the application gets (it
        takes no arguments)."""

    def __await__(self) -> Generator[Any, None, dict[str, Any]]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """ASGI ``send(message)``.

        Raises:
            ClientDisconnected: If the WebSocket client has gone (sending to an HTTP client that
                left is a no-op).
            RuntimeError: For a message the connection's state does not allow.
            ValueError: For an unsendable close code, an invalid status or a malformed message.
            TypeError: For payloads of the wrong type.
        """

    def abort(self) -> None:
        """The application raised: a WebSocket closes with 1011, or is answered 500 before the
        accept; an HTTP request is answered 500 if no response started, else its connection is
        closed."""

    def finish(self) -> bool:
        """The application returned: close a WebSocket it left open normally.

        Returns:
            Whether returning was an error: a WebSocket neither accepted nor closed, or an
            incomplete HTTP response (answered with 500, or the connection closed).
        """

    @property
    def disconnected(self) -> bool:
        """Whether the connection is gone on the server's side (the client left, or it closed)."""

    @property
    def id(self) -> int:
        """The connection id."""

    @property
    def queued_bytes(self) -> int:
        """Bytes sent and not yet written to the socket."""

@final
class Ready:
    """An awaitable that is already complete."""

    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...

@final
class SendWait:
    """The awaitable ``send()`` returns above the high-water mark."""

    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...

@final
class Waiter:
    """What a task parks on in ``receive()`` (or in a ``send()`` that waits): a future-like
    object that ``asyncio.Task`` accepts, not tracked by the cyclic garbage collector."""

    _asyncio_future_blocking: bool
    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the waiter belongs to."""

    def add_done_callback(
        self, callback: Callable[[Waiter], object], *, context: contextvars.Context | None = None
    ) -> None:
        """Call ``callback(waiter)`` through the loop once the waiter is done."""

    def remove_done_callback(self, callback: Callable[[Waiter], object]) -> int:
        """Forget every registration of ``callback``; returns how many there were."""

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the waiter; ``False`` if it was done already."""

    def done(self) -> bool:
        """Whether the waiter is done (woken or cancelled)."""

    def cancelled(self) -> bool:
        """Whether the waiter was cancelled."""

    def result(self) -> None:
        """``None`` once woken.

        Raises:
            asyncio.CancelledError: Once cancelled.
            asyncio.InvalidStateError: Before it is done.
        """

    def exception(self) -> None:
        """``None`` once woken; raises as ``result`` does."""

# ---- configuration (zcasgi-python/src/config.rs) ----

def server_defaults() -> dict[str, int | float | bool | list[tuple[str, str]] | None]:
    """The default of every option the Rust core takes (``ServerConfig::default()``).

    Returns:
        Option name to default: ints for counts, floats for seconds, bools for switches, a
        list of ``(name, value)`` pairs for ``headers``, ``None`` for off.
    """

def server_limits() -> dict[str, tuple[int, int] | tuple[float, float]]:
    """The documented range of every numeric option the Rust core takes.

    Returns:
        Option name to ``(minimum, maximum)``, both included: ints for counts, floats for
        seconds.
    """

def validate_config(config: Config) -> None:
    """Check the options the Rust core takes as the server will when it starts.

    Reads each option by attribute name, then checks the documented ranges, that
    ``shutdown_close_code`` may be sent (RFC 6455 §7.4) and that ``ws_write_low_water`` does not
    exceed ``ws_write_high_water``.

    Raises:
        ValueError: Naming the first option out of range or unusable.
        TypeError: Naming an option of the wrong type.
    """

# ---- sticky Engine.IO sessions (zcasgi-python/src/workers.rs) ----

def tag_session_id(sid: str, worker: int) -> str:
    """Tag an Engine.IO session id with the index of the worker that created it.

    The tagged id is ``sid``, a ``.`` and the index: URL-safe, and never an id that
    python-engineio makes (its ids have no ``.``), so an untagged id is served where it arrives.

    Args:
        sid: The session id.
        worker: The worker index, ``0..65535``.

    Returns:
        The tagged id, which routes every request of the session to that worker.
    """

def inbox_pair() -> tuple[int, int]:
    """Make the inbox of one worker index: a ``SOCK_SEQPACKET`` socket pair.

    A supervisor makes one per index before it forks, and keeps both ends across respawns.

    Returns:
        ``(receiving_fd, sending_fd)``, close-on-exec, owned by the caller.
    """
