"""Where the FC-GQ-CNN fast path spends its time on a GPU: each trunk layer alone (bf16, channels-last, one
group of 16 images x 16 depth bins on the synthetic bins' window), with its arithmetic rate, then a profile of
whole ``plan()`` calls of the compiled fast path. Writes ``layers.json`` and ``profile.txt`` to ``$OUT``.

Next to each convolution it times the same convolution with its kernel's columns unfolded into channels
(:class:`dexrl.gqcnn.fast.RowUnfoldedConv`): a k x k convolution over C channels becomes a copy of the
input with k x C channels and a k x 1 convolution, the same arithmetic in fewer, longer reductions per tap
(cuDNN runs the 16-channel layers at a small fraction of the matrix rate).
Then the image stream after the shared conv1_1 and the head fc3 -> softmax as Triton kernels
(:mod:`dexrl.gqcnn.triton_convs`), layer by layer and whole, against PyTorch eager and compiled.

    PYTHONPATH=. python3 scripts/probe_planner_layers.py [--batch 64] [--window 386 508] [--skip-compile]
        [--skip-profile]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from dexrl.gqcnn.bench import _options, _random_network, bin_images
from dexrl.gqcnn.fast import RowUnfoldedConv, SpectralConv
from dexrl.gqcnn.policy import FCGQCNNPlanner
from dexrl.grasp import PHOXI_S


def conv_flops(out: torch.Tensor, conv: torch.nn.Conv2d) -> float:
    k_h, k_w = conv.kernel_size
    return 2.0 * out.numel() * conv.in_channels * k_h * k_w


def check_row_unfolded(device: str = "cpu") -> float:
    """Largest |difference| between a float32 convolution and its row-unfolded form on random input."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 128, 17).to(device)
    x = torch.rand(3, 16, 40, 52, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return (RowUnfoldedConv(conv)(x) - conv(x)).abs().max().item()


def layer_table(network, pairs: int, window: tuple[int, int], skip_compile: bool = False) -> list[dict]:
    device = torch.device("cuda")
    net = network.to(device, torch.bfloat16, memory_format=torch.channels_last).eval()
    stream = net.image_stream
    height, width = window[0] - 8, window[1] - 8
    first = torch.rand(pairs, 16, height, width, device=device, dtype=torch.bfloat16)
    first = first.contiguous(memory_format=torch.channels_last)
    rows = []

    def record(name, function, flops, *tensors):
        ms = do_bench(function, warmup=25, rep=100, return_mode="median")
        moved = sum(t.numel() * t.element_size() for t in tensors)
        rows.append({"layer": name, "ms": ms, "gflop": flops / 1e9, "tflop_s": flops / ms / 1e9,
                     "gb": moved / 1e9, "tb_s": moved / ms / 1e9})

    def record_unfolded(name, conv, x, out):
        rows_conv = RowUnfoldedConv(conv)
        unfold, convolve = rows_conv.unfold, rows_conv.convolve
        unfolded = unfold(x)
        error = (convolve(unfolded).float() - out.float()).abs().max().item()
        record(f"{name}: unfold copy", lambda: unfold(x), 0.0, x, unfolded)
        record(f"{name}: k x 1 conv", lambda: convolve(unfolded), conv_flops(out, conv), unfolded, out)
        record(f"{name}: both", lambda: convolve(unfold(x)), conv_flops(out, conv), x, out)
        rows[-1]["max_abs_diff_vs_cudnn"] = error

    with torch.inference_mode():
        c12 = stream.conv1_2(first)
        record("conv1_2 5x5 16->16", lambda: stream.conv1_2(first), conv_flops(c12, stream.conv1_2), first, c12)
        record_unfolded("conv1_2 unfolded (80 ch)", stream.conv1_2, first, c12)
        p1 = F.relu(stream.pool(c12))
        record("pool+relu 1", lambda: F.relu(stream.pool(c12)), 0.0, c12, p1)
        c21 = stream.conv2_1(p1)
        record("conv2_1 5x5", lambda: stream.conv2_1(p1), conv_flops(c21, stream.conv2_1), p1, c21)
        c22 = stream.conv2_2(F.relu(c21))
        record("conv2_2 5x5", lambda: stream.conv2_2(c21), conv_flops(c22, stream.conv2_2), c21, c22)
        p2 = F.relu(stream.pool(c22))
        fc3 = net.fc3(p2)
        record("fc3 17x17 16->128 (cuDNN bf16)", lambda: net.fc3(p2), conv_flops(fc3, net.fc3), p2, fc3)
        record_unfolded("fc3 unfolded (272 ch)", net.fc3, p2, fc3)
        spectral = SpectralConv(copy.deepcopy(net.fc3).float())
        p2_float = p2.float().contiguous()
        record("fc3 through fp32 FFTs", lambda: spectral(p2_float), conv_flops(fc3, net.fc3), p2_float, fc3)
        fc4 = net.fc4(F.relu(fc3))
        record("fc4 1x1 128->128", lambda: net.fc4(fc3), conv_flops(fc4, net.fc4), fc3, fc4)
        fc5 = net.fc5(fc4)
        record("fc5 1x1 128->32", lambda: net.fc5(fc4), conv_flops(fc5, net.fc5), fc4, fc5)

        def whole():
            h = stream.after_first_conv(first)
            return net.fc5(F.relu(net.fc4(F.relu(net.fc3(h)))))

        trunk_gflop = sum(r["gflop"] for r in rows if "FFT" not in r["layer"] and ":" not in r["layer"])
        record("trunk eager", whole, trunk_gflop * 1e9)
        fc3_unfolded = RowUnfoldedConv(net.fc3)

        def whole_fc3_unfolded():
            h = stream.after_first_conv(first)
            return net.fc5(F.relu(net.fc4(F.relu(fc3_unfolded(h)))))

        record("trunk eager, fc3 unfolded", whole_fc3_unfolded, trunk_gflop * 1e9)
        head_flops = conv_flops(fc3, net.fc3) + conv_flops(fc4, net.fc4) + conv_flops(fc5, net.fc5)
        record_triton_head(record, rows, net, p2, fc3_unfolded, head_flops, skip_compile)
        record_triton_stream(record, rows, net, pairs, (height, width), fc3_unfolded, trunk_gflop)
        if skip_compile:
            return rows
        compiled = torch.compile(whole, mode="max-autotune-no-cudagraphs")
        compiled()
        record("trunk compiled (max-autotune)", compiled, rows[-1]["gflop"] * 1e9)
    return rows


def record_triton_head(record, rows, net, features, fc3_unfolded, flops, skip_compile) -> None:
    """fc3 -> fc4 -> fc5 -> softmax as one Triton kernel (dexrl.gqcnn.triton_convs.QualityHead) against
    PyTorch with fc3 over unfolded rows, eager and compiled."""
    from dexrl.gqcnn.triton_convs import QualityHead  # noqa: PLC0415

    head, nhwc = QualityHead(net), features.permute(0, 2, 3, 1).contiguous()

    def torch_head():
        logits = net.fc5(F.relu(net.fc4(F.relu(fc3_unfolded(features))))).float()
        return torch.softmax(logits.unflatten(1, (-1, 2)), dim=2)[:, :, 1]

    expected, got = torch_head(), head(nhwc)
    record("head fc3..softmax, fc3 unfolded (PyTorch)", torch_head, flops, features, expected)
    record("head fc3..softmax (Triton, one kernel)", lambda: head(nhwc), flops, nhwc, got)
    rows[-1]["max_abs_diff_vs_pytorch"] = (got - expected).abs().max().item()
    if not skip_compile:
        compiled = torch.compile(torch_head, mode="max-autotune-no-cudagraphs")
        compiled()
        record("head fc3..softmax, fc3 unfolded (PyTorch compiled)", compiled, flops)


def record_triton_stream(record, rows, net, pairs, size, fc3_unfolded, trunk_gflop) -> None:
    """The image stream after the shared conv1_1 as Triton kernels (dexrl.gqcnn.triton_convs): each pair's
    shifted first layer, then the 5x5 layers with their ReLUs and pools; against PyTorch, eager and compiled."""
    from dexrl.gqcnn.triton_convs import QualityHead, StreamConvs, conv5x5_relu  # noqa: PLC0415

    stream, images = net.image_stream, 16
    shared = torch.rand(images, *size, 16, device="cuda") - 0.5
    shifts = 0.1 * torch.randn(pairs, 16, device="cuda")
    pair_image = torch.arange(images, device="cuda").repeat_interleave(pairs // images)
    triton_stream = StreamConvs(stream)

    def torch_first():  # as the fast path's PyTorch stream computes it, channels-last
        first = torch.empty(images, pairs // images, *size, 16, dtype=torch.bfloat16, device="cuda")
        by_image = shifts.unflatten(0, (images, -1))[:, :, None, None]
        return torch.add(shared[:, None], by_image, out=first).relu_().flatten(0, 1)

    first = torch_first()
    flops = {r["layer"]: r["gflop"] * 1e9 for r in rows}
    stream_flops = flops["conv1_2 5x5 16->16"] + flops["conv2_1 5x5"] + flops["conv2_2 5x5"]
    record("conv1_1 shift+ReLU, bf16 out (PyTorch)", torch_first, 0.0, shared, first)
    record("conv1_1 shift+ReLU, bf16 out (Triton)", lambda: triton_stream.first_layer(shared, shifts, pair_image),
           0.0, shared, first)
    h = first
    for (weight, bias), pool, name in zip(triton_stream.layers, (True, False, True), ("1_2", "2_1", "2_2")):
        out = conv5x5_relu(h, weight, bias, pool)
        layer = next(key for key in flops if key.startswith(f"conv{name} 5x5"))
        record(f"conv{name}+ReLU{'+pool' if pool else ''} (Triton)",
               functools.partial(conv5x5_relu, h, weight, bias, pool), flops[layer], h, out)
        h = out

    def torch_stream():
        return stream.after_first_conv(torch_first().permute(0, 3, 1, 2))

    def triton_trunk():
        h = triton_stream(shared, shifts, pair_image).permute(0, 3, 1, 2)
        return net.fc5(F.relu(net.fc4(F.relu(fc3_unfolded(h)))))

    head = QualityHead(net)

    expected = torch_stream().float()
    got = triton_stream(shared, shifts, pair_image).permute(0, 3, 1, 2).float()
    record("stream after shared conv1_1 (PyTorch)", torch_stream, stream_flops)
    record("stream after shared conv1_1 (Triton)", lambda: triton_stream(shared, shifts, pair_image), stream_flops)
    rows[-1]["max_abs_diff_vs_pytorch"] = (got - expected).abs().max().item()
    rows[-1]["max_abs_pytorch"] = expected.abs().max().item()
    record("trunk eager, Triton stream, fc3 unfolded", triton_trunk, trunk_gflop * 1e9)
    record("trunk eager, Triton stream and head", lambda: head(triton_stream(shared, shifts, pair_image)),
           trunk_gflop * 1e9)
    for name, function, gflop in (("stream after shared conv1_1 (PyTorch", torch_stream, stream_flops),
                                  ("trunk, Triton stream, fc3 unfolded (", triton_trunk, trunk_gflop * 1e9)):
        compiled = torch.compile(function, mode="max-autotune-no-cudagraphs")
        compiled()
        record(f"{name}compiled)", compiled, gflop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, nargs=2, default=(372, 468), metavar=("H", "W"),
                        help="window [px] (default the synthetic bins'; the rendered heaps' is 386 508)")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", "out/probe"))
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)

    print(f"row-unfolded 17x17 conv vs direct, float32 on the GPU: max |diff| {check_row_unfolded('cuda'):.2e}")
    rows = layer_table(_random_network(0), pairs=256, window=tuple(args.window), skip_compile=args.skip_compile)
    (out / "layers.json").write_text(json.dumps(rows, indent=2))
    for r in rows:
        print(f"{r['layer']:<40}{r['ms']:>9.3f} ms{r['gflop']:>9.1f} GFLOP{r['tflop_s']:>8.0f} TFLOP/s"
              f"{r['tb_s']:>7.2f} TB/s", flush=True)
    if args.skip_profile:
        return

    depth, masks = bin_images(64, 0)
    depth, masks = depth.cuda(), masks.cuda()
    repeats = -(-args.batch // 64)
    depth, masks = depth.repeat(repeats, 1, 1)[: args.batch], masks.repeat(repeats, 1, 1)[: args.batch]
    planner = FCGQCNNPlanner(_random_network(0), torch.device("cuda"), _options("fast-compiled", 16))
    cameras = [PHOXI_S] * args.batch
    for _ in range(3):
        result = planner.plan(depth, cameras, masks)
    print({k: round(1000 * v / args.batch, 4) for k, v in result.timings.items()}, "ms/image", flush=True)
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            planner.plan(depth, cameras, masks)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70)
    (out / "profile.txt").write_text(table)
    print(table[:9000])


if __name__ == "__main__":
    main()
