"""The fast path's rescoring kernels on a GPU, at a batch-1 plan's sizes: the 16 rescored crops' float32
layers (the shared conv1_1 and the three 5x5 layers) with their products as three TF32 products (``tf32x3``)
or as float32 multiply-adds (``ieee``), each form and the largest |difference| from float64; then the pair
top-k (16 of one image's 125,504 pairs) through :func:`dexrl.gqcnn.triton_convs.top_k` and through
``torch.topk``. Median of ``triton.testing.do_bench`` (which flushes the L2 cache between runs). Writes
``rescoring.json`` to ``$OUT``.

    PYTHONPATH=. python3 scripts/probe_rescoring_kernels.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from dexrl.gqcnn.triton_convs import (
    block_rows,
    conv5x5_relu,
    conv_blocks_relu,
    first_conv,
    kernel_rows,
    top_k,
)

CROP_LAYERS = {  # name: (input shape, pool)
    "conv1_2": ((16, 88, 88, 16), True),
    "conv2_1": ((16, 42, 42, 16), False),
    "conv2_2": ((16, 40, 40, 16), True),
}


def _us(function) -> float:
    return 1e3 * do_bench(function, warmup=25, rep=200, return_mode="median")


def crop_rows() -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for name, (shape, pool) in CROP_LAYERS.items():
        conv = torch.nn.Conv2d(16, 16, 5).cuda()
        x = torch.rand(*shape, device="cuda") - 0.3
        bias = conv.bias.detach().float()
        y = F.relu(F.conv2d(x.double().permute(0, 3, 1, 2), conv.weight.double(), conv.bias.double()))
        exact = (F.max_pool2d(y, 2, 2, ceil_mode=True) if pool else y).permute(0, 2, 3, 1)
        for form, function, weight in (("taps", conv5x5_relu, kernel_rows(conv.weight)),
                                       ("blocks", conv_blocks_relu, block_rows(conv.weight))):  # fmt: skip
            for precision in ("tf32x3", "ieee"):
                got = function(x, weight, bias, pool, precision)
                row = {
                    "layer": name, "form": form, "precision": precision,
                    "us": _us(lambda f=function, w=weight, p=precision, x=x, b=bias, o=pool: f(x, w, b, o, p)),
                    "max_abs_diff_float64": (got.double() - exact).abs().max().item(),
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    depth = 0.6 + 0.1 * torch.rand(16, 96, 96, device="cuda")
    reference = depth.mean(dim=(1, 2))
    weight = torch.randn(16, 1, 9, 9, device="cuda") * 0.1
    taps = F.pad(weight.reshape(16, 81).t(), (0, 0, 0, 128 - 81)).contiguous()
    exact = F.conv2d((depth - reference[:, None, None]).double()[:, None], weight.double())
    exact = exact.permute(0, 2, 3, 1)
    for precision in ("tf32x3", "ieee"):
        got = first_conv(depth, reference, taps, 9, precision)
        row = {
            "layer": "conv1_1 shared", "form": "patches", "precision": precision,
            "us": _us(lambda p=precision: first_conv(depth, reference, taps, 9, p)),
            "max_abs_diff_float64": (got.double() - exact).abs().max().item(),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def top_k_rows() -> list[dict]:
    scores = torch.rand(1, 16 * 74 * 106, device="cuda")
    expected = scores.topk(16, dim=1).values
    rows = [
        {
            "top_k": "triton",
            "us": _us(lambda: top_k(scores, 16)),
            "equal": bool(torch.equal(top_k(scores, 16)[0], expected)),
        },
        {"top_k": "torch.topk", "us": _us(lambda: scores.topk(16, dim=1)), "equal": True},
    ]
    print(json.dumps(rows), flush=True)
    return rows


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    report = {"device": torch.cuda.get_device_name(), "crops": crop_rows(), "top_k": top_k_rows()}
    (out / "rescoring.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
