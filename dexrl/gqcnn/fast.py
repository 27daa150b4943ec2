"""The fast FC-GQ-CNN inference path behind :class:`dexrl.gqcnn.FCGQCNNPlanner`
(``PlannerOptions(path="fast")``, the default on CUDA). Each step is exact, or checked against the plain
float32 network:

1. conv1_1 once per image, the depth bins derived from it: the layer is linear, so at grasp depth z it is
   the image's convolution plus a per-channel shift (:meth:`FCGQCNN.shared_first_conv`).
2. Only the window that the admissible cells' bounding box needs (the box plus the 48-pixel margin of the
   96-pixel receptive field, aligned to the stride 4, so its cells equal the full image's).
3. Depth bins that cannot hold a grasp are not evaluated (:func:`live_depth_bins`; only when the jaw
   clearance filter is on, which proves them empty).
4. The trunk after conv1_1 in bfloat16 (float32 accumulation in the convolutions; float32 on CPUs that would
   emulate bfloat16, :func:`cpu_has_native_bf16`), then the N best (cell, depth bin) pairs of each image
   rescored in float32 on their 96x96 crops (:meth:`rescore`; on CUDA through the Triton kernels, float32
   products as three TF32 products each): the top grasp is the float32 network's whenever its pair is among
   the bfloat16 top N.
5. fc3 (a 17x17 convolution, most of the arithmetic) optionally through float32 FFTs (:class:`SpectralConv`;
   ``fc3="fft"``, the default on CPUs, where it is 1.6x faster overall), or as a 17x1 convolution over 272
   channels after copying each pixel's row neighbours into its channels (:class:`RowUnfoldedConv`;
   ``fc3="rows"``, the default under ``torch.compile`` on CUDA: the same products, in reductions that suit the
   tensor cores better), or, with fc4, fc5 and the softmax, as one Triton kernel that writes only q
   (:class:`dexrl.gqcnn.triton_convs.QualityHead`; ``fc3="triton"``, the default on CUDA without
   ``torch.compile``).
6. On CUDA without ``torch.compile``, the image stream as Triton kernels: the shared conv1_1
   (:class:`dexrl.gqcnn.triton_convs.SharedFirstConv`), each pair's shifted first layer in one pass, then
   conv1_2, conv2_1 and conv2_2 with their ReLUs and pools fused, by 2x2 blocks of output pixels in bfloat16
   (:class:`dexrl.gqcnn.triton_convs.StreamConvs`; ``stream_convs="triton"``); the rescoring's pair top-k
   as two Triton kernels (:func:`dexrl.gqcnn.triton_convs.top_k`).
7. Images in groups of fixed size, (image, depth bin) pairs padded to powers of two, each shape run through
   one captured CUDA graph (optionally of a ``torch.compile``-d trunk).
8. Small batches as one pass of device work, one CUDA graph per shape (``PlannerOptions.whole_plan_images``,
   :meth:`FCGQCNNPlanner._plan_on_device <dexrl.gqcnn.policy.FCGQCNNPlanner._plan_on_device>`): the trunk on
   the window that held the last plan's mask box (:func:`plan_window`), the small steps around it fused
   (:func:`fused_on_cuda`), the input checks on a second stream (:class:`SideStream`), and the top k taken
   among the rescored pairs alone (exact: they hold the best admissible grasps).

No step loops over images. The network step synchronises with the host once per batch (the window and the
live pairs per group); the planner's input checks, inpainting and timings add a few more per batch, none
per image.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from .grid import CROP_SIZE, STRIDE, output_size
from .model import FCGQCNN
from .preprocess import TRITON_AVAILABLE

if TYPE_CHECKING:
    from .policy import PlannerOptions

__all__ = [
    "PLAN_WINDOW_QUANTUM",
    "CellWindow",
    "FastQuality",
    "Precision",
    "RescoredPairs",
    "RowUnfoldedConv",
    "SideStream",
    "SpectralConv",
    "TrunkShapes",
    "cell_crops",
    "cpu_has_native_bf16",
    "cuda_fp32_precision",
    "fused_on_cuda",
    "holds",
    "live_depth_bins",
    "plan_window",
    "window_of_cells",
]

_RESCORE_CHUNK = 4096
"""Crops per float32 rescoring pass (bounds its memory to about 2 GB)."""

Precision = Literal["fp32", "tf32", "bf16"]


@contextmanager
def cuda_fp32_precision(device: torch.device, precision: Precision) -> Iterator[None]:
    """Set cuDNN / cuBLAS float32 math to TF32 or IEEE meanwhile (process-wide flags, restored after)."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX, as Linux reports them). Elsewhere
    PyTorch converts every bfloat16 operand in software: on a 2-core AVX2-only EPYC the fast path took 5.2 s
    per image in bfloat16 against 1.07 s in float32 (2026-12-01), while an AVX-512 BF16 EPYC ran bfloat16
    fastest (docs/planner_speed.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: assume no native bfloat16
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


WINDOW_QUANTUM = 8
"""Cells: the trunk's window grows in steps of this many cells per side (see :class:`TrunkShapes`)."""


class TrunkShapes:
    """Sizes of the trunk's inputs that only ever grow, so that ``torch.compile`` (which specialises on
    shapes) compiles a handful of shapes per planner rather than one per batch.

    The window is the admissible cells' box grown to whole :data:`WINDOW_QUANTUM` cells and to at least the
    largest window used before (per map size); the live (image, depth bin) pairs of a group are padded to a
    power of two and to at least the largest count used before (per group size). The padding is computed and
    thrown away. Without it, rendered heaps (whose boxes differ by a few cells and whose live pairs differ per
    group) made one shape per batch: on 1024 heaps on an H200, ``torch.compile`` hit its recompile limit and
    ran the rest eagerly at 397 images/s (2026-12-02).
    """

    def __init__(self) -> None:
        self._window: dict[tuple[int, int], list[int]] = {}
        self._pairs: dict[int, int] = {}

    def window(self, box: list[int], map_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Rows and columns [first, end) of the window, within the map, that holds ``box`` (first row, end row,
        first column, end column of the admissible cells)."""
        lengths = self._window.setdefault(map_size, [0, 0])
        spans = []
        for axis, (first, end, size) in enumerate(((box[0], box[1], map_size[0]), (box[2], box[3], map_size[1]))):
            needed = -(-(end - first) // WINDOW_QUANTUM) * WINDOW_QUANTUM
            lengths[axis] = length = min(size, max(needed, lengths[axis]))
            start = max(0, min(first - (length - (end - first)) // 2, size - length))
            spans.append((start, start + length))
        return spans[0], spans[1]

    def pairs(self, live: int, available: int, bins: int) -> int:
        """How many of a group's ``available`` pairs to run when ``live`` of them are live."""
        size = max(1 << (live - 1).bit_length(), bins, self._pairs.get(available, 0))
        self._pairs[available] = size = min(size, available)
        return size


CellWindow = tuple[tuple[int, int], tuple[int, int]]
"""Rows and columns [first, end) of a window of output cells."""

PLAN_WINDOW_QUANTUM = 4
"""Cells: a whole plan's window (:func:`plan_window`) grows in steps of this many cells per side."""


def plan_window(box: list[int], map_size: tuple[int, int], previous: CellWindow | None = None) -> CellWindow:
    """The window of output cells on which a whole plan runs its trunk (only the mask's box, as the
    step-by-step path): the smallest that holds the admissible cells' ``box`` (first row, end row, first
    column, end column) and the ``previous`` window, its lengths whole :data:`PLAN_WINDOW_QUANTUM` cells (or
    the map's). It only grows, so the plans of moving masks capture a few graphs, not one per call."""
    spans = []
    for axis, size in enumerate(map_size):
        first, end = box[2 * axis], box[2 * axis + 1]
        if previous is not None:
            first, end = min(first, previous[axis][0]), max(end, previous[axis][1])
        length = min(size, -(-(end - first) // PLAN_WINDOW_QUANTUM) * PLAN_WINDOW_QUANTUM)
        start = min(first, size - length)
        spans.append((start, start + length))
    return spans[0], spans[1]


def holds(window: CellWindow, box: list[int]) -> bool:
    """Whether ``window`` holds the cells of ``box`` (first row, end row, first column, end column)."""
    (first_row, end_row), (first_col, end_col) = window
    return first_row <= box[0] and box[1] <= end_row and first_col <= box[2] and box[3] <= end_col


def cell_crops(depth: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """The 96x96 crops (B, N, 96, 96) [m] that output cells (B, N) (row and column indices) see in depth images
    (B, H, W): :func:`~dexrl.gqcnn.preprocess.extract_crops` at the cells' centres, for cells whose crop lies
    inside the image (every admissible cell's does; other cells get their nearest such crop). One gather from
    a view of every cell's window: on a GPU, one kernel instead of about 16 small dependent ones.
    """
    windows = depth.unfold(1, CROP_SIZE, STRIDE).unfold(2, CROP_SIZE, STRIDE)  # (B, h', w', 96, 96), a view
    image = torch.arange(len(depth), device=depth.device)[:, None]
    return windows[image, row.clamp(max=windows.shape[1] - 1), col.clamp(max=windows.shape[2] - 1)]


def window_of_cells(cells: torch.Tensor) -> torch.Tensor:
    """Bounding box of the admissible cells (B, h, w) over the whole batch as a (4,) long tensor: first row,
    end row, first column, end column (end exclusive). Stays on the device."""
    rows, cols = cells.any(dim=2).any(dim=0), cells.any(dim=1).any(dim=0)

    def first_and_end(used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = used.int().argmax()
        end = used.numel() - used.flip(0).int().argmax()
        return first, end

    return torch.stack((*first_and_end(rows), *first_and_end(cols)))


def live_depth_bins(
    depth: torch.Tensor, mask: torch.Tensor, grasp_depth: torch.Tensor, options: PlannerOptions
) -> torch.Tensor:
    """Depth bins (B, D) bool that may hold a grasp that passes the planner's jaw filters.

    With ``jaw_clearance`` c set, a grasp at depth z passes only if the surface at both jaw tips lies at least
    c beyond z; the tips lie in the image (and in the mask with ``jaws_inside_mask``). A bin whose z + c is
    deeper than every such pixel holds no passing grasp. Without the clearance filter every bin is live.

    Args:
        depth: (B, H, W) filled depth [m]. mask: (B, H, W) bool. grasp_depth: (B, D) [m].
    """
    if options.jaw_clearance is None:
        return torch.ones_like(grasp_depth, dtype=torch.bool)
    region = mask if options.jaws_inside_mask else torch.ones_like(mask)
    deepest = torch.where(region, depth, -torch.inf).flatten(1).amax(dim=1)  # (B,)
    return grasp_depth + options.jaw_clearance <= deepest[:, None]


class GraphReplayer:
    """Runs ``function`` through one captured CUDA graph per set of input shapes (inputs are copied into the
    graph's static tensors; the returned tensor, or tuple of tensors, is the graph's, valid until the next
    call).

    All graphs share one memory pool, so memory stays that of the largest graph however many batch shapes
    come (e.g. from a server's micro-batches). That is safe because every graph runs on the same stream and
    its output is used before the next replay: a later graph may reuse an earlier one's intermediates, never
    a live output."""

    def __init__(self, function: Callable[..., Any], device: torch.device) -> None:
        self.function, self.device = function, device
        self._graphs: dict[tuple, tuple[list[torch.Tensor], Any, torch.cuda.CUDAGraph]] = {}
        self._pool = None
        self.failed = False

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.failed:
            return self.function(*inputs)
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(inputs)
            except (
                RuntimeError
            ) as error:  # e.g. an operation that cannot be captured: stay correct, run eagerly
                warnings.warn(f"CUDA graph capture failed, running without graphs: {error}", stacklevel=2)
                self.failed = True
                return self.function(*inputs)
        static_inputs, static_output, graph = self._graphs[key]
        for static, value in zip(static_inputs, inputs, strict=True):
            static.copy_(value)
        graph.replay()
        return static_output

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [t.clone() for t in inputs]
        self.function(*static_inputs)  # compiles and autotunes on the current stream
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.function(*static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_output = self.function(*static_inputs)
        self._pool = graph.pool()
        return static_inputs, static_output, graph


FUSE_SMALL_STEPS = True
"""Whether :func:`fused_on_cuda` compiles (read when a planner is made)."""


def fused_on_cuda(function: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``function`` compiled by Inductor on CUDA with Triton (static shapes, no graph breaks allowed), as is
    elsewhere: for chains of small steps on small tensors, which compile into a few fused kernels (inside a
    CUDA graph each kernel costs a few microseconds, however little it does). Compiled on its first call, per
    input shape. Its multiply-adds may round differently from PyTorch's (by an ulp): values that must equal
    the reference path's to the bit (grasp depths, angles) are computed outside."""
    if device.type != "cuda" or not TRITON_AVAILABLE or not FUSE_SMALL_STEPS:
        return function
    return torch.compile(function, dynamic=False, fullgraph=True)


class SideStream:
    """Device work queued beside the current CUDA stream, also inside a CUDA graph (as a parallel branch): the
    work under ``with side.fork():`` starts after what the current stream has queued so far, and
    :meth:`join` makes the current stream wait for it. On other devices both do nothing."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @contextmanager
    def fork(self) -> Iterator[None]:
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        with torch.cuda.stream(self.stream):
            yield

    def join(self, *outputs: torch.Tensor) -> None:
        """Wait for the side's work on the current stream, which will use its ``outputs``."""
        if self.stream is None:
            return
        current = torch.cuda.current_stream(self.stream.device)
        current.wait_stream(self.stream)
        for tensor in outputs:  # their memory is not reused before the current stream is done with them
            tensor.record_stream(current)


class SpectralConv:
    """A valid (unpadded, stride 1) 2D cross-correlation through real FFTs, in float32: for fc3's 17x17 kernel
    over 16 channels, a direct convolution costs 16 * 289 = 4,624 multiply-adds per output channel and cell,
    the spectral product 16 complex ones, plus the transforms.

    The input of size H x W is transformed at the next sizes >= H, W whose only prime factors are 2, 3 and 5
    (FFTs are fastest there); the circular correlation equals the valid one on the first H - K + 1 rows and
    W - K + 1 columns after a shift of K - 1 (no wrap-around reaches them). The spectral product runs as one
    real batched matrix product per frequency ([re, im] against [[re, im], [-im, re]]): complex batched
    products loop over the batch on CPUs. The kernel's spectrum is cached per size.

    Args:
        conv: a ``Conv2d`` without padding, dilation or groups, stride 1 (its weights are read once).
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        if conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("SpectralConv computes plain valid convolutions only")
        self.weight = conv.weight.detach().float()  # (O, C, K, K)
        self.bias = None if conv.bias is None else conv.bias.detach().float()
        self._spectra: dict[tuple[int, int], torch.Tensor] = {}

    def _spectrum(self, size: tuple[int, int]) -> torch.Tensor:
        """(F, 2C, 2O) real form of the flipped kernel's spectrum at an FFT of ``size``, F frequencies."""
        if size not in self._spectra:
            spectrum = torch.fft.rfft2(self.weight.flip(-2, -1), s=size).flatten(2).permute(2, 1, 0)  # (F, C, O)
            re, im = spectrum.real, spectrum.imag
            self._spectra[size] = torch.cat((torch.cat((re, im), 2), torch.cat((-im, re), 2)), 1).contiguous()
        return self._spectra[size]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, O, H - K + 1, W - K + 1) float32."""
        height, width = x.shape[-2:]
        k, out_channels = self.weight.shape[-1], self.weight.shape[0]
        size = (_smooth_size(height), _smooth_size(width))
        spectrum = torch.fft.rfft2(x.float(), s=size)  # (N, C, S, S2)
        frequencies = spectrum.shape[-2:]
        packed = torch.cat((spectrum.real, spectrum.imag), 1).flatten(2).permute(2, 0, 1).contiguous()  # (F, N, 2C)
        product = torch.bmm(packed, self._spectrum(size))  # (F, N, 2O): real and imaginary parts
        product = torch.complex(product[..., :out_channels], product[..., out_channels:])
        out = torch.fft.irfft2(product.permute(1, 2, 0).unflatten(2, frequencies), s=size)
        out = out[..., k - 1 : height, k - 1 : width]
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class RowUnfoldedConv:
    """A valid (unpadded, stride 1) K_h x K_w convolution over C channels as a K_h x 1 convolution over C K_w
    channels: :meth:`unfold` copies each pixel's K_w right-hand neighbours into its channels (channel-major),
    :meth:`convolve` applies the same weights rearranged. The products and sums are the same; for fc3 (C = 16,
    17x17) the reduction per tap grows from 16 to 272 channels, which suits matrix units better, at the cost of
    a copy K_w times the input's size. Runs in the convolution's dtype.

    Args:
        conv: a ``Conv2d`` without padding, dilation or groups, stride 1 (its weights are read once).
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        if conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("RowUnfoldedConv computes plain valid convolutions only")
        out_channels, in_channels, k_h, self.k_w = conv.weight.shape
        weight = conv.weight.detach().permute(0, 1, 3, 2).reshape(out_channels, in_channels * self.k_w, k_h, 1)
        self.weight = weight.contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.detach()

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C K_w, H, W - K_w + 1), channels-last memory."""
        rows = x.permute(0, 2, 3, 1).unfold(2, self.k_w, 1)  # (N, H, W - K_w + 1, C, K_w), a view
        return rows.reshape(*rows.shape[:3], -1).permute(0, 3, 1, 2)

    def convolve(self, unfolded: torch.Tensor) -> torch.Tensor:
        """(N, C K_w, H, W') -> (N, O, H - K_h + 1, W')."""
        return F.conv2d(unfolded, self.weight, self.bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, O, H - K_h + 1, W - K_w + 1)."""
        return self.convolve(self.unfold(x))


def _smooth_size(n: int) -> int:
    """The smallest size >= n whose prime factors are 2, 3 and 5 only."""
    while True:
        rest = n
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return n
        n += 1


class FastQuality:
    """Quality maps and float32 rescoring for the fast path (see the module docstring).

    Args:
        model: an FC-GQ-CNN that subtracts the grasp depth (no pose stream), in float32.
        device: where it runs.
        options: the planner's resolved options; used here: ``precision`` (the trunk's: ``bf16``, ``tf32`` or
            ``fp32``), ``group_images``, ``cuda_graphs``, ``compile_mode``, ``channels_last``, ``fc3``,
            ``stream_convs``.
    """

    def __init__(self, model: FCGQCNN, device: torch.device, options: PlannerOptions) -> None:
        if model.pose_stream is not None:
            raise ValueError("the fast path needs a network that subtracts the grasp depth (no pose stream)")
        self.model, self.device, self.options = model, device, options
        self.trunk_dtype = torch.bfloat16 if options.precision == "bf16" else torch.float32
        memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self._trunk_model = copy.deepcopy(model).to(self.trunk_dtype, memory_format=memory_format).eval()
        self._fc3: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: the trunk model's own fc3
        if options.fc3 == "fft":
            self._fc3 = SpectralConv(model.fc3)
        elif options.fc3 == "rows":
            self._fc3 = RowUnfoldedConv(self._trunk_model.fc3)
        self._stream_convs: Callable[..., torch.Tensor] | None = None  # None: PyTorch's image stream
        self._exact_stream: Callable[..., torch.Tensor] | None = None  # the same for the float32 rescoring
        self._shared_first_conv: Callable[..., torch.Tensor] | None = None  # None: PyTorch's
        self._pair_top_k: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] = functools.partial(
            torch.topk, dim=1
        )
        if options.stream_convs == "triton":
            # Triton only if asked for
            from .triton_convs import SharedFirstConv, StreamConvs, top_k  # noqa: PLC0415

            self._pair_top_k = top_k
            self._shared_first_conv = SharedFirstConv(model)
            self._stream_convs = StreamConvs(self._trunk_model.image_stream)
            self._exact_stream = StreamConvs(model.image_stream)
        self._quality_head: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: PyTorch's head
        if options.fc3 == "triton":
            from .triton_convs import QualityHead  # noqa: PLC0415

            self._quality_head = QualityHead(self._trunk_model)
        trunk: Callable[..., torch.Tensor] = self._trunk
        if options.compile_mode is not None:
            trunk = torch.compile(trunk, mode=options.compile_mode, dynamic=False)
        self._run = GraphReplayer(trunk, device) if options.cuda_graphs and device.type == "cuda" else trunk
        self._shapes = TrunkShapes()
        self._fused_shifts = fused_on_cuda(self._shifts, device)
        self._fused_on_grid = fused_on_cuda(self._on_grid, device)
        self._fused_pair_cells = fused_on_cuda(self._pair_cells, device)
        self._pair_image_cache: dict[tuple[int, int], torch.Tensor] = {}
        # each rescored crop is taken at its own grasp depth: its conv1_1 shift is the same for every crop
        with torch.no_grad():
            zero = torch.zeros(1, 1, device=device)
            self._crop_shift = model.first_conv_shifts(zero, zero[:, 0])[0]  # (1, 16)

    def _trunk(
        self,
        window: torch.Tensor,
        reference: torch.Tensor,
        shifts: torch.Tensor,
        pair_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q (P, A, h, w) float32 of P (image, depth bin) pairs.

        Args:
            window: (G, 1, H, W) depth windows [m]. reference: (G,) reference depths [m].
            shifts: (P, 16) each pair's conv1_1 shift (:meth:`FCGQCNN.first_conv_shifts`).
            pair_image: (P,) each pair's image in the group; None: all G x D pairs, image-major.
        """
        shared = self._shared_first_layer(window, reference)
        if self._stream_convs is None:
            first = self._first_layer(shared, shifts, pair_image)
            features = self._trunk_model.image_stream.after_first_conv(first)
        else:  # channels-last tensors in and out, as NHWC
            if pair_image is None:
                pair_image = self._pair_images(len(shared), len(shifts) // len(shared))
            features = self._stream_convs(shared, shifts, pair_image).permute(0, 3, 1, 2)
        if self._quality_head is not None:
            return self._quality_head(features.permute(0, 2, 3, 1))
        logits = self._head(features).float()
        return torch.softmax(logits.unflatten(1, (-1, 2)), dim=2)[:, :, 1]

    def _pair_images(self, images: int, per_image: int) -> torch.Tensor:
        """Each pair's image (images * per_image,) long, pairs image-major. Kept per size, so that a CUDA graph
        reads it rather than computing it (not kept while capturing: it would live in the graph's memory)."""
        key = (images, per_image)
        pair_image = self._pair_image_cache.get(key)
        if pair_image is None:
            pair_image = torch.arange(images, device=self.device).repeat_interleave(per_image)
            if self.device.type != "cuda" or not torch.cuda.is_current_stream_capturing():
                self._pair_image_cache[key] = pair_image
        return pair_image

    def _shared_first_layer(self, depth: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """conv1_1's depth-independent part (:meth:`FCGQCNN.shared_first_conv`) of depth images (G, 1, H, W) [m]
        at reference depths (G,) [m]: (G, H - 8, W - 8, 16) float32, channels-last (contiguous with the Triton
        stream, whose kernel computes it; a view of PyTorch's convolution otherwise)."""
        if self._shared_first_conv is None:
            return self.model.shared_first_conv(depth, reference).permute(0, 2, 3, 1)
        return self._shared_first_conv(depth[:, 0], reference)

    def _first_layer(
        self, shared: torch.Tensor, shifts: torch.Tensor, pair_image: torch.Tensor | None
    ) -> torch.Tensor:
        """ReLU(conv1_1) (P, 16, H', W') of each pair in the trunk's dtype, from the images' shared first layer
        (G, H', W', 16) and the pairs' shifts (P, 16) (see :meth:`_trunk`)."""
        if pair_image is None:  # broadcast instead of gathering: one pass less over the largest tensor
            shared, shifts = shared.unsqueeze(1), shifts.unflatten(0, (len(shared), -1))[:, :, None, None]
        else:
            shared, shifts = shared[pair_image], shifts[:, None, None]
        # the shift is added in float32 (the two terms nearly cancel) and rounded once, into the trunk's dtype
        first = torch.empty(
            torch.broadcast_shapes(shared.shape, shifts.shape), dtype=self.trunk_dtype, device=shared.device
        )
        torch.add(shared, shifts, out=first).relu_()
        first = first.flatten(0, -4).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        return first if self.options.channels_last else first.contiguous()

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (P, 2A, h, w) from the image stream's features (P, 16, ., .), fc3 as ``options.fc3`` says
        (except ``triton``, whose kernel runs the whole head)."""
        net = self._trunk_model
        fc3 = net.fc3(features) if self._fc3 is None else self._fc3(features).to(self.trunk_dtype)
        if self.options.channels_last:
            fc3 = fc3.contiguous(memory_format=torch.channels_last)
        return net.fc5(F.relu(net.fc4(fc3.relu_()), inplace=True))

    @torch.inference_mode()
    def quality(
        self, depth: torch.Tensor, cells: torch.Tensor, grasp_depth: torch.Tensor, live: torch.Tensor
    ) -> torch.Tensor:
        """q (B, D, A, h, w) on the admissible cells' window of live depth bins, 0 elsewhere.

        Args:
            depth: (B, H, W) filled depth [m]. cells: (B, h, w) admissible cells. grasp_depth: (B, D) [m].
            live: (B, D) bool, depth bins to evaluate.
        """
        batch, bins = grasp_depth.shape
        group = max(1, min(self.options.group_images, batch))
        starts = range(0, batch, group)
        padded_live = F.pad(live.flatten(), (0, len(starts) * group * bins - batch * bins))
        counts = padded_live.view(len(starts), group * bins).sum(dim=1)
        # the one host synchronisation of the batch: the window's size and the work per group
        first_row, end_row, first_col, end_col, *pair_counts = torch.cat(
            (window_of_cells(cells), counts)
        ).tolist()
        rows, cols = cells.shape[1:]
        run_rows, run_cols = self._shapes.window([first_row, end_row, first_col, end_col], (rows, cols))
        window = depth[
            :,
            None,
            run_rows[0] * STRIDE : (run_rows[1] - 1) * STRIDE + CROP_SIZE,
            run_cols[0] * STRIDE : (run_cols[1] - 1) * STRIDE + CROP_SIZE,
        ]
        inside = (
            ...,
            slice(first_row - run_rows[0], end_row - run_rows[0]),
            slice(first_col - run_cols[0], end_col - run_cols[0]),
        )
        reference = grasp_depth.mean(dim=1)
        shifts = self.model.first_conv_shifts(grasp_depth, reference).flatten(0, 1)  # (B * D, 16)
        q = depth.new_zeros(batch, bins, self.model.angle_bins, rows, cols)
        q_window = q[..., first_row:end_row, first_col:end_col]
        for start, count in zip(starts, pair_counts, strict=True):
            if count == 0:
                continue
            stop = min(start + group, batch)
            window_group, reference_group = window[start:stop], reference[start:stop]
            shifts_group = shifts[start * bins : stop * bins]
            if count == len(shifts_group):  # every pair is live
                q_window[start:stop] = self._run(window_group, reference_group, shifts_group)[inside].unflatten(
                    0, (-1, bins)
                )
                continue
            # live pairs first (a stable sort keeps their order), padded with dead pairs (TrunkShapes.pairs)
            order = torch.argsort((~live[start:stop].flatten()).to(torch.uint8), stable=True)
            pairs = order[: self._shapes.pairs(count, len(order), bins)]
            pair_image = torch.div(pairs, bins, rounding_mode="floor")
            q_pairs = self._run(window_group, reference_group, shifts_group[pairs], pair_image)[inside]
            q_window[start + pair_image[:count], pairs[:count] % bins] = q_pairs[:count]
        return q

    @torch.inference_mode()
    def quality_whole_grid(
        self,
        depth: torch.Tensor,
        grasp_depth: torch.Tensor,
        box: torch.Tensor,
        window: CellWindow | None = None,
    ) -> torch.Tensor:
        """q (B, D, A, h, w) as :meth:`quality` gives it with every depth bin live, without a host
        synchronisation (for a CUDA graph of a whole plan): every depth bin of every image on a window of
        cells that the host chose before (the whole grid if None), through the trunk itself (not its own
        graphs); 0 outside the admissible cells' box, as there.

        Args:
            depth: (B, H, W) filled depth [m]. grasp_depth: (B, D) [m].
            box: (4,) long, the admissible cells' box on the device (:func:`window_of_cells`). Cells of the
                box outside the window get q = 0: the caller checks that the window holds the box.
            window: rows and columns [first, end) of the cells to evaluate (:func:`plan_window`).
        """
        batch, bins = grasp_depth.shape
        rows, cols = output_size(*depth.shape[1:])
        (first_row, end_row), (first_col, end_col) = window or ((0, rows), (0, cols))
        images = depth[
            :,
            None,
            first_row * STRIDE : (end_row - 1) * STRIDE + CROP_SIZE,
            first_col * STRIDE : (end_col - 1) * STRIDE + CROP_SIZE,
        ]
        group = max(1, min(self.options.group_images, batch))
        reference, shifts = self._fused_shifts(grasp_depth)
        q = [
            self._trunk(images[start:stop], reference[start:stop], shifts[start * bins : stop * bins])
            for start, stop in ((start, start + group) for start in range(0, batch, group))
        ]
        q = (q[0] if len(q) == 1 else torch.cat(q)).unflatten(0, (batch, bins))
        window = ((first_row, end_row), (first_col, end_col))
        return self._fused_on_grid(q, box, window=window, size=(rows, cols))

    def _shifts(self, grasp_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference depths (B,) [m] of depth bins (B, D) [m] and each (image, depth bin) pair's conv1_1 shift
        (B * D, 16) (:meth:`FCGQCNN.first_conv_shifts`); fused on CUDA (``_fused_shifts``)."""
        reference = grasp_depth.mean(dim=1)
        return reference, self.model.first_conv_shifts(grasp_depth, reference).flatten(0, 1)

    @staticmethod
    def _on_grid(
        q: torch.Tensor, box: torch.Tensor, *, window: CellWindow, size: tuple[int, int]
    ) -> torch.Tensor:
        """q (B, D, A, h', w') of a window of cells on the whole grid of ``size`` (h, w), 0 outside the
        admissible cells' box (4,) (first row, end row, first column, end column); fused on CUDA
        (``_fused_on_grid``)."""
        (first_row, end_row), (first_col, end_col) = window
        rows = torch.arange(first_row, end_row, device=q.device)
        cols = torch.arange(first_col, end_col, device=q.device)
        in_box = ((rows >= box[0]) & (rows < box[1]))[:, None] & ((cols >= box[2]) & (cols < box[3]))
        padding = (first_col, size[1] - end_col, first_row, size[0] - end_row)
        return F.pad(q * in_box, padding)

    def _exact_q(self, crops: torch.Tensor, crop_depth: torch.Tensor) -> torch.Tensor:
        """q (N, A) of the float32 network at the centres of crops (N, 1, 96, 96) [m], at grasp depths (N, 1)
        [m]. With the Triton stream, conv1_1 to conv2_2 run through its kernels with float32 products as three
        TF32 products each (cuDNN's float32 convolutions took 0.2 ms for 16 crops on an H200, 2026-12-04)."""
        if self._exact_stream is None:
            logits = self.model(crops, crop_depth, share_first_conv=False)[:, 0, :, :, 0, 0]  # (N, A, 2)
        else:
            shared = self._shared_first_layer(crops, crop_depth[:, 0])
            shifts = self._crop_shift.expand(len(crops), -1)  # (N, 16)
            features = self._exact_stream(shared, shifts, self._pair_images(len(crops), 1))
            logits = self.model.quality_logits(features.permute(0, 3, 1, 2))[:, :, 0, 0].unflatten(1, (-1, 2))
        return torch.softmax(logits, dim=2)[..., 1]

    @torch.inference_mode()
    def rescore(
        self, pair_scores: torch.Tensor, depth: torch.Tensor, grasp_depth: torch.Tensor, count: int
    ) -> RescoredPairs:
        """Evaluate the ``count`` best (depth bin, cell) pairs per image again, all angle bins, in float32 (on
        their 96x96 crops).

        Args:
            pair_scores: (B, D, h, w) each pair's best q over the angle bins where a grasp is admissible, below 0
                where none is. depth: (B, H, W) filled depth [m]. grasp_depth: (B, D) [m].
            count: pairs rescored per image (at most D * h * w are).
        """
        batch, _, rows, cols = pair_scores.shape
        flat_scores = pair_scores.flatten(1)
        scores, flat = self._pair_top_k(flat_scores, min(count, flat_scores.shape[1]))
        depth_bin, row, col, crop_depth = self._fused_pair_cells(flat, grasp_depth, rows=rows, cols=cols)
        crops = cell_crops(depth, row, col).flatten(0, 1)[:, None]  # (B * N, 1, 96, 96)
        with cuda_fp32_precision(self.device, "fp32"):
            exact = [
                self._exact_q(crops[i : i + _RESCORE_CHUNK], crop_depth[i : i + _RESCORE_CHUNK])
                for i in range(0, len(crops), _RESCORE_CHUNK)
            ]
        exact = (exact[0] if len(exact) == 1 else torch.cat(exact)).unflatten(0, (batch, -1))  # (B, N, A)
        return RescoredPairs(scores, depth_bin, row, col, exact)

    @staticmethod
    def _pair_cells(
        flat: torch.Tensor, grasp_depth: torch.Tensor, *, rows: int, cols: int
    ) -> tuple[torch.Tensor, ...]:
        """Depth bin, row and column (B, N) of pairs given by flat indices (B, N) into (D, h, w), and their
        grasp depths (B * N, 1) [m] from the depth bins (B, D) [m]; fused on CUDA (``_fused_pair_cells``)."""
        depth_bin, row, col = flat // (rows * cols), flat // cols % rows, flat % cols
        return depth_bin, row, col, grasp_depth.gather(1, depth_bin).flatten()[:, None]


@dataclass
class RescoredPairs:
    """The best (depth bin, cell) pairs of each image, as :meth:`FastQuality.rescore` evaluated them again.

    Attributes:
        scores: (B, N) their scores before (below 0: no admissible grasp).
        depth_bin, row, col: (B, N) long, where they lie on the (D, h, w) grid.
        q: (B, N, A) the float32 network's q per angle bin.
    """

    scores: torch.Tensor
    depth_bin: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    q: torch.Tensor

    def write_into(self, q: torch.Tensor) -> torch.Tensor:
        """Write the admissible pairs' float32 q into the trunk's q (B, D, A, h, w), in place; returns the
        pairs written, (B, D, 1, h, w) bool."""
        batch, bins, _, rows, cols = q.shape
        # where admissible, kept elsewhere (the pairs are distinct): no boolean indexing, whose result size the
        # host would have to wait for
        admissible = (self.scores >= 0)[..., None]  # (B, N, 1)
        index = (torch.arange(batch, device=q.device)[:, None], self.depth_bin, self.row, self.col)
        by_pair = q.permute(0, 1, 3, 4, 2)  # (B, D, h, w, A) view
        by_pair[index] = torch.where(admissible, self.q, by_pair[index])
        written = torch.zeros(batch, bins, 1, rows, cols, dtype=torch.bool, device=q.device)
        written.permute(0, 1, 3, 4, 2)[index] = admissible
        return written
