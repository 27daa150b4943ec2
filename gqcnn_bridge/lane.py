"""The same-host lane: the bridge's messages over a Unix stream socket, for clients on the server's machine.

A websocket round trip costs a few tenths of a millisecond on its own (framing, masking, the client library's
reader thread, the server's protocol machinery). A client on the server's machine that already passes its
arrays through shared memory sends only a small header per request, so that cost is most of what is left. The
lane carries the same messages (PROTOCOL.md, *Same-host lane*), each preceded by its length as an unsigned
64-bit little-endian integer, over a Unix socket whose path the server announces in ``welcome``; the client
reads and writes it from its own thread.

How the client waits for a reply. A sleeping thread takes time to wake, and on the measured 2-core VM an idle
client core also slows the server's first read of the depth that the client has just written into shared
memory (the lines still sit in that core's cache). :class:`~gqcnn_bridge.RemotePlanner` therefore wakes
ahead by default (``wake_ahead_s``): it polls without sleeping for a moment after each request, while the
server reads the depth, then sleeps until ``wake_ahead_s`` before the reply is due (judged by how long the
last reply took), then polls again until the reply begins, for at most twice ``wake_ahead_s``, before it
sleeps as before. A client with a core to spare can spin throughout instead (``busy_poll_s``): it polls
until the reply begins or the time is up. On the 2-core VM spinning took 0.16-0.26 ms off the p50 (``dexrl
bench bridge``, ``docs/results/cpu_20261203d``).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Sequence

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = ["LENGTH", "WAKE_AHEAD_S", "LaneConnection", "read_exactly", "send_message"]

LENGTH = struct.Struct("<Q")
"""Each message's length, before it [bytes]."""

WAKE_AHEAD_S = 0.0005
"""The clients' default ``wake_ahead_s`` [s]."""

_SPIN_AFTER_SEND_S = 0.0004
"""How long a waking-ahead client polls without sleeping right after a request [s]."""

_MAX_PIECES_PER_CALL = 256
"""Pieces one ``sendmsg`` takes at most (Linux refuses more than 1024); the rest go out one by one."""


def send_message(connection: socket.socket, message: bytes | bytearray | memoryview | Sequence) -> None:
    """Write one message (its bytes, or the fragments it was encoded in) after its length, in one system call
    when the socket takes it all: the reader then wakes once per message, not once for the length and again
    for the rest."""
    pieces = [message] if isinstance(message, bytes | bytearray | memoryview) else list(message)
    views = [memoryview(piece).cast("B") for piece in pieces]
    views.insert(0, memoryview(LENGTH.pack(sum(view.nbytes for view in views))))
    sent = connection.sendmsg(views[:_MAX_PIECES_PER_CALL])
    for view in views:  # what a full socket buffer (or the piece limit) left unsent, if anything
        if sent >= view.nbytes:
            sent -= view.nbytes
        else:
            connection.sendall(view[sent:])
            sent = 0


def read_exactly(connection: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes of a lane.

    Raises:
        EOFError: the peer closed the lane first.
        TimeoutError: the socket's timeout expired before the first byte (the stream is still framed).
        ConnectionError: it expired after the first byte (what follows can no longer be framed).
    """
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        try:
            count = connection.recv_into(view[got:])
        except TimeoutError:
            if got == 0:
                raise
            raise ConnectionError(f"timed out after {got} of {size} bytes") from None
        if count == 0:
            raise EOFError("the peer closed the lane")
        got += count
    return data


class LaneConnection:
    """A blocking client connection to a server's lane, with the calls :class:`gqcnn_bridge.RemotePlanner`
    makes of a websocket connection (``send``, ``recv``, ``state``, ``close``): a lost connection raises
    websockets' ``ConnectionClosed``, an expired wait ``TimeoutError``.

    Args:
        path: the lane's socket path (``welcome``'s ``shared_memory.lane``).
        timeout_s: how long connecting may take [s].
        max_message_bytes: largest message accepted [bytes].
        busy_poll_s: how long ``recv`` spins, polling the socket, before it sleeps until a reply begins [s]; the
            thread keeps a core busy meanwhile (0: see ``wake_ahead_s``).
        wake_ahead_s: without ``busy_poll_s``, how long before a reply is due (as long as the last reply took)
            ``recv`` stops sleeping and polls for it [s]; it also polls for a moment right after each request
            (see the module's docstring). 0: sleep throughout.
    """

    def __init__(
        self,
        path: str,
        timeout_s: float,
        max_message_bytes: int,
        busy_poll_s: float = 0.0,
        wake_ahead_s: float = 0.0,
    ):
        if busy_poll_s < 0 or wake_ahead_s < 0:
            raise ValueError(f"busy_poll_s and wake_ahead_s must be >= 0, got {busy_poll_s}, {wake_ahead_s}")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout_s)
        try:
            self._socket.connect(path)
        except OSError:
            self._socket.close()
            raise
        self._max_message_bytes = max_message_bytes
        self._busy_poll_s, self._wake_ahead_s = busy_poll_s, wake_ahead_s
        self._sent_at: float | None = None  # when the request now waited for went out [perf_counter s]
        self._last_wait_s: float | None = None  # from the last request to the start of its reply [s]
        self._poller = select.poll()
        self._poller.register(self._socket, select.POLLIN)
        self.state = State.OPEN

    def send(self, message: bytes | bytearray | Sequence) -> None:
        """Write one message (bytes or a list of fragments)."""
        self._socket.settimeout(None)
        try:
            send_message(self._socket, message)
        except OSError as error:
            self._lost(error)
        self._sent_at = time.perf_counter()

    def recv(self, timeout: float | None = None) -> bytearray:
        """The next message, waiting up to ``timeout`` seconds (None: for ever) for it to begin. A wait that
        expires before the message begins leaves the connection usable (a late reply can still be read and
        dropped); one that expires inside a message closes it."""
        if timeout is not None and timeout <= 0:
            raise TimeoutError("no time left to wait for a reply")
        if self._busy_poll_s:
            timeout = self._spin_until_readable(timeout, self._busy_poll_s)
        elif self._wake_ahead_s and self._sent_at is not None:
            timeout = self._wake_ahead(timeout)
        self._socket.settimeout(timeout)
        try:
            (length,) = LENGTH.unpack(read_exactly(self._socket, LENGTH.size))  # may time out: nothing was read
        except TimeoutError:
            raise
        except (OSError, EOFError) as error:
            self._lost(error)
        if self._sent_at is not None:
            self._last_wait_s, self._sent_at = time.perf_counter() - self._sent_at, None
        if length > self._max_message_bytes:
            self._lost(ValueError(f"a message of {length} bytes exceeds {self._max_message_bytes}"))
        try:
            return read_exactly(self._socket, length)
        except (OSError, EOFError) as error:  # a timeout too: the length was read, the message was not
            self._lost(error)

    def _spin_until_readable(self, timeout: float | None, spin_s: float) -> float | None:
        """Poll until the socket is readable (or closed), ``spin_s`` or ``timeout`` is up; returns the timeout
        left [s]."""
        started = time.perf_counter()
        spin_until = started + min(spin_s, float("inf") if timeout is None else timeout)
        while not self._poller.poll(0) and time.perf_counter() < spin_until:
            pass
        return None if timeout is None else max(timeout - (time.perf_counter() - started), 1e-6)

    def _wake_ahead(self, timeout: float | None) -> float | None:
        """Poll for a moment, sleep until ``wake_ahead_s`` before the reply is due, poll for it; returns the
        timeout left [s]."""
        timeout = self._spin_until_readable(timeout, _SPIN_AFTER_SEND_S)
        if self._last_wait_s is None or self._poller.poll(0):
            return timeout
        started = time.perf_counter()
        wake_at = self._sent_at + self._last_wait_s - self._wake_ahead_s
        if timeout is not None:
            wake_at = min(wake_at, started + timeout)
        if wake_at > started and self._poller.poll(1e3 * (wake_at - started)):  # a sleep; ends early on a reply
            return None if timeout is None else max(timeout - (time.perf_counter() - started), 1e-6)
        left = None if timeout is None else max(timeout - (time.perf_counter() - started), 1e-6)
        return self._spin_until_readable(left, 2 * self._wake_ahead_s)

    def _lost(self, cause: BaseException):
        self.close()
        raise ConnectionClosed(None, None) from cause

    def close(self) -> None:
        self.state = State.CLOSED
        self._socket.close()
