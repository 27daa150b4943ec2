"""The FC-GQ-CNN grasping policy: depth images -> ranked parallel-jaw grasps (a :class:`dexrl.grasp.Planner`).

Per batch of B images, without a Python loop over images:

1. fill missing depth (:func:`dexrl.gqcnn.preprocess.inpaint`) and map the mask onto the output grid;
2. D depth bins per image: z_i = zmin + (i + 1/2)(zmax - zmin)/D with zmin the nearest depth inside the mask
   and zmax the farthest depth in the image;
3. one network pass over all images and depth bins (only the bounding box of the admissible cells when
   ``crop_to_mask``; conv1_1 shared across depth bins), q = P(success) per (depth bin, angle bin, cell);
   the fast path (:mod:`dexrl.gqcnn.fast`, the default on CUDA) runs a bfloat16 trunk in fixed-size groups
   through CUDA graphs and rescores each image's best candidates in float32; on CUDA, small batches run the
   whole plan as one CUDA graph (``PlannerOptions.whole_plan_images``);
4. keep grasps whose centre cell is in the mask and that pass the optional filters, take the top k by q
   (optionally at least ``min_distance_px`` apart), and deproject them with each image's camera.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from dexrl.allocator import PLANNER_BLOCK_BYTES, keep_freed_memory
from dexrl.grasp import (
    CameraIntrinsics,
    ImageGrasps,
    NoValidGrasps,
    PlannerInputError,
    PlanResult,
    camera_parameters,
    deproject_per_camera,
)
from dexrl.grasp.baseline import validate_planner_input, validate_planner_request

from .fast import (
    CellWindow,
    FastQuality,
    GraphReplayer,
    Precision,
    SideStream,
    cpu_has_native_bf16,
    cuda_fp32_precision,
    fused_on_cuda,
    holds,
    live_depth_bins,
    plan_window,
    window_of_cells,
)
from .grid import CROP_SIZE, STRIDE, bin_to_angle, cell_centers, grid_mask, output_size
from .model import FCGQCNN
from .preprocess import TRITON_AVAILABLE, inpaint, inpaint_rounds
from .weights import ModelCard

__all__ = [
    "GRASP_FIELDS",
    "FCGQCNNPlanner",
    "GraspQuality",
    "PlannerOptions",
    "depth_bin_centers",
    "unpack_grasps",
]

InferencePath = Literal["auto", "plain", "fast"]
WHOLE_PLAN_INPAINT_ROUNDS = 8
"""Filling rounds of a whole-plan pass (``PlannerOptions.whole_plan_images``); an image whose holes need more
is planned again step by step (the bench's synthetic bins need 2)."""
_NONE = -3.0
"""Ranking score of grasps that may not be returned (q lies in [0, 1]; fast-path grasps not rescored rank in
[-2, -1])."""


@dataclass(frozen=True)
class PlannerOptions:
    """How :class:`FCGQCNNPlanner` plans.

    Attributes:
        depth_bins: D, grasp depths evaluated per image (16 in the released policy).
        gripper_width: jaw opening reported with each grasp and used by the jaw filters [m].
        inpaint: fill missing depth (0) before planning.
        min_distance_px: returned grasps of one image have centres at least this far apart [px]; 0 = off.
        jaws_inside_mask: both jaw tips (centre +- width/2 along the axis) must lie inside the mask as well.
        jaw_clearance: when set, the surface seen at both jaw tips must lie at least this far beyond (deeper
            than) the grasp depth [m], so the descending jaws clear bin walls and neighbouring objects; None
            turns the check off.
        path: ``plain`` (the network as one PyTorch module; the reference), ``fast`` (:mod:`dexrl.gqcnn.fast`:
            shared conv1_1, mask window, skipped empty depth bins, grouped CUDA graphs, float32 rescoring) or
            ``auto``: fast for networks without a pose stream, else plain.
        precision: ``fp32``; ``tf32`` (CUDA only: TensorFloat-32 convolutions); ``bf16`` (bfloat16 after
            conv1_1); None: bf16 on the fast path where the device computes in bfloat16 natively (CUDA, CPUs with
            AVX-512 BF16 or AMX: :func:`dexrl.gqcnn.fast.cpu_has_native_bf16`), else fp32.
        crop_to_mask: plain path: evaluate the network only on the bounding box of the admissible cells (exact
            for those cells; elsewhere the q-map is 0). The fast path always does.
        share_first_conv: plain path: compute conv1_1 once per image instead of once per depth bin (exact by
            linearity). The fast path always does.
        channels_last: use the channels-last memory format (faster with bf16 on recent CPUs and GPUs); None:
            when the precision is bf16.
        compile_mode: ``torch.compile`` the network (fast path: its trunk) with this mode (e.g.
            ``"max-autotune-no-cudagraphs"``); None runs eagerly. The first calls of each input shape are
            slow.
        rescore_top: fast path: the N best (depth bin, cell) pairs of each image (at least k) are evaluated
            again in float32, and the returned grasps come from them first; 0 turns it off.
        group_images: fast path: images per network pass (bounds memory: about 0.4 GB per image in bf16).
        cuda_graphs: fast path on CUDA: replay each group shape through a captured CUDA graph.
        fc3: fast path: ``conv`` (a direct 17x17 convolution in the trunk's precision) or ``fft`` (the same
            convolution through float32 FFTs, :class:`dexrl.gqcnn.fast.SpectralConv`: about 100x fewer
            operations for this kernel) or ``rows`` (a 17x1 convolution over the input's rows unfolded into
            272 channels, :class:`dexrl.gqcnn.fast.RowUnfoldedConv`; on an H200, 1.7x faster than the direct
            convolution for fc3 alone, 1.07x for whole plans) or ``triton`` (fc3, fc4, fc5 and the softmax in
            one Triton kernel, :class:`dexrl.gqcnn.triton_convs.QualityHead`; CUDA only). None: triton on CUDA
            without ``compile_mode`` (1.23x the images/s of ``rows`` on rendered heaps, H200), rows on CUDA
            with it, fft on CPUs.
        whole_plan_images: fast path: plan batches of at most this many images in one pass of device work
            without a host synchronisation (:meth:`FCGQCNNPlanner._plan_on_device`), replayed on CUDA (with
            ``cuda_graphs``) as one captured graph per (batch, image size, k, window): at batch 1 a
            step-by-step plan spends most of its time launching small kernels and waiting for the device. The
            pass evaluates every depth bin on the window of cells that held the last plan's mask box (the whole
            grid at first; a box outside it grows the window and the plan runs again:
            :func:`~dexrl.gqcnn.fast.plan_window`); its small steps are fused by ``torch.compile`` on CUDA
            (:func:`~dexrl.gqcnn.fast.fused_on_cuda`: the first plan of each shape compiles them) and its
            checks run beside the trunk on a second stream. 0: never; None: 16 on CUDA without
            ``compile_mode``, else 0.
        stream_convs: fast path: the image stream (the shared conv1_1, each pair's shifted first layer,
            conv1_2, conv2_1, conv2_2 with their ReLUs and pools), in the trunk and in the rescoring of the best
            pairs' crops, in PyTorch (``torch``) or as Triton kernels that fuse each convolution's ReLU and pool
            (``triton``, :mod:`dexrl.gqcnn.triton_convs`; CUDA only; the rescoring's float32 products as three
            TF32 products each). None: triton on CUDA without ``compile_mode`` (1.9x the images/s of PyTorch's
            stream on an H200), else torch (compiled, PyTorch's stream is as fast).
    """

    depth_bins: int = 16
    gripper_width: float = 0.05
    inpaint: bool = True
    min_distance_px: float = 0.0
    jaws_inside_mask: bool = False
    jaw_clearance: float | None = None
    path: InferencePath = "auto"
    precision: Precision | None = None
    crop_to_mask: bool = True
    share_first_conv: bool = True
    channels_last: bool | None = None
    compile_mode: str | None = None
    rescore_top: int = 16
    group_images: int = 16
    cuda_graphs: bool = True
    fc3: Literal["conv", "fft", "rows", "triton"] | None = None
    whole_plan_images: int | None = None
    stream_convs: Literal["torch", "triton"] | None = None

    def resolved(self, device: torch.device, model: FCGQCNN) -> PlannerOptions:
        """These options with ``auto`` / None choices made for ``device`` and ``model``."""
        path = self.path
        if path == "auto":
            path = "fast" if model.pose_stream is None else "plain"
        native_bf16 = device.type == "cuda" or cpu_has_native_bf16()
        precision = self.precision or ("bf16" if path == "fast" and native_bf16 else "fp32")
        channels_last = precision == "bf16" if self.channels_last is None else self.channels_last
        eager_triton = (
            path == "fast" and device.type == "cuda" and self.compile_mode is None and TRITON_AVAILABLE
        )
        fc3 = self.fc3 or ("triton" if eager_triton else "rows" if device.type == "cuda" else "fft")
        stream_convs = self.stream_convs or ("triton" if eager_triton else "torch")
        whole_plan_images = self.whole_plan_images
        if whole_plan_images is None:
            whole_plan_images = 16 if device.type == "cuda" and self.compile_mode is None else 0
        return dataclasses.replace(
            self,
            path=path,
            precision=precision,
            channels_last=channels_last,
            fc3=fc3,
            whole_plan_images=whole_plan_images,
            stream_convs=stream_convs,
        )


def depth_bin_centers(depth: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Grasp depths (B, bins) [m]: centres of ``bins`` equal bins from the nearest valid depth inside the mask
    to the farthest depth of the image. Raises :class:`NoValidGrasps` if a mask holds no valid depth."""
    centers, empty = _depth_bins(depth, mask, bins)
    if empty.any():
        raise NoValidGrasps(
            f"no valid depth inside the mask of image(s) {empty.nonzero().flatten().tolist()}"
        )
    return centers


def _depth_bins(depth: torch.Tensor, mask: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`depth_bin_centers` without its check: the centres, and (B,) bool images whose mask holds no
    valid depth (their centres are not finite)."""
    nearest, farthest, empty = _depth_range(depth, mask)
    return _bin_centers(nearest, farthest, _bin_fractions(bins, depth.device, depth.dtype)), empty


def _depth_range(depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nearest valid depth inside each image's mask (inf where none) and its farthest depth (B,) [m], and
    (B,) bool images whose mask holds no valid depth."""
    inside = mask & (depth > 0)
    nearest = torch.where(inside, depth, torch.inf).flatten(1).amin(dim=1)
    return nearest, depth.flatten(1).amax(dim=1), ~inside.flatten(1).any(dim=1)


def _bin_fractions(bins: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Where the centres of ``bins`` equal bins lie between a range's ends (bins,), from 0 to 1."""
    return (torch.arange(bins, device=device, dtype=dtype) + 0.5) / bins


def _bin_centers(nearest: torch.Tensor, farthest: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Centres (B, bins) [m] of equal bins between depths (B,) [m] at :func:`_bin_fractions`. Not fused by a
    compiler, whose multiply-adds could round differently from the reference path's."""
    return nearest[:, None] + fractions * (farthest - nearest)[:, None]


@dataclass
class GraspQuality:
    """The quality of every grasp on the output grid of a batch, as :meth:`FCGQCNNPlanner.evaluate` gives it.

    Attributes:
        q: (B, D, A, h, w) P(success) per depth bin, angle bin and cell; 0 outside the evaluated window.
        grasp_depth: (B, D) the depth bins [m].
        admissible: (B, h, w) cells whose centre lies in the mask, at least 48 px inside the image.
        live_bins: (B, D) depth bins evaluated (the fast path skips bins that cannot hold a passing grasp;
            their q is 0).
        depth: (B, H, W) the depth images after inpainting [m]. mask: (B, H, W) bool.
        cameras: (B, 4) each image's camera, :func:`~dexrl.grasp.camera_parameters` (fx, fy, cx, cy [px]).
        timings: seconds spent on ``preprocess`` and ``network``.
    """

    q: torch.Tensor
    grasp_depth: torch.Tensor
    admissible: torch.Tensor
    live_bins: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    cameras: torch.Tensor
    timings: dict[str, float]


class FCGQCNNPlanner:
    """Plans parallel-jaw grasps with an FC-GQ-CNN (implements :class:`dexrl.grasp.Planner`).

    Args:
        model: the network; an :class:`FCGQCNN` (a crop network converted by ``FCGQCNN.from_crop_network``
            plans horizontal jaw axes only).
        device: where the network runs; inputs are moved there and results stay there. On a CPU the planner
            sets glibc's malloc, for the whole process, to keep freed blocks of up to 1 GiB for reuse
            (:func:`dexrl.allocator.keep_freed_memory`): its activations would otherwise be faulted in again
            on every call (about 1.7x the time per image on a 2-core VM).
        options: see :class:`PlannerOptions`.
        card: the weights' model card, kept for provenance (e.g. shown by the bridge).
    """

    def __init__(
        self,
        model: FCGQCNN,
        device: str | torch.device = "cpu",
        options: PlannerOptions | None = None,
        *,
        card: ModelCard | None = None,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory(PLANNER_BLOCK_BYTES)
        self.options = (options or PlannerOptions()).resolved(self.device, model)
        if self.options.precision == "tf32" and self.device.type != "cuda":
            raise ValueError("precision 'tf32' needs a CUDA device")
        fast = self.options.path == "fast"
        memory_format = (
            torch.channels_last if self.options.channels_last and not fast else torch.contiguous_format
        )
        self.model = model.to(self.device, memory_format=memory_format).eval()
        self._fast = FastQuality(self.model, self.device, self.options) if fast else None
        self._whole_plans: dict[tuple, Callable[..., tuple[torch.Tensor, ...]]] = {}
        self._plan_windows: dict[tuple[int, ...], CellWindow] = {}  # per input shape (B, H, W)
        self._side = SideStream(self.device)
        self._fused_rescored_grasps = fused_on_cuda(self._best_rescored_grasps, self.device)
        self._fused_pair_scores = fused_on_cuda(self._pair_scores, self.device)
        self._fused_depth_range = fused_on_cuda(_depth_range, self.device)
        self._fused_status = fused_on_cuda(self._status, self.device)
        self._fused_input_checks = fused_on_cuda(self._input_checks, self.device)
        self._depth_fractions = _bin_fractions(self.options.depth_bins, self.device, torch.float32)
        # angles looked up, not computed in fused code, so that they equal the reference path's to the bit
        angles = self.model.angle_bins
        self._angles = bin_to_angle(torch.arange(angles, device=self.device), angles)
        self._last_cameras: tuple[tuple | None, torch.Tensor | None] = (None, None)
        self._network = (
            self.model
            if self.options.compile_mode is None or fast
            else torch.compile(self.model, mode=self.options.compile_mode)
        )
        self.card = card

    @torch.inference_mode()
    def quality(self, depth: torch.Tensor, grasp_depth: torch.Tensor) -> torch.Tensor:
        """q = P(success) (B, D, A, h, w) of filled depth images (B, H, W) [m] at grasp depths (B, D) [m]."""
        options = self.options
        images = depth.unsqueeze(1)
        if options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with cuda_fp32_precision(self.device, options.precision):
            logits = self._network(
                images,
                grasp_depth,
                share_first_conv=options.share_first_conv,
                autocast_dtype=torch.bfloat16 if options.precision == "bf16" else None,
            )
        return torch.softmax(logits, dim=3)[:, :, :, 1]

    @torch.inference_mode()
    def evaluate(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
    ) -> GraspQuality:
        """Validate, pre-process and run the network: the quality of every grasp on the grid (steps 1-3 of the
        policy). Arguments and errors as :meth:`plan`."""
        start = time.perf_counter()
        cameras = validate_planner_input(depth, intrinsics, mask)
        height, width = depth.shape[1:]
        if height < CROP_SIZE or width < CROP_SIZE:
            raise PlannerInputError(
                f"images must be at least {CROP_SIZE}x{CROP_SIZE} pixels, got {height}x{width}"
            )
        depth = depth.to(self.device, torch.float32)
        mask = torch.ones_like(depth, dtype=torch.bool) if mask is None else mask.to(self.device)
        cells = grid_mask(mask)
        no_cells = ~cells.flatten(1).any(dim=1)
        if no_cells.any():
            raise NoValidGrasps(
                f"the mask of image(s) {no_cells.nonzero().flatten().tolist()} leaves no grasp centre "
                f"at least {CROP_SIZE // 2} px inside the image"
            )
        filled = inpaint(depth) if self.options.inpaint else depth
        grasp_depth = depth_bin_centers(filled, mask, self.options.depth_bins)
        timings = {"preprocess": self._elapsed(start)}
        if self._fast is not None:
            live = live_depth_bins(filled, mask, grasp_depth, self.options)
            with cuda_fp32_precision(self.device, self.options.precision):
                q = self._fast.quality(filled, cells, grasp_depth, live)
        else:
            live = torch.ones_like(grasp_depth, dtype=torch.bool)
            q = self._plain_quality(filled, cells, grasp_depth)
        timings["network"] = self._elapsed(start) - timings["preprocess"]
        return GraspQuality(
            q, grasp_depth, cells, live, filled, mask, camera_parameters(cameras, self.device), timings
        )

    def _plain_quality(
        self, filled: torch.Tensor, cells: torch.Tensor, grasp_depth: torch.Tensor
    ) -> torch.Tensor:
        """q (B, D, A, h, w) of the plain path: one network pass over the evaluated window."""
        rows, cols = self._evaluated_cells(cells)
        window = filled[
            :,
            rows.start * STRIDE : (rows.stop - 1) * STRIDE + CROP_SIZE,
            cols.start * STRIDE : (cols.stop - 1) * STRIDE + CROP_SIZE,
        ]
        window_q = self.quality(window, grasp_depth)
        q = window_q.new_zeros(*window_q.shape[:3], *cells.shape[1:])
        q[..., rows, cols] = window_q
        return q

    @torch.inference_mode()
    def plan(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
        k: int = 1,
        return_q_map: bool = False,
    ) -> PlanResult:
        """Top-k grasps per image; see :meth:`dexrl.grasp.Planner.plan`. The q-map is (B, A, h, w): per angle
        bin, the best q over depth bins, on the output grid of :mod:`dexrl.gqcnn.grid`."""
        start = time.perf_counter()
        if k < 1:
            raise PlannerInputError(f"k must be at least 1, got {k}")
        if self._fast is not None and depth.dim() == 3 and len(depth) <= self.options.whole_plan_images:
            result = self._plan_whole(depth, intrinsics, mask, k, return_q_map)
            if result is not None:  # it has waited for the device
                result.timings["total"] = time.perf_counter() - start
                return result
        quality = self.evaluate(depth, intrinsics, mask)
        packed, valid = self._select(quality, k, exact_in_q=return_q_map)
        grasps, positions = unpack_grasps(packed)
        no_grasp = ~valid[:, 0]
        if no_grasp.any():
            raise NoValidGrasps(
                f"no grasp in image(s) {no_grasp.nonzero().flatten().tolist()} passes the mask and filters"
            )
        q_map = quality.q.amax(dim=1) if return_q_map else None
        timings = dict(quality.timings)
        timings["total"] = self._elapsed(start)
        timings["select"] = timings["total"] - timings["network"] - timings["preprocess"]
        return PlanResult(grasps, valid, positions, q_map, timings, q_map_grid=(STRIDE, CROP_SIZE // 2))

    def _select(
        self, quality: GraspQuality, k: int, exact_in_q: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 4 of the policy: the top k grasps per image (on the fast path, the best pairs rescored in
        float32 first), packed (B, k, 9) (:func:`unpack_grasps`; rows past the valid ones are 0), and which of
        them are valid (B, k) bool. ``exact_in_q``: the rescored pairs' float32 q is also written into
        ``quality.q`` (for the q-map)."""
        admissible = self.passing(quality)
        decode = functools.partial(
            self._grasps, grasp_depth=quality.grasp_depth, cameras=quality.cameras, shape=quality.q.shape
        )
        if self._fast is None or self.options.rescore_top <= 0:
            return decode(*self._top_k(torch.where(admissible, quality.q, _NONE), k))
        pairs = self._fast.rescore(
            self._fused_pair_scores(quality.q, admissible),
            quality.depth,
            quality.grasp_depth,
            max(self.options.rescore_top, k),
        )
        if exact_in_q or self.options.min_distance_px > 0:
            rescored = pairs.write_into(quality.q)
        if self.options.min_distance_px <= 0:
            return self._fused_rescored_grasps(
                *(pairs.q, pairs.depth_bin, pairs.row, pairs.col),
                *(admissible, quality.grasp_depth, quality.cameras),
                k=k,
                shape=quality.q.shape,
            )
        # float32-rescored grasps rank above all others, whose q moves to [-2, -1]
        q = quality.q
        values, flat = self._top_k(torch.where(admissible, torch.where(rescored, q, q - 2.0), _NONE), k)
        return decode(torch.where(values < -1.5, values + 2.0, values), flat)

    @staticmethod
    def _pair_scores(q: torch.Tensor, admissible: torch.Tensor) -> torch.Tensor:
        """Each (depth bin, cell) pair's best q over the angle bins where admissible (B, D, h, w), ``_NONE``
        where no grasp of the pair is."""
        if admissible.shape[2] == 1:  # no filter depends on the angle: one pass over q, not three
            return torch.where(admissible[:, :, 0], q.amax(dim=2), _NONE)
        return torch.where(admissible, q, _NONE).amax(dim=2)

    def _best_rescored_grasps(
        self,
        pair_q: torch.Tensor,
        depth_bin: torch.Tensor,
        row: torch.Tensor,
        col: torch.Tensor,
        admissible: torch.Tensor,
        grasp_depth: torch.Tensor,
        cameras: torch.Tensor,
        *,
        k: int,
        shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_grasps` of the top k grasps, without a minimum distance, taken among the rescored pairs'
        admissible grasps alone (:class:`~dexrl.gqcnn.fast.RescoredPairs`: q (B, N, A), depth bin, row and
        column (B, N) of each pair on a grid of ``shape`` (B, D, A, h, w)). That is exact, because the N >= k
        pairs rescored are the best by the trunk's q, so either they hold at least k admissible grasps
        (float32-rescored grasps rank first) or they hold every admissible grasp. A search over N x A grasps
        instead of the whole grid; fused into a few kernels on CUDA (``_fused_rescored_grasps``)."""
        _, _, angles, rows, cols = shape
        image = torch.arange(len(pair_q), device=pair_q.device)[:, None]
        passes = admissible.expand(shape)[image, depth_bin, :, row, col]  # (B, N, A)
        values, index = self._top_k(torch.where(passes, pair_q, _NONE), k)
        pair, angle = index // angles, index % angles
        depth_bin, row, col = (where.gather(1, pair) for where in (depth_bin, row, col))
        flat = ((depth_bin * angles + angle) * rows + row) * cols + col
        return self._grasps(values, flat, grasp_depth, cameras, shape)

    def _plan_whole(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None,
        k: int,
        return_q_map: bool,
    ) -> PlanResult | None:
        """The plan in one pass without a host synchronisation (:meth:`_plan_on_device`), through one CUDA
        graph per (batch, image size, k, q-map or not, window) on CUDA, then one synchronisation for its fault
        flags and the admissible cells' box. The trunk runs on the window that held the last plan's box (the
        whole grid at first): a box outside it grows the window and plans again. None: some image needs the
        step-by-step path (which raises what is wrong with it, or inpaints it further)."""
        cameras = validate_planner_request(depth, intrinsics, mask)
        if min(depth.shape[1:]) < CROP_SIZE:
            return None
        params = self._camera_parameters(cameras)
        depth = depth.to(self.device, torch.float32)
        mask = torch.ones_like(depth, dtype=torch.bool) if mask is None else mask.to(self.device)
        map_size = output_size(*depth.shape[1:])
        while True:
            window = self._plan_windows.get(tuple(depth.shape))
            key = (k, return_q_map, window)
            if key not in self._whole_plans:
                body = functools.partial(self._plan_on_device, k=k, return_q_map=return_q_map, window=window)
                graphs = self.options.cuda_graphs and self.device.type == "cuda"
                self._whole_plans[key] = GraphReplayer(body, self.device) if graphs else body
            values, valid, q_map, _, status = self._whole_plans[key](depth, mask, params)
            # copies queued before the wait: a graph's outputs are overwritten by its next replay
            values, valid = values.clone(), valid.clone()
            q_map = q_map.clone() if return_q_map else None
            any_fault, *box = status.tolist()
            if any_fault:  # no fault depends on the window
                return None
            if window is not None and holds(window, box):
                break
            self._plan_windows[tuple(depth.shape)] = plan_window(box, map_size, window)
            if window is None:  # planned on the whole grid: the result holds
                break
        grasps, positions = unpack_grasps(values)
        return PlanResult(grasps, valid, positions, q_map, {}, q_map_grid=(STRIDE, CROP_SIZE // 2))

    def _camera_parameters(self, cameras: list[CameraIntrinsics]) -> torch.Tensor:
        """:func:`camera_parameters` on the planner's device, kept from the last call while the cameras stay
        the same (a host-to-device copy per plan otherwise)."""
        values = tuple((c.fx, c.fy, c.cx, c.cy) for c in cameras)  # by value: intrinsics are mutable
        if values != self._last_cameras[0]:
            self._last_cameras = (values, camera_parameters(cameras, self.device))
        return self._last_cameras[1]

    @torch.inference_mode()
    def _plan_on_device(
        self,
        depth: torch.Tensor,
        mask: torch.Tensor,
        cameras: torch.Tensor,
        *,
        k: int,
        return_q_map: bool,
        window: CellWindow | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """The fast path's plan of depth (B, H, W) [m], mask (B, H, W) bool and cameras (B, 4) as device work
        alone, so that one CUDA graph can hold it: each check becomes a per-image fault flag, inpainting runs
        :data:`WHOLE_PLAN_INPAINT_ROUNDS` rounds, and the trunk evaluates every depth bin on the given window
        of cells (:meth:`FastQuality.quality_whole_grid`; None: the whole grid). Where no flag is set and the
        window holds the returned box, the grasps equal :meth:`plan`'s.

        Returns:
            The grasps packed (B, k, 9) (:func:`unpack_grasps`), valid (B, k), the q-map (B, A, h, w) (empty
            without ``return_q_map``), faults (B,) bool: images with bad depth, no admissible cell, no valid
            depth in the mask, holes left, or no grasp; and the status (5,) long: whether any image has a
            fault, then the admissible cells' box over the batch (:func:`~dexrl.gqcnn.fast.window_of_cells`).
        """
        with self._side.fork():  # the checks and the grid's cells, beside inpainting and the depth bins
            faults, cells, box = self._fused_input_checks(depth, mask)
        unfinished = None
        if self.options.inpaint:  # a new tensor: the side's work reads the input
            depth, unfinished = inpaint_rounds(depth, WHOLE_PLAN_INPAINT_ROUNDS)
        nearest, farthest, empty = self._fused_depth_range(depth, mask)
        grasp_depth = _bin_centers(nearest, farthest, self._depth_fractions)
        live = live_depth_bins(depth, mask, grasp_depth, self.options)
        self._side.join(faults, cells, box)
        if unfinished is not None:
            faults |= unfinished
        with cuda_fp32_precision(self.device, self.options.precision):
            q = self._fast.quality_whole_grid(depth, grasp_depth, box, window)
        if self.options.jaw_clearance is not None:  # else every bin is live
            q = q * live[:, :, None, None, None]
        quality = GraspQuality(q, grasp_depth, cells, live, depth, mask, cameras, {})
        packed, valid = self._select(quality, k, exact_in_q=return_q_map)
        faults, status = self._fused_status(faults, empty, valid, box)
        q_map = q.amax(dim=1) if return_q_map else q.new_empty(0)
        return packed, valid, q_map, faults, status

    @staticmethod
    def _input_checks(
        depth: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A whole plan's checks of depth (B, H, W) [m] and masks (B, H, W): images with a non-finite depth,
        no valid depth or no admissible cell (B,) bool; the admissible cells (B, h, w) (:func:`grid_mask`);
        and their box over the batch (4,) long (:func:`~dexrl.gqcnn.fast.window_of_cells`). Fused on CUDA
        (``_fused_input_checks``: a few kernels where PyTorch runs about 20)."""
        faults = ~torch.isfinite(depth).flatten(1).all(dim=1) | ~(depth > 0).flatten(1).any(dim=1)
        cells = grid_mask(mask)
        return faults | ~cells.flatten(1).any(dim=1), cells, window_of_cells(cells)

    @staticmethod
    def _status(
        faults: torch.Tensor, empty: torch.Tensor, valid: torch.Tensor, box: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole plan's faults (B,) bool, with images without valid depth in the mask or without a grasp, and
        its status (5,) long: whether any image has a fault, then the admissible cells' box (4,), so that the
        host reads them at once. Fused on CUDA (``_fused_status``)."""
        faults = faults | empty | ~valid[:, 0]
        return faults, torch.cat((faults.any().long()[None], box))

    def _elapsed(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def _evaluated_cells(self, cells: torch.Tensor) -> tuple[slice, slice]:
        """Rows and columns of the output grid to evaluate: the whole grid, or the admissible cells' bounding
        box over the batch (a crop aligned to the stride, so its cells equal the full image's)."""
        if not self.options.crop_to_mask:
            return slice(0, cells.shape[1]), slice(0, cells.shape[2])
        used_rows = cells.any(dim=2).any(dim=0).nonzero().flatten()
        used_cols = cells.any(dim=1).any(dim=0).nonzero().flatten()
        return (
            slice(int(used_rows[0]), int(used_rows[-1]) + 1),
            slice(int(used_cols[0]), int(used_cols[-1]) + 1),
        )

    def passing(self, quality: GraspQuality) -> torch.Tensor:
        """Grasps that the policy may return, bool, broadcastable to (B, D, A, h, w): centre cell admissible,
        depth bin evaluated, and through the optional jaw filters."""
        passes = quality.admissible[:, None, None]
        if self.options.jaw_clearance is not None:  # else every depth bin is live
            passes = passes & quality.live_bins[:, :, None, None, None]
        if self.options.jaws_inside_mask or self.options.jaw_clearance is not None:
            passes = passes & self._jaw_filters(quality)
        return passes

    def _jaw_filters(self, quality: GraspQuality) -> torch.Tensor:
        """The optional jaw filters (at least one on), (B, D, A, h, w); True where a grasp passes."""
        options = self.options
        passes = torch.ones((), dtype=torch.bool, device=self.device)
        depth, grasp_depth = quality.depth, quality.grasp_depth
        batch, height, width = depth.shape
        fx = quality.cameras[:, 0]
        half_width_px = 0.5 * options.gripper_width * fx[:, None] / grasp_depth  # (B, D)
        angle_bins = quality.q.shape[2]
        angle = bin_to_angle(torch.arange(angle_bins, device=self.device), angle_bins)
        du = (half_width_px[..., None] * torch.cos(angle))[..., None, None]  # (B, D, A, 1, 1)
        dv = (half_width_px[..., None] * torch.sin(angle))[..., None, None]
        rows, cols = quality.admissible.shape[1:]
        grid_rows = torch.arange(rows, device=self.device)
        grid_cols = torch.arange(cols, device=self.device)
        centers = cell_centers(grid_rows[:, None], grid_cols[None, :])  # (h, w, 2)
        image = torch.arange(batch, device=self.device)[:, None, None, None, None]
        for sign in (-1.0, 1.0):
            u = torch.round(centers[..., 0] + sign * du).long()
            v = torch.round(centers[..., 1] + sign * dv).long()
            inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
            u, v = u.clamp(0, width - 1), v.clamp(0, height - 1)
            passes = passes & inside
            if options.jaws_inside_mask:
                passes = passes & quality.mask[image, v, u]
            if options.jaw_clearance is not None:
                passes = passes & (
                    depth[image, v, u] >= grasp_depth[:, :, None, None, None] + options.jaw_clearance
                )
        return passes

    def _top_k(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best scores per image (B, k) and their flat indices into (D, A, h, w); none left:
        ``_NONE``."""
        flat_scores = scores.flatten(1)
        if self.options.min_distance_px <= 0 and k == 1:
            # one reduction: topk's radix selection over a plan's 2M scores took 0.12 ms on an H200
            values, indices = flat_scores.max(dim=1, keepdim=True)
        elif self.options.min_distance_px <= 0:
            values, indices = flat_scores.topk(min(k, flat_scores.shape[1]), dim=1)
        else:
            values, indices = self._top_k_apart(scores, k)
        if values.shape[1] < k:  # fewer grasps on the grid than asked for
            pad = k - values.shape[1]
            values = torch.cat((values, values.new_full((values.shape[0], pad), _NONE)), dim=1)
            indices = torch.cat((indices, indices.new_zeros((indices.shape[0], pad))), dim=1)
        return values, indices

    def _top_k_apart(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy top-k with centres at least ``min_distance_px`` apart: the best grasp per cell, then k
        rounds of take-the-best and drop the cells too close to it (a loop over k, batched over images)."""
        rows, cols = scores.shape[-2:]
        per_cell, best_bin = scores.flatten(1, 2).max(dim=1)  # (B, rows, cols), index into D * A
        per_cell, best_bin = per_cell.flatten(1), best_bin.flatten(1)
        cell_rows = torch.arange(rows, device=scores.device).repeat_interleave(cols)
        cell_cols = torch.arange(cols, device=scores.device).repeat(rows)
        min_cells_sq = (self.options.min_distance_px / STRIDE) ** 2
        values, indices = [], []
        for _ in range(k):
            value, cell = per_cell.max(dim=1)
            values.append(value)
            indices.append(best_bin.gather(1, cell[:, None])[:, 0] * (rows * cols) + cell)
            distance_sq = (cell_rows - cell_rows[cell][:, None]) ** 2 + (
                cell_cols - cell_cols[cell][:, None]
            ) ** 2
            per_cell = torch.where(distance_sq < min_cells_sq, _NONE, per_cell)
        return torch.stack(values, dim=1), torch.stack(indices, dim=1)

    def _grasps(
        self,
        values: torch.Tensor,
        flat: torch.Tensor,
        grasp_depth: torch.Tensor,
        cameras: torch.Tensor,
        shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the top k scores ``values`` (B, k) and their flat indices into a grid of ``shape`` (B, D, A,
        h, w) into grasps, packed (B, k, 9) (:func:`unpack_grasps`; 0 past the valid ones), and valid
        (B, k)."""
        _, _, angles, rows, cols = shape
        # unravel_index by hand: torch.unravel_index copies the shape to the device (a synchronising copy)
        depth_bin, angle_bin = flat // (angles * rows * cols), flat // (rows * cols) % angles
        center = cell_centers(flat // cols % rows, flat % cols)
        depth = grasp_depth.gather(1, depth_bin)
        columns = (self._angles[angle_bin], depth, torch.full_like(depth, self.options.gripper_width), values)
        packed = torch.cat(
            (center, torch.stack(columns, dim=2), deproject_per_camera(cameras, center, depth)), dim=2
        )
        valid = values > _NONE
        return packed * valid[..., None], valid


GRASP_FIELDS = (2, 1, 1, 1, 1, 3)
"""Widths of the fields of a packed grasp (:func:`unpack_grasps`)."""


def unpack_grasps(packed: torch.Tensor) -> tuple[ImageGrasps, torch.Tensor]:
    """Grasps (B, k) and their positions (B, k, 3) in the camera frame [m] from packed grasps (B, k, 9): centre
    (u, v) [px], angle [rad], depth [m], width [m], q, position (x, y, z) [m]. Views, no copies."""
    center, angle, depth, width, q, positions = packed.split(GRASP_FIELDS, dim=2)
    grasps = ImageGrasps(
        center=center, angle=angle[..., 0], depth=depth[..., 0], width=width[..., 0], q=q[..., 0]
    )
    return grasps, positions
