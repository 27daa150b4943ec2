"""Clients of the gqcnn_bridge server: :class:`RemotePlanner` (blocking) and :class:`AsyncRemotePlanner`.

:class:`RemotePlanner` implements :class:`dexrl.grasp.Planner`, so code that plans with a local planner plans
remotely by swapping the object. Creating either client tunes glibc's allocator of the process to keep
freed message buffers for reuse (see :mod:`gqcnn_bridge.allocator`). Both clients connect lazily, reconnect with back-off when the connection is
gone, and never resend a request on their own: when the connection drops (or the server shuts down) while a
request is in flight, that call raises :class:`~dexrl.grasp.PlannerUnavailable`, and the caller decides
whether to retry. Replies are matched to requests by id, so a late reply to a timed-out request is
dropped, never returned for another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Self

import torch
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from dexrl.grasp import CameraIntrinsics, PlannerError, PlannerUnavailable, PlanResult

from .allocator import keep_freed_memory
from .protocol import (
    ErrorCode,
    Limits,
    PlanOptions,
    ProtocolViolation,
    ServerInfo,
    decode_message,
    decode_plan_reply,
    encode_message,
    plan_request_fragments,
    planner_error_for,
)

__all__ = ["DEFAULT_URL", "AsyncRemotePlanner", "Backoff", "RemotePlanner"]

DEFAULT_URL = "ws://127.0.0.1:8765"

_CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)
"""Failures to open a connection that are worth another attempt."""


@dataclass(frozen=True)
class Backoff:
    """When to try (re)connecting: at once, then after ``initial_s``, growing by ``factor`` up to a cap.

    The defaults try 6 times within about 1.6 s, long enough for a local server restart.
    """

    initial_s: float = 0.05
    factor: float = 2.0
    max_delay_s: float = 1.0
    attempts: int = 6

    def delays(self) -> Iterator[float]:
        """Seconds to wait before each attempt."""
        delay = self.initial_s
        for attempt in range(self.attempts):
            yield 0.0 if attempt == 0 else delay
            if attempt:
                delay = min(delay * self.factor, self.max_delay_s)


def _unreachable(url: str, backoff: Backoff, last_error: Exception | None) -> PlannerUnavailable:
    return PlannerUnavailable(
        f"cannot reach the planner at {url} after {backoff.attempts} attempts: {last_error!r}"
    )


class _Session:
    """The protocol side shared by both clients: handshake messages, request encoding, reply decoding."""

    def __init__(self, token: str | None, max_reply_bytes: int):
        keep_freed_memory()  # message-sized buffers are reused instead of page-faulted in again
        self._token = token
        self._reply_limits = Limits(max_message_bytes=max_reply_bytes)
        self._request_ids = itertools.count(1)  # never reused, even across reconnections
        self.info: ServerInfo | None = None

    def hello(self) -> bytearray:
        header = {"type": "hello", "client": "gqcnn_bridge.client"}
        return encode_message(header if self._token is None else {**header, "token": self._token})

    def welcome(self, data: bytes | str) -> ServerInfo:
        """The server's handshake reply, or the planner error it stands for (unauthorized, version, ...)."""
        try:
            message = decode_message(data, self._reply_limits)
            if message.type == "error":
                raise planner_error_for(
                    message.header.get("code", ErrorCode.INTERNAL), str(message.header.get("message"))
                )
            self.info = ServerInfo.from_header(message.header)
        except ProtocolViolation as violation:
            raise planner_error_for(violation.code, f"malformed handshake reply: {violation}") from None
        return self.info

    def request(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None,
        options: PlanOptions,
    ) -> tuple[int, bytearray | list]:
        """A new request id and what to ``send``: the message, or its fragments (``depth`` is not copied, so
        it must not change until sent). Raises ``too_large`` rather than send what the server refuses."""
        if not depth.is_floating_point():
            raise planner_error_for(
                ErrorCode.BAD_DTYPE, f"depth must be floating point metres, got {depth.dtype}"
            )
        depth_array = depth.detach().to("cpu", torch.float32).contiguous().numpy()
        mask_array = None if mask is None else mask.detach().cpu().contiguous().numpy()
        cameras = intrinsics if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
        request_id = next(self._request_ids)
        fragments = plan_request_fragments(request_id, depth_array, cameras, mask_array, options)
        size = sum(len(fragment) for fragment in fragments)
        if size > self.info.limits.max_message_bytes:
            limit = self.info.limits.max_message_bytes
            raise planner_error_for(
                ErrorCode.TOO_LARGE, f"request of {size} bytes exceeds the server's {limit}"
            )
        return request_id, fragments[0] if len(fragments) == 1 else fragments

    def reply(self, data: bytes | str) -> tuple[int | str | None, PlanResult | PlannerError]:
        """The request id a reply answers and its outcome: a result, or the planner error to raise."""
        try:
            message = decode_message(data, self._reply_limits)
            if message.type == "error":
                code, text = (
                    message.header.get("code", ErrorCode.INTERNAL),
                    str(message.header.get("message")),
                )
                return message.request_id, planner_error_for(code, text)
            if message.type != "result":
                raise ProtocolViolation(
                    ErrorCode.BAD_HEADER, f"unexpected reply type {message.type!r}", message.request_id
                )
            return message.request_id, decode_plan_reply(message)
        except ProtocolViolation as violation:
            return violation.request_id, planner_error_for(violation.code, f"malformed reply: {violation}")


class RemotePlanner:
    """A :class:`dexrl.grasp.Planner` served by a gqcnn_bridge server; blocking calls, one request at a time.

    Args:
        url: the server, ``ws://host:port``.
        token: the server's token, if it requires one.
        timeout_s: how long one plan call waits for its reply [s].
        connect_timeout_s: how long one connection attempt (TCP, websocket and hello) may take [s].
        backoff: reconnection schedule.
        max_reply_bytes: largest reply accepted (q-maps can be large) [bytes].
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        backoff: Backoff = Backoff(),
        max_reply_bytes: int = 1 << 28,
    ):
        self.url, self.timeout_s, self.connect_timeout_s, self.backoff = (
            url,
            timeout_s,
            connect_timeout_s,
            backoff,
        )
        self._max_reply_bytes = max_reply_bytes
        self._session = _Session(token, max_reply_bytes)
        self._connection: SyncConnection | None = None
        self._closer = contextlib.ExitStack()
        self._lock = threading.Lock()

    @property
    def server_info(self) -> ServerInfo:
        """The server's model, device and limits (connects if needed)."""
        with self._lock:
            self._connected()
            return self._session.info

    def _connected(self) -> SyncConnection:
        if self._connection is not None and self._connection.state is State.OPEN:
            return self._connection
        self._drop()
        last_error: Exception | None = None
        for delay in self.backoff.delays():
            time.sleep(delay)
            closer = (
                contextlib.ExitStack()
            )  # websockets >= 17.1 wants connections entered as context managers
            try:
                connection = closer.enter_context(
                    sync_connect(
                        self.url,
                        open_timeout=self.connect_timeout_s,
                        compression=None,
                        max_size=self._max_reply_bytes,
                    )
                )
                connection.send(self._session.hello())
                self._session.welcome(connection.recv(timeout=self.connect_timeout_s))
            except (
                *_CONNECT_ERRORS,
                PlannerUnavailable,
            ) as error:  # PlannerUnavailable: the server is shutting down
                closer.close()
                last_error = error
                continue
            except PlannerError:  # unauthorized or unsupported version: retrying cannot help
                closer.close()
                raise
            self._connection, self._closer = connection, closer
            return connection
        raise _unreachable(self.url, self.backoff, last_error)

    def _drop(self) -> None:
        if self._connection is not None:
            self._closer.close()
            self._connection = None

    def plan(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
        k: int = 1,
        return_q_map: bool = False,
        *,
        q_map_dtype: str = "float16",
        q_map_stride: int = 4,
    ) -> PlanResult:
        """Plan on the server (see :meth:`dexrl.grasp.Planner.plan`).

        The q-map comes back downsampled by ``q_map_stride`` (block maxima) as ``q_map_dtype`` (float16 or
        uint8), converted to float32 in [0, 1]. ``timings`` holds the server's ``queue``, ``inference`` and
        ``server`` seconds, the planner's own stages, and ``round_trip`` [s].

        Raises:
            PlannerInputError, NoValidGrasps: as a local planner would (``.code`` tells the wire error).
            PlannerUnavailable: the server cannot be reached, went away, timed out or is overloaded; retry.
        """
        options = PlanOptions(
            k=k, return_q_map=return_q_map, q_map_dtype=q_map_dtype, q_map_stride=q_map_stride
        )
        with self._lock:
            connection = self._connected()
            request_id, message = self._session.request(depth, intrinsics, mask, options)
            started = time.perf_counter()
            try:
                connection.send(message)
                while True:
                    remaining = started + self.timeout_s - time.perf_counter()
                    replied_id, outcome = self._session.reply(connection.recv(timeout=max(remaining, 0.0)))
                    if replied_id in (request_id, None):  # other ids: late replies to requests that timed out
                        break
            except TimeoutError:
                raise PlannerUnavailable(f"no reply from {self.url} within {self.timeout_s} s") from None
            except ConnectionClosed as error:
                self._drop()
                raise PlannerUnavailable(
                    f"connection to {self.url} lost before the reply ({error}); the request may be retried"
                ) from None
        if isinstance(outcome, PlannerError):
            raise outcome
        outcome.timings["round_trip"] = time.perf_counter() - started
        return outcome

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncRemotePlanner:
    """The asyncio client (for the simulator's and Kit's event loops); concurrent calls share one connection.

    Same arguments, errors and results as :class:`RemotePlanner`; ``plan`` is a coroutine.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        backoff: Backoff = Backoff(),
        max_reply_bytes: int = 1 << 28,
    ):
        self.url, self.timeout_s, self.connect_timeout_s, self.backoff = (
            url,
            timeout_s,
            connect_timeout_s,
            backoff,
        )
        self._max_reply_bytes = max_reply_bytes
        self._session = _Session(token, max_reply_bytes)
        self._connection: AsyncConnection | None = None
        self._closer = contextlib.AsyncExitStack()
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._connect_lock = asyncio.Lock()

    async def connect(self) -> ServerInfo:
        """Connect now (plan calls connect by themselves) and return the server's description."""
        await self._connected()
        return self._session.info

    async def _connected(self) -> AsyncConnection:
        async with self._connect_lock:
            if self._connection is not None and self._connection.state is State.OPEN:
                return self._connection
            last_error: Exception | None = None
            for delay in self.backoff.delays():
                await asyncio.sleep(delay)
                closer = contextlib.AsyncExitStack()
                try:
                    connection = await closer.enter_async_context(
                        async_connect(
                            self.url,
                            open_timeout=self.connect_timeout_s,
                            compression=None,
                            max_size=self._max_reply_bytes,
                        )
                    )
                    await connection.send(self._session.hello())
                    async with asyncio.timeout(self.connect_timeout_s):
                        self._session.welcome(await connection.recv())
                except (*_CONNECT_ERRORS, PlannerUnavailable) as error:
                    await closer.aclose()
                    last_error = error
                    continue
                except PlannerError:
                    await closer.aclose()
                    raise
                self._connection, self._closer = connection, closer
                self._reader = asyncio.create_task(self._read_replies(connection))
                return connection
            raise _unreachable(self.url, self.backoff, last_error)

    async def _read_replies(self, connection: AsyncConnection) -> None:
        """Route replies to their waiting calls; when the connection ends, fail every call still waiting."""
        try:
            async for data in connection:
                request_id, outcome = self._session.reply(data)
                waiter = self._pending.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(outcome)
        except ConnectionClosed:
            pass
        finally:
            if self._connection is connection:
                self._connection = None
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(
                        PlannerUnavailable(
                            f"connection to {self.url} lost before the reply; the request may be retried"
                        )
                    )
            self._pending.clear()

    async def plan(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
        k: int = 1,
        return_q_map: bool = False,
        *,
        q_map_dtype: str = "float16",
        q_map_stride: int = 4,
    ) -> PlanResult:
        """Plan on the server; see :meth:`RemotePlanner.plan`."""
        options = PlanOptions(
            k=k, return_q_map=return_q_map, q_map_dtype=q_map_dtype, q_map_stride=q_map_stride
        )
        connection = await self._connected()
        request_id, message = self._session.request(depth, intrinsics, mask, options)
        waiter = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        started = time.perf_counter()
        try:
            await connection.send(message)
            async with asyncio.timeout(self.timeout_s):
                outcome = await waiter
        except TimeoutError:
            raise PlannerUnavailable(f"no reply from {self.url} within {self.timeout_s} s") from None
        except ConnectionClosed as error:
            raise PlannerUnavailable(
                f"connection to {self.url} lost before the reply ({error}); the request may be retried"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if isinstance(outcome, PlannerError):
            raise outcome
        outcome.timings["round_trip"] = time.perf_counter() - started
        return outcome

    async def close(self) -> None:
        if self._connection is not None:
            await self._closer.aclose()
        if self._reader is not None:
            await self._reader

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
