"""The same-host lane: the bridge's messages over a Unix stream socket, for clients on the server's machine.

A websocket round trip costs a few tenths of a millisecond on its own (framing, masking, the client library's
reader thread, the server's protocol machinery). A client on the server's machine that already passes its
arrays through shared memory sends only a small header per request, so that cost is most of what is left. The
lane carries the same messages (PROTOCOL.md, *Same-host lane*), each preceded by its length as an unsigned
64-bit little-endian integer, over a Unix socket whose path the server announces in ``welcome``; the client
reads and writes it from its own thread.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = ["LENGTH", "LaneConnection", "framed"]

LENGTH = struct.Struct("<Q")
"""Each message's length, before it [bytes]."""


def framed(message: bytes | bytearray | memoryview | Sequence) -> list:
    """The pieces to write for one message (its bytes, or the fragments it was encoded in)."""
    pieces = [message] if isinstance(message, bytes | bytearray | memoryview) else list(message)
    return [LENGTH.pack(sum(memoryview(piece).nbytes for piece in pieces)), *pieces]


class LaneConnection:
    """A blocking client connection to a server's lane, with the calls :class:`gqcnn_bridge.RemotePlanner`
    makes of a websocket connection (``send``, ``recv``, ``state``, ``close``): a lost connection raises
    websockets' ``ConnectionClosed``, an expired wait ``TimeoutError``.

    Args:
        path: the lane's socket path (``welcome``'s ``shared_memory.lane``).
        timeout_s: how long connecting may take [s].
        max_message_bytes: largest message accepted [bytes].
    """

    def __init__(self, path: str, timeout_s: float, max_message_bytes: int):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout_s)
        try:
            self._socket.connect(path)
        except OSError:
            self._socket.close()
            raise
        self._max_message_bytes = max_message_bytes
        self.state = State.OPEN

    def send(self, message: bytes | bytearray | Sequence) -> None:
        """Write one message (bytes or a list of fragments)."""
        self._socket.settimeout(None)
        try:
            for piece in framed(message):
                self._socket.sendall(piece)
        except OSError as error:
            self._lost(error)

    def recv(self, timeout: float | None = None) -> bytearray:
        """The next message, waiting up to ``timeout`` seconds (None: for ever) for it to begin. A wait that
        expires before the message begins leaves the connection usable (a late reply can still be read and
        dropped); one that expires inside a message closes it."""
        if timeout is not None and timeout <= 0:
            raise TimeoutError("no time left to wait for a reply")
        self._socket.settimeout(timeout)
        try:
            prefix = self._read(LENGTH.size, may_time_out=True)
            (length,) = LENGTH.unpack(prefix)
            if length > self._max_message_bytes:
                self._lost(ValueError(f"a message of {length} bytes exceeds {self._max_message_bytes}"))
            return self._read(length, may_time_out=False)
        except TimeoutError:
            raise
        except OSError as error:
            self._lost(error)

    def _read(self, size: int, may_time_out: bool) -> bytearray:
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            try:
                count = self._socket.recv_into(view[got:])
            except TimeoutError as error:
                if may_time_out and got == 0:
                    raise
                self._lost(error)  # inside a message: what follows could not be framed any more
            if count == 0:
                self._lost(EOFError("the server closed the lane"))
            got += count
        return data

    def _lost(self, cause: BaseException):
        self.close()
        raise ConnectionClosed(None, None) from cause

    def close(self) -> None:
        self.state = State.CLOSED
        self._socket.close()
