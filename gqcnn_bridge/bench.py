"""``dexrl bench bridge``: what the websocket bridge adds to a plan call, next to a seed-style HTTP service.

The services run in one child process (the bridge and the baseline serve the same planner); this process is
the client. Overhead is the client's round trip minus the planner call the server timed and reported, so it
covers encoding, transfer, decoding, queueing and the thread hand-offs, but not inference. The bridge is
measured three times: with the arrays in the websocket messages (the path every client has), through the
same-host shared-memory regions (``shared_memory=True, lane=False``: the client copies the images into its
region and sends the header alone), and the same with the header over the same-host lane instead of the
websocket (``shared_memory=True``, the client's default: :mod:`gqcnn_bridge.lane`; the client wakes ahead of
each reply, ``wake_ahead_s``); and the lane twice more: with the client asleep until each reply arrives
(``wake_ahead_s=0``, the default until 2026-12-04) and with the client spinning while it waits
(``busy_poll_s``: one core busy while waiting, instead of a sleeping thread to wake). The baseline, built here for comparison only, is what a first prototype typically
does: HTTP POST of JSON with base64 depth, hex-encoded arrays back.

Next to them the bench measures a floor: a bare ``websockets`` echo, with the same synchronous client, whose
server waits as long as the planner took before it answers and reports how long it waited (subtracted, as the
planner's time is). Waiting threads fall idle and take time to wake, so this is what any websocket round trip
costs on the machine at that inference time. It is measured twice: with a 1 KiB message (a request's header,
the floor of the shared-memory path) and with a message as large as a one-image request (the floor of the
websocket-bytes path: sending ~0.8 MB through ``websockets`` and the loopback costs time of its own).

Top-level imports stay light: ``dexrl bench`` imports every target's module to build its help.
"""

from __future__ import annotations

import argparse

__all__ = ["configure", "run"]

TARGET_P50_MS, TARGET_P99_MS, TARGET_SPEEDUP = 1.0, 3.0, 20.0
_WARMUP = 3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--iterations", type=int, default=500, help="timed requests of one image per service (default 500)"
    )
    parser.add_argument("--batch", type=int, default=64, help="images in the batched case (default 64)")
    parser.add_argument(
        "--batch-iterations", type=int, default=20, help="timed batched requests per service (default 20)"
    )
    parser.add_argument(
        "--planner",
        choices=("highest-object", "fcgqcnn"),
        default="highest-object",
        help="served planner (default highest-object)",
    )
    parser.add_argument("--weights", default=None, help="FC-GQ-CNN weights (with --planner fcgqcnn)")
    parser.add_argument(
        "--device",
        default=None,
        help="where the served planner runs (default: cuda:0 if available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic depth images (default 0)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _bin_images(batch: int, seed: int):
    """(batch, 386, 516) float32 depth [m]: a bin floor at 0.7 m with one box per image, plus sensor noise."""
    import numpy as np  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    depth = np.full((batch, PHOXI_S.height, PHOXI_S.width), 0.7, np.float32)
    for image in depth:
        v, u = rng.integers(40, 300), rng.integers(40, 420)
        image[v : v + 60, u : u + 80] = rng.uniform(0.6, 0.66)
    return depth + rng.normal(0, 5e-4, depth.shape).astype(np.float32)


# --- the seed-style baseline ------------------------------------------------------------------------------


def _start_baseline(planner):
    """A threaded ``http.server`` answering ``POST /plan`` (JSON, base64 depth) with hex-encoded arrays."""
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from dexrl.grasp import CameraIntrinsics  # noqa: PLC0415

    class SeedStyleHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a requests.Session client would use

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            depth = np.frombuffer(base64.b64decode(body["depth"]), np.float32).reshape(body["shape"])
            started = time.perf_counter()
            result = planner.plan(
                torch.from_numpy(depth.copy()), CameraIntrinsics.from_dict(body["intrinsics"]), k=body["k"]
            )
            inference_s = time.perf_counter() - started
            arrays = {
                name: getattr(result.grasps, name) for name in ("center", "angle", "depth", "width", "q")
            }
            arrays.update(valid=result.valid, position_cam=result.positions_cam)
            reply = {
                "inference_s": inference_s,
                "arrays": {
                    n: {"shape": list(t.shape), "hex": t.cpu().numpy().tobytes().hex()} for n, t in arrays.items()
                },
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # quiet: one line per request would swamp the figures
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SeedStyleHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _start_waiting_echo():
    """A bare ``websockets`` server (no DexRL code) that waits as many seconds as a message's first 8 bytes say
    (little-endian float64) and answers with the seconds it did wait (the event loop's timers overshoot by up
    to a millisecond), as the bridge reports the time its planner took: what any websocket round trip costs
    on this machine when the server is busy for as long as the planner was. Returns its port and a stop
    function."""
    import asyncio  # noqa: PLC0415
    import struct  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from websockets.asyncio.server import serve  # noqa: PLC0415

    async def wait_and_echo(connection) -> None:
        async for message in connection:
            started = time.perf_counter()
            await asyncio.sleep(struct.unpack_from("<d", message)[0])
            await connection.send(struct.pack("<d", time.perf_counter() - started))

    started, stop, port = threading.Event(), None, []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.get_running_loop().create_future()
        async with serve(wait_and_echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()

    def shutdown() -> None:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    return port[0], shutdown


def _host_services(pipe, planner_name: str, weights: str | None, device: str | None) -> None:
    """Child process: serve one planner through the bridge and the baseline, and the waiting echo, until
    told to stop."""
    import torch  # noqa: PLC0415

    from dexrl.allocator import keep_freed_memory  # noqa: PLC0415
    from .backends import load_backend  # noqa: PLC0415
    from .server import ServerConfig, ServerThread  # noqa: PLC0415

    keep_freed_memory()  # as ``dexrl serve`` does
    torch.set_num_threads(1)  # idle OpenMP workers spin after each call and would take the client's CPU
    backend = load_backend(planner_name, weights=weights, device=device)
    bridge = ServerThread(backend, ServerConfig(port=0)).start()
    baseline = _start_baseline(backend.planner)
    echo_port, stop_echo = _start_waiting_echo()
    pipe.send((bridge.url, baseline.server_address[1], echo_port, backend.model_id, backend.device))
    pipe.recv()
    stop_echo()
    baseline.shutdown()
    bridge.stop()


# --- measuring --------------------------------------------------------------------------------------------


_SPIN_S = 10.0
"""How long the busy-polling client spins for a reply: longer than any inference measured here [s]."""

_PATHS = {
    "websocket bytes": {"shared_memory": False, "lane": False},
    "shared memory": {"shared_memory": True, "lane": False},
    "lane": {"shared_memory": True, "lane": True},
    "lane asleep": {"shared_memory": True, "lane": True, "wake_ahead_s": 0.0},
    "lane busy poll": {"shared_memory": True, "lane": True, "busy_poll_s": _SPIN_S},
}
"""The bridge's paths: how the client is set up for each."""


def _bridge_overheads(
    url: str,
    depth,
    iterations: int,
    shared_memory: bool,
    lane: bool,
    busy_poll_s: float = 0.0,
    wake_ahead_s: float | None = None,
) -> tuple[list[float], list[float]]:
    """Overheads and the server-timed inference of ``iterations`` plan calls [s]."""
    import torch  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    from .client import RemotePlanner  # noqa: PLC0415
    from .lane import WAKE_AHEAD_S  # noqa: PLC0415

    images = torch.from_numpy(depth)
    overheads, inferences = [], []
    wake_ahead_s = WAKE_AHEAD_S if wake_ahead_s is None else wake_ahead_s
    with RemotePlanner(
        url,
        timeout_s=600,
        shared_memory=shared_memory,
        lane=lane,
        busy_poll_s=busy_poll_s,
        wake_ahead_s=wake_ahead_s,
    ) as planner:
        for _ in range(_WARMUP + iterations):
            timings = planner.plan(images, PHOXI_S).timings
            overheads.append(timings["round_trip"] - timings["inference"])
            inferences.append(timings["inference"])
        used = (planner.uses_shared_memory, planner.uses_lane)
        if used != (shared_memory, lane):  # never report one path's figures as another's
            raise RuntimeError(f"asked for (shared_memory, lane) = {(shared_memory, lane)}, the client used {used}")
    return overheads[_WARMUP:], inferences[_WARMUP:]


def _echo_overheads(
    port: int, wait_s: float, iterations: int, size: int = 1024
) -> tuple[list[float], list[float]]:
    """Round trips minus the server's wait, and those waits [s], of a ``size``-byte message (default 1 KiB, a
    plan request's header) through the waiting echo asked to wait ``wait_s``, with the same synchronous
    websockets client the bridge's ``RemotePlanner`` uses."""
    import struct  # noqa: PLC0415
    import time  # noqa: PLC0415

    from websockets.sync.client import connect  # noqa: PLC0415

    message = struct.pack("<d", wait_s) + bytes(max(size, 8) - 8)
    overheads, waits = [], []
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as connection:
        for _ in range(_WARMUP + iterations):
            started = time.perf_counter()
            connection.send(message)
            (waited,) = struct.unpack("<d", connection.recv())
            overheads.append(time.perf_counter() - started - waited)
            waits.append(waited)
    return overheads[_WARMUP:], waits[_WARMUP:]


def _baseline_overheads(port: int, depth, iterations: int) -> tuple[list[float], list[float]]:
    """Overheads and the server-timed inference of ``iterations`` requests to the seed-style service [s]."""
    import base64  # noqa: PLC0415
    import http.client  # noqa: PLC0415
    import json  # noqa: PLC0415
    import time  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    overheads, inferences = [], []
    for _ in range(_WARMUP + iterations):
        started = time.perf_counter()
        body = {
            "depth": base64.b64encode(depth.tobytes()).decode(),
            "shape": list(depth.shape),
            "intrinsics": PHOXI_S.to_dict(),
            "k": 1,
        }
        connection.request("POST", "/plan", json.dumps(body).encode(), {"Content-Type": "application/json"})
        reply = json.loads(connection.getresponse().read())
        arrays = {
            n: np.frombuffer(bytes.fromhex(a["hex"]), np.float32 if n != "valid" else np.bool_).reshape(
                a["shape"]
            )
            for n, a in reply["arrays"].items()
        }
        assert arrays["q"].shape == (depth.shape[0], 1)
        overheads.append(time.perf_counter() - started - reply["inference_s"])
        inferences.append(reply["inference_s"])
    connection.close()
    return overheads[_WARMUP:], inferences[_WARMUP:]


def run(args: argparse.Namespace) -> int:
    import functools  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    context = multiprocessing.get_context("spawn")
    pipe, child_pipe = context.Pipe()
    host = context.Process(
        target=_host_services, args=(child_pipe, args.planner, args.weights, args.device), daemon=True
    )
    host.start()
    url, baseline_port, echo_port, model_id, device = pipe.recv()
    rows = []
    try:
        for label, batch, iterations in (
            ("1 image", 1, args.iterations),
            (f"{args.batch} images", args.batch, args.batch_iterations),
        ):
            depth = _bin_images(batch, args.seed)
            overheads, inferences = {}, {}
            services = {path: functools.partial(_bridge_overheads, url, **how) for path, how in _PATHS.items()}
            services["baseline"] = functools.partial(_baseline_overheads, baseline_port)
            for service, measure in services.items():
                measured, inferences[service] = measure(depth, iterations)
                overheads[service] = np.percentile(1e3 * np.array(measured), [50, 99])
                p50 = overheads[service][0]
                print(f"[bench bridge] {label}, {service}: {iterations} requests, p50 {p50:.3f} ms", flush=True)
            rows.append((label, iterations, overheads))
            if batch == 1:
                wait_s = float(np.median(inferences["shared memory"]))
                floor = {}
                for name, size in (("header", 1024), ("image", depth.nbytes + 1024)):
                    echoes, _ = _echo_overheads(echo_port, wait_s, iterations, size)
                    floor[name] = np.percentile(1e3 * np.array(echoes), [50, 99])
    finally:
        pipe.send("stop")
        host.join(timeout=30)

    print(
        "bridge overhead = round trip - server-timed inference; 386x516 float32 depth, k=1; "
        f"planner {model_id} on {device}"
    )
    print(
        f"client and services on one {platform.machine()} machine with {os.cpu_count()} CPUs; "
        "one torch thread per process; both processes keep freed memory (dexrl.allocator); "
        "round trips include the client's encoding"
    )
    print(
        "websocket bytes: arrays in the messages; shared memory: arrays in a registered same-host region, "
        "headers over the websocket; lane: the same, headers over the same-host lane (a Unix socket), the "
        "client waking ahead of each reply; lane asleep: the lane, the client asleep until the reply; lane "
        "busy poll: the lane, the client spinning (one core busy) while it waits; the last four only for "
        "clients on the server's machine"
    )
    header = ("case", "n", "ws bytes p50", "p99", "shm p50", "p99", "lane p50", "p99", "sleep p50", "p99")
    header += ("spin p50", "p99")
    header += ("baseline p50", "p99")
    print(f"{header[0]:<11}{header[1]:>5}" + "".join(f"{title:>13}" for title in header[2:]) + "   [ms]")
    for label, iterations, overheads in rows:
        base = overheads["baseline"]
        figures = [f"{value:.3f}" for path in _PATHS for value in overheads[path]]
        figures += [f"{base[0]:.1f}", f"{base[1]:.1f}"]
        print(f"{label:<11}{iterations:>5}" + "".join(f"{figure:>13}" for figure in figures))
        ratios = ", ".join(f"{path} {base[0] / overheads[path][0]:.1f}x" for path in _PATHS)
        print(f"{'':<16}p50 under the baseline: {ratios}")
    print(
        f"floor: a bare websockets echo (no DexRL code) that waits {1e3 * wait_s:.1f} ms (the median inference "
        f"above) before it answers, over the wait: 1 KiB (the shared-memory path's floor) p50 "
        f"{floor['header'][0]:.3f} ms, p99 {floor['header'][1]:.3f} ms; a one-image request's size (the "
        f"websocket-bytes path's floor) p50 {floor['image'][0]:.3f} ms, p99 {floor['image'][1]:.3f} ms"
    )
    met = _targets_met(rows)
    for path, verdicts in met.items():
        print(
            f"targets, {path}: 1 image p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms, "
            f">= {TARGET_SPEEDUP:.0f}x under the baseline: {'met' if verdicts['1 image'] else 'NOT met'}; "
            f"{rows[1][0]} >= {TARGET_SPEEDUP:.0f}x: {'met' if verdicts['batch'] else 'NOT met'}"
        )
    if args.json:
        floor_ms = {"wait_ms": 1e3 * wait_s}
        for name, (p50, p99) in floor.items():
            floor_ms |= {f"{name}_p50": p50, f"{name}_p99": p99}
        _write_json(args.json, rows, met, model_id, device, floor_ms)
    return 0


def _targets_met(rows: list) -> dict[str, dict[str, bool]]:
    """Per path: whether one image meets the latency and speed-up targets, and the batch the speed-up."""
    (_, _, single), (_, _, batch) = rows
    met = {}
    for path in _PATHS:
        (p50, p99), base = single[path], single["baseline"][0]
        met[path] = {
            "1 image": bool(p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS and base / p50 >= TARGET_SPEEDUP),
            "batch": bool(batch["baseline"][0] / batch[path][0] >= TARGET_SPEEDUP),
        }
    return met


def _write_json(
    json_path: str, rows: list, met: dict, model_id: str, device: str, floor: dict[str, float]
) -> None:
    """The figures of one run [ms], the command that produced them, and the machine."""
    import json
    import os
    import platform
    import sys
    from pathlib import Path

    def percentiles(figures, digits: int) -> dict[str, float]:
        return {"p50": round(float(figures[0]), digits), "p99": round(float(figures[1]), digits)}

    cases = []
    for label, iterations, overheads in rows:
        base = overheads["baseline"]
        case = {"case": label, "requests": iterations}
        for bridge_path in _PATHS:
            key = bridge_path.replace(" ", "_")
            case[f"{key}_overhead_ms"] = percentiles(overheads[bridge_path], 3)
            case[f"p50_ratio_{key}"] = round(float(base[0] / overheads[bridge_path][0]), 1)
        cases.append(case | {"baseline_overhead_ms": percentiles(base, 2)})
    report = {
        "command": " ".join(["dexrl", *sys.argv[1:]]),
        "planner": model_id,
        "device": device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "paths": {
            "websocket_bytes": "arrays inside the websocket messages",
            "shared_memory": "arrays in a same-host shared-memory region registered on the connection; "
            "the websocket message carries the header only",
            "lane": "as shared_memory, the header over the server's same-host lane (a Unix socket) instead of "
            "the websocket; the client wakes ahead of each reply (wake_ahead_s)",
            "lane_asleep": "as lane, the client asleep until each reply arrives (wake_ahead_s=0)",
            "lane_busy_poll": f"as lane, the client spinning up to {_SPIN_S} s for each reply (one core busy) "
            "instead of sleeping",
        },
        "targets": {
            "p50_ms": TARGET_P50_MS,
            "p99_ms": TARGET_P99_MS,
            "speedup": TARGET_SPEEDUP,
            "met": {path.replace(" ", "_"): verdicts for path, verdicts in met.items()},
        },
        "cases": cases,
        "floor_bare_websocket_echo_ms": {name: round(float(value), 3) for name, value in floor.items()},
    }
    Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
