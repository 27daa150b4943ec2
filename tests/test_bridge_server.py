"""gqcnn_bridge end to end: a real server on loopback (a free port per test), real clients, no mocks."""

import asyncio
import contextlib
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve as sync_serve

from dexrl.grasp import (
    PHOXI_S,
    CameraIntrinsics,
    ImageGrasps,
    NoValidGrasps,
    Planner,
    PlannerError,
    PlannerInputError,
    PlannerUnavailable,
    PlanResult,
    deproject_per_camera,
    wrap_half_turn,
)
from gqcnn_bridge import (
    AsyncRemotePlanner,
    Backend,
    Backoff,
    Limits,
    RemotePlanner,
    ServerConfig,
    ServerThread,
    load_backend,
)
from gqcnn_bridge.protocol import (
    ALIGNMENT,
    ErrorCode,
    PlanOptions,
    ServerInfo,
    decode_message,
    downsample_q_map,
    encode_message,
    encode_plan_request,
)
from gqcnn_bridge.lane import LENGTH, LaneConnection, read_exactly, send_message
from gqcnn_bridge.server import BufferPool, JsonLogFormatter

CAMERA = PHOXI_S.scaled(1 / 16)
"""A 24 x 32 PhoXi S: small images keep the CPU time of every test low."""


class GradientPlanner:
    """A deterministic planner for the tests: grasp where depth changes fastest, across the edge.

    Implements :class:`dexrl.grasp.Planner`. It records the batch size of every call, can hold calls at a gate
    (to keep a request in flight), and sets ``entered`` when a call starts.
    """

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.entered = threading.Event()
        self.calls: list[int] = []

    def plan(self, depth, intrinsics, mask=None, k=1, return_q_map=False):
        self.calls.append(depth.shape[0])
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        b, _, w = depth.shape
        cameras = [intrinsics] * b if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
        grad_v, grad_u = torch.gradient(depth, dim=(1, 2))
        steepness = torch.hypot(grad_u, grad_v)
        q_map = steepness / (steepness + 0.01)
        admissible = depth > 0 if mask is None else mask & (depth > 0)
        if not admissible.flatten(1).any(dim=1).all():
            raise NoValidGrasps("an image has no admissible pixel")
        score, index = torch.where(admissible, q_map, -1.0).flatten(1).topk(k, dim=1)
        center = torch.stack(((index % w).to(depth.dtype), (index // w).to(depth.dtype)), dim=-1)
        angle = wrap_half_turn(
            torch.atan2(grad_v.flatten(1).gather(1, index), grad_u.flatten(1).gather(1, index))
        )
        grasp_depth = depth.flatten(1).gather(1, index)
        grasps = ImageGrasps(
            center, angle, grasp_depth, torch.full_like(grasp_depth, 0.05), score.clamp(min=0)
        )
        positions = deproject_per_camera(cameras, center, grasp_depth)
        return PlanResult(
            grasps, score >= 0, positions, q_map.unsqueeze(1) if return_q_map else None, {"gradient": 0.0}
        )


def bin_depth(seed: int, batch: int = 1, camera: CameraIntrinsics = CAMERA) -> torch.Tensor:
    """(batch, H, W) float32 depth [m] of a bin floor with a few boxes on it."""
    rng = np.random.default_rng(seed)
    depth = np.full((batch, camera.height, camera.width), 0.70, np.float32)
    for image in depth:
        for _ in range(3):
            v, u = rng.integers(0, camera.height - 6), rng.integers(0, camera.width - 6)
            image[v : v + rng.integers(3, 7), u : u + rng.integers(3, 7)] = rng.uniform(0.6, 0.68)
    return torch.from_numpy(depth + rng.normal(0, 1e-4, depth.shape).astype(np.float32))


def assert_same_result(remote: PlanResult, local: PlanResult, options: PlanOptions = PlanOptions()) -> None:
    for name in ("center", "angle", "depth", "width", "q"):
        assert torch.equal(getattr(remote.grasps, name), getattr(local.grasps, name)), name
    assert torch.equal(remote.valid, local.valid) and torch.equal(remote.positions_cam, local.positions_cam)
    if options.return_q_map:
        expected = torch.from_numpy(
            downsample_q_map(local.q_map, options.q_map_stride, options.q_map_dtype)
        ).float()
        assert torch.equal(remote.q_map, expected / 255 if options.q_map_dtype == "uint8" else expected)
        # the grid travels with the downsampled map: block j of s cells is centred midway between its cells
        stride, offset = local.q_map_grid
        s = options.q_map_stride
        assert remote.q_map_grid == (stride * s, offset + stride * (s - 1) / 2)


@contextlib.contextmanager
def served(planner, **config):
    """A bridge server for ``planner`` on a free loopback port (or ``port``); shut down on exit."""
    server = ServerThread(
        Backend(planner, model_id="gradient-test"), ServerConfig(**{"port": 0, **config})
    ).start()
    try:
        yield server
    finally:
        server.stop(drain_timeout_s=1.0)


def health(server: ServerThread) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.port}/healthz", timeout=5) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        deadline.wait(0.01)
    raise AssertionError("condition not reached in time")


# --- results ----------------------------------------------------------------------------------------------


FC_CAMERA = CameraIntrinsics(fx=138.0, fy=138.0, cx=63.5, cy=55.5, width=128, height=112)
"""Just over FC-GQ-CNN's 96 px receptive field, so a CPU plan takes a fraction of a second."""


@pytest.fixture(scope="module")
def fcgqcnn_backend(tmp_path_factory):
    """The served FC-GQ-CNN, built as ``dexrl serve`` builds it: from a weights file of random weights."""
    from dexrl.gqcnn import fc_gqcnn_4_0_pj, save_network  # noqa: PLC0415

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "fcgqcnn_random.safetensors"
    save_network(fc_gqcnn_4_0_pj(), path, provenance={"source": "random init, seed 0"})
    return load_backend("fcgqcnn", weights=str(path), device="cpu")


@pytest.mark.parametrize(
    "batch, per_image_intrinsics, with_mask, options",
    [
        (1, False, False, PlanOptions()),
        (3, True, True, PlanOptions(k=4, return_q_map=True, q_map_dtype="uint8", q_map_stride=2)),
        (2, False, False, PlanOptions(k=2, return_q_map=True, q_map_dtype="float16", q_map_stride=1)),
    ],
)
def test_round_trip_equals_the_local_fcgqcnn_planner_exactly(
    fcgqcnn_backend, batch, per_image_intrinsics, with_mask, options
):
    planner = fcgqcnn_backend.planner
    depth = bin_depth(seed=batch, batch=batch, camera=FC_CAMERA)
    intrinsics = [FC_CAMERA] * batch if per_image_intrinsics else FC_CAMERA
    mask = None
    if with_mask:
        mask = (torch.arange(FC_CAMERA.width) < 80).expand_as(depth).contiguous()
    local = planner.plan(depth, intrinsics, mask=mask, k=options.k, return_q_map=options.return_q_map)
    server = ServerThread(fcgqcnn_backend, ServerConfig(port=0)).start()
    try:
        with RemotePlanner(server.url, timeout_s=120) as remote:
            result = remote.plan(
                depth, intrinsics, mask=mask, k=options.k, return_q_map=options.return_q_map,
                q_map_dtype=options.q_map_dtype, q_map_stride=options.q_map_stride,
            )  # fmt: skip
            info = remote.server_info
    finally:
        server.stop()
    assert isinstance(remote, Planner) and local.valid[:, 0].all()
    assert_same_result(result, local, options)
    assert result.timings["round_trip"] >= result.timings["server"] >= result.timings["inference"] > 0
    assert set(local.timings) <= set(result.timings)  # the planner's stage timings come along
    assert info.model_id == f"fcgqcnn_random@{planner.card.sha256[:12]}" and info.device == "cpu"
    assert (
        info.provenance["sha256"] == planner.card.sha256
        and info.provenance["source"] == "random init, seed 0"
    )


def test_concurrent_clients_get_their_own_replies_from_shared_batches():
    planner = GradientPlanner()
    small = PHOXI_S.scaled(1 / 24)
    inputs = [
        [
            (
                bin_depth(10 * client + j, camera=CAMERA if client < 3 else small),
                CAMERA if client < 3 else small,
            )
            for j in range(2)
        ]
        for client in range(4)
    ]
    expected = [
        [planner.plan(depth, camera, k=2) for depth, camera in client_inputs] for client_inputs in inputs
    ]
    planner.calls.clear()

    async def run_clients(url):
        clients = [AsyncRemotePlanner(url) for _ in inputs]
        await asyncio.gather(
            *(client.connect() for client in clients)
        )  # so that all requests go out together
        try:
            return await asyncio.gather(
                *(
                    asyncio.gather(*(client.plan(depth, camera, k=2) for depth, camera in client_inputs))
                    for client, client_inputs in zip(clients, inputs)
                )
            )
        finally:
            await asyncio.gather(*(client.close() for client in clients))

    with served(planner, batch_window_s=0.2) as server:
        results = asyncio.run(run_clients(server.url))
    for client_results, client_expected in zip(results, expected):
        for result, local in zip(client_results, client_expected):
            assert_same_result(result, local)
    assert sum(planner.calls) == 8 and len(planner.calls) < 8  # requests were merged, each image planned once
    assert max(result.timings["queue"] for client_results in results for result in client_results) < 5


def test_fragmented_requests_reuse_a_pooled_buffer_and_get_their_own_results():
    planner = GradientPlanner()
    camera = PHOXI_S.scaled(1 / 2)  # 193 x 258: 4 images make a 0.8 MB request, 8 a fragmented 1.6 MB one
    inputs = [bin_depth(seed, batch=8, camera=camera) for seed in range(4)]
    expected = [planner.plan(depth, camera, k=3) for depth in inputs]
    with served(planner) as server, RemotePlanner(server.url) as client:
        for depth, local in zip(inputs, expected):
            assert_same_result(client.plan(depth, camera, k=3), local)
        small = bin_depth(9, batch=1, camera=camera)
        assert_same_result(client.plan(small, camera), planner.plan(small, camera))
        assert len(server.server._pool._idle) == 1  # one buffer served every fragmented request


def test_the_buffer_pool_never_hands_out_a_buffer_that_is_still_viewed():
    pool = BufferPool(keep=2)
    buffer = pool.take()
    buffer += b"\x01" * 1000
    view = np.frombuffer(memoryview(buffer)[:500], np.uint8)
    pool.give_back(buffer)
    assert pool.take() is not buffer and view.sum() == 500  # still viewed: dropped, not reused
    del view
    pool.give_back(buffer)
    assert len(buffer) == 1000 and pool.take() is buffer


def test_one_bad_image_in_a_merged_batch_fails_only_its_own_request():
    planner = GradientPlanner()
    good, bad = bin_depth(1), bin_depth(2)
    empty_mask = torch.zeros_like(bad, dtype=torch.bool)

    async def plan_both(url):
        async with AsyncRemotePlanner(url) as client:
            await client.connect()
            return await asyncio.gather(
                client.plan(good, CAMERA), client.plan(bad, CAMERA, mask=empty_mask), return_exceptions=True
            )

    with served(planner, batch_window_s=0.2) as server:
        good_result, bad_result = asyncio.run(plan_both(server.url))
    assert isinstance(bad_result, NoValidGrasps) and bad_result.code == ErrorCode.NO_VALID_GRASPS
    assert_same_result(good_result, GradientPlanner().plan(good, CAMERA))


# --- malformed input --------------------------------------------------------------------------------------


def _split(message: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack_from("<I", message)
    return json.loads(message[4 : 4 + length]), message[-(-(4 + length) // ALIGNMENT) * ALIGNMENT :]


def _frame(header_bytes: bytes, data: bytes) -> bytes:
    prefix = struct.pack("<I", len(header_bytes)) + header_bytes
    return prefix + bytes(-len(prefix) % ALIGNMENT) + data


def _reframed(message: bytes, edit) -> bytes:
    header, data = _split(message)
    edit(header)
    return _frame(json.dumps(header).encode(), data)


INPUT_CODES = {ErrorCode.BAD_FRAME, ErrorCode.BAD_HEADER, ErrorCode.UNSUPPORTED_VERSION}


def fuzz_cases(rng: np.random.Generator):
    """Endless malformed plan requests: (message, acceptable error codes, request id the reply must echo)."""
    while True:
        batch, height, width = int(rng.integers(1, 3)), int(rng.integers(2, 9)), int(rng.integers(2, 9))
        camera = CameraIntrinsics(fx=50.0, fy=50.0, cx=width / 2, cy=height / 2, width=width, height=height)
        depth = rng.uniform(0.5, 0.8, (batch, height, width)).astype(np.float32)
        request_id = int(rng.integers(0, 2**31))
        valid = bytes(encode_plan_request(request_id, depth, camera, None, PlanOptions()))
        kind = rng.integers(0, 14)
        if kind == 0:  # truncated frame
            yield valid[: rng.integers(0, len(valid))], INPUT_CODES, None
        elif kind == 1:  # header length past the end
            yield (
                struct.pack("<I", len(valid) + int(rng.integers(1, 2**20))) + valid[4:],
                {ErrorCode.BAD_FRAME},
                None,
            )
        elif kind == 2:  # not JSON, not UTF-8, not an object, or nested too deep
            garbage = [
                rng.bytes(int(rng.integers(1, 40))) + b"\xff",
                b"[1, 2]",
                b"null",
                b'"plan"',
                b"{" * 3000,
                b"{'type': 'plan'}",
                b"NaN",
            ]
            yield _frame(garbage[rng.integers(0, len(garbage))], b""), {ErrorCode.BAD_HEADER}, None
        elif kind == 3:  # wrong protocol version
            version = [0, 2, -1, "1", None, 1.0, True, [1]][rng.integers(0, 8)]
            yield (
                _reframed(valid, lambda h: h.update(version=version)),
                {ErrorCode.UNSUPPORTED_VERSION},
                request_id,
            )
        elif kind == 4:  # well-framed depth of a wrong dtype
            dtype = ["float64", "float16", "uint8", "int32", "bool"][rng.integers(0, 5)]
            wrong = bytes(encode_plan_request(request_id, depth.astype(dtype), camera, None, PlanOptions()))
            yield wrong, {ErrorCode.BAD_DTYPE}, request_id
        elif kind == 5:  # unknown dtype name
            name = ["float128", "f4", "", "complex64", "<f4"][rng.integers(0, 5)]
            yield (
                _reframed(valid, lambda h: h["arrays"][0].update(dtype=name)),
                {ErrorCode.BAD_DTYPE},
                request_id,
            )
        elif kind == 6:  # wrong shapes: depth rank, mask, intrinsics count or size
            choice = rng.integers(0, 4)
            if choice == 0:
                yield (
                    bytes(encode_plan_request(request_id, depth[0], camera, None, PlanOptions())),
                    {ErrorCode.BAD_SHAPE},
                    request_id,
                )
            elif choice == 1:
                mask = np.ones((batch, height, width + 1), np.uint8)
                yield (
                    bytes(encode_plan_request(request_id, depth, camera, mask, PlanOptions())),
                    {ErrorCode.BAD_SHAPE},
                    request_id,
                )
            elif choice == 2:
                yield (
                    bytes(
                        encode_plan_request(request_id, depth, [camera] * (batch + 1), None, PlanOptions())
                    ),
                    {ErrorCode.BAD_SHAPE},
                    request_id,
                )
            else:
                yield (
                    _reframed(valid, lambda h: h["intrinsics"].update(height=height + 1)),
                    {ErrorCode.BAD_SHAPE},
                    request_id,
                )
        elif kind == 7:  # huge dimensions, batch, image side or k
            choice = rng.integers(0, 3)
            if choice == 0:
                huge = [int(d) for d in rng.integers(1, 10**6, 3)] + [10**5]
                yield (
                    _reframed(valid, lambda h: h["arrays"][0].update(shape=huge[:3])),
                    {ErrorCode.TOO_LARGE, ErrorCode.BAD_FRAME},
                    request_id,
                )
            elif choice == 1:
                tall = np.full((1, 5000, 1), 0.6, np.float32)
                yield (
                    bytes(encode_plan_request(request_id, tall, camera, None, PlanOptions())),
                    {ErrorCode.TOO_LARGE},
                    request_id,
                )
            else:
                yield (
                    _reframed(valid, lambda h: h.update(k=int(rng.integers(10**4, 10**9)))),
                    {ErrorCode.TOO_LARGE},
                    request_id,
                )
        elif kind == 8:  # NaN, inf or empty depth
            bad = depth.copy()
            image = rng.integers(0, batch)
            choice = rng.integers(0, 4)
            if choice == 3:
                bad[image] = 0.0 if rng.random() < 0.5 else -0.1
            else:
                bad[image, rng.integers(0, height), rng.integers(0, width)] = [np.nan, np.inf, -np.inf][
                    choice
                ]
            yield (
                bytes(encode_plan_request(request_id, bad, camera, None, PlanOptions())),
                {ErrorCode.BAD_DEPTH},
                request_id,
            )
        elif kind == 9:  # ill-typed fields
            edits = [
                lambda h: h.update(k=[0, -3, "2", 1.5, True, None][rng.integers(0, 6)]),
                lambda h: h.update(
                    options=[1, {"q_map_dtype": "float64"}, {"return_q_map": "yes"}, {"q_map_stride": 100}][
                        rng.integers(0, 4)
                    ]
                ),
                lambda h: h.update(
                    intrinsics=[None, 3, [1], {"fx": "50"}, {**camera.to_dict(), "cx": None}][
                        rng.integers(0, 5)
                    ]
                ),
                lambda h: h.update(type=["hello", "result", "", 7][rng.integers(0, 4)]),
                lambda h: h.update(arrays={"depth": 1}),
                lambda h: h["arrays"].append({**h["arrays"][0], "name": "rgb"}),
                lambda h: h["arrays"][0].update(name="image"),
            ]
            yield (
                _reframed(valid, edits[rng.integers(0, len(edits))]),
                {ErrorCode.BAD_HEADER, ErrorCode.TOO_LARGE},
                request_id,
            )
        elif kind == 10:  # bad request ids
            bad_id = [[], {}, -1, 2**60, 1.5, "x" * 200, True][rng.integers(0, 7)]
            yield _reframed(valid, lambda h: h.update(request_id=bad_id)), {ErrorCode.BAD_HEADER}, None
        elif kind == 11:  # array layout disagrees with the bytes
            edits = [
                lambda h: h["arrays"][0].update(offset=int(rng.integers(1, ALIGNMENT))),
                lambda h: h["arrays"][0].update(nbytes=h["arrays"][0]["nbytes"] + int(rng.integers(1, 64))),
                lambda h: h["arrays"][0].update(offset=ALIGNMENT * int(rng.integers(1, 10**6))),
                lambda h: h["arrays"][0].update(offset=-ALIGNMENT),
                lambda h: h["arrays"][0].update(shape=[batch, height, width + 1]),
            ]
            yield _reframed(valid, edits[rng.integers(0, len(edits))]), {ErrorCode.BAD_FRAME}, request_id
        elif kind == 12:  # random bytes
            yield rng.bytes(int(rng.integers(0, 64))), INPUT_CODES, None
        else:  # a text frame
            yield valid.decode("latin-1"), {ErrorCode.BAD_FRAME}, None


def test_ten_thousand_malformed_messages_each_get_a_typed_error_and_the_server_keeps_serving():
    planner = GradientPlanner()
    rng = np.random.default_rng(2024)
    counts: dict[str, int] = {}
    with served(planner) as server:
        with connect(server.url, compression=None) as websocket:
            websocket.send(encode_message({"type": "hello"}))
            websocket.recv(timeout=5)
            for message, codes, request_id in (case for case, _ in zip(fuzz_cases(rng), range(10_000))):
                websocket.send(message)
                header, _ = _split(websocket.recv(timeout=5))
                assert header["type"] == "error" and header["code"] in codes, (header, codes)
                assert request_id is None or header["request_id"] == request_id
                counts[header["code"]] = counts.get(header["code"], 0) + 1
            with RemotePlanner(
                server.url
            ) as remote:  # a well-formed request still gets its result, on a new connection
                assert_same_result(
                    remote.plan(bin_depth(0), CAMERA), GradientPlanner().plan(bin_depth(0), CAMERA)
                )
            websocket.send(encode_plan_request(1, bin_depth(0).numpy(), CAMERA, None, PlanOptions()))
            assert _split(websocket.recv(timeout=5))[0]["type"] == "result"  # and on the fuzzed one
        assert health(server)["status"] == "ok"
    assert sum(counts.values()) == 10_000 and set(counts) == INPUT_CODES | {
        ErrorCode.BAD_DTYPE, ErrorCode.BAD_SHAPE, ErrorCode.TOO_LARGE, ErrorCode.BAD_DEPTH,
    }, counts  # fmt: skip
    assert planner.calls == [1, 1]  # nothing malformed reached the planner


def test_wrong_or_missing_token_is_refused_and_logged(caplog):
    planner = GradientPlanner()
    with (
        caplog.at_level(logging.WARNING, logger="gqcnn_bridge"),
        served(planner, token="open sesame") as server,
    ):
        for token in ("open sesam", None):
            with pytest.raises(PlannerError) as caught, RemotePlanner(server.url, token=token) as remote:
                remote.plan(bin_depth(0), CAMERA)
            assert caught.value.code == ErrorCode.UNAUTHORIZED and not isinstance(
                caught.value, PlannerUnavailable
            )
        assert planner.calls == []
        with RemotePlanner(server.url, token="open sesame") as remote:
            assert remote.plan(bin_depth(0), CAMERA).valid.all()
    refusals = [record for record in caplog.records if getattr(record, "event", None) == "handshake_refused"]
    assert len(refusals) == 2
    entry = json.loads(JsonLogFormatter().format(refusals[0]))
    assert (
        entry["event"] == "handshake_refused"
        and entry["code"] == "unauthorized"
        and entry["level"] == "WARNING"
    )


def test_messages_over_the_size_limit_are_refused_and_the_server_keeps_serving():
    limit = 16 << 10
    with served(
        GradientPlanner(), limits=Limits(max_message_bytes=limit, max_batch_images=4), max_queued_images=4
    ) as server:
        big = torch.full((1, 64, 96), 0.6)  # 24 KiB of depth
        with RemotePlanner(server.url) as remote:
            with pytest.raises(PlannerInputError) as caught:
                remote.plan(big, CameraIntrinsics(fx=50.0, fy=50.0, cx=48.0, cy=32.0, width=96, height=64))
            assert caught.value.code == ErrorCode.TOO_LARGE  # refused before sending
            with connect(server.url, compression=None, max_size=None) as websocket:
                websocket.send(encode_message({"type": "hello"}))
                websocket.recv(timeout=5)
                websocket.send(bytes(limit + 1))
                with pytest.raises(ConnectionClosed) as closed:
                    websocket.recv(timeout=5)
                assert closed.value.rcvd.code == 1009  # message too big
            assert remote.plan(bin_depth(0), CAMERA).valid.all()


def test_a_full_queue_answers_overloaded_with_a_retryable_error():
    planner = GradientPlanner(gate=threading.Event())
    with served(planner, limits=Limits(max_batch_images=2), max_queued_images=2) as server:

        async def overload():
            async with AsyncRemotePlanner(server.url) as client:
                running = asyncio.ensure_future(client.plan(bin_depth(1), CAMERA))
                await asyncio.to_thread(planner.entered.wait, 10)
                queued = asyncio.ensure_future(client.plan(bin_depth(2, batch=2), CAMERA))
                await asyncio.to_thread(wait_until, lambda: health(server)["queued_images"] == 2)
                with pytest.raises(PlannerUnavailable) as caught:
                    await client.plan(bin_depth(3), CAMERA)
                planner.gate.set()
                return caught.value, await running, await queued

        refusal, first, second = asyncio.run(overload())
    assert refusal.code == ErrorCode.OVERLOADED
    assert first.valid.shape == (1, 1) and second.valid.shape == (2, 1)


# --- failures of peers ------------------------------------------------------------------------------------

HANDWRITTEN_CLIENT = r'''
"""A client written from PROTOCOL.md alone: numpy, json, struct and websockets; no DexRL imports."""
import json, struct, sys, time
import numpy as np
from websockets.sync.client import connect

def frame(header, arrays=()):
    specs, data = [], b""
    for name, array in arrays:
        data += bytes(-len(data) % 8)
        spec = {"name": name, "dtype": array.dtype.name, "shape": list(array.shape), "offset": len(data)}
        specs.append({**spec, "nbytes": array.nbytes})
        data += array.tobytes()
    text = json.dumps({**header, "version": 1, "arrays": specs}).encode()
    prefix = struct.pack("<I", len(text)) + text
    return prefix + bytes(-len(prefix) % 8) + data

def parse(message):
    (length,) = struct.unpack_from("<I", message)
    header = json.loads(message[4:4 + length])
    start = 4 + length + (-(4 + length) % 8)
    arrays = {}
    for s in header["arrays"]:
        count = int(np.prod(s["shape"]))
        arrays[s["name"]] = np.frombuffer(message, s["dtype"], count, start + s["offset"]).reshape(s["shape"])
    return header, arrays

url, mode, depth_path, camera = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
depth = np.load(depth_path)
with connect(url) as websocket:
    websocket.send(frame({"type": "hello", "client": "handwritten"}))
    welcome, _ = parse(websocket.recv())
    assert welcome["type"] == "welcome", welcome
    options = {"return_q_map": True, "q_map_dtype": "uint8", "q_map_stride": 2}
    request = {"type": "plan", "request_id": "first", "k": 2, "intrinsics": camera, "options": options}
    websocket.send(frame(request, [("depth", depth)]))
    if mode == "hang":  # a second request of another image size, so that it is never merged with the first
        smaller = {**camera, "height": camera["height"] - 2}
        cropped = {**request, "request_id": "second", "intrinsics": smaller}
        websocket.send(frame(cropped, [("depth", np.ascontiguousarray(depth[:, 2:]))]))
        print("sent", flush=True)
        time.sleep(60)
    header, arrays = parse(websocket.recv())
    print(json.dumps({"header": header, "arrays": {name: array.tolist() for name, array in arrays.items()}}))
'''


def run_handwritten_client(url: str, mode: str, depth: torch.Tensor, tmp_path) -> subprocess.Popen:
    np.save(tmp_path / "depth.npy", depth.numpy())
    arguments = [url, mode, str(tmp_path / "depth.npy"), json.dumps(CAMERA.to_dict())]
    return subprocess.Popen(
        [sys.executable, "-c", HANDWRITTEN_CLIENT, *arguments], stdout=subprocess.PIPE, text=True
    )


def test_a_client_written_from_the_protocol_document_gets_the_local_result(tmp_path):
    planner = GradientPlanner()
    depth = bin_depth(5)
    local = planner.plan(depth, CAMERA, k=2, return_q_map=True)
    with served(planner) as server:
        output, _ = run_handwritten_client(server.url, "plan", depth, tmp_path).communicate(timeout=60)
    reply = json.loads(output)
    assert reply["header"]["type"] == "result" and reply["header"]["request_id"] == "first"
    arrays = {name: torch.tensor(values) for name, values in reply["arrays"].items()}
    assert torch.equal(arrays["center"].float(), local.grasps.center) and torch.equal(
        arrays["q"].float(), local.grasps.q
    )
    assert torch.equal(arrays["position_cam"].float(), local.positions_cam)
    assert torch.equal(arrays["q_map"], torch.from_numpy(downsample_q_map(local.q_map, 2, "uint8")).long())
    assert arrays["orientation_cam"].shape == (1, 2, 4)


def test_a_client_killed_mid_request_leaves_the_server_healthy(tmp_path):
    planner = GradientPlanner(gate=threading.Event())
    with served(planner) as server:
        process = run_handwritten_client(server.url, "hang", bin_depth(1), tmp_path)
        assert process.stdout.readline() == "sent\n"
        assert planner.entered.wait(10)
        wait_until(lambda: health(server)["in_flight"] == 2)  # one request planning, one queued behind it
        process.kill()
        process.wait()
        wait_until(lambda: health(server)["connections"] == 0 and health(server)["in_flight"] == 0)
        planner.gate.set()
        with RemotePlanner(server.url) as remote:
            assert_same_result(
                remote.plan(bin_depth(2), CAMERA), GradientPlanner().plan(bin_depth(2), CAMERA)
            )
        status = health(server)
    assert planner.calls == [1, 1]  # the killed client's queued request was dropped, never planned
    assert status["queued_images"] == 0 and status["requests_answered"] == 1 and status["status"] == "ok"


def test_a_server_restarted_under_a_client_is_reconnected_and_nothing_is_answered_twice():
    first_planner, second_planner = GradientPlanner(gate=threading.Event()), GradientPlanner()
    depth_a, depth_b = bin_depth(1), bin_depth(2)
    first = ServerThread(Backend(first_planner), ServerConfig(port=0)).start()
    port = first.server.port
    with (
        RemotePlanner(first.url, backoff=Backoff(initial_s=0.05, attempts=8)) as remote,
        ThreadPoolExecutor(1) as pool,
    ):
        in_flight = pool.submit(remote.plan, depth_a, CAMERA)
        assert first_planner.entered.wait(10)
        first.stop(drain_timeout_s=0.1)  # the request cannot finish in time: it is answered shutting_down
        first_planner.gate.set()
        with pytest.raises(PlannerUnavailable) as caught:
            in_flight.result(timeout=10)
        assert caught.value.code == ErrorCode.SHUTTING_DOWN
        with served(second_planner, port=port):
            retried = remote.plan(depth_a, CAMERA)  # the caller retries; the client reconnects by itself
            following = remote.plan(depth_b, CAMERA)
    assert_same_result(retried, GradientPlanner().plan(depth_a, CAMERA))
    assert_same_result(following, GradientPlanner().plan(depth_b, CAMERA))
    assert first_planner.calls == [1] and second_planner.calls == [1, 1]


def test_a_connection_lost_mid_request_raises_a_retryable_error():
    welcome = encode_message(ServerInfo(model_id="vanishing", provenance={}, device="cpu").to_header())

    def drop_after_request(connection):
        connection.recv()  # hello
        connection.send(welcome)
        connection.recv()  # the plan request
        connection.socket.shutdown(socket.SHUT_RDWR)  # gone without a reply or a close frame

    with sync_serve(drop_after_request, "127.0.0.1", 0, compression=None) as fake:
        thread = threading.Thread(target=fake.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"ws://127.0.0.1:{fake.socket.getsockname()[1]}"
            with RemotePlanner(url, timeout_s=10) as remote, pytest.raises(PlannerUnavailable) as caught:
                remote.plan(bin_depth(0), CAMERA)
        finally:
            fake.shutdown()
            thread.join()
    assert caught.value.code == "unavailable" and "retried" in str(caught.value)


def test_no_server_at_all_is_unavailable_after_the_backoff():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        remote = RemotePlanner(f"ws://127.0.0.1:{port}", backoff=Backoff(initial_s=0.01, attempts=3))
        with remote, pytest.raises(PlannerUnavailable, match="after 3 attempts"):
            remote.plan(bin_depth(0), CAMERA)


# --- shared memory ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lane", [False, True])
def test_shared_memory_round_trip_equals_the_local_planner_and_regions_go_with_the_client(lane):
    planner = GradientPlanner()
    inputs = [(bin_depth(seed, batch=batch), batch) for seed, batch in ((1, 1), (2, 3), (3, 1))]
    with served(planner) as server:
        with RemotePlanner(server.url, shared_memory=True, lane=lane) as remote:
            for depth, batch in inputs:
                mask = (torch.arange(CAMERA.width) < 20).expand_as(depth).contiguous()
                result = remote.plan(depth, CAMERA, mask=mask, k=2, return_q_map=True)
                local = GradientPlanner().plan(depth, CAMERA, mask=mask, k=2, return_q_map=True)
                assert_same_result(result, local, PlanOptions(k=2, return_q_map=True))
            assert remote.uses_shared_memory and remote.uses_lane == lane
            names = [region.name for region in remote._regions._all]
            assert len(names) == 2 and health(server)["shared_memory_regions"] == 2  # 1 and 3 images
        wait_until(lambda: health(server)["shared_memory_regions"] == 0)  # unmapped when the client left
        for name in names:  # and the client removed its segments
            with pytest.raises(FileNotFoundError):
                SharedMemory(name)
    assert planner.calls == [1, 3, 1]


def test_a_lane_message_of_many_pieces_arrives_whole_after_its_length():
    writer, reader = socket.socketpair(socket.AF_UNIX)
    # more pieces than one system call takes, and more bytes than the socket buffers hold
    pieces = [bytes([i % 251]) * 1000 for i in range(700)]
    received = bytearray()

    def read_all() -> None:
        while len(received) < LENGTH.size + 700_000:
            received.extend(reader.recv(1 << 16))

    with writer, reader:
        thread = threading.Thread(target=read_all)
        thread.start()
        send_message(writer, pieces)
        thread.join(timeout=10)
    assert LENGTH.unpack_from(received)[0] == 700_000 and received[LENGTH.size :] == b"".join(pieces)


def test_a_lane_read_tells_a_wait_before_a_message_from_a_wait_inside_one():
    writer, reader = socket.socketpair(socket.AF_UNIX)
    with writer, reader:
        reader.settimeout(0.05)
        with pytest.raises(TimeoutError):  # nothing read: the stream is still framed
            read_exactly(reader, LENGTH.size)
        writer.sendall(b"abc")
        with pytest.raises(ConnectionError, match="3 of 8"):  # part of it read: the framing is lost
            read_exactly(reader, LENGTH.size)
        writer.sendall(b"12345678")
        assert read_exactly(reader, LENGTH.size) == b"12345678"
        writer.close()
        with pytest.raises(EOFError):
            read_exactly(reader, 1)


def test_a_busy_polling_lane_client_gets_the_same_replies_and_keeps_its_timeout():
    gate = threading.Event()
    planner = GradientPlanner(gate=gate)
    gate.set()
    with served(planner) as server:
        with RemotePlanner(server.url, shared_memory=True, busy_poll_s=5.0, timeout_s=0.3) as remote:
            assert_same_result(remote.plan(bin_depth(4), CAMERA), GradientPlanner().plan(bin_depth(4), CAMERA))
            assert remote.uses_lane
            gate.clear()  # the next call is held past the client's timeout, which the spin must not outlast
            started = time.perf_counter()
            with pytest.raises(PlannerUnavailable, match="no reply"):
                remote.plan(bin_depth(5), CAMERA)
            assert 0.3 <= time.perf_counter() - started < 2.0
            gate.set()
            # the late reply is read and dropped; the next call gets its own
            assert_same_result(remote.plan(bin_depth(6), CAMERA), GradientPlanner().plan(bin_depth(6), CAMERA))
    with pytest.raises(ValueError, match="busy_poll_s"):
        RemotePlanner(busy_poll_s=-1.0)
    with pytest.raises(ValueError, match="wake_ahead_s"):
        RemotePlanner(wake_ahead_s=-1.0)


def _delayed_echo_lane(path: str, delay_s: float, replies: int) -> threading.Thread:
    """A lane server at ``path`` that answers each of ``replies`` messages with itself after ``delay_s``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        with listener, listener.accept()[0] as connection:
            for _ in range(replies):
                (length,) = LENGTH.unpack(read_exactly(connection, LENGTH.size))
                message = read_exactly(connection, length)
                time.sleep(delay_s)
                send_message(connection, message)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("busy_poll_s", "wake_ahead_s", "busy"), [(0.0, 0.005, False), (1.0, 0.0, True)])
def test_a_lane_client_waking_ahead_sleeps_until_shortly_before_the_reply_is_due(
    tmp_path, busy_poll_s, wake_ahead_s, busy
):
    delay_s = 0.1
    server = _delayed_echo_lane(str(tmp_path / "lane"), delay_s, replies=3)
    lane = LaneConnection(str(tmp_path / "lane"), 5.0, 1 << 20, busy_poll_s, wake_ahead_s)
    try:
        for request in (b"first", b"second", b"third"):  # the first teaches the client how long replies take
            lane.send(request)
            sent, cpu = time.perf_counter(), time.thread_time()
            assert lane.recv(timeout=5.0) == request
            waited, cpu = time.perf_counter() - sent, time.thread_time() - cpu
            assert delay_s <= waited < delay_s + 0.05  # woken in time
        # Waking ahead, the last wait spun about 0.4 ms after the request and 5 to 10 ms before the reply,
        # sleeping in between; a busy-polling client spins the whole 100 ms.
        assert (cpu > 0.5 * delay_s) if busy else (cpu < 0.4 * delay_s)
    finally:
        lane.close()
        server.join(timeout=5)


def test_the_lane_refuses_a_wrong_token_and_answers_bad_messages_with_typed_errors():
    planner, limit, secret = GradientPlanner(), 16 << 10, "open sesame"
    limits = Limits(max_message_bytes=limit, max_batch_images=4)
    with served(planner, token=secret, limits=limits, max_queued_images=4) as server:
        with RemotePlanner(server.url, token=secret, shared_memory=True) as remote:
            assert remote.plan(bin_depth(0), CAMERA).valid.all() and remote.uses_lane
            path = remote.server_info.lane

        def answer(lane: LaneConnection) -> dict:
            return decode_message(lane.recv(timeout=5), Limits()).header

        lane = LaneConnection(path, 5.0, 1 << 20)
        lane.send(encode_message({"type": "hello", "token": "open sesam"}))
        assert answer(lane)["code"] == ErrorCode.UNAUTHORIZED
        with pytest.raises(ConnectionClosed):  # and the lane closes
            lane.recv(timeout=5)
        lane = LaneConnection(path, 5.0, 1 << 20)
        lane.send(encode_message({"type": "hello", "token": secret}))
        assert answer(lane)["type"] == "welcome"
        for message, code, request_id in (
            (b"not a message", ErrorCode.BAD_FRAME, None),
            (encode_message({"type": "plan", "request_id": 7}), ErrorCode.BAD_HEADER, 7),
            (encode_message({"type": "result", "request_id": 8}), ErrorCode.BAD_HEADER, 8),
        ):
            lane.send(message)
            assert answer(lane) | {"message": None} == {
                "type": "error", "version": 1, "request_id": request_id, "code": code, "message": None,
                "retryable": False,
            }
        lane.send(bytes(limit + 1))  # too large to be read: refused, and the lane closes
        assert answer(lane)["code"] == ErrorCode.TOO_LARGE
        with pytest.raises(ConnectionClosed):
            lane.recv(timeout=5)
        with RemotePlanner(server.url, token=secret, shared_memory=True) as remote:  # still serving
            assert remote.plan(bin_depth(1), CAMERA).valid.all() and remote.uses_lane
    assert planner.calls == [1, 1]


def test_a_remote_url_or_a_server_without_shared_memory_falls_back_to_the_bytes_path():
    planner = GradientPlanner()
    depth = bin_depth(4)
    with served(planner, shared_memory=None) as server:
        with RemotePlanner(server.url, shared_memory=True) as remote:
            assert_same_result(remote.plan(depth, CAMERA), GradientPlanner().plan(depth, CAMERA))
            assert not remote.uses_shared_memory  # the welcome offered none
    with served(planner) as server:
        port = server.server.port
        with RemotePlanner(f"ws://{socket.gethostname()}:{port}", shared_memory=True) as remote:
            with contextlib.suppress(PlannerUnavailable):  # the host name may not resolve to this server
                remote.plan(depth, CAMERA)
            assert not remote.uses_shared_memory  # not a loopback URL: never tried


def _welcomed(websocket) -> None:
    websocket.send(encode_message({"type": "hello"}))
    assert _split(websocket.recv(timeout=5))[0]["type"] == "welcome"


def _shared_request(region: str, depth_spec: dict, camera: CameraIntrinsics = CAMERA, request_id=1) -> bytes:
    header = {"type": "plan", "request_id": request_id, "intrinsics": camera.to_dict()}
    return _frame(
        json.dumps({**header, "version": 1, "arrays": [{"region": region, **depth_spec}]}).encode(), b""
    )


def test_bad_shared_memory_requests_get_typed_errors_and_the_server_keeps_serving():
    planner = GradientPlanner()
    depth = bin_depth(6).numpy()
    spec = {
        "name": "depth",
        "dtype": "float32",
        "shape": list(depth.shape),
        "offset": 0,
        "nbytes": depth.nbytes,
    }
    segment = SharedMemory(create=True, size=depth.nbytes + 64)
    try:
        np.frombuffer(segment.buf, np.float32, depth.size)[:] = depth.reshape(-1)
        cases = [
            ({"type": "shm_register", "request_id": 1, "name": "../etc/passwd", "nbytes": 8}, "bad_header"),
            ({"type": "shm_register", "request_id": 2, "name": "no_such_region_x", "nbytes": 8}, "shm_unavailable"),
            ({"type": "shm_register", "request_id": 3, "name": segment.name, "nbytes": 1 << 40}, "too_large"),
            ({"type": "shm_register", "request_id": 4, "name": segment.name, "nbytes": segment.size + 1}, "shm_unavailable"),
            ({"type": "shm_unregister", "request_id": 5, "name": segment.name}, "bad_header"),
        ]  # fmt: skip
        with served(planner) as server, connect(server.url, compression=None) as websocket:
            _welcomed(websocket)
            for header, code in cases:
                websocket.send(encode_message(header))
                reply = _split(websocket.recv(timeout=5))[0]
                assert (reply["type"], reply["code"], reply["request_id"]) == (
                    "error",
                    code,
                    header["request_id"],
                )
            requests = [
                (_shared_request(segment.name, spec), "bad_header"),  # not registered yet
                (_shared_request("other", spec), "bad_header"),
            ]
            for message, code in requests:
                websocket.send(message)
                assert _split(websocket.recv(timeout=5))[0]["code"] == code
            register = {
                "type": "shm_register",
                "request_id": 9,
                "name": segment.name,
                "nbytes": depth.nbytes + 64,
            }
            websocket.send(encode_message(register))
            assert _split(websocket.recv(timeout=5))[0]["type"] == "shm_registered"
            requests = [
                ({**spec, "offset": 72}, "bad_frame"),  # runs past the registered region
                ({**spec, "offset": 4}, "bad_frame"),  # misaligned
                ({**spec, "offset": -8}, "bad_frame"),
                ({**spec, "nbytes": 8}, "bad_frame"),
                ({**spec, "dtype": "float64", "nbytes": 2 * depth.nbytes}, "bad_frame"),
                ({**spec, "dtype": "int32"}, "bad_dtype"),
                ({**spec, "shape": [depth.size]}, "bad_shape"),
                ({**spec, "shape": [1, depth.shape[2], depth.shape[1]]}, "bad_shape"),  # intrinsics disagree
                ({**spec, "shape": [1, 10**6, 10**6], "nbytes": 4 * 10**12}, "too_large"),
            ]
            for request_id, (depth_spec, code) in enumerate(requests):
                websocket.send(_shared_request(segment.name, depth_spec, request_id=request_id))
                reply = _split(websocket.recv(timeout=5))[0]
                assert (reply["code"], reply["request_id"]) == (code, request_id), depth_spec
            websocket.send(_shared_request(segment.name, spec, request_id="good"))
            header, arrays = _split(websocket.recv(timeout=5))
            assert header["type"] == "result" and header["request_id"] == "good"
            assert health(server)["shared_memory_regions"] == 1
            websocket.send(encode_message({"type": "shm_unregister", "request_id": 10, "name": segment.name}))
            assert _split(websocket.recv(timeout=5))[0]["type"] == "shm_unregistered"
            assert health(server)["shared_memory_regions"] == 0
            websocket.send(_shared_request(segment.name, spec, request_id=11))  # no longer registered
            assert _split(websocket.recv(timeout=5))[0]["code"] == "bad_header"
    finally:
        segment.close()
        segment.unlink()
    assert planner.calls == [1]  # only the good request reached the planner


def test_the_benchmark_floor_echo_answers_only_after_the_wait():
    from gqcnn_bridge.bench import _echo_overheads, _start_waiting_echo

    port, stop = _start_waiting_echo()
    try:
        beyond_wait, waits = _echo_overheads(port, wait_s=0.02, iterations=3)
        beyond_no_wait, _ = _echo_overheads(port, wait_s=0.0, iterations=3)
        image_sized, _ = _echo_overheads(port, wait_s=0.0, iterations=3, size=386 * 516 * 4)
    finally:
        stop()
    assert len(beyond_wait) == 3 and all(0.02 <= waited < 0.5 for waited in waits)  # it did wait, and said so
    assert all(0 <= extra < 0.5 for extra in beyond_wait + beyond_no_wait + image_sized)


def test_the_benchmark_measures_every_path_and_writes_its_json(tmp_path):
    out = tmp_path / "bridge.json"
    run = subprocess.run(
        [sys.executable, "-m", "dexrl", "bench", "bridge", "--iterations", "3", "--batch", "2",
         "--batch-iterations", "1", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [case["case"] for case in report["cases"]] == ["1 image", "2 images"]
    paths = ("websocket_bytes", "shared_memory", "lane", "lane_asleep", "lane_busy_poll")
    for case in report["cases"]:
        for path in paths:
            assert 0 < case[f"{path}_overhead_ms"]["p50"] < case["baseline_overhead_ms"]["p50"]
    assert set(report["targets"]["met"]) == set(paths) == set(report["paths"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridge.json"]  # nothing written elsewhere
