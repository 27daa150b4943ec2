"""Depth pre-processing for GQ-CNN: filling missing depth, and cutting grasp-centred crops.

Depth images are float32 metres along the optical axis, batched (B, H, W); 0 marks a missing pixel.
Normalisation with the model's statistics happens inside the networks (:mod:`dexrl.gqcnn.model`); masks are
mapped onto the output grid by :func:`dexrl.gqcnn.grid.grid_mask`.
"""

from __future__ import annotations

import importlib.util
import itertools

import torch
import torch.nn.functional as F

from .grid import CROP_SIZE

__all__ = ["TRITON_AVAILABLE", "extract_crops", "inpaint", "inpaint_rounds"]

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
"""Whether Triton can be imported (Linux builds of PyTorch for CUDA bring it along): the fast path's kernels
(:mod:`dexrl.gqcnn.triton_convs`) need it."""

_ROUNDS_PER_CHECK = 4


def inpaint(depth: torch.Tensor) -> torch.Tensor:
    """Fill missing pixels (0) of depth images (B, H, W) [m]; valid pixels are returned unchanged.

    As the original policy does: downsample x0.5 (nearest), fill the holes there by repeated averaging of the
    valid 8-neighbours, upsample bilinearly and take the result only where the input was missing. An image
    without any valid pixel stays 0.
    """
    missing = depth == 0
    if not missing.any():
        return depth
    small = depth[:, None, ::2, ::2].clone()
    for step in itertools.count():
        small, fillable = _fill_round(small)
        # asking the device whether anything is left costs a host synchronisation: ask every 4th round only
        # (rounds with nothing fillable change nothing)
        if step % _ROUNDS_PER_CHECK == 0 and not fillable.any():
            break
    return _fill_missing(depth, missing, small)


def inpaint_rounds(depth: torch.Tensor, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`inpaint` with a fixed number of filling rounds and no host synchronisation (for CUDA graphs).

    Returns:
        The filled images (B, H, W) [m], equal to :func:`inpaint`'s where the rounds sufficed, and (B,) bool:
        images whose holes need more rounds.
    """
    small = depth[:, None, ::2, ::2].clone()
    for _ in range(rounds):
        small, _ = _fill_round(small)
    _, fillable = _fill_round(small)
    return _fill_missing(depth, depth == 0, small), fillable.flatten(1).any(dim=1)


def _fill_round(small: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of filling (B, 1, h, w) holes with the average of their valid 8-neighbours; returns the
    images and which pixels the round filled. On CUDA with Triton, one kernel
    (:func:`dexrl.gqcnn.triton_convs.inpaint_round`)."""
    if small.device.type == "cuda" and TRITON_AVAILABLE:
        from .triton_convs import inpaint_round  # noqa: PLC0415 (Triton only where it runs)

        filled, fillable = inpaint_round(small[:, 0])
        return filled[:, None], fillable[:, None]
    ones = torch.ones(1, 1, 3, 3, dtype=small.dtype, device=small.device)
    valid = (small > 0).to(small.dtype)
    neighbours = F.conv2d(valid, ones, padding=1)
    fillable = (valid == 0) & (neighbours > 0)
    average = F.conv2d(small * valid, ones, padding=1) / neighbours.clamp(min=1)
    return torch.where(fillable, average, small), fillable


def _fill_missing(depth: torch.Tensor, missing: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """``depth`` with its ``missing`` pixels taken from the filled half-size images upsampled bilinearly."""
    filled = F.interpolate(small, size=depth.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return torch.where(missing, filled, depth)


def extract_crops(depth: torch.Tensor, centers: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Square, unrotated crops of depth images centred on grasp centres (as GQ-CNN training data uses them).

    Args:
        depth: (B, H, W) depth images [m].
        centers: (B, N, 2) grasp centres (u, v) = (column, row) [px]; rounded to the nearest pixel.
        size: crop side [px]. A crop centred on pixel (u, v) spans rows v - size // 2 to
            v - size // 2 + size - 1, so the FC network's output cell (h, w) sees exactly the crop centred on
            (4 w + 48, 4 h + 48).

    Returns:
        (B, N, size, size) crops; pixels outside the image are 0 (missing).
    """
    if depth.dim() != 3 or centers.dim() != 3 or centers.shape[0] != depth.shape[0] or centers.shape[-1] != 2:
        raise ValueError(
            f"expected depth (B, H, W) and centers (B, N, 2), "
            f"got {tuple(depth.shape)} and {tuple(centers.shape)}"
        )
    height, width = depth.shape[-2:]
    offsets = torch.arange(size, device=depth.device) - size // 2
    pixel = torch.round(centers).long()
    rows = pixel[..., 1, None] + offsets  # (B, N, size)
    cols = pixel[..., 0, None] + offsets
    inside = ((rows >= 0) & (rows < height))[..., :, None] & ((cols >= 0) & (cols < width))[..., None, :]
    image = torch.arange(depth.shape[0], device=depth.device)[:, None, None, None]
    crops = depth[image, rows.clamp(0, height - 1)[..., :, None], cols.clamp(0, width - 1)[..., None, :]]
    return torch.where(inside, crops, torch.zeros((), dtype=depth.dtype, device=depth.device))
