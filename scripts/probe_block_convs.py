"""The image stream's 5x5 convolutions in two forms on a GPU: one tap per matrix product
(:func:`dexrl.gqcnn.triton_convs.conv5x5_relu`) and 2x2 blocks of output pixels per matrix row
(:func:`~dexrl.gqcnn.triton_convs.conv_blocks_relu`). Each layer alone at a batch-1 plan's sizes (16 pairs,
bfloat16) and at the rescored crops' (16 crops, float32 as three TF32 products), with the largest |difference|
between the forms and the tile the autotuner chose. Median of ``triton.testing.do_bench`` (which flushes the
L2 cache between runs). Writes ``blocks.json`` to ``$OUT``.

    PYTHONPATH=. python3 scripts/probe_block_convs.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from triton.testing import do_bench

from dexrl.gqcnn import triton_convs
from dexrl.gqcnn.triton_convs import block_rows, conv5x5_relu, conv_blocks_relu, kernel_rows

LAYERS = {  # name: (input shape, pool, dtype)
    "conv1_2, 16 pairs": ((16, 378, 508, 16), True, torch.bfloat16),
    "conv2_1, 16 pairs": ((16, 187, 252, 16), False, torch.bfloat16),
    "conv2_2, 16 pairs": ((16, 185, 250, 16), True, torch.bfloat16),
    "conv1_2, 16 crops": ((16, 88, 88, 16), True, torch.float32),
    "conv2_1, 16 crops": ((16, 42, 42, 16), False, torch.float32),
    "conv2_2, 16 crops": ((16, 40, 40, 16), True, torch.float32),
}


def layer_rows() -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for name, (shape, pool, dtype) in LAYERS.items():
        conv = torch.nn.Conv2d(16, 16, 5).cuda()
        x = torch.rand(*shape, device="cuda", dtype=dtype) - 0.3
        bias = conv.bias.detach().float()
        taps, blocks = kernel_rows(conv.weight).to(dtype), block_rows(conv.weight).to(dtype)
        y_taps = conv5x5_relu(x, taps, bias, pool)
        y_blocks = conv_blocks_relu(x, blocks, bias, pool)
        out_pixels = (shape[1] - 4) * (shape[2] - 4) * shape[0]
        gflop = 2 * out_pixels * 16 * 25 * 16 / 1e9
        row = {
            "layer": name, "gflop": gflop, "max_abs_diff": (y_taps.float() - y_blocks.float()).abs().max().item()
        }  # fmt: skip
        for form, function, weight in (("taps", conv5x5_relu, taps), ("blocks", conv_blocks_relu, blocks)):
            ms = do_bench(
                lambda f=function, w=weight, x=x, b=bias, p=pool: f(x, w, b, p), warmup=25, rep=200,
                return_mode="median",
            )  # fmt: skip
            row[f"{form}_us"] = 1e3 * ms
            row[f"{form}_tflops"] = gflop / ms
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    rows = layer_rows()
    tuned = {"taps": triton_convs._tuned_conv_kernel, "blocks": triton_convs._tuned_block_conv_kernel}
    configs = {
        f"{name} {key}": str(config) for name, kernel in tuned.items() for key, config in kernel.cache.items()
    }
    (out / "blocks.json").write_text(json.dumps({"layers": rows, "configs": configs}, indent=2))


if __name__ == "__main__":
    main()
