"""Writing pre-encoded frames straight into the server's socket, where the server allows it.

This module holds what the fan-out knows of uvicorn's internals (`chat.wsprotocol` and
`chat.http_limits` hold what the limits know). Its sans-I/O
WebSocket protocol (`uvicorn.protocols.websockets.websockets_sansio_impl`, new in
uvicorn 0.35.0) keeps no state about the frames it sends once a socket is open, so
complete frames written to its transport reach the client as they are: a room's
frame is encoded once and written to every member without a task or an `await`
per socket. Relied upon, as checked against uvicorn 0.54.0 (re-check whenever the
supported range of uvicorn moves):

- `chat.app.SocketRoutes` stores the server's `send` callable in the scope; for this
  protocol it is the bound method `WebSocketsSansIOProtocol.send`, so `__self__` is
  the protocol;
- `protocol.transport` is the connection's `asyncio.Transport` (uvloop's, where
  uvicorn runs on uvloop), set before the application is called and never replaced;
- `protocol.close_sent` turns true once a close frame has been written, after which
  no other frame may follow.

Any other server, or a uvicorn without that module, gets None from `direct_sink`:
the caller then sends through the ASGI `send`, which offers no abort. There a
socket that does not read holds no more than its bounded queue in this process.
"""

import asyncio
import functools
from typing import Any

from starlette.websockets import WebSocket

# Where `chat.app.SocketRoutes` leaves the server's send callable of a WebSocket scope.
SERVER_SEND_KEY = "chat.server_send"


def wire_frame(payload: bytes) -> bytes:
    """A complete, unmasked WebSocket text frame carrying `payload` (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


class DirectSink:
    """A socket's transport, written to without going through the ASGI `send`."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport: asyncio.Transport = protocol.transport

    def write(self, wire: bytes) -> int | None:
        """Queue encoded frames for sending; the bytes buffered now, or None (and nothing
        written) once the socket is closing or closed."""
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return None
        transport.write(wire)
        return transport.get_write_buffer_size()

    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel: what the client is behind by."""
        return self._transport.get_write_buffer_size()

    def abort(self) -> None:
        """Drop the connection now, with whatever it still had to send.

        A plain close waits for the buffer to drain, which a client that does not
        read never lets happen: the connection and its buffer would stay for as long
        as the client keeps the TCP connection open.
        """
        self._transport.abort()


@functools.cache
def _sansio_protocol() -> type | None:
    """uvicorn's sans-I/O protocol class, or None where this uvicorn has none."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        return None
    return WebSocketsSansIOProtocol


def direct_sink(websocket: WebSocket) -> DirectSink | None:
    """A sink writing straight into this socket's transport; None if the server has none."""
    protocol_class = _sansio_protocol()
    protocol = getattr(websocket.scope.get(SERVER_SEND_KEY), "__self__", None)
    if protocol_class is None or not isinstance(protocol, protocol_class):
        return None
    return DirectSink(protocol)
