"""conv1_2's input on a GPU, three ways, at a batch-1 plan's sizes: each pair's ReLU(conv1_1) written out by
:func:`~dexrl.gqcnn.triton_convs.shifted_relu` and read back by conv1_2 (16 pairs: 86 MB of bfloat16 at the
bench's window, more than the L2 cache holds); the same in chunks of pairs (each chunk's first layer small
enough to stay in L2 until conv1_2 reads it); and computed by conv1_2 from the shared float32 conv1_1 as it
loads it (:func:`~dexrl.gqcnn.triton_convs.shifted_conv_relu`). Also the whole image stream (conv1_2 to
conv2_2) with and without the fused first layer, for the 16 pairs (bfloat16, by blocks) and for the 16
rescored crops (float32, one tap per product). Each as a CUDA graph replayed 200 times (median device time;
the shared layer stays in L2 between replays, as it does in a plan, which has just written it), from a
synthetic bin's window and random seeded weights. Writes ``first_layer.json`` to ``$OUT``.

    PYTHONPATH=. python3 scripts/probe_first_layer.py
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

from dexrl.gqcnn import triton_convs
from dexrl.gqcnn.bench import _random_network, bin_images
from dexrl.gqcnn.triton_convs import SharedFirstConv, StreamConvs, conv_blocks_relu, shifted_conv_relu

WINDOW = (380, 460)
"""Depth pixels under the bench's window of 72 x 92 cells (a batch-1 plan of a synthetic bin)."""
CROP = 96


def graph_ms(call, reps: int = 200) -> float:
    """Median device time [ms] of replaying a CUDA graph of ``call``."""
    for _ in range(3):  # autotuning and warm-up outside the capture
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


@torch.inference_mode()
def main() -> None:
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda:0")
    network = _random_network(0).to(device).eval()
    trunk = _random_network(0).to(device, torch.bfloat16).eval()  # the fast path's trunk
    depth, _ = bin_images(1, 0)
    depth = depth.to(device)
    image = depth[:, : WINDOW[0], : WINDOW[1]].contiguous()
    grasp_depth = torch.linspace(0.6, 0.7, 16, device=device)[None]
    reference = grasp_depth.mean(1)
    shifts = network.first_conv_shifts(grasp_depth, reference).flatten(0, 1)  # (16, 16)
    shared = SharedFirstConv(network)(image, reference)  # (1, 372, 452, 16) float32
    pair_image = torch.zeros(16, dtype=torch.long, device=device)

    written, fused = StreamConvs(trunk.image_stream, fuse_first_layer=False), StreamConvs(trunk.image_stream)
    conv1_2 = written.layers[0]

    def written_conv1_2(chunk: int) -> list[torch.Tensor]:
        return [
            conv_blocks_relu(written.first_layer(shared, shifts[i : i + chunk], pair_image[i : i + chunk]),
                             *conv1_2, True)
            for i in range(0, 16, chunk)
        ]  # fmt: skip

    rows = {"conv1_2 of 16 pairs, first layer written (one pass)": graph_ms(lambda: written_conv1_2(16))}
    for chunk in (8, 4, 2, 1):
        rows[f"conv1_2 of 16 pairs, first layer written in chunks of {chunk} pairs"] = graph_ms(
            lambda c=chunk: written_conv1_2(c)
        )
    rows["conv1_2 of 16 pairs, first layer fused"] = graph_ms(
        lambda: shifted_conv_relu(shared, shifts, pair_image, *conv1_2, True, True)
    )
    rows["stream of 16 pairs, first layer written"] = graph_ms(lambda: written(shared, shifts, pair_image))
    rows["stream of 16 pairs, first layer fused"] = graph_ms(lambda: fused(shared, shifts, pair_image))
    agreement = {"pairs_fused_vs_written_max_abs": (
        fused(shared, shifts, pair_image).float() - written(shared, shifts, pair_image).float()
    ).abs().max().item()}  # fmt: skip

    # the rescoring's 16 crops: float32, one tap per product, each crop at its own grasp depth
    crops = torch.stack([depth[0, r : r + CROP, c : c + CROP] for r in range(100, 260, 10) for c in (150,)])
    crop_shared = SharedFirstConv(network)(crops, crops[:, CROP // 2, CROP // 2])
    crop_shifts = shifts[:1].expand(16, -1).contiguous()
    crop_image = torch.arange(16, device=device)
    crops_written = StreamConvs(network.image_stream, fuse_first_layer=False)
    crops_fused = StreamConvs(network.image_stream)
    rows["stream of 16 crops (float32), first layer written"] = graph_ms(
        lambda: crops_written(crop_shared, crop_shifts, crop_image)
    )
    rows["stream of 16 crops (float32), first layer fused"] = graph_ms(
        lambda: crops_fused(crop_shared, crop_shifts, crop_image)
    )
    agreement["crops_fused_vs_written_max_abs"] = (
        crops_fused(crop_shared, crop_shifts, crop_image) - crops_written(crop_shared, crop_shifts, crop_image)
    ).abs().max().item()
    for name, ms in rows.items():
        print(f"{1e3 * ms:8.1f} us  {name}", flush=True)
    print(json.dumps(agreement))
    tuned = {"taps": triton_convs._tuned_conv_kernel, "blocks": triton_convs._tuned_block_conv_kernel}
    configs = {
        f"{name} {key}": str(config) for name, kernel in tuned.items() for key, config in kernel.cache.items()
    }
    report = {
        "device": torch.cuda.get_device_name(device),
        "us": {name: 1e3 * ms for name, ms in rows.items()},
        **agreement,
        "configs": configs,
    }
    (out / "first_layer.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
