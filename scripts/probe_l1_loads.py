"""Whether the Triton head and block convolutions gain from loading their input through L1 on a GPU. Their
reduction steps read overlapping windows (neighbouring taps, neighbouring blocks' patches): Triton's
pipelined 16-byte loads go to shared memory past L1 by default; ``A_CACHE=".ca"`` asks for L1. Times the head
(fc3 -> softmax) at a batch-1 plan's size (16 pairs, features 90x122) and the block convolutions of its three
5x5 layers, over a few tiles, with and without, checking that the outputs stay the same. Median of
``triton.testing.do_bench``. Writes ``l1_loads.json`` to ``$OUT``.

    PYTHONPATH=. python3 scripts/probe_l1_loads.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from dexrl.gqcnn import triton_convs
from dexrl.gqcnn.bench import _random_network
from dexrl.gqcnn.triton_convs import QualityHead, block_rows

HEAD_TILES = [  # TAPS, TILE_H, TILE_W, warps, stages
    (4, 1, 128, 8, 3), (8, 1, 128, 8, 3), (8, 4, 32, 8, 3), (4, 1, 64, 4, 3), (4, 1, 256, 8, 2), (8, 2, 128, 8, 2),
]  # fmt: skip
CONV_TILES = [(2, 64, 4, 3), (1, 128, 4, 3), (1, 128, 8, 3), (2, 32, 4, 3)]  # TILE_H, TILE_W (blocks), warps, stages
CONV_LAYERS = {"conv1_2": ((16, 378, 508, 16), True), "conv2_1": ((16, 187, 252, 16), False),
               "conv2_2": ((16, 185, 250, 16), True)}  # fmt: skip


def _us(function) -> float:
    return 1e3 * do_bench(function, warmup=25, rep=200, return_mode="median")


def head_rows() -> list[dict]:
    net = _random_network(0).cuda().to(torch.bfloat16)
    weights = QualityHead(net).weights
    x = torch.rand(16, 90, 122, 16, device="cuda", dtype=torch.bfloat16)
    count, height, width, channels = x.shape
    out_h, out_w = height - 16, width - 16
    expected = QualityHead(net)(x)
    rows = []
    for taps, tile_h, tile_w, warps, stages in HEAD_TILES:
        for cache in ("", ".ca"):
            q = torch.empty_like(expected)
            grid = (triton.cdiv(out_h, tile_h) * triton.cdiv(out_w, tile_w), count)

            def launch(q=q, grid=grid, taps=taps, tile_h=tile_h, tile_w=tile_w, warps=warps, stages=stages, cache=cache):
                triton_convs._head_kernel[grid](
                    x, *weights, q, height, width, out_h, out_w, C=channels, K=17, F=128, A=16, TAPS=taps,
                    TILE_H=tile_h, TILE_W=tile_w, A_CACHE=cache, num_warps=warps, num_stages=stages,
                )  # fmt: skip

            try:
                launch()
                row = {"kernel": "head", "tile": [taps, tile_h, tile_w, warps, stages], "cache": cache,
                       "us": _us(launch), "max_abs_diff": (q - expected).abs().max().item()}  # fmt: skip
            except Exception as error:  # noqa: BLE001 (a tile that does not compile: recorded, not fatal)
                row = {"kernel": "head", "tile": [taps, tile_h, tile_w, warps, stages], "cache": cache,
                       "error": str(error)[:200]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def conv_rows() -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for name, (shape, pool) in CONV_LAYERS.items():
        conv = torch.nn.Conv2d(16, 16, 5).cuda()
        x = torch.rand(*shape, device="cuda", dtype=torch.bfloat16) - 0.3
        weight, bias = block_rows(conv.weight).to(torch.bfloat16), conv.bias.detach().float()
        expected = triton_convs.conv_blocks_relu(x, weight, bias, pool)
        count, height, width, _ = shape
        out_h, out_w = height - 4, width - 4
        for tile_h, tile_w, warps, stages in CONV_TILES:
            for cache in ("", ".ca"):
                y = torch.empty_like(expected)
                grid = (triton.cdiv(triton.cdiv(out_h, 2), tile_h) * triton.cdiv(triton.cdiv(out_w, 2), tile_w), count)

                def launch(y=y, grid=grid, tile_h=tile_h, tile_w=tile_w, warps=warps, stages=stages, cache=cache):
                    triton_convs._block_conv_kernel[grid](
                        x, weight, bias, y, height, width, out_h, out_w, y.shape[1], y.shape[2], C_IN=16, C_OUT=16,
                        K=5, POOL=pool, PRECISION="tf32", TAPS=2, TILE_H=tile_h, TILE_W=tile_w, A_CACHE=cache,
                        num_warps=warps, num_stages=stages,
                    )  # fmt: skip

                launch()
                row = {"kernel": name, "tile": [tile_h, tile_w, warps, stages], "cache": cache, "us": _us(launch),
                       "max_abs_diff": (y.float() - expected.float()).abs().max().item()}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    report = {"device": torch.cuda.get_device_name(), "head": head_rows(), "convs": conv_rows()}
    (out / "l1_loads.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
