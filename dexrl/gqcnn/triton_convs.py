"""FC-GQ-CNN's layers as Triton kernels, for the fast path on CUDA: the image stream
(``PlannerOptions(stream_convs="triton")``: the shared conv1_1, :class:`SharedFirstConv`; each pair's
ReLU(conv1_1) in one pass; then conv1_2, conv2_1 and conv2_2 as one kernel each, :class:`StreamConvs`) and
the head (``fc3="triton"``: fc3, fc4, fc5 and the softmax as one kernel,
:class:`QualityHead`).

cuDNN runs FC-GQ-CNN's 16 -> 16 channel 5x5 convolutions at about 51 TFLOP/s on an H200 in bfloat16, a few
percent of the matrix units' rate: with 16 channels each tap's reduction is too short for its kernels. Here
each program accumulates a tile of output pixels in float32, in one of two forms: one tap per product
(:func:`conv5x5_relu`: 25 products of pixels x 16 input channels times 16 x 16 weights), or by 2x2 blocks of
output pixels (:func:`conv_blocks_relu`: each block's 6x6 input patch times 64 columns, the block's 4 pixels
x 16 channels, in products of width 64 over reductions of 32; 1.44 times the multiply-adds, 1.75 times faster
in bfloat16 on an H200). It then adds the bias and applies the ReLU and, where the layer has one, the 2x2
max-pool (stride 2, rounding up like the network's pools) in registers, which PyTorch runs as separate passes
over memory: a pooled layer writes only a quarter of the pixels.

conv1_1's output at each pair's grasp depth, ReLU(shared + shift) rounded to bfloat16, is written by its own
one-pass kernel (PyTorch's broadcast add into bfloat16 and in-place ReLU took 4.5 ms per 256 pairs at the
rendered heaps' window on an H200). Adding the shift inside conv1_2's kernel instead was slower (8.7 ms
against 4.6 ms, 2026-12-03): the kernel reads each input pixel for 25 taps, and would add its shift 25 times.
By 2x2 blocks, which read each pixel 9 times, it was still slower: 226 against 163 us for a batch-1 plan's 16
pairs (2026-12-04, commit 0de730c), and keeping chunks of the written layer in L2 gained nothing.

One more kernel serves the pre-processing: a round of inpainting's hole filling in one pass
(:func:`inpaint_round`), where PyTorch took two 1-channel cuDNN convolutions and about eight elementwise
passes (0.24 ms for the 9 rounds of a whole-plan pass at batch 1 on an H200, against 0.02 ms now, 2026-12-04).

Tensors are channels-last: (N, H, W, C) contiguous. The kernels also run on CPU tensors, in float32, through
Triton's interpreter in processes started with ``TRITON_INTERPRET=1`` (slowly): that is how the tests check
their indexing without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "QualityHead",
    "SharedFirstConv",
    "StreamConvs",
    "block_rows",
    "conv5x5_relu",
    "conv_blocks_relu",
    "first_conv",
    "inpaint_round",
    "kernel_rows",
    "quality_head",
    "shifted_relu",
    "top_k",
]

_TILE_CONFIGS = [
    triton.Config({"TILE_H": h, "TILE_W": w}, num_warps=warps, num_stages=stages)
    for h, w in ((4, 16), (8, 16), (4, 32), (16, 16), (8, 32), (16, 32), (8, 64))
    for warps, stages in ((2, 2), (4, 2), (4, 3))
]
"""Tiles and pipelines the autotuner tries for the convolutions one tap per product, which the rescored
crops' float32 layers use (bfloat16 layers go by blocks). The 16 crops of a batch-1 plan are small images:
conv2_1's 38 x 38 outputs are 80 programs in 8 x 64 tiles for the H200's 132 SMs. On an H200 (2026-12-04) the
autotuner chose 4 x 32, 8 x 16 and 4 x 16 tiles for conv1_2, conv2_1 and conv2_2 of the crops."""
_INTERPRETER_TILE = {"TILE_H": 16, "TILE_W": 32}
_SHIFT_BLOCK = 256
"""Pixels per program of the shift kernel."""
_FILL_TILE = 32
"""Rows and columns per program of the inpainting kernel."""


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
def _first_conv_kernel(
    depth_ptr,  # (G, H, W) float32, columns contiguous
    reference_ptr,  # (G,) float32
    w_ptr,  # (PADDED_TAPS, C_OUT) float32: the K x K taps row-major, then zero rows
    out_ptr,  # (G, OUT_H, OUT_W, C_OUT) float32
    IMAGE_STRIDE,  # of depth, in elements
    ROW_STRIDE,
    OUT_H,
    OUT_W,
    K: tl.constexpr,
    PADDED_TAPS: tl.constexpr,
    C_OUT: tl.constexpr,
    PRECISION: tl.constexpr,
    STEP: tl.constexpr,  # taps per reduction step
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    image = tl.program_id(1).to(tl.int64)
    row, col, valid = _output_tile(OUT_H, OUT_W, TILE_H, TILE_W)
    c_out = tl.arange(0, C_OUT)
    reference = tl.load(reference_ptr + image)
    # each pixel's K x K patch as one row of a matrix product: pixels x taps times taps x channels, STEP taps
    # at a time (the whole patch at once holds TILE_H * TILE_W * PADDED_TAPS values in registers)
    acc = tl.zeros((TILE_H * TILE_W, C_OUT), dtype=tl.float32)
    for first in tl.static_range(0, PADDED_TAPS, STEP):
        tap = first + tl.arange(0, STEP)
        offsets = (row[:, None] + tap[None, :] // K) * ROW_STRIDE + col[:, None] + tap[None, :] % K
        taken = valid[:, None] & (tap < K * K)[None, :]
        patches = tl.load(depth_ptr + image * IMAGE_STRIDE + offsets, mask=taken, other=0.0)
        patches = tl.where(taken, patches - reference, 0.0)
        w = tl.load(w_ptr + tap[:, None] * C_OUT + c_out[None, :])
        acc = tl.dot(patches, w, acc, input_precision=PRECISION)
    out_offsets = image * OUT_H * OUT_W * C_OUT + (row * OUT_W + col)[:, None] * C_OUT + c_out[None, :]
    tl.store(out_ptr + out_offsets, acc, mask=valid[:, None])


@triton.jit
def _inpaint_round_kernel(
    depth_ptr,  # (B, H, W) float32
    out_ptr,  # (B, H, W) float32
    filled_ptr,  # (B, H, W) bool
    H,
    W,
    TILE: tl.constexpr,
):
    image = tl.program_id(1).to(tl.int64)
    tiles_w = (W + TILE - 1) // TILE
    pixel = tl.arange(0, TILE * TILE)
    row = (tl.program_id(0) // tiles_w) * TILE + pixel // TILE
    col = (tl.program_id(0) % tiles_w) * TILE + pixel % TILE
    base = image * H * W
    total = tl.zeros((TILE * TILE,), dtype=tl.float32)
    count = tl.zeros((TILE * TILE,), dtype=tl.float32)
    for tap in tl.static_range(9):  # the 3x3 neighbourhood, the pixel itself (not valid where it is filled)
        r, c = row + tap // 3 - 1, col + tap % 3 - 1
        value = tl.load(depth_ptr + base + r * W + c, mask=(r >= 0) & (r < H) & (c >= 0) & (c < W), other=0.0)
        valid = value > 0
        total += tl.where(valid, value, 0.0)
        count += valid.to(tl.float32)
    inside = (row < H) & (col < W)
    own = tl.load(depth_ptr + base + row * W + col, mask=inside, other=0.0)
    filled = ~(own > 0) & (count > 0)  # valid means > 0, as in PyTorch's round
    tl.store(
        out_ptr + base + row * W + col, tl.where(filled, total / tl.maximum(count, 1.0), own), mask=inside
    )
    tl.store(filled_ptr + base + row * W + col, filled, mask=inside)


def inpaint_round(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of hole filling (:func:`dexrl.gqcnn.preprocess.inpaint`): each pixel that is not valid (> 0)
    but has a valid pixel among its 8 neighbours takes their average.

    Args:
        depth: (B, H, W) float32 [m].

    Returns:
        The images after the round (B, H, W) and which pixels it filled (B, H, W) bool.
    """
    _require_cuda_or_interpreter(depth.device)
    depth = depth.contiguous()
    out, filled = torch.empty_like(depth), torch.empty(depth.shape, dtype=torch.bool, device=depth.device)
    if depth.numel():
        height, width = depth.shape[1:]
        grid = (triton.cdiv(height, _FILL_TILE) * triton.cdiv(width, _FILL_TILE), len(depth))
        _inpaint_round_kernel[grid](depth, out, filled, height, width, TILE=_FILL_TILE)
    return out, filled


@triton.jit
def _chunk_top_k_kernel(
    scores_ptr,  # (B, N) float32
    index_ptr,  # (B, N) int64: the scores' indices into an earlier step's scores (GATHER)
    values_ptr,  # (B, CHUNKS * K) float32
    out_index_ptr,  # (B, CHUNKS * K) int64
    N,
    CHUNK: tl.constexpr,
    K: tl.constexpr,
    GATHER: tl.constexpr,
):
    chunk, image = tl.program_id(0), tl.program_id(1).to(tl.int64)
    position = chunk * CHUNK + tl.arange(0, CHUNK)
    left = position < N
    scores = tl.load(scores_ptr + image * N + position, mask=left, other=float("-inf"))
    out = image * tl.num_programs(0) * K + chunk * K
    for j in tl.static_range(K):  # the best score left, the first of equal ones
        best = tl.max(tl.where(left, scores, float("-inf")), axis=0)
        at = tl.min(tl.where(left & (scores == best), position, N), axis=0)
        left &= position != at
        found = at < N  # not in a chunk of fewer than K scores
        index = tl.where(found, at, 0).to(tl.int64)
        if GATHER:
            index = tl.load(index_ptr + image * N + index)
        tl.store(values_ptr + out + j, tl.where(found, best, float("-inf")))
        tl.store(out_index_ptr + out + j, index)


TOP_K_ROUNDS = 64
"""The most values :func:`top_k` selects with its kernels."""


def top_k(scores: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(k, dim=1)`` of finite (B, n) float32 scores in two kernels: the k best of each ``chunk``
    scores, then the k best of those, each by k rounds of take-the-best in registers (ties: the first
    index). For one image's 125,504 (depth bin, cell) pairs and k = 16, inside a plan on an H200: 14 us,
    against 43 for two steps of ``torch.topk``'s radix selection (2026-12-04). More than
    :data:`TOP_K_ROUNDS` go to ``torch.topk``.

    Returns:
        (B, k) values, descending, and their (B, k) int64 indices.
    """
    _require_cuda_or_interpreter(scores.device)
    batch, count = scores.shape
    if not 0 < k <= count:
        raise ValueError(f"k = {k} must lie in 1..{count}")
    if k > min(TOP_K_ROUNDS, chunk):  # the kernel unrolls its rounds
        return scores.topk(k, dim=1)
    scores = scores.contiguous()
    chunks = triton.cdiv(count, chunk)
    values = scores.new_empty(batch, chunks * k)
    index = torch.empty(batch, chunks * k, dtype=torch.int64, device=scores.device)
    _chunk_top_k_kernel[(chunks, batch)](scores, index, values, index, count, CHUNK=chunk, K=k, GATHER=False)
    best_values = scores.new_empty(batch, k)
    best_index = torch.empty(batch, k, dtype=torch.int64, device=scores.device)
    _chunk_top_k_kernel[(1, batch)](
        values, index, best_values, best_index, chunks * k, CHUNK=triton.next_power_of_2(chunks * k), K=k,
        GATHER=True,
    )  # fmt: skip
    return best_values, best_index


@triton.jit
def _tile_origin(OUT_W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """First row and column of this program's TILE_H x TILE_W tile (program axis 0 numbers the tiles
    row-major)."""
    tile = tl.program_id(0)
    tiles_w = (OUT_W + TILE_W - 1) // TILE_W
    return (tile // tiles_w) * TILE_H, (tile % tiles_w) * TILE_W


@triton.jit
def _output_tile(OUT_H, OUT_W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Row and column of each output pixel of this program's tile, and which lie inside the output: a
    TILE_H x TILE_W tile (:func:`_tile_origin`), or for TILE_H = 1 a run of TILE_W pixels of the output in
    row-major order, which wraps to the next row, so that no tile reaches past the right edge (a batch-1
    plan's head output is 74 x 106 cells: a 1 x 128 tile per row computed 21% past it)."""
    pixel = tl.arange(0, TILE_H * TILE_W)
    if TILE_H == 1:
        index = tl.program_id(0) * TILE_W + pixel
        row, col = index // OUT_W, index % OUT_W
    else:
        first_row, first_col = _tile_origin(OUT_W, TILE_H, TILE_W)
        row, col = first_row + pixel // TILE_W, first_col + pixel % TILE_W
    return row, col, (row < OUT_H) & (col < OUT_W)


def _tiles(out_h: int, out_w: int, meta: dict) -> int:
    """Programs along axis 0 for an output of out_h x out_w pixels in ``meta``'s tiles
    (:func:`_output_tile`)."""
    if meta["TILE_H"] == 1:
        return triton.cdiv(out_h * out_w, meta["TILE_W"])
    return triton.cdiv(out_h, meta["TILE_H"]) * triton.cdiv(out_w, meta["TILE_W"])


@triton.jit
def _accumulate_kernel_rows(
    acc,
    x_base,
    w_ptr,  # (K, K * C, OUT): each kernel row's taps x channels
    row,
    col,
    valid,
    H,
    W,
    C: tl.constexpr,
    K: tl.constexpr,
    OUT: tl.constexpr,
    TAPS: tl.constexpr,
    PRECISION: tl.constexpr,
    BOUNDED: tl.constexpr,
):
    """``acc`` (pixels, OUT) plus a K x K correlation of the (H, W, C) image at ``x_base`` with the window
    at (row, col) for each of the tile's pixels, in float32. A step reduces over TAPS neighbouring taps of
    one kernel row: TAPS x C values that lie next to each other in channels-last memory (tap j // C, channel
    j % C), one matrix product without copying the rows out (with C = 16, one tap per product is a
    reduction of 16 only). A row's last K % TAPS taps take one step each. ``BOUNDED``: windows of valid
    pixels may reach past the image (read as zeros), not only those of pixels past the output."""
    whole: tl.constexpr = K // TAPS
    rest: tl.constexpr = K % TAPS
    out = tl.arange(0, OUT)
    for step in tl.range(K * whole):
        dy, first_tap = step // whole, (step % whole) * TAPS
        acc = _row_step(acc, x_base, w_ptr, row, col, valid, H, W, dy, first_tap, tl.arange(0, TAPS * C), out,
                        C, K, OUT, PRECISION, BOUNDED)  # fmt: skip
    if rest > 0:
        for step in tl.range(K * rest):
            dy, tap = step // rest, whole * TAPS + step % rest
            acc = _row_step(acc, x_base, w_ptr, row, col, valid, H, W, dy, tap, tl.arange(0, C), out,
                            C, K, OUT, PRECISION, BOUNDED)  # fmt: skip
    return acc


@triton.jit
def _row_step(
    acc, x_base, w_ptr, row, col, valid, H, W, dy, first_tap, j, out, C, K, OUT,
    PRECISION: tl.constexpr, BOUNDED: tl.constexpr,
):  # fmt: skip
    """``acc`` plus one matrix product: the values j (tap first_tap + j // C of kernel row dy, channel j % C)
    under each of the tile's pixels, times their weights."""
    offsets = ((row + dy) * W + col + first_tap)[:, None] * C + j[None, :]
    taken = valid[:, None]
    if BOUNDED:
        taken &= (row + dy < H)[:, None] & ((col + first_tap)[:, None] + j[None, :] // C < W)
    a = tl.load(x_base + offsets, mask=taken, other=0.0)
    w = tl.load(w_ptr + ((dy * K + first_tap) * C + j[:, None]) * OUT + out[None, :])
    return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def _conv_kernel(
    x_ptr,  # (N, H, W, C_IN)
    w_ptr,  # (K, K * C_IN, C_OUT)
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
    PRECISION: tl.constexpr,  # of float32 products: tf32, tf32x3 or ieee
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    tl.static_assert(TILE_H % 2 == 0 or not POOL, "a pooled tile spans whole 2x2 blocks")
    row, col, valid = _output_tile(OUT_H, OUT_W, TILE_H, TILE_W)
    c_out = tl.arange(0, C_OUT)
    acc = tl.zeros((TILE_H * TILE_W, C_OUT), dtype=tl.float32)
    # one tap per product: steps of 2 or 4 taps (as the head takes them) lost to it for all three layers
    # (autotuned on an H200, 2026-12-04)
    acc = _accumulate_kernel_rows(
        acc, x_ptr + n * H * W * C_IN, w_ptr, row, col, valid, H, W, C_IN, K, C_OUT, 1, PRECISION, False
    )

    if POOL:  # max over each 2x2 block of the tile; pixels past the edge never win
        acc = tl.where(valid[:, None], acc, float("-inf"))
        acc = tl.reshape(acc, (TILE_H // 2, 2, TILE_W // 2, 2, C_OUT))
        acc = tl.reshape(tl.max(tl.max(acc, axis=3), axis=1), (TILE_H * TILE_W // 4, C_OUT))
        pooled = tl.arange(0, TILE_H * TILE_W // 4)
        first_row, first_col = _tile_origin(OUT_W, TILE_H, TILE_W)
        row = first_row // 2 + pooled // (TILE_W // 2)
        col = first_col // 2 + pooled % (TILE_W // 2)
    out = tl.maximum(acc + tl.load(b_ptr + c_out)[None, :], 0.0)  # the bias commutes with the max
    stored = (row < Y_H) & (col < Y_W)
    y_offsets = n * Y_H * Y_W * C_OUT + (row * Y_W + col)[:, None] * C_OUT + c_out[None, :]
    tl.store(y_ptr + y_offsets, out.to(y_ptr.dtype.element_ty), mask=stored[:, None])


_tuned_conv_kernel = triton.autotune(_TILE_CONFIGS, key=["H", "W", "POOL", "PRECISION"])(_conv_kernel)


@triton.jit
def _block_conv_kernel(
    x_ptr,  # (N, H, W, C_IN)
    w_ptr,  # (K + 1, (K + 1) * C_IN, 4 * C_OUT): block_rows
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
    PRECISION: tl.constexpr,  # of float32 products: tf32, tf32x3 or ieee
    TAPS: tl.constexpr,  # patch pixels of one row per reduction step
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    block_row, block_col, valid = _output_tile((OUT_H + 1) // 2, (OUT_W + 1) // 2, TILE_H, TILE_W)
    # each 2x2 block of output pixels is one row of the products: its (K + 1) x (K + 1) input patch times
    # the 4 pixels x C_OUT columns of block_rows, row by row of the patch
    acc = tl.zeros((TILE_H * TILE_W, 4 * C_OUT), dtype=tl.float32)
    acc = _accumulate_kernel_rows(
        acc, x_ptr + n * H * W * C_IN, w_ptr, 2 * block_row, 2 * block_col, valid, H, W,
        C_IN, K + 1, 4 * C_OUT, TAPS, PRECISION, True,
    )  # fmt: skip

    column = tl.arange(0, 4 * C_OUT)  # block pixel (column // (2 C_OUT), column // C_OUT % 2), channel
    row = 2 * block_row[:, None] + (column // (2 * C_OUT))[None, :]
    col = 2 * block_col[:, None] + (column // C_OUT % 2)[None, :]
    inside = valid[:, None] & (row < OUT_H) & (col < OUT_W)
    c_out = tl.arange(0, C_OUT)
    if POOL:  # the 2x2 max-pool: a max over the block's pixels; pixels past the edge never win
        acc = tl.max(tl.reshape(tl.where(inside, acc, float("-inf")), (TILE_H * TILE_W, 4, C_OUT)), axis=1)
        out = tl.maximum(acc + tl.load(b_ptr + c_out)[None, :], 0.0)  # the bias commutes with the max
        y_offsets = n * Y_H * Y_W * C_OUT + (block_row * Y_W + block_col)[:, None] * C_OUT + c_out[None, :]
        tl.store(y_ptr + y_offsets, out.to(y_ptr.dtype.element_ty), mask=valid[:, None])
    else:
        out = tl.maximum(acc + tl.load(b_ptr + column % C_OUT)[None, :], 0.0)
        y_offsets = n * Y_H * Y_W * C_OUT + (row * Y_W + col) * C_OUT + (column % C_OUT)[None, :]
        tl.store(y_ptr + y_offsets, out.to(y_ptr.dtype.element_ty), mask=inside)


_BLOCK_CONFIGS = [
    triton.Config({"TAPS": 2, "TILE_H": h, "TILE_W": w}, num_warps=warps, num_stages=stages)
    for h, w in ((1, 64), (2, 32), (1, 128), (2, 64))
    for warps, stages in ((4, 2), (4, 3), (8, 3))
]
_INTERPRETER_BLOCK_TILE = {"TAPS": 2, "TILE_H": 8, "TILE_W": 16}
_tuned_block_conv_kernel = triton.autotune(_BLOCK_CONFIGS, key=["H", "W", "POOL", "PRECISION"])(
    _block_conv_kernel
)


@triton.jit
def _head_kernel(
    x_ptr,  # (N, H, W, C) features
    w3_ptr,  # (K, K * C, F): fc3, each kernel row's taps x channels
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
    TAPS: tl.constexpr,  # taps of one row per reduction step
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    row, col, valid = _output_tile(OUT_H, OUT_W, TILE_H, TILE_W)
    f = tl.arange(0, F)
    acc = tl.zeros((TILE_H * TILE_W, F), dtype=tl.float32)
    acc = _accumulate_kernel_rows(
        acc, x_ptr + n * H * W * C, w3_ptr, row, col, valid, H, W, C, K, F, TAPS, "tf32", False
    )  # bfloat16 operands: the precision of float32 products does not apply

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
    for taps in (4, 8)
    for h, w in ((1, 64), (2, 32), (1, 128), (2, 64), (4, 32))
    for warps, stages in ((4, 3), (8, 3))
    if h * w == 64 or warps == 8
]
"""The head's tiles and pipelines. Tiles of 256 cells (8 warps, 2 stages) took 470-720 us against 326 for a
batch-1 plan on an H200, and 2 taps per step never won (2026-12-04)."""
_INTERPRETER_HEAD_TILE = {"TAPS": 4, "TILE_H": 1, "TILE_W": 32}
_tuned_head_kernel = triton.autotune(_HEAD_CONFIGS, key=["H", "W"])(_head_kernel)


def kernel_rows(weight: torch.Tensor) -> torch.Tensor:
    """A ``Conv2d`` weight (O, C, K, K) laid out for the kernels: (K, K * C, O), each kernel row's K taps x C
    channels, tap-major."""
    return weight.detach().permute(2, 3, 1, 0).flatten(1, 2).contiguous()


def block_rows(weight: torch.Tensor) -> torch.Tensor:
    """A ``Conv2d`` weight (O, C, K, K) laid out for :func:`conv_blocks_relu`: the (K + 1) x (K + 1) kernel
    that computes a 2x2 block of output pixels from the block's input patch, its 4 O output channels the
    block's pixels (dy, dx) row-major, each O channels (zero where a pixel's window does not reach), as
    :func:`kernel_rows` lays it out: (K + 1, (K + 1) C, 4 O)."""
    out_channels, channels, k, _ = weight.shape
    blocks = weight.new_zeros(2, 2, out_channels, channels, k + 1, k + 1)
    for dy in (0, 1):
        for dx in (0, 1):
            blocks[dy, dx, :, :, dy : dy + k, dx : dx + k] = weight.detach()
    return kernel_rows(blocks.flatten(0, 2))


def _conv_output(x: torch.Tensor, weight: torch.Tensor, pool: bool, blocks: bool) -> torch.Tensor:
    """The uninitialised output of :func:`conv5x5_relu` (``blocks`` False) or :func:`conv_blocks_relu`;
    raises ValueError for inputs that do not fit."""
    count, height, width, in_channels = x.shape
    rows, columns = weight.shape[0], weight.shape[-1]
    if weight.shape != (rows, rows * in_channels, columns) or (blocks and columns % 4):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {in_channels}")
    k = rows - 1 if blocks else rows
    out_h, out_w = height - k + 1, width - k + 1
    if pool:
        out_h, out_w = -(-out_h // 2), -(-out_w // 2)
    return x.new_empty(count, out_h, out_w, columns // 4 if blocks else columns, dtype=weight.dtype)


def _convolve(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: bool, precision: str, blocks: bool
) -> torch.Tensor:
    """:func:`conv5x5_relu` (``blocks`` False) or :func:`conv_blocks_relu`."""
    y = _conv_output(x, weight, pool, blocks)
    count, stored_h, stored_w, out_channels = y.shape
    if count == 0:
        return y
    _, height, width, in_channels = x.shape
    k = weight.shape[0] - 1 if blocks else weight.shape[0]
    out_h, out_w = height - k + 1, width - k + 1
    x, weight = x.contiguous(), weight.contiguous()
    if blocks:
        kernels = (_tuned_block_conv_kernel, _block_conv_kernel, _INTERPRETER_BLOCK_TILE)
    else:
        kernels = (_tuned_conv_kernel, _conv_kernel, _INTERPRETER_TILE)

    def grid(meta: dict) -> tuple[int, int]:
        if blocks:
            return _tiles(triton.cdiv(out_h, 2), triton.cdiv(out_w, 2), meta), count
        return _tiles(out_h, out_w, meta), count

    _launch(
        kernels, x.device, grid, x, weight, bias, y, height, width, out_h, out_w, stored_h, stored_w,
        C_IN=in_channels, C_OUT=out_channels, K=k, POOL=pool,
        PRECISION=precision if x.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    return y


@torch.library.custom_op("dexrl::conv_blocks_relu", mutates_args=())
def conv_blocks_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: bool, precision: str = "tf32x3"
) -> torch.Tensor:
    """:func:`conv5x5_relu` computed by 2x2 blocks of output pixels: each block is one row of a matrix
    product of its (K + 1) x (K + 1) input patch with :func:`block_rows`, whose 4 O columns are the block's
    pixels. That is 1.44 times the multiply-adds of a 5x5 kernel, in products of width 64 over reductions
    of 32 where the taps' products are of width 16 over reductions of 16. The pool is a max over each
    block's pixels.

    Args:
        x: (N, H, W, C) channels-last input.
        weight: (K + 1, (K + 1) C, 4 O), a ``Conv2d`` weight as :func:`block_rows` lays it out, in the
            input's dtype.
        bias, pool, precision: as :func:`conv5x5_relu`.

    Returns:
        (N, H', W', O) in the input's dtype, H' = H - K + 1 (halved, rounding up, if ``pool``), W' likewise.
    """
    return _convolve(x, weight, bias, pool, precision, blocks=True)


@conv_blocks_relu.register_fake
def _(x, weight, bias, pool, precision="tf32x3"):  # shapes for torch.compile, to which the kernels are opaque
    return _conv_output(x, weight, pool, blocks=True)


@torch.library.custom_op("dexrl::conv5x5_relu", mutates_args=())
def conv5x5_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: bool, precision: str = "tf32x3"
) -> torch.Tensor:
    """ReLU(conv(x) + bias), max-pooled 2x2 (stride 2, rounding up) if ``pool``: a valid, stride-1 convolution.

    Args:
        x: (N, H, W, C) channels-last input.
        weight: (K, K C, O), a ``Conv2d`` weight as :func:`kernel_rows` lays it out, in the input's dtype.
        bias: (O,) float32.
        pool: max-pool the ReLU'd convolution 2x2.
        precision: of float32 products on the GPU (Triton's ``input_precision``): ``tf32x3`` (three TF32
            products, about float32's accuracy), ``ieee`` or ``tf32``. bfloat16 inputs ignore it.

    Returns:
        (N, H', W', O) in the input's dtype, H' = H - K + 1 (halved, rounding up, if ``pool``), W' likewise.
    """
    return _convolve(x, weight, bias, pool, precision, blocks=False)


@conv5x5_relu.register_fake
def _(x, weight, bias, pool, precision="tf32x3"):
    return _conv_output(x, weight, pool, blocks=False)


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


_FIRST_CONV_CONFIGS = [
    triton.Config({"STEP": step, "TILE_H": h, "TILE_W": w}, num_warps=warps)
    for step in (32, 64, 128)
    for h, w in ((4, 16), (8, 16), (8, 32), (16, 16))
    for warps in (4, 8)
]
_tuned_first_conv_kernel = triton.autotune(_FIRST_CONV_CONFIGS, key=["OUT_H", "OUT_W", "PRECISION"])(
    _first_conv_kernel
)
_INTERPRETER_FIRST_CONV_TILE = {"STEP": 32, "TILE_H": 4, "TILE_W": 16}
_FIRST_CONV_TAPS = 128
"""conv1_1's 81 taps padded to a power of two (the matrix product's reduction)."""


def _first_conv_output(depth: torch.Tensor, taps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    count, height, width = depth.shape
    out_h, out_w = height - kernel_size + 1, width - kernel_size + 1
    return depth.new_empty(count, out_h, out_w, taps.shape[1], dtype=torch.float32)


@torch.library.custom_op("dexrl::first_conv", mutates_args=())
def first_conv(
    depth: torch.Tensor,
    reference: torch.Tensor,
    taps: torch.Tensor,
    kernel_size: int,
    precision: str = "tf32x3",
) -> torch.Tensor:
    """A valid one-channel K x K convolution of depth - reference, without bias, channels-last: the
    depth-independent part of conv1_1 (:class:`SharedFirstConv`). Float32. Use :class:`SharedFirstConv` to lay
    out the weights.

    Args:
        depth: (G, H, W) float32 [m] (a view of whole images' windows is read in place). reference: (G,)
            float32 [m], subtracted from each image first.
        taps: (128, O) float32: the K x K weights row-major, then zero rows.
        kernel_size: K.
        precision: of the products on the GPU (Triton's ``input_precision``): ``tf32x3`` (three TF32
            products each, about float32's accuracy) or ``ieee``.

    Returns:
        (G, H - K + 1, W - K + 1, O) float32.
    """
    out = _first_conv_output(depth, taps, kernel_size)
    count, out_h, out_w, out_channels = out.shape
    if out.numel() == 0:
        return out

    def grid(meta: dict) -> tuple[int, int]:
        return _tiles(out_h, out_w, meta), count

    if depth.stride(2) != 1:
        depth = depth.contiguous()
    _launch(
        (_tuned_first_conv_kernel, _first_conv_kernel, _INTERPRETER_FIRST_CONV_TILE), depth.device, grid,
        depth, reference.contiguous(), taps, out, depth.stride(0), depth.stride(1), out_h, out_w,
        K=kernel_size, PADDED_TAPS=len(taps), C_OUT=out_channels, PRECISION=precision,
    )  # fmt: skip
    return out


@first_conv.register_fake
def _(depth, reference, taps, kernel_size, precision="tf32x3"):
    return _first_conv_output(depth, taps, kernel_size)


class SharedFirstConv:
    """:meth:`FCGQCNN.shared_first_conv <dexrl.gqcnn.model.FCGQCNN.shared_first_conv>` as one Triton kernel
    (:func:`first_conv`) that writes channels-last, as the image stream's kernels read it. Each output pixel's
    9x9 patch is one row of a matrix product (patches x 128 taps, 81 of them used, times 128 x 16 weights),
    taken 32, 64 or 128 taps per step (autotuned; a batch-1 plan's image: 29 us, against 38 us in one product,
    in the whole-plan profiles of two calls on an H200, 2026-12-04).
    cuDNN's float32 convolution took 55 us per 386x516 image on an H200 (2026-12-04), plus a copy into
    channels-last.

    Args:
        network: an FC-GQ-CNN that subtracts the grasp depth; conv1_1 at most 11x11 (its weights are read
            once).
    """

    def __init__(self, network: torch.nn.Module) -> None:
        weight = network.shared_first_conv_weight.detach().float()  # (O, 1, K, K)
        _require_cuda_or_interpreter(weight.device)
        out_channels, _, self.kernel_size, _ = weight.shape
        taps = self.kernel_size**2
        if taps > _FIRST_CONV_TAPS:
            raise ValueError(f"conv1_1 {tuple(weight.shape)} has more than {_FIRST_CONV_TAPS} taps")
        rows = weight.reshape(out_channels, taps).t()  # (K * K, O)
        self.taps = torch.nn.functional.pad(rows, (0, 0, 0, _FIRST_CONV_TAPS - taps)).contiguous()

    def __call__(self, depth: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(G, H - K + 1, W - K + 1, 16) float32 of depth images (G, H, W) [m] and reference depths (G,) [m]."""
        return first_conv(depth, reference, self.taps, self.kernel_size)


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
        fc3_weight: (K, K C, F), fc3's weight as :func:`kernel_rows` lays it out.
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
    if fc3_weight.shape != (kernel_size, kernel_size * channels, features):
        raise ValueError(f"fc3 weight {tuple(fc3_weight.shape)} does not fit {channels} input channels")

    def grid(meta: dict) -> tuple[int, int]:
        return _tiles(out_h, out_w, meta), count

    _launch(
        (_tuned_head_kernel, _head_kernel, _INTERPRETER_HEAD_TILE), x.device, grid,
        x.contiguous(), fc3_weight, fc3_bias, fc4_weight, fc4_bias, fc5_weight, fc5_bias, q,
        height, width, out_h, out_w,
        C=channels, K=kernel_size, F=features, A=angles,
    )  # fmt: skip
    return q


@quality_head.register_fake
def _(x, fc3_weight, fc3_bias, fc4_weight, fc4_bias, fc5_weight, fc5_bias):
    return _head_output(x, fc3_weight, fc5_weight)


class QualityHead:
    """FC-GQ-CNN's layers after the image stream, fc3 -> fc4 -> fc5 -> softmax, as one Triton kernel
    (:func:`quality_head`): fc3, the network's largest layer (a 17x17 convolution, 16 -> 128 channels),
    accumulates in float32 over steps of several taps of one kernel row at a time (a reduction of 32-128
    values that lie next to each other in memory, without copying the rows out as ``fc3="rows"`` does), the
    row's remaining taps one at a time (17 = 4 x 4 + 1: no padding taps); fc4, fc5 and
    the softmax then run on the tile in registers, so only q is written.

    Args:
        network: the trunk's network (its weights are read once, in their dtype); fc4 and fc5 1x1
            convolutions, power-of-two channel and angle counts of at least 16.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        fc3, fc4, fc5 = network.fc3, network.fc4, network.fc5
        _require_cuda_or_interpreter(fc3.weight.device)
        features, channels, kernel_size, _ = fc3.weight.shape
        angles = fc5.weight.shape[0] // 2
        if any(n < 16 or n & (n - 1) for n in (channels, features, angles)):
            raise ValueError(
                f"the Triton head needs power-of-two widths >= 16 (fc3 {tuple(fc3.weight.shape)})"
            )
        self.weights = (
            kernel_rows(fc3.weight),
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
    pool where it has one, through :func:`conv_blocks_relu` or :func:`conv5x5_relu`.

    Args:
        stream: an image stream: the trunk's in bfloat16, or the float32 network's (the fast path's
            rescoring; its products then run as three TF32 products each, ``tf32x3``). Its weights are read
            once, in their dtype (the layers').
        blocks: compute the convolutions by 2x2 blocks of output pixels (:func:`conv_blocks_relu`); None: in
            bfloat16 only. On an H200 (2026-12-04) blocks ran a batch-1 plan's three bfloat16 layers in 263 us
            against 461 us one tap per product, and the 16 rescored crops' float32 layers in 225 us against
            205 us (``scripts/probe_block_convs.py``): with three TF32 products each, the 1.44 times the
            multiply-adds cost more than the wider products gain.
    """

    def __init__(self, stream: torch.nn.Module, blocks: bool | None = None) -> None:
        _require_cuda_or_interpreter(stream.conv1_2.weight.device)
        self.dtype = stream.conv1_2.weight.dtype
        if blocks is None:
            blocks = self.dtype == torch.bfloat16
        self.convolution = conv_blocks_relu if blocks else conv5x5_relu
        layout = block_rows if blocks else kernel_rows
        self.layers = [
            (layout(conv.weight), conv.bias.detach().float())
            for conv in (stream.conv1_2, stream.conv2_1, stream.conv2_2)
        ]

    def __call__(self, shared: torch.Tensor, shifts: torch.Tensor, pair_image: torch.Tensor) -> torch.Tensor:
        """Features (N, H2, W2, 16) of N pairs from the images' shared first layer (G, H, W, 16) float32, the
        pairs' shifts (N, 16) float32 (:meth:`FCGQCNN.first_conv_shifts`) and images (N,) in ``shared``."""
        features = self.first_layer(shared, shifts, pair_image)
        for (weight, bias), pool in zip(self.layers, (True, False, True), strict=True):
            features = self.convolution(features, weight, bias, pool)
        return features

    def first_layer(self, shared: torch.Tensor, shifts: torch.Tensor, pair_image: torch.Tensor) -> torch.Tensor:
        """ReLU(conv1_1) (N, H, W, 16) of each pair, in the layers' dtype."""
        return shifted_relu(shared, shifts, pair_image, self.dtype)
