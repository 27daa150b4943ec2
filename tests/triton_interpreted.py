"""Checks of the Triton kernels of the fast path (image stream, head, inpainting), run by
``tests/test_triton_convs.py`` in a process started with ``TRITON_INTERPRET=1`` (Triton reads it when it is
first imported): the kernels then run on the CPU, in float32, through Triton's interpreter. Prints one JSON
object: each check's largest |difference| from PyTorch.
"""

import copy
import json
import os

import torch
import torch.nn.functional as F

from dexrl.gqcnn.model import FCGQCNN
from dexrl.gqcnn.policy import FCGQCNNPlanner, PlannerOptions
from dexrl.gqcnn.triton_convs import (
    QualityHead,
    SharedFirstConv,
    StreamConvs,
    block_rows,
    conv5x5_relu,
    conv_blocks_relu,
    inpaint_round,
    kernel_rows,
    shifted_relu,
    top_k,
)
from dexrl.grasp import CameraIntrinsics


def torch_layer(x: torch.Tensor, conv: torch.nn.Conv2d, pool: bool) -> torch.Tensor:
    """ReLU(conv), pooled like the network's pools, on and to channels-last (N, H, W, C) tensors."""
    y = F.relu(conv(x.permute(0, 3, 1, 2)))
    return (F.max_pool2d(y, 2, 2, ceil_mode=True) if pool else y).permute(0, 2, 3, 1)


def kernel_errors() -> dict[str, float]:
    """One convolution on odd sizes (partial tiles, a pooled edge of one row), with and without the pool, one
    tap per product and by 2x2 blocks of output pixels (these also on an output of odd width, whose last
    blocks read past the input's edges); the shifted first layer (its blocks reach past the image's last
    pixel)."""
    conv = torch.nn.Conv2d(16, 16, 5)
    weight, bias = kernel_rows(conv.weight), conv.bias.detach()
    x, odd_width = torch.randn(2, 21, 38, 16), torch.randn(1, 22, 37, 16)
    shifts, pair_image = torch.randn(3, 16), torch.tensor([1, 0, 1])
    with torch.no_grad():
        return {
            **{
                f"conv_pool_{pool}": (conv5x5_relu(x, weight, bias, pool) - torch_layer(x, conv, pool)).abs().max().item()
                for pool in (False, True)
            },
            **{
                f"blocks_pool_{pool}_{image.shape[2]}": (
                    conv_blocks_relu(image, block_rows(conv.weight), bias, pool) - torch_layer(image, conv, pool)
                ).abs().max().item()
                for pool in (False, True)
                for image in (x, odd_width)
            },
            "shifted_relu": (
                shifted_relu(x, shifts, pair_image, torch.float32) - F.relu(x[pair_image] + shifts[:, None, None])
            ).abs().max().item(),
        }


def inpaint_round_error() -> float:
    """One round of hole filling against the average of each hole's valid 8-neighbours, computed with
    convolutions, on a 37x45 image (partial tiles) with holes of several sizes and a negative pixel."""
    depth = 0.6 + 0.1 * torch.rand(2, 37, 45)
    depth[0, 3:9, 30:44] = 0.0
    depth[1, 20:37, 0:5] = 0.0
    depth[1, 10, 10] = -0.5
    valid = (depth > 0).float()[:, None]
    ones = torch.ones(1, 1, 3, 3)
    count = F.conv2d(valid, ones, padding=1)[:, 0]
    average = F.conv2d(depth[:, None] * valid, ones, padding=1)[:, 0] / count.clamp(min=1)
    expected_filled = (depth <= 0) & (count > 0)
    filled, which = inpaint_round(depth)
    if not torch.equal(which, expected_filled) or not expected_filled.any():
        return float("inf")
    return (filled - torch.where(expected_filled, average, depth)).abs().max().item()


def first_conv_error(network: FCGQCNN) -> float:
    """The shared conv1_1 kernel against the network's (PyTorch) on 2 images of 37x45 (partial tiles), each
    with its own reference depth: whole images, and windows of larger ones read in place."""
    larger = 0.6 + 0.1 * torch.rand(2, 44, 60)
    reference = torch.tensor([0.62, 0.66])
    errors = []
    for depth in (larger[:, 3:40, 5:50].contiguous(), larger[:, 3:40, 5:50]):
        with torch.no_grad():
            expected = network.shared_first_conv(depth[:, None], reference).permute(0, 2, 3, 1)
            errors.append((SharedFirstConv(network)(depth, reference) - expected).abs().max().item())
    return max(errors)


def stream_errors(network: FCGQCNN) -> dict[str, float]:
    """The shifted first layer and three convolutions (one tap per product, and by blocks) against the
    network's image stream, for 3 pairs of 2 images of 44x52."""
    shared, shifts, pair_image = torch.randn(2, 44, 52, 16), torch.randn(3, 16), torch.tensor([1, 0, 1])
    first = F.relu(shared[pair_image] + shifts[:, None, None])
    with torch.no_grad():
        expected = network.image_stream.after_first_conv(first.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return {
            f"stream_blocks_{blocks}": (
                StreamConvs(network.image_stream, blocks)(shared, shifts, pair_image) - expected
            ).abs().max().item()
            for blocks in (False, True)
        }


def head_error(network: FCGQCNN) -> float:
    """The one-kernel head (fc3 -> softmax) against the network's layers on features of 2 pairs of 20x37 (an
    output of 4x21: partial tiles both ways)."""
    features = torch.randn(2, 20, 37, 16).relu()
    with torch.no_grad():
        logits = network.fc5(F.relu(network.fc4(F.relu(network.fc3(features.permute(0, 3, 1, 2))))))
        expected = torch.softmax(logits.unflatten(1, (-1, 2)), dim=2)[:, :, 1]
        return (QualityHead(network)(features) - expected).abs().max().item()


def head_refuses_other_widths() -> bool:
    """A network of 8 angle bins (fc5's 16 outputs: 8 per logit, too narrow for the kernel's products)."""
    try:
        QualityHead(FCGQCNN(angle_bins=8))
    except ValueError:
        return True
    return False


def planner_errors(network: FCGQCNN) -> dict[str, float]:
    """q of the fast path (float32) with the Triton stream, then also the Triton head, against PyTorch's on a
    box in a 112x124 image: every depth bin live, then with the jaw clearance filter, which leaves a bin dead
    (gathered pairs)."""
    depth = torch.full((2, 112, 124), 0.70)
    depth[0, 40:70, 50:64] = 0.62
    depth[1, 30:60, 45:75] = 0.60
    camera = CameraIntrinsics(fx=552.5, fy=552.5, cx=61.5, cy=55.5, width=124, height=112)
    errors = {}
    for name, clearance in (("planner_all_bins", None), ("planner_live_bins", 0.05)):
        q = {}
        for stream_convs, fc3 in (("torch", "conv"), ("triton", "conv"), ("triton", "triton")):
            options = PlannerOptions(
                path="fast", precision="fp32", rescore_top=0, depth_bins=3, fc3=fc3, jaw_clearance=clearance,
                stream_convs=stream_convs,
            )  # fmt: skip
            q[stream_convs, fc3] = FCGQCNNPlanner(network, "cpu", options).evaluate(depth, camera).q
        expected = q["torch", "conv"]
        errors[name] = (q["triton", "conv"] - expected).abs().max().item()
        errors[f"{name}_head"] = (q["triton", "triton"] - expected).abs().max().item()
        errors[f"{name}_evaluated"] = float((expected > 0).any(dim=(2, 3, 4)).float().mean())
    return errors


def rescoring_errors(network: FCGQCNN) -> dict[str, float]:
    """The top 3 grasps' q, every grasp rescored on its crop through the Triton stream's kernels with the
    network's float32 weights, against the same with PyTorch's stream. fc5 is scaled down so that q lies
    near 0.5, where a wrongly rescored crop shows."""
    network = copy.deepcopy(network)
    network.fc5.weight.data *= 0.01
    depth = torch.full((1, 112, 124), 0.70)
    depth[0, 40:70, 50:64] = 0.62
    camera = CameraIntrinsics(fx=552.5, fy=552.5, cx=61.5, cy=55.5, width=124, height=112)
    q = [
        FCGQCNNPlanner(
            network, "cpu", PlannerOptions(path="fast", precision="fp32", depth_bins=3, stream_convs=stream)
        )
        .plan(depth, camera, k=3)
        .grasps.q
        for stream in ("torch", "triton")
    ]
    return {
        "rescoring": (q[1] - q[0]).abs().max().item(),
        "rescoring_q_from_half": (q[0] - 0.5).abs().max().item(),
    }


def top_k_errors() -> dict[str, float]:
    """The two-kernel top-k against ``torch.topk``: on 3 images of 9000 scores (a partial last chunk; image 1's
    best score is its last, image 2 has one score above a floor of ties), and on 2 images of fewer scores than
    one chunk."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 9000, generator=generator)
    scores[1, -1] = 2.0
    scores[2] = -3.0
    scores[2, 17] = 0.5
    few = torch.rand(2, 700, generator=generator)
    errors = {}
    for name, values in (("chunks", scores), ("one_chunk", few)):
        got, index = top_k(values, 16, chunk=1024)
        errors[f"top_k_{name}"] = (got - values.topk(16, dim=1).values).abs().max().item()
        errors[f"top_k_{name}_index"] = (values.gather(1, index) - got).abs().max().item()
    index = top_k(scores, 16, chunk=1024)[1]
    errors["top_k_found_last_and_lone"] = float(index[1:, 0].tolist() == [9000 - 1, 17])
    errors["top_k_distinct_ties"] = float(len(set(index[2].tolist())) == 16)
    return errors


def main() -> None:
    if not os.environ.get("TRITON_INTERPRET"):
        raise SystemExit("run with TRITON_INTERPRET=1")
    torch.manual_seed(0)
    network = FCGQCNN().eval()
    errors = {**kernel_errors(), **stream_errors(network), "head": head_error(network)}
    errors["inpaint_round"] = inpaint_round_error()
    errors["first_conv"] = first_conv_error(network)
    errors.update(rescoring_errors(network))
    errors.update(top_k_errors())
    errors["head_refuses_8_angles"] = head_refuses_other_widths()
    print(json.dumps({**errors, **planner_errors(network)}))


if __name__ == "__main__":
    main()
