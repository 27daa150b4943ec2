"""The gqcnn_bridge websocket server: one planner shared by every client, micro-batched off the event loop.

Per connection, one handler reads messages (fragmented ones reassembled into reused buffers, see
:class:`BufferPool`), answers malformed ones at once with a typed error, and hands plan requests to the
:class:`MicroBatcher`. The batcher merges queued requests with the same
image size and options into one planner call, run in a single worker thread so the event loop never blocks
and GPU calls never overlap. While a call runs, new requests queue and go together into the next one;
``batch_window_s`` > 0 also waits that long after the first request for others.

Clients on the server's machine may also use the same-host lane (:mod:`gqcnn_bridge.lane`): a Unix socket
carrying the same messages, one thread per lane connection, each request planned on that thread (under the
lock that keeps planner calls one at a time, not merged into the batcher's batches), so no thread hand-off
lies between a lane's request and its reply.

Back-pressure: each connection has at most ``max_in_flight_per_connection`` requests in flight (beyond that
the server stops reading it, and TCP pushes back); past ``max_queued_images`` queued images, requests get an
``overloaded`` error. A client that disconnects has its queued requests dropped. Shutdown stops taking
requests, lets in-flight ones finish for ``drain_timeout_s``, answers the rest ``shutting_down`` and closes
connections with code 1001.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from dexrl.grasp import PlannerError, PlanResult

from dexrl.allocator import keep_freed_memory
from .backends import Backend
from .lane import LENGTH, read_exactly, send_message
from .protocol import (
    ErrorCode,
    Limits,
    PlanRequest,
    ProtocolViolation,
    ServerInfo,
    SharedMemoryLimits,
    as_fragments,
    check_depth_values,
    decode_message,
    decode_plan_request,
    encode_error,
    encode_message,
    encode_plan_reply,
    q_map_reply_nbytes,
)
from .shm import ConnectionRegions, Lease

__all__ = [
    "BridgeServer",
    "BufferPool",
    "JsonLogFormatter",
    "MicroBatcher",
    "ServerConfig",
    "ServerThread",
    "configure",
    "run",
]

logger = logging.getLogger("gqcnn_bridge.server")

TOKEN_ENV = "DEXRL_BRIDGE_TOKEN"
"""Environment variable holding the token clients must present (kept off the command line, which ps shows)."""


def _log(level: int, event: str, **fields: Any) -> None:
    """One structured log record: ``event key=value ...`` as text; ``event`` and ``fields`` as attributes."""
    if logger.isEnabledFor(level):
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        logger.log(level, "%s %s", event, text, extra={"event": event, "fields": fields})


class JsonLogFormatter(logging.Formatter):
    """Formats records as one JSON object per line, with the fields of :func:`_log` at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        entry["event"] = getattr(record, "event", record.getMessage())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@dataclass
class ServerConfig:
    """How the server listens and what it accepts.

    Attributes:
        host: interface to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (read it back from :attr:`BridgeServer.port`).
        token: when set, clients must present it in their hello.
        limits: message, batch, image and k limits (advertised in the welcome).
        batch_window_s: after a request reaches an idle planner, wait this long for others to batch with [s].
        max_queued_images: queued images beyond which requests are refused with ``overloaded``.
        max_in_flight_per_connection: requests in flight on one connection before the server stops reading it.
        handshake_timeout_s: a connection that sends no hello within this time is closed [s].
        drain_timeout_s: on shutdown, how long in-flight requests may still finish [s].
        shared_memory: limits of the same-host shared-memory regions clients may register (only clients
            connected over loopback can); None offers no shared memory.
        lane: with shared memory, also serve the same-host lane (:mod:`gqcnn_bridge.lane`, a Unix socket in
            a private temporary folder, announced in the welcome).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    batch_window_s: float = 0.0
    max_queued_images: int = 1024
    max_in_flight_per_connection: int = 8
    handshake_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    shared_memory: SharedMemoryLimits | None = field(default_factory=SharedMemoryLimits)
    lane: bool = True

    def __post_init__(self):
        if self.max_queued_images < self.limits.max_batch_images:
            raise ValueError("max_queued_images must admit at least one request of max_batch_images")


@dataclass(eq=False)
class PlanJob:
    """A plan request waiting for its reply.

    Attributes:
        request: the decoded request (None once finished).
        received_at: when its message arrived (``time.perf_counter``) [s].
        reply: resolves to the encoded reply (a result or an error); cancelled if the client goes away. None
            for a lane's request, which its own thread answers.
        buffer: the pooled buffer holding the request's message, if it was reassembled from fragments.
        pool: where ``buffer`` goes back to.
        lease: the shared-memory regions the request's arrays are read from, if any.
    """

    request: PlanRequest | None
    received_at: float
    reply: asyncio.Future | None
    buffer: bytearray | None = None
    pool: BufferPool | None = None
    lease: Lease | None = None

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one planner call."""
        _, height, width = self.request.depth.shape
        options = self.request.options
        return height, width, options.k, options.return_q_map, self.request.mask is not None

    def finish(self, reply: bytes | None = None) -> None:
        """Resolve the reply (unless the client left) and hand the message buffer back; only call this once
        the worker is done with the request."""
        if reply is not None and self.reply is not None and not self.reply.done():
            self.reply.set_result(reply)
        self.request = None  # drops the views of the buffer and regions, so that they can be reused or closed
        if self.buffer is not None:
            self.pool.give_back(self.buffer)
            self.buffer = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None


class BufferPool:
    """Reused buffers for reassembling fragmented messages (event-loop thread only).

    Joining a 51 MB batch into fresh memory costs ~12,000 page faults (~25 ms on a small VM); copying it into
    a buffer that was used before costs ~4 ms. A buffer goes back into the pool only when nothing refers to
    its memory any more (a bytearray cannot be resized while views of it exist), so a planner or a traceback
    that keeps the request's tensors alive makes the pool drop the buffer, never reuse it under them.

    Args:
        keep: most idle buffers kept (each as large as the largest message it held).
    """

    def __init__(self, keep: int = 2):
        self._keep = keep
        self._idle: list[bytearray] = []

    def take(self) -> bytearray:
        """The largest idle buffer, or a new empty one (it grows as fragments are appended)."""
        if not self._idle:
            return bytearray()
        largest = max(range(len(self._idle)), key=lambda i: len(self._idle[i]))
        return self._idle.pop(largest)

    def give_back(self, buffer: bytearray) -> None:
        if not buffer or len(self._idle) >= self._keep:
            return
        try:
            del buffer[-1:]  # raises BufferError while any view of the buffer is alive
        except BufferError:
            return
        buffer.append(0)
        self._idle.append(buffer)


async def receive_message(connection, pool: BufferPool) -> tuple[bytes | str | memoryview, bytearray | None]:
    """The next message, and the pooled buffer it was reassembled in if it came in fragments.

    A message sent whole is returned as websockets received it; the fragments of a fragmented binary message
    are copied one by one into a pooled buffer (``recv`` would join them into fresh memory).
    """
    fragments = connection.recv_streaming()
    first = await anext(fragments)
    if isinstance(first, str):  # a text message: answered with bad_frame, so only its start matters
        async for _ in fragments:
            pass
        return first, None
    buffer, size = None, len(first)
    try:
        async for fragment in fragments:
            if buffer is None:
                buffer = pool.take()
                buffer[:size] = first
            buffer[size : size + len(fragment)] = fragment  # overwrites in place, grows past the end
            size += len(fragment)
    except BaseException:
        if buffer is not None:
            pool.give_back(buffer)
        raise
    if buffer is None:
        return first, None
    return memoryview(buffer)[:size], buffer


class MicroBatcher:
    """Queues plan jobs and runs them in merged batches in one worker thread.

    The event loop hands each job straight to the worker thread, which takes everything queued whenever it
    is free (after ``window_s``, if set, for more to arrive) and hands the replies back to the loop: one
    thread hop each way, and no wait when nothing else is pending.

    Args:
        execute: runs jobs with one batch key in the worker thread; returns one encoded reply per job.
        window_s: how long to wait for more jobs after the first one [s].
        max_batch_images: most images per planner call.
        max_queued_images: queue capacity in images.
        loop: the event loop that submits jobs and gets the replies.
    """

    def __init__(
        self,
        execute,
        window_s: float,
        max_batch_images: int,
        max_queued_images: int,
        loop: asyncio.AbstractEventLoop,
    ):
        self._execute = execute
        self._window_s = window_s
        self._max_batch_images = max_batch_images
        self._max_queued_images = max_queued_images
        self._loop = loop
        # SimpleQueue rather than a deque under a Condition: its put and blocking get are C code, which halves
        # the cost of a hand-off; None in it means closed.
        self._inbox: queue.SimpleQueue[PlanJob | None] = queue.SimpleQueue()
        self._held: PlanJob | None = None  # taken by the worker but left for the next batch (it did not fit)
        self._count_lock = threading.Lock()
        self.queued_images = 0
        self._thread = threading.Thread(target=self._work, name="gqcnn-bridge-planner", daemon=True)
        self._thread.start()

    def submit(self, job: PlanJob) -> None:
        """Queue a job, or raise ``overloaded`` when the queue is full (event-loop thread)."""
        with self._count_lock:
            if self.queued_images + job.request.num_images > self._max_queued_images:
                raise ProtocolViolation(
                    ErrorCode.OVERLOADED,
                    f"{self.queued_images} images already queued; retry later",
                    job.request.request_id,
                )
            self.queued_images += job.request.num_images
        self._inbox.put(job)

    def _next_job(self, deadline: float) -> PlanJob | None:
        """The next queued job (None: closed), waiting for one until ``deadline`` (``time.monotonic``).

        Raises:
            queue.Empty: none came.
        """
        remaining = deadline - time.monotonic()
        return self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()

    def _next_batch(self) -> list[PlanJob] | None:
        """Jobs for the next round: all queued ones (up to the image cap), plus arrivals within the window;
        None once closed."""
        first, self._held = self._held or self._inbox.get(), None
        if first is None:
            return None
        batch, images = [first], first.request.num_images
        deadline = time.monotonic() + self._window_s
        while images < self._max_batch_images:
            try:
                job = self._next_job(deadline)
            except queue.Empty:
                break
            if job is None:
                self._inbox.put(None)  # closed: plan this batch, then stop
                break
            if images + job.request.num_images > self._max_batch_images:
                self._held = job
                break
            batch.append(job)
            images += job.request.num_images
        with self._count_lock:
            self.queued_images -= images
        return batch

    def _work(self) -> None:
        """The worker thread: plan batch after batch until closed."""
        while (batch := self._next_batch()) is not None:
            groups: dict[tuple, list[PlanJob]] = {}
            for job in batch:
                groups.setdefault(job.batch_key, []).append(job)
            for group in groups.values():
                # Skip jobs whose client left (their reply future is cancelled on the loop; reading that state
                # here is a hint only: _finish settles each job on the loop either way).
                jobs = [job for job in group if not job.reply.done()]
                replies: list = []
                if jobs:
                    try:
                        replies = self._execute(jobs)
                    except Exception:
                        logger.exception("batch failed")
                        replies = [
                            encode_error(j.request.request_id, ErrorCode.INTERNAL, "internal server error")
                            for j in jobs
                        ]
                outcome = dict(zip(jobs, replies))
                try:
                    self._loop.call_soon_threadsafe(self._finish, [(job, outcome.get(job)) for job in group])
                except RuntimeError:  # the loop is closed: nobody is left to answer
                    return

    @staticmethod
    def _finish(answered: list[tuple[PlanJob, bytes | None]]) -> None:
        for job, reply in answered:
            job.finish(reply)

    def close(self) -> None:
        """Stop the worker thread once its current call returns (a running planner call cannot be stopped)."""
        self._inbox.put(None)


def _result_to_cpu(result: PlanResult) -> PlanResult:
    tensors = (*vars(result.grasps).values(), result.valid, result.positions_cam, result.q_map)
    if all(t is None or (t.is_cpu and not t.requires_grad) for t in tensors):
        return result  # as a CPU planner returns it: nothing to copy or wait for
    q_map = None if result.q_map is None else result.q_map.detach().cpu()
    return PlanResult(
        result.grasps.to("cpu"),
        result.valid.detach().cpu(),
        result.positions_cam.detach().cpu(),
        q_map,
        result.timings,
        result.q_map_grid,
    )


def _slice_result(result: PlanResult, start: int, stop: int) -> PlanResult:
    if start == 0 and stop == len(result.valid):  # the request had the planner call to itself
        return result
    q_map = None if result.q_map is None else result.q_map[start:stop]
    return PlanResult(
        result.grasps[start:stop],
        result.valid[start:stop],
        result.positions_cam[start:stop],
        q_map,
        result.timings,
        result.q_map_grid,
    )


class _LaneMessageTooLarge(Exception):
    def __init__(self, length: int):
        super().__init__(f"a message of {length} bytes exceeds the server's limit")


class BridgeServer:
    """Serves one planner over websockets (see the module docstring and PROTOCOL.md).

    Use ``async with BridgeServer(backend, config) as server: await server.wait_closed()``, or
    :class:`ServerThread` from synchronous code.

    Args:
        backend: the planner to serve and its model description.
        config: listening address, token and limits.
    """

    def __init__(self, backend: Backend, config: ServerConfig | None = None):
        self.backend = backend
        self.config = config or ServerConfig()
        self.info = ServerInfo(
            model_id=backend.model_id,
            provenance=backend.provenance,
            device=backend.device,
            limits=self.config.limits,
            batch_window_s=self.config.batch_window_s,
            shared_memory=self.config.shared_memory,
        )
        self._shared_mappings: set = set()  # shared-memory mappings not closed yet, of every connection
        self._server: Server | None = None
        self._batcher: MicroBatcher | None = None
        self._pool = BufferPool()
        self._answers: dict[asyncio.Task, PlanJob] = {}
        self._lane_listener: socket.socket | None = None
        self._lane_folder: str | None = None
        self._lane_connections: set[socket.socket] = set()
        self._planner_lock = threading.Lock()  # the batcher's worker and the lanes plan one at a time
        self._closing = False
        self._closed = asyncio.Event()
        self.requests_answered = 0

    # --- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving."""
        limits = self.config.limits
        self._batcher = MicroBatcher(
            self._execute,
            self.config.batch_window_s,
            limits.max_batch_images,
            self.config.max_queued_images,
            asyncio.get_running_loop(),
        )
        try:
            self._server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self._process_request,
                compression=None,  # depth images barely compress and deflate would dominate the latency
                max_size=limits.max_message_bytes,
                # buffered frames per connection: memory <= (2 + max_in_flight) * max_message_bytes
                max_queue=2,
            )
        except BaseException:
            self._batcher.close()
            raise
        if self.config.shared_memory is not None and self.config.lane:
            # a private folder (mode 0700): only this user's processes reach the socket
            self._lane_folder = tempfile.mkdtemp(prefix="gqcnn-bridge-")
            path = os.path.join(self._lane_folder, "lane.sock")
            self._lane_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._lane_listener.bind(path)
            self._lane_listener.listen()
            threading.Thread(
                target=self._serve_lane, args=(self._lane_listener,), name="gqcnn-bridge-lanes", daemon=True
            ).start()
            self.info = dataclasses.replace(self.info, lane=path)
        _log(logging.INFO, "server_started", url=self.url, model=self.info.model_id, device=self.info.device)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}"

    async def shutdown(self, drain_timeout_s: float | None = None) -> None:
        """Stop taking requests, let in-flight ones finish (up to ``drain_timeout_s``), answer the rest
        ``shutting_down``, then close every connection with code 1001."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        drain = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        _log(logging.INFO, "server_draining", in_flight=len(self._answers), drain_timeout_s=drain)
        if self._answers:
            await asyncio.wait(list(self._answers), timeout=drain)
        for job in self._answers.values():
            if not job.reply.done():
                job.reply.set_result(
                    encode_error(
                        job.request.request_id, ErrorCode.SHUTTING_DOWN, "server shutting down; retry"
                    )
                )
        if self._answers:
            await asyncio.wait(list(self._answers), timeout=1.0)  # let those error replies go out
        self._server.close()
        await self._server.wait_closed()
        if self._lane_listener is not None:  # lane threads see their sockets fail and end
            self._lane_listener.close()
            for connection in list(self._lane_connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            shutil.rmtree(self._lane_folder, ignore_errors=True)
        self._batcher.close()
        self._closed.set()
        _log(logging.INFO, "server_closed", requests_answered=self.requests_answered)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports."""
        return {
            "status": "shutting_down" if self._closing else "ok",
            "model": self.info.model_id,
            "device": self.info.device,
            "connections": len(self._server.connections) if self._server else 0,
            "in_flight": len(self._answers),
            "queued_images": self._batcher.queued_images if self._batcher else 0,
            "requests_answered": self.requests_answered,
            "shared_memory_regions": len(self._shared_mappings),
        }

    # --- connections ---------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer ``GET /healthz`` over plain HTTP; let everything else go on to the websocket handshake."""
        if request.path != "/healthz":
            return None
        status = HTTPStatus.SERVICE_UNAVAILABLE if self._closing else HTTPStatus.OK
        response = connection.respond(status, json.dumps(self.health()) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _check_hello(self, data: bytes | str | memoryview) -> None:
        """Raise the typed error to refuse a connection whose first message is ``data`` with."""
        message = decode_message(data, self.config.limits)
        if message.type != "hello":
            raise ProtocolViolation(
                ErrorCode.HANDSHAKE_REQUIRED, "the first message must be a hello", message.request_id
            )
        token = message.header.get("token")
        if self.config.token is not None and not (
            isinstance(token, str) and hmac.compare_digest(token.encode(), self.config.token.encode())
        ):
            raise ProtocolViolation(ErrorCode.UNAUTHORIZED, "missing or wrong token")
        if self._closing:
            raise ProtocolViolation(ErrorCode.SHUTTING_DOWN, "server shutting down; retry")

    async def _greet(self, connection: ServerConnection) -> bool:
        """Run the hello/welcome handshake; on failure send a typed error, close, and return False."""
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                data = await connection.recv()
        except (TimeoutError, ConnectionClosed):
            await connection.close(CloseCode.POLICY_VIOLATION, "no hello")
            return False
        try:
            self._check_hello(data)
        except ProtocolViolation as violation:
            _log(
                logging.WARNING,
                "handshake_refused",
                peer=connection.remote_address,
                code=violation.code,
                reason=str(violation),
            )
            try:
                await connection.send(encode_error(violation.request_id, violation.code, str(violation)))
            except ConnectionClosed:
                return False
            close_code = (
                CloseCode.GOING_AWAY
                if violation.code == ErrorCode.SHUTTING_DOWN
                else CloseCode.POLICY_VIOLATION
            )
            await connection.close(close_code, violation.code)
            return False
        await connection.send(encode_message(self.info.to_header()))
        return True

    async def _handle(self, connection: ServerConnection) -> None:
        """One connection: handshake, then read requests until the client leaves."""
        peer = connection.remote_address
        if not await self._greet(connection):
            return
        _log(logging.INFO, "client_connected", peer=peer, connections=len(self._server.connections))
        slots = asyncio.Semaphore(self.config.max_in_flight_per_connection)
        answers: set[asyncio.Task] = set()
        regions = None
        if self.config.shared_memory is not None:
            regions = ConnectionRegions(
                self.config.shared_memory, peer[0] if peer else None, self._shared_mappings
            )
        try:
            while True:
                data, buffer = await receive_message(connection, self._pool)
                received_at = time.perf_counter()
                await slots.acquire()  # at the in-flight limit, stop reading: back-pressure through TCP
                try:
                    job = self._admit(data, buffer, received_at, regions)
                except ProtocolViolation as violation:
                    slots.release()
                    del data
                    if buffer is not None:
                        self._pool.give_back(buffer)
                    _log(
                        logging.DEBUG,
                        "request_refused",
                        peer=peer,
                        request_id=violation.request_id,
                        code=violation.code,
                    )
                    await connection.send(encode_error(violation.request_id, violation.code, str(violation)))
                    continue
                del data  # what is left of the message is the job's, and goes when the job finishes
                if not isinstance(job, PlanJob):  # the reply to a shared-memory (un)registration
                    slots.release()
                    if buffer is not None:
                        self._pool.give_back(buffer)
                    await connection.send(job)
                    continue
                task = asyncio.create_task(self._answer(connection, job, slots))
                answers.add(task)
                self._answers[task] = job
                task.add_done_callback(answers.discard)
                task.add_done_callback(self._answers.pop)
        except ConnectionClosed:
            pass
        finally:
            for task in list(answers):  # the client is gone: drop its queued requests, ignore running ones
                task.cancel()
            if regions is not None:  # its regions are closed as soon as no running request reads them
                regions.close()
            _log(logging.INFO, "client_disconnected", peer=peer, cancelled=len(answers))

    def _serve_lane(self, listener: socket.socket) -> None:
        """The lane's accept loop (its own thread): a thread per connection, until the listener closes."""
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed by shutdown
            self._lane_connections.add(connection)
            threading.Thread(
                target=self._handle_lane, args=(connection,), name="gqcnn-bridge-lane", daemon=True
            ).start()

    def _handle_lane(self, connection: socket.socket) -> None:
        """One same-host lane connection (see :mod:`gqcnn_bridge.lane`), in its own thread: the handshake,
        then one request at a time, planned on this thread (under the planner lock, not merged with other
        requests: no thread hand-off between the request and its reply)."""
        regions = ConnectionRegions(self.config.shared_memory, "127.0.0.1", self._shared_mappings)
        try:
            connection.settimeout(self.config.handshake_timeout_s)
            hello = self._read_lane_message(connection)
            connection.settimeout(None)
            try:
                self._check_hello(hello)
            except ProtocolViolation as violation:
                _log(logging.WARNING, "handshake_refused", peer="lane", code=violation.code, reason=str(violation))
                send_message(connection, encode_error(violation.request_id, violation.code, str(violation)))
                return
            send_message(connection, encode_message(self.info.to_header()))
            _log(logging.INFO, "client_connected", peer="lane")
            while True:
                data = self._read_lane_message(connection)
                received_at = time.perf_counter()
                try:
                    reply = self._lane_reply(data, received_at, regions)
                except ProtocolViolation as violation:
                    reply = encode_error(violation.request_id, violation.code, str(violation))
                del data
                send_message(connection, reply)
        except _LaneMessageTooLarge as error:
            with contextlib.suppress(OSError):
                send_message(connection, encode_error(None, ErrorCode.TOO_LARGE, str(error)))
        except (EOFError, OSError):
            pass  # the client left, sent no hello in time, or the server is closing
        finally:
            regions.close()
            self._lane_connections.discard(connection)
            connection.close()
            _log(logging.INFO, "client_disconnected", peer="lane")

    def _lane_reply(self, data: bytes, received_at: float, regions: ConnectionRegions) -> bytes | bytearray:
        """The reply to one lane message; raises the typed error to answer a bad one with."""
        decoded = self._decode_request(data, regions)
        if not isinstance(decoded, tuple):  # the reply to a shared-memory (un)registration
            return decoded
        request, region_names = decoded
        job = PlanJob(request, received_at, reply=None)
        if region_names:
            job.lease = regions.lease(region_names)
        try:
            (reply,) = self._execute([job])
        finally:
            job.finish()
        self.requests_answered += 1
        return reply

    def _read_lane_message(self, connection: socket.socket) -> bytearray:
        """The next message of a lane; raises ``_LaneMessageTooLarge`` past the message limit, EOFError when
        the client has gone."""
        (length,) = LENGTH.unpack(read_exactly(connection, LENGTH.size))
        if length > self.config.limits.max_message_bytes:
            raise _LaneMessageTooLarge(length)  # its bytes cannot be skipped safely: the lane closes
        return read_exactly(connection, length)

    def _decode_request(
        self, data: bytes | str | memoryview, regions: ConnectionRegions | None
    ) -> tuple[PlanRequest, frozenset[str]] | bytearray:
        """A plan request and the shared-memory regions its arrays lie in, or the reply to a shared-memory
        (un)registration, answered at once; raises the typed error to answer a bad message with."""
        message = decode_message(data, self.config.limits, None if regions is None else regions.views)
        if message.type in ("shm_register", "shm_unregister"):
            if regions is None:
                raise ProtocolViolation(
                    ErrorCode.SHM_UNAVAILABLE, "this server offers no shared memory", message.request_id
                )
            return encode_message(regions.handle(message.header, message.request_id))
        if message.type != "plan":
            raise ProtocolViolation(
                ErrorCode.BAD_HEADER, f"unexpected message type {message.type!r}", message.request_id
            )
        request = decode_plan_request(message, self.config.limits)
        if self._closing:
            raise ProtocolViolation(
                ErrorCode.SHUTTING_DOWN, "server shutting down; retry", request.request_id
            )
        return request, message.regions

    def _admit(
        self,
        data: bytes | str,
        buffer: bytearray | None,
        received_at: float,
        regions: ConnectionRegions | None,
    ) -> PlanJob | bytearray:
        """Queue a plan request, or answer a shared-memory (un)registration at once (the reply is returned);
        raise the typed error to answer a bad message with."""
        decoded = self._decode_request(data, regions)
        if not isinstance(decoded, tuple):
            return decoded
        request, region_names = decoded
        job = PlanJob(request, received_at, asyncio.get_running_loop().create_future(), buffer, self._pool)
        if region_names:
            job.lease = regions.lease(region_names)
        try:
            self._batcher.submit(job)
        except ProtocolViolation:
            if job.lease is not None:  # nothing was queued (the caller hands the buffer back)
                job.lease.release()
            raise
        return job

    async def _answer(self, connection: ServerConnection, job: PlanJob, slots: asyncio.Semaphore) -> None:
        try:
            reply = await job.reply
            await connection.send(as_fragments(reply))
            self.requests_answered += 1
        except ConnectionClosed:
            pass
        finally:
            slots.release()

    # --- the worker thread ---------------------------------------------------------------------------------

    def _execute(self, jobs: list[PlanJob]) -> list[bytes]:
        """Check, plan and encode jobs that share a batch key (runs in the worker thread, or a lane's)."""
        with self._planner_lock:
            return self._execute_unlocked(jobs)

    def _execute_unlocked(self, jobs: list[PlanJob]) -> list[bytes]:
        batch_started = time.perf_counter()
        replies: dict[int, bytes] = {}
        ready: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        for index, job in enumerate(jobs):
            try:
                check_depth_values(job.request.depth, job.request.request_id)
            except ProtocolViolation as violation:
                replies[index] = encode_error(violation.request_id, violation.code, str(violation))
                continue
            ready.append((index, *job.request.tensors()))
        if ready:
            replies.update(self._plan_and_encode(jobs, ready, batch_started))
        return [replies[index] for index in range(len(jobs))]

    def _plan_and_encode(self, jobs: list[PlanJob], ready: list, batch_started: float) -> dict[int, bytes]:
        requests = [jobs[index].request for index, _, _ in ready]
        try:
            result, inference_s = self._plan(
                requests, [depth for _, depth, _ in ready], [mask for _, _, mask in ready]
            )
        except PlannerError as error:
            if (
                len(ready) > 1
            ):  # one image can sink a merged batch: plan each request alone so only its own fails
                return {
                    i: r
                    for item in ready
                    for i, r in self._plan_and_encode(jobs, [item], batch_started).items()
                }
            return {ready[0][0]: encode_error(requests[0].request_id, error.code, str(error))}
        except Exception:
            logger.exception("planner failed")
            return {
                index: encode_error(jobs[index].request.request_id, ErrorCode.INTERNAL, "planner failed")
                for index, _, _ in ready
            }
        replies, start, limit = {}, 0, self.config.limits.max_message_bytes
        batch = {"requests": len(ready), "images": sum(r.num_images for r in requests)}
        for (index, _, _), request in zip(ready, requests):
            stop = start + request.num_images
            job_result = _slice_result(result, start, stop)
            start = stop
            wants_q_map = request.options.return_q_map and job_result.q_map is not None
            if wants_q_map and q_map_reply_nbytes(tuple(job_result.q_map.shape), request.options) > limit:
                replies[index] = encode_error(
                    request.request_id, ErrorCode.TOO_LARGE, "q-map reply too large; raise q_map_stride"
                )
                continue
            timings = {
                "queue_s": batch_started - jobs[index].received_at,
                "inference_s": inference_s,
                "server_s": time.perf_counter() - jobs[index].received_at,
                "planner": result.timings or {},
            }
            replies[index] = encode_plan_reply(
                request.request_id, job_result, request.options, timings, batch
            )
        _log(
            logging.DEBUG,
            "batch_planned",
            requests=batch["requests"],
            images=batch["images"],
            inference_ms=round(1e3 * inference_s, 3),
        )
        return replies

    def _plan(
        self, requests: list[PlanRequest], depths: list[torch.Tensor], masks: list
    ) -> tuple[PlanResult, float]:
        """One planner call over the requests' images; returns the CPU result and its duration [s]."""
        if (
            len(requests) == 1
        ):  # pass the request through unchanged, so a lone request is planned exactly as sent
            depth, mask, intrinsics = depths[0], masks[0], requests[0].intrinsics
        else:
            depth = torch.cat(depths)
            mask = None if masks[0] is None else torch.cat(masks)
            intrinsics = [
                c
                for r in requests
                for c in (r.intrinsics if isinstance(r.intrinsics, list) else [r.intrinsics] * r.num_images)
            ]
        options = requests[0].options
        start = time.perf_counter()
        result = self.backend.planner.plan(
            depth, intrinsics, mask=mask, k=options.k, return_q_map=options.return_q_map
        )
        result = _result_to_cpu(result)  # waits for the device, so the duration covers all of inference
        return result, time.perf_counter() - start


class ServerThread:
    """Runs a :class:`BridgeServer` on its own event loop in a background thread (tests, benchmarks, apps).

    ``with ServerThread(backend, config) as running: RemotePlanner(running.url) ...``
    """

    def __init__(self, backend: Backend, config: ServerConfig | None = None):
        self.server = BridgeServer(backend, config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gqcnn-bridge-server", daemon=True)

    def _main(self) -> None:
        async def serve_until_closed() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                await self.server.start()
            except BaseException as error:
                self._error = error
                raise
            finally:
                self._started.set()
            await self.server.wait_closed()

        try:
            asyncio.run(serve_until_closed())
        except BaseException:
            if self._error is None:
                raise

    def start(self) -> Self:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self, drain_timeout_s: float | None = None) -> None:
        """Shut the server down (see :meth:`BridgeServer.shutdown`) and wait for its thread to end."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.shutdown(drain_timeout_s), self._loop).result()
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --- command line (``dexrl serve`` and ``python -m gqcnn_bridge``) ----------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    defaults, limits = ServerConfig(), Limits()
    parser.add_argument(
        "--host",
        default=defaults.host,
        help=f"interface to bind (default {defaults.host}; 0.0.0.0 exposes the planner)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help=f"TCP port, 0 for any free one (default {defaults.port})",
    )
    parser.add_argument(
        "--planner",
        choices=("fcgqcnn", "highest-object"),
        default="fcgqcnn",
        help="what to serve (default fcgqcnn)",
    )
    parser.add_argument(
        "--weights", default=None, help="FC-GQ-CNN weights file (default: the packaged default weights)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu or cuda:N (default: cuda:0 if available, else cpu)"
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=1e3 * defaults.batch_window_s,
        help="wait this long to batch requests from an idle start (default 0)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=limits.max_batch_images,
        help=f"most images per request and per batch (default {limits.max_batch_images})",
    )
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=limits.max_message_bytes / 2**20,
        help="largest message [MiB] (default 64)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON objects (default text)",
    )
    parser.add_argument(
        "--no-shared-memory",
        action="store_true",
        help="do not offer same-host shared-memory regions (offered to loopback clients by default)",
    )
    parser.add_argument(
        "--no-lane",
        action="store_true",
        help="with shared memory, do not also offer the same-host lane (a Unix socket; offered by default)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.epilog = f"Set {TOKEN_ENV} to require clients to present that token."


async def _serve(backend: Backend, config: ServerConfig) -> None:
    async with BridgeServer(backend, config) as server:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(server.shutdown()))
        await server.wait_closed()


def run(args: argparse.Namespace) -> int:
    from .backends import load_backend  # noqa: PLC0415  (loads torch models; only here)

    keep_freed_memory()  # this process serves messages: reuse their buffers rather than fault them in

    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    limits = Limits(max_message_bytes=int(args.max_message_mb * 2**20), max_batch_images=args.max_batch)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=os.environ.get(TOKEN_ENV) or None,
        limits=limits,
        batch_window_s=args.batch_window_ms / 1e3,
        max_queued_images=max(ServerConfig.max_queued_images, limits.max_batch_images),
        shared_memory=None if args.no_shared_memory else SharedMemoryLimits(),
        lane=not args.no_lane,
    )
    try:
        backend = load_backend(args.planner, weights=args.weights, device=args.device)
    except FileNotFoundError as error:  # no weights yet: say how to get them, without a traceback
        logger.error("%s", error)
        return 2
    asyncio.run(_serve(backend, config))
    return 0
