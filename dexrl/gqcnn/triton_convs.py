"""FC-GQ-CNN's layers after the shared conv1_1 as Triton kernels, for the fast path on CUDA: the image stream
(``PlannerOptions(stream_convs="triton")``: each pair's ReLU(conv1_1) in one pass, then conv1_2, conv2_1 and
conv2_2 as one kernel each) and the head (``fc3="triton"``: fc3, fc4, fc5 and the softmax as one kernel,
:class:`QualityHead`).

cuDNN runs FC-GQ-CNN's 16 -> 16 channel 5x5 convolutions at about 51 TFLOP/s on an H200 in bfloat16, a few
percent of the matrix units' rate: with 16 channels each tap's reduction is too short for its kernels. Here
each program computes a tile of output pixels as 25 small matrix products (pixels x 16 input channels times
16 x 16 weights) and accumulates in float32. It then adds the bias and applies the ReLU and, where the layer
has one, the 2x2 max-pool (stride 2, rounding up like the network's pools) in registers, which PyTorch runs
as separate passes over memory: a pooled layer writes only a quarter of the pixels.

conv1_1's output at each pair's grasp depth, ReLU(shared + shift) rounded to bfloat16, is written by its own
one-pass kernel (PyTorch's broadcast add into bfloat16 and in-place ReLU took 4.5 ms per 256 pairs at the
rendered heaps' window on an H200). Adding the shift inside conv1_2's kernel instead was slower (8.7 ms
against 4.6 ms, 2026-12-03): the kernel reads each input pixel for 25 taps, and would add its shift 25 times.

Tensors are channels-last: (N, H, W, C) contiguous. The kernels also run on CPU tensors, in float32, through
Triton's interpreter in processes started with ``TRITON_INTERPRET=1`` (slowly): that is how the tests check
their indexing without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["QualityHead", "StreamConvs", "conv5x5_relu", "quality_head", "shifted_relu"]

_TILE_CONFIGS = [
    triton.Config({"TILE_H": h, "TILE_W": w}, num_warps=warps, num_stages=stages)
    for h, w in ((16, 16), (8, 32), (16, 32), (32, 32), (16, 64))
    for warps, stages in ((4, 2), (8, 3))
]
_INTERPRETER_TILE = {"TILE_H": 16, "TILE_W": 32}
_SHIFT_BLOCK = 256
"""Pixels per program of the shift kernel."""


@triton.jit
def _shifted_relu_kernel(
    shared_ptr,  # (G, PIXELS, C) float32
    shift_ptr,  # (N, C) float32
    image_ptr,  # (N,) each pair's image in shared
    out_ptr,  # (N, PIXELS, C)
    PIXELS,
    C: tl.constexpr,
    BLOCK: tl.constexpr,
):
    block, pair = tl.program_id(0), tl.program_id(1).to(tl.int64)
    image = tl.load(image_ptr + pair).to(tl.int64)
    pixel = block * BLOCK + tl.arange(0, BLOCK)
    offsets = pixel[:, None] * C + tl.arange(0, C)[None, :]
    inside = (pixel < PIXELS)[:, None]
    shared = tl.load(shared_ptr + image * PIXELS * C + offsets, mask=inside)
    shift = tl.load(shift_ptr + pair * C + tl.arange(0, C))
    out = tl.maximum(shared + shift[None, :], 0.0)  # in float32, rounded once: the two terms nearly cancel
    tl.store(out_ptr + pair * PIXELS * C + offsets, out.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _output_tile(OUT_H, OUT_W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """This program's TILE_H x TILE_W tile of output pixels (program axis 0 numbers the tiles row-major):
    its first row and column, each pixel's row and column, and which pixels lie inside the output."""
    tile = tl.program_id(0)
    tiles_w = (OUT_W + TILE_W - 1) // TILE_W
    first_row, first_col = (tile // tiles_w) * TILE_H, (tile % tiles_w) * TILE_W
    pixel = tl.arange(0, TILE_H * TILE_W)
    row, col = first_row + pixel // TILE_W, first_col + pixel % TILE_W
    return first_row, first_col, row, col, (row < OUT_H) & (col < OUT_W)


@triton.jit
def _conv_kernel(
    x_ptr,  # (N, H, W, C_IN)
    w_ptr,  # (K, K, C_IN, C_OUT)
    b_ptr,  # (C_OUT,)
    y_ptr,  # (N, Y_H, Y_W, C_OUT)
    H,
    W,
    OUT_H,  # convolution output size, before any pool
    OUT_W,
    Y_H,  # stored size
    Y_W,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    K: tl.constexpr,
    POOL: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    first_row, first_col, row, col, valid = _output_tile(OUT_H, OUT_W, TILE_H, TILE_W)
    c_in, c_out = tl.arange(0, C_IN), tl.arange(0, C_OUT)

    x_base = x_ptr + n * H * W * C_IN
    acc = tl.zeros((TILE_H * TILE_W, C_OUT), dtype=tl.float32)
    for tap in tl.range(K * K):
        dy, dx = tap // K, tap % K
        offsets = ((row + dy) * W + col + dx)[:, None] * C_IN + c_in[None, :]
        a = tl.load(x_base + offsets, mask=valid[:, None], other=0.0)
        w = tl.load(w_ptr + (tap * C_IN + c_in[:, None]) * C_OUT + c_out[None, :])
        acc = tl.dot(a, w, acc)

    if POOL:  # max over each 2x2 block of the tile; pixels past the edge never win
        acc = tl.where(valid[:, None], acc, float("-inf"))
        acc = tl.reshape(acc, (TILE_H // 2, 2, TILE_W // 2, 2, C_OUT))
        acc = tl.reshape(tl.max(tl.max(acc, axis=3), axis=1), (TILE_H * TILE_W // 4, C_OUT))
        pooled = tl.arange(0, TILE_H * TILE_W // 4)
        row = first_row // 2 + pooled // (TILE_W // 2)
        col = first_col // 2 + pooled % (TILE_W // 2)
    out = tl.maximum(acc + tl.load(b_ptr + c_out)[None, :], 0.0)  # the bias commutes with the max
    stored = (row < Y_H) & (col < Y_W)
    y_offsets = n * Y_H * Y_W * C_OUT + (row * Y_W + col)[:, None] * C_OUT + c_out[None, :]
    tl.store(y_ptr + y_offsets, out.to(y_ptr.dtype.element_ty), mask=stored[:, None])


_tuned_conv_kernel = triton.autotune(_TILE_CONFIGS, key=["H", "W", "POOL"])(_conv_kernel)


@triton.jit
def _head_kernel(
    x_ptr,  # (N, H, W, C) features
    w3_ptr,  # (K, PADDED_TAPS * C, F): fc3, each row's taps padded with zeros to PADDED_TAPS
    b3_ptr,  # (F,) float32
    w4_ptr,  # (F, F), (in, out)
    b4_ptr,  # (F,) float32
    w5_ptr,  # (F, 2, A): the fail logits' columns, then the success logits'
    b5_ptr,  # (2, A) float32
    q_ptr,  # (N, A, OUT_H, OUT_W) float32
    H,
    W,
    OUT_H,
    OUT_W,
    C: tl.constexpr,
    K: tl.constexpr,
    F: tl.constexpr,
    A: tl.constexpr,
    PADDED_TAPS: tl.constexpr,
    TAPS: tl.constexpr,  # taps of one row per reduction step
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    first_row, first_col, row, col, valid = _output_tile(OUT_H, OUT_W, TILE_H, TILE_W)
    # a step reduces over TAPS neighbouring taps of one kernel row: TAPS * C values that lie next to each
    # other in channels-last memory (tap j // C, channel j % C)
    j, f = tl.arange(0, TAPS * C), tl.arange(0, F)
    chunks: tl.constexpr = (K + TAPS - 1) // TAPS

    x_base = x_ptr + n * H * W * C
    acc = tl.zeros((TILE_H * TILE_W, F), dtype=tl.float32)
    for step in tl.range(K * chunks):
        dy, first_tap = step // chunks, (step % chunks) * TAPS
        offsets = ((row + dy) * W + col + first_tap)[:, None] * C + j[None, :]
        in_kernel = (first_tap + j // C) < K  # the last step's padding taps would read past the row
        a = tl.load(x_base + offsets, mask=valid[:, None] & in_kernel[None, :], other=0.0)
        w = tl.load(w3_ptr + ((dy * PADDED_TAPS + first_tap) * C + j[:, None]) * F + f[None, :])
        acc = tl.dot(a, w, acc)

    # fc4, fc5 and the softmax on the tile in registers, rounding where the layers' outputs would be stored.
    # Transposed (channels x pixels): the activations enter each product as its second operand, which goes
    # through shared memory (as the first operand from registers, bfloat16 products came out wrong on an H200
    # for some tile shapes, Triton 3.6).
    dtype = w4_ptr.dtype.element_ty
    fc3 = tl.trans(tl.maximum(acc + tl.load(b3_ptr + f)[None, :], 0.0).to(dtype))
    fc4 = tl.dot(tl.load(w4_ptr + f[None, :] * F + f[:, None]), fc3) + tl.load(b4_ptr + f)[:, None]
    fc4 = tl.maximum(fc4, 0.0).to(dtype)
    angle = tl.arange(0, A)
    fail = tl.dot(tl.load(w5_ptr + f[None, :] * 2 * A + angle[:, None]), fc4) + tl.load(b5_ptr + angle)[:, None]
    success = tl.dot(tl.load(w5_ptr + f[None, :] * 2 * A + A + angle[:, None]), fc4)
    success += tl.load(b5_ptr + A + angle)[:, None]
    # softmax over (fail, success), its success column, from logits rounded like a stored fc5
    q = 1.0 / (1.0 + tl.exp(fail.to(dtype).to(tl.float32) - success.to(dtype).to(tl.float32)))
    q_offsets = n * A * OUT_H * OUT_W + angle[:, None] * OUT_H * OUT_W + (row * OUT_W + col)[None, :]
    tl.store(q_ptr + q_offsets, q, mask=valid[None, :])


_HEAD_CONFIGS = [
    triton.Config({"TAPS": taps, "TILE_H": h, "TILE_W": w}, num_warps=warps, num_stages=stages)
    for taps in (2, 4)
    for h, w in ((1, 64), (2, 32), (1, 128), (2, 64), (4, 32))
    for warps, stages in ((4, 3), (8, 3))
    if h * w == 64 or warps == 8
]
_HEAD_PADDED_TAPS = 20
"""fc3's rows padded to a multiple of every ``TAPS`` tried (2, 4)."""
_INTERPRETER_HEAD_TILE = {"TAPS": 4, "TILE_H": 2, "TILE_W": 16}
_tuned_head_kernel = triton.autotune(_HEAD_CONFIGS, key=["H", "W"])(_head_kernel)


def _output(x: torch.Tensor, weight: torch.Tensor, pool: bool) -> torch.Tensor:
    """The uninitialised output of :func:`conv5x5_relu`; raises ValueError for inputs that do not fit."""
    count, height, width, in_channels = x.shape
    k, out_channels = weight.shape[0], weight.shape[-1]
    if weight.shape != (k, k, in_channels, out_channels):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {in_channels}")
    out_h, out_w = height - k + 1, width - k + 1
    if pool:
        out_h, out_w = -(-out_h // 2), -(-out_w // 2)
    return x.new_empty(count, out_h, out_w, out_channels, dtype=weight.dtype)


@torch.library.custom_op("dexrl::conv5x5_relu", mutates_args=())
def conv5x5_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: bool) -> torch.Tensor:
    """ReLU(conv(x) + bias), max-pooled 2x2 (stride 2, rounding up) if ``pool``: a valid, stride-1 convolution.

    Args:
        x: (N, H, W, C) channels-last input.
        weight: (K, K, C, O) (a ``Conv2d`` weight permuted (2, 3, 1, 0)), in the input's dtype.
        bias: (O,) float32.
        pool: max-pool the ReLU'd convolution 2x2.

    Returns:
        (N, H', W', O) in the input's dtype, H' = H - K + 1 (halved, rounding up, if ``pool``), W' likewise.
    """
    y = _output(x, weight, pool)
    count, stored_h, stored_w, out_channels = y.shape
    if count == 0:
        return y
    _, height, width, in_channels = x.shape
    k = weight.shape[0]
    out_h, out_w = height - k + 1, width - k + 1
    x, weight = x.contiguous(), weight.contiguous()

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(out_h, meta["TILE_H"]) * triton.cdiv(out_w, meta["TILE_W"]), count

    _launch(
        (_tuned_conv_kernel, _conv_kernel, _INTERPRETER_TILE), x.device, grid,
        x, weight, bias, y, height, width, out_h, out_w, stored_h, stored_w,
        C_IN=in_channels, C_OUT=out_channels, K=k, POOL=pool,
    )  # fmt: skip
    return y


@conv5x5_relu.register_fake
def _(x, weight, bias, pool):  # shapes for torch.compile, to which the kernels are opaque operators
    return _output(x, weight, pool)


def _launch(kernels: tuple, device: torch.device, grid, *args, **constants) -> None:
    """Run a kernel given as (autotuned, plain, the interpreter's tile): autotuned on CUDA, with that tile
    through Triton's interpreter elsewhere (the CPU tests)."""
    tuned, plain, interpreter_tile = kernels
    if device.type == "cuda":
        tuned[grid](*args, **constants)
    else:
        _require_cuda_or_interpreter(device)
        plain[grid](*args, **constants, **interpreter_tile)


def _require_cuda_or_interpreter(device: torch.device) -> None:
    if device.type != "cuda" and not triton.knobs.runtime.interpret:
        raise ValueError("the Triton image stream runs on CUDA (on CPUs only under TRITON_INTERPRET=1, tests)")


def _shifted_output(shared: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return shared.new_empty(len(shift), *shared.shape[1:], dtype=dtype)


@torch.library.custom_op("dexrl::shifted_relu", mutates_args=())
def shifted_relu(
    shared: torch.Tensor, shift: torch.Tensor, pair_image: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """ReLU(shared[pair_image[n]] + shift[n]) for each pair n, added in float32 and rounded once to ``dtype``.

    Args:
        shared: (G, H, W, C) float32, channels-last. shift: (N, C) float32. pair_image: (N,) int.

    Returns:
        (N, H, W, C) in ``dtype``.
    """
    out = _shifted_output(shared, shift, dtype)
    if len(out) == 0:
        return out
    _require_cuda_or_interpreter(shared.device)
    pixels = shared.shape[1] * shared.shape[2]
    grid = (triton.cdiv(pixels, _SHIFT_BLOCK), len(out))
    _shifted_relu_kernel[grid](
        shared.contiguous(), shift.contiguous(), pair_image.contiguous(), out, pixels, C=shared.shape[-1],
        BLOCK=_SHIFT_BLOCK,
    )  # fmt: skip
    return out


@shifted_relu.register_fake
def _(shared, shift, pair_image, dtype):
    return _shifted_output(shared, shift, dtype)


def _head_output(x: torch.Tensor, fc3_weight: torch.Tensor, fc5_weight: torch.Tensor) -> torch.Tensor:
    count, height, width, _ = x.shape
    k = fc3_weight.shape[0]
    return x.new_empty(count, fc5_weight.shape[-1], height - k + 1, width - k + 1, dtype=torch.float32)


@torch.library.custom_op("dexrl::quality_head", mutates_args=())
def quality_head(
    x: torch.Tensor,
    fc3_weight: torch.Tensor,
    fc3_bias: torch.Tensor,
    fc4_weight: torch.Tensor,
    fc4_bias: torch.Tensor,
    fc5_weight: torch.Tensor,
    fc5_bias: torch.Tensor,
) -> torch.Tensor:
    """Grasp quality from the image stream's features: ReLU(fc3) (a valid K x K convolution), ReLU(fc4),
    fc5 (1x1 convolutions) and the softmax over each angle's (fail, success) logits, in one kernel. Use
    :class:`QualityHead` to lay out the weights.

    Args:
        x: (N, H, W, C) channels-last features.
        fc3_weight: (K, 20 C, F): each kernel row's K taps x C channels, padded with zeros to 20 taps.
        fc4_weight: (F, F), input-major. fc5_weight: (F, 2, A): the fail logits' weights, then the success
            logits'. Weights in the features' dtype.
        fc3_bias: (F,), fc4_bias: (F,), fc5_bias: (2, A), float32.

    Returns:
        q (N, A, H - K + 1, W - K + 1) float32.
    """
    q = _head_output(x, fc3_weight, fc5_weight)
    count, angles, out_h, out_w = q.shape
    if q.numel() == 0:
        return q
    _, height, width, channels = x.shape
    kernel_size, features = fc3_weight.shape[0], fc3_weight.shape[-1]
    if fc3_weight.shape != (kernel_size, _HEAD_PADDED_TAPS * channels, features) or kernel_size > _HEAD_PADDED_TAPS:
        raise ValueError(f"fc3 weight {tuple(fc3_weight.shape)} does not fit {channels} input channels")

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(out_h, meta["TILE_H"]) * triton.cdiv(out_w, meta["TILE_W"]), count

    _launch(
        (_tuned_head_kernel, _head_kernel, _INTERPRETER_HEAD_TILE), x.device, grid,
        x.contiguous(), fc3_weight, fc3_bias, fc4_weight, fc4_bias, fc5_weight, fc5_bias, q,
        height, width, out_h, out_w,
        C=channels, K=kernel_size, F=features, A=angles, PADDED_TAPS=_HEAD_PADDED_TAPS,
    )  # fmt: skip
    return q


@quality_head.register_fake
def _(x, fc3_weight, fc3_bias, fc4_weight, fc4_bias, fc5_weight, fc5_bias):
    return _head_output(x, fc3_weight, fc5_weight)


class QualityHead:
    """FC-GQ-CNN's layers after the image stream, fc3 -> fc4 -> fc5 -> softmax, as one Triton kernel
    (:func:`quality_head`): fc3, the network's largest layer (a 17x17 convolution, 16 -> 128 channels),
    accumulates in float32 over steps of several taps of one kernel row at a time (a reduction of 32-64 values
    that lie next to each other in memory, without copying the rows out as ``fc3="rows"`` does); fc4, fc5 and
    the softmax then run on the tile in registers, so only q is written.

    Args:
        network: the trunk's network (its weights are read once, in their dtype); fc3 at most 20 taps wide,
            fc4 and fc5 1x1 convolutions, power-of-two channel and angle counts of at least 16.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        fc3, fc4, fc5 = network.fc3, network.fc4, network.fc5
        _require_cuda_or_interpreter(fc3.weight.device)
        features, channels, kernel_size, _ = fc3.weight.shape
        angles = fc5.weight.shape[0] // 2
        if any(n < 16 or n & (n - 1) for n in (channels, features, angles)) or kernel_size > _HEAD_PADDED_TAPS:
            raise ValueError(f"the Triton head needs power-of-two widths >= 16 (fc3 {tuple(fc3.weight.shape)})")
        rows = fc3.weight.detach().permute(2, 3, 1, 0)  # (K, K, C, F)
        rows = torch.nn.functional.pad(rows, (0, 0, 0, 0, 0, _HEAD_PADDED_TAPS - kernel_size))
        self.weights = (
            rows.reshape(kernel_size, _HEAD_PADDED_TAPS * channels, features).contiguous(),
            fc3.bias.detach().float(),
            fc4.weight.detach()[:, :, 0, 0].t().contiguous(),
            fc4.bias.detach().float(),
            # fc5's channels alternate (fail, success) per angle: (2A, F) -> (F, 2, A)
            fc5.weight.detach()[:, :, 0, 0].t().unflatten(1, (angles, 2)).transpose(1, 2).contiguous(),
            fc5.bias.detach().float().unflatten(0, (angles, 2)).t().contiguous(),
        )

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """q (N, A, H - K + 1, W - K + 1) float32 from features (N, H, W, C) channels-last."""
        return quality_head(features, *self.weights)


class StreamConvs:
    """An image stream after the shared conv1_1 (:meth:`FCGQCNN.shared_first_conv`): each pair's
    ReLU(conv1_1) through :func:`shifted_relu`, then conv1_2, conv2_1 and conv2_2, each with its ReLU and the
    pool where it has one, through :func:`conv5x5_relu`.

    Args:
        stream: the trunk's image stream; its weights are read once, in their dtype (the layers').
    """

    def __init__(self, stream: torch.nn.Module) -> None:
        _require_cuda_or_interpreter(stream.conv1_2.weight.device)
        self.dtype = stream.conv1_2.weight.dtype
        self.layers = [
            (conv.weight.detach().permute(2, 3, 1, 0).contiguous(), conv.bias.detach().float())
            for conv in (stream.conv1_2, stream.conv2_1, stream.conv2_2)
        ]

    def __call__(self, shared: torch.Tensor, shifts: torch.Tensor, pair_image: torch.Tensor) -> torch.Tensor:
        """Features (N, H2, W2, 16) of N pairs from the images' shared first layer (G, H, W, 16) float32, the
        pairs' shifts (N, 16) float32 (:meth:`FCGQCNN.first_conv_shifts`) and images (N,) in ``shared``."""
        features = self.first_layer(shared, shifts, pair_image)
        for (weight, bias), pool in zip(self.layers, (True, False, True), strict=True):
            features = conv5x5_relu(features, weight, bias, pool)
        return features

    def first_layer(self, shared: torch.Tensor, shifts: torch.Tensor, pair_image: torch.Tensor) -> torch.Tensor:
        """ReLU(conv1_1) (N, H, W, 16) of each pair, in the layers' dtype."""
        return shifted_relu(shared, shifts, pair_image, self.dtype)
