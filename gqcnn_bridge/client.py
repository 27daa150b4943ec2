"""Clients of the gqcnn_bridge server: :class:`RemotePlanner` (blocking) and :class:`AsyncRemotePlanner`.

:class:`RemotePlanner` implements :class:`dexrl.grasp.Planner`, so code that plans with a local planner plans
remotely by swapping the object. Creating either client tunes glibc's allocator of the process to keep
freed message buffers for reuse (see :mod:`dexrl.allocator`). Both clients connect lazily, reconnect with back-off when the connection is
gone, and never resend a request on their own: when the connection drops (or the server shuts down) while a
request is in flight, that call raises :class:`~dexrl.grasp.PlannerUnavailable`, and the caller decides
whether to retry. Replies are matched to requests by id, so a late reply to a timed-out request is
dropped, never returned for another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import numpy as np
import torch
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from dexrl.grasp import CameraIntrinsics, PlannerError, PlannerUnavailable, PlanResult

from dexrl.allocator import keep_freed_memory
from .protocol import (
    ErrorCode,
    Limits,
    PlanOptions,
    ProtocolViolation,
    ServerInfo,
    arrays_nbytes,
    decode_message,
    decode_plan_reply,
    encode_message,
    encode_plan_request,
    plan_request_fragments,
    planner_error_for,
)
from .lane import WAKE_AHEAD_S, LaneConnection
from .shm import ClientRegion, ClientRegions, is_loopback

__all__ = ["DEFAULT_URL", "AsyncRemotePlanner", "Backoff", "RemotePlanner"]

DEFAULT_URL = "ws://127.0.0.1:8765"

logger = logging.getLogger("gqcnn_bridge.client")

Outcome = PlanResult | PlannerError | dict[str, Any]
"""What a reply means: a plan result, the error to raise, or the header of a shared-memory (un)registration."""

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


def _refused(regions: ClientRegions, error: PlannerError) -> None:
    """Give up shared memory on a connection whose server refused a region: remove the regions; None."""
    logger.info("shared memory refused (%s: %s); sending arrays inline", error.code, error)
    regions.destroy()


def _unreachable(url: str, backoff: Backoff, last_error: Exception | None) -> PlannerUnavailable:
    return PlannerUnavailable(
        f"cannot reach the planner at {url} after {backoff.attempts} attempts: {last_error!r}"
    )


class _Session:
    """The protocol side shared by both clients: handshake messages, request encoding, reply decoding."""

    def __init__(self, token: str | None, max_reply_bytes: int, tune_allocator: bool):
        if tune_allocator:
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

    def arrays(self, depth: torch.Tensor, mask: torch.Tensor | None) -> dict[str, np.ndarray]:
        """A request's arrays: depth (B, H, W) as float32 [m] and the optional mask, on the CPU."""
        if not depth.is_floating_point():
            raise planner_error_for(
                ErrorCode.BAD_DTYPE, f"depth must be floating point metres, got {depth.dtype}"
            )
        arrays = {"depth": depth.detach().to("cpu", torch.float32).contiguous().numpy()}
        if mask is not None:
            arrays["mask"] = mask.detach().cpu().contiguous().numpy()
        return arrays

    def request(
        self,
        arrays: dict[str, np.ndarray],
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        options: PlanOptions,
        region: ClientRegion | None = None,
    ) -> tuple[int, bytearray | list]:
        """A new request id and what to ``send``: the message, or its fragments (``depth`` is not copied, so
        it must not change until sent); with ``region``, the arrays are copied into that registered
        shared-memory region and the message is the header alone. Raises ``too_large`` rather than send
        what the server refuses."""
        cameras = intrinsics if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
        request_id = next(self._request_ids)
        depth, mask = arrays["depth"], arrays.get("mask")
        if region is not None:
            return request_id, encode_plan_request(request_id, depth, cameras, mask, options, region.region)
        fragments = plan_request_fragments(request_id, depth, cameras, mask, options)
        size = sum(len(fragment) for fragment in fragments)
        if size > self.info.limits.max_message_bytes:
            limit = self.info.limits.max_message_bytes
            raise planner_error_for(
                ErrorCode.TOO_LARGE, f"request of {size} bytes exceeds the server's {limit}"
            )
        return request_id, fragments[0] if len(fragments) == 1 else fragments

    def shared_regions(self, url: str) -> ClientRegions | None:
        """Regions to send arrays through, when the server offers shared memory and ``url`` is this machine."""
        if self.info.shared_memory is None or not is_loopback(urlsplit(url).hostname):
            return None
        return ClientRegions(self.info.shared_memory)

    def registration(self, region: ClientRegion) -> tuple[int, bytearray]:
        """A new request id and the ``shm_register`` message of ``region``."""
        request_id = next(self._request_ids)
        header = {
            "type": "shm_register",
            "request_id": request_id,
            "name": region.name,
            "nbytes": region.nbytes,
        }
        return request_id, encode_message(header)

    def reply(self, data: bytes | str) -> tuple[int | str | None, Outcome]:
        """The request id a reply answers and its outcome: a result, the planner error to raise, or the
        header of a shared-memory registration reply."""
        if isinstance(data, bytes):  # a private, writable copy: the result's tensors share its memory
            data = bytearray(data)
        try:
            message = decode_message(data, self._reply_limits)
            if message.type == "error":
                code, text = (
                    message.header.get("code", ErrorCode.INTERNAL),
                    str(message.header.get("message")),
                )
                return message.request_id, planner_error_for(code, text)
            if message.type == "shm_registered":
                return message.request_id, message.header
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
        shared_memory: send the arrays through shared-memory regions registered with the server
            (PROTOCOL.md, *Shared memory*) when it runs on this machine (a loopback URL) and offers them;
            otherwise, or if it refuses a region, they go in the messages as usual.
        lane: with ``shared_memory``, send the messages through the server's same-host lane (a Unix socket,
            :mod:`gqcnn_bridge.lane`) instead of the websocket when it offers one and it can be opened.
        busy_poll_s: on the lane, spin up to this long waiting for each reply before sleeping [s]: lower
            latency, at the cost of a busy core while waiting (0: wake ahead; see :mod:`gqcnn_bridge.lane`).
        wake_ahead_s: on the lane without ``busy_poll_s``, poll for a moment after each request and from this
            long before its reply is due (as long as the last one took), sleeping in between [s] (0: sleep
            throughout; see :mod:`gqcnn_bridge.lane`).
        tune_allocator: set glibc's malloc, for this whole process, to keep freed message-sized buffers for
            reuse (:func:`dexrl.allocator.keep_freed_memory`; the measured figures use it); False leaves
            the process's allocator alone, at the cost of page faults on every large message.
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
        shared_memory: bool = False,
        lane: bool = True,
        busy_poll_s: float = 0.0,
        wake_ahead_s: float = WAKE_AHEAD_S,
        tune_allocator: bool = True,
    ):
        if busy_poll_s < 0 or wake_ahead_s < 0:
            raise ValueError(f"busy_poll_s and wake_ahead_s must be >= 0, got {busy_poll_s}, {wake_ahead_s}")
        self.url, self.timeout_s, self.connect_timeout_s, self.backoff = (
            url,
            timeout_s,
            connect_timeout_s,
            backoff,
        )
        self._max_reply_bytes = max_reply_bytes
        self._session = _Session(token, max_reply_bytes, tune_allocator)
        self._connection: SyncConnection | LaneConnection | None = None
        self._closer = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._shared_memory, self._lane = shared_memory, lane
        self._busy_poll_s, self._wake_ahead_s = busy_poll_s, wake_ahead_s
        self._regions: ClientRegions | None = None

    @property
    def uses_shared_memory(self) -> bool:
        """Whether requests on the current connection go through shared memory."""
        return self._regions is not None

    @property
    def uses_lane(self) -> bool:
        """Whether the current connection is the server's same-host lane."""
        return isinstance(self._connection, LaneConnection)

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
            if self._shared_memory:
                self._regions = self._session.shared_regions(self.url)
                if self._regions is not None and self._lane and self._session.info.lane is not None:
                    connection, closer = self._through_lane(connection, closer)
            self._connection, self._closer = connection, closer
            return connection
        raise _unreachable(self.url, self.backoff, last_error)

    def _through_lane(
        self, connection: SyncConnection, closer: contextlib.ExitStack
    ) -> tuple[SyncConnection | LaneConnection, contextlib.ExitStack]:
        """The server's same-host lane in place of the websocket connection (which is closed), or the
        websocket connection if the lane cannot be opened from here (e.g. another machine's loopback)."""
        try:
            lane = LaneConnection(
                self._session.info.lane,
                self.connect_timeout_s,
                self._max_reply_bytes,
                self._busy_poll_s,
                self._wake_ahead_s,
            )
        except OSError:
            return connection, closer
        try:
            lane.send(self._session.hello())
            self._session.welcome(lane.recv(timeout=self.connect_timeout_s))
        except (*_CONNECT_ERRORS, PlannerError):
            lane.close()
            return connection, closer
        closer.close()
        lane_closer = contextlib.ExitStack()
        lane_closer.callback(lane.close)
        return lane, lane_closer

    def _drop(self) -> None:
        if self._connection is not None:
            self._closer.close()
            self._connection = None
        if self._regions is not None:  # the server unmaps them when it sees the connection end
            self._regions.destroy()
            self._regions = None

    def _exchange(self, connection: SyncConnection, request_id: int, message, started: float) -> Outcome:
        """Send a message and wait for the reply to it, until ``timeout_s`` after ``started``."""
        connection.send(message)
        while True:
            remaining = started + self.timeout_s - time.perf_counter()
            replied_id, outcome = self._session.reply(connection.recv(timeout=max(remaining, 0.0)))
            if replied_id in (request_id, None):  # other ids: late replies to requests that timed out
                return outcome

    def _region_for(self, connection: SyncConnection, nbytes: int, started: float) -> ClientRegion | None:
        """A registered shared-memory region of at least ``nbytes``, or None to send the arrays inline."""
        if self._regions is None:
            return None
        region, new = self._regions.lend(nbytes)
        if new:
            outcome = self._exchange(connection, *self._session.registration(region), started)
            if isinstance(outcome, PlannerError):
                self._regions = _refused(self._regions, outcome)
                self._shared_memory = False
                return None
        return region

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
            started = time.perf_counter()
            arrays = self._session.arrays(depth, mask)
            try:
                region = self._region_for(connection, arrays_nbytes(arrays), started)
                request_id, message = self._session.request(arrays, intrinsics, options, region)
                outcome = self._exchange(connection, request_id, message, started)
                if region is not None and self._regions is not None:  # kept after a timeout: still read
                    self._regions.give_back(region)
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

    Same arguments, errors and results as :class:`RemotePlanner` (except ``lane``: its messages always go
    over the websocket, whose connection carries concurrent requests); ``plan`` is a coroutine. With
    ``shared_memory``, concurrent requests each get a region of their own (up to the server's
    ``max_regions``; past that they go inline).
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
        shared_memory: bool = False,
        lane: bool = True,
        busy_poll_s: float = 0.0,
        wake_ahead_s: float = WAKE_AHEAD_S,
        tune_allocator: bool = True,
    ):
        if busy_poll_s < 0 or wake_ahead_s < 0:
            raise ValueError(f"busy_poll_s and wake_ahead_s must be >= 0, got {busy_poll_s}, {wake_ahead_s}")
        self.url, self.timeout_s, self.connect_timeout_s, self.backoff = (
            url,
            timeout_s,
            connect_timeout_s,
            backoff,
        )
        self._max_reply_bytes = max_reply_bytes
        self._session = _Session(token, max_reply_bytes, tune_allocator)
        self._connection: AsyncConnection | None = None
        self._closer = contextlib.AsyncExitStack()
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._connect_lock = asyncio.Lock()
        self._shared_memory = shared_memory
        self._regions: ClientRegions | None = None

    @property
    def uses_shared_memory(self) -> bool:
        """Whether requests on the current connection go through shared memory."""
        return self._regions is not None

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
                if self._shared_memory:
                    self._regions = self._session.shared_regions(self.url)
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
                if self._regions is not None:  # the server unmaps them when it sees the connection end
                    self._regions.destroy()
                    self._regions = None
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
        started = time.perf_counter()
        arrays = self._session.arrays(depth, mask)
        try:
            async with asyncio.timeout(self.timeout_s):
                regions = self._regions
                region = await self._region_for(connection, regions, arrays_nbytes(arrays))
                outcome = await self._exchange(
                    connection, *self._session.request(arrays, intrinsics, options, region)
                )
                if region is not None and self._regions is regions:  # kept after a timeout: still read
                    regions.give_back(region)
        except TimeoutError:
            raise PlannerUnavailable(f"no reply from {self.url} within {self.timeout_s} s") from None
        except ConnectionClosed as error:
            raise PlannerUnavailable(
                f"connection to {self.url} lost before the reply ({error}); the request may be retried"
            ) from None
        if isinstance(outcome, PlannerError):
            raise outcome
        outcome.timings["round_trip"] = time.perf_counter() - started
        return outcome

    async def _exchange(self, connection: AsyncConnection, request_id: int, message) -> Outcome:
        """Send a message and wait for the reply to it (routed by :meth:`_read_replies`)."""
        waiter = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await connection.send(message)
            return await waiter
        finally:
            self._pending.pop(request_id, None)

    async def _region_for(
        self, connection: AsyncConnection, regions: ClientRegions | None, nbytes: int
    ) -> ClientRegion | None:
        """A registered shared-memory region of at least ``nbytes`` for one request, or None to send the
        arrays inline."""
        if regions is None:
            return None
        region, new = regions.lend(nbytes)
        if new:
            outcome = await self._exchange(connection, *self._session.registration(region))
            if isinstance(outcome, PlannerError):
                if self._regions is regions:
                    self._regions = _refused(regions, outcome)
                    self._shared_memory = False
                return None
        return region

    async def close(self) -> None:
        """Close the connection and remove the shared-memory regions."""
        if self._connection is not None:
            await self._closer.aclose()
        if self._reader is not None:
            await self._reader

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
