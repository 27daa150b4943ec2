"""Candidate grasps to label in physics: sampled from depth images, batched over images (no loop over images).

Two samplers, as Dex-Net mixes them, plus the planner's own proposals for on-policy rounds:

- ``uniform``: a random pixel on an object, a random jaw angle and a random depth between the surface and the
  deepest reachable grasp: the whole FC action space inside the mask.
- ``edge``: across an object edge: a random pixel where the depth jumps (an object's outline), the jaw axis
  along the depth gradient there and the centre moved inwards by a random half-width, so that one pad lands
  outside the edge and the other across the object.
- ``policy``: one of a planner's top-k grasps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dexrl.grasp import CameraIntrinsics, ImageGrasps, NoValidGrasps, Planner, wrap_half_turn

__all__ = ["CandidateMix", "CandidateSampler", "object_pixels"]


@dataclass
class CandidateMix:
    """Relative weights of the candidate sources (normalised; a zero weight turns a source off)."""

    uniform: float = 0.5
    edge: float = 0.5
    policy: float = 0.0

    @classmethod
    def parse(cls, text: str) -> CandidateMix:
        """From ``"uniform=0.5,edge=0.5,policy=0"``; raises ``ValueError`` naming a bad entry."""
        mix = cls(uniform=0.0, edge=0.0, policy=0.0)
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name not in ("uniform", "edge", "policy"):
                raise ValueError(f"unknown candidate source {name!r}; sources are uniform, edge, policy")
            try:
                weight = float(value)
            except ValueError:
                raise ValueError(f"candidate weight of {name!r} must be a number, got {value!r}") from None
            if not weight >= 0:
                raise ValueError(f"candidate weight of {name!r} must be >= 0, got {weight}")
            setattr(mix, name, weight)
        if mix.uniform + mix.edge + mix.policy <= 0:
            raise ValueError(f"the candidate mix {text!r} has no source with a weight > 0")
        return mix


def object_pixels(depth: torch.Tensor, mask: torch.Tensor, above_floor: float = 0.004) -> torch.Tensor:
    """(B, H, W) bool: pixels of the mask at least ``above_floor`` [m] nearer than the image's bin floor (the
    deepest depth in its mask)."""
    floor = torch.where(mask, depth, torch.zeros_like(depth)).flatten(1).amax(dim=1)
    return mask & (depth > 0) & (depth < (floor - above_floor).view(-1, 1, 1))


def _random_pixels(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One pixel per image drawn with probability proportional to ``weights`` (B, H, W); (B, 2) as (u, v)."""
    b, h, w = weights.shape
    flat = weights.flatten(1).float()
    empty = flat.sum(dim=1) <= 0
    flat = torch.where(empty.unsqueeze(1), torch.ones_like(flat), flat)
    # inverse CDF on the images' device: only B uniform draws come from the (CPU) generator; multinomial
    # would need the whole (B, H*W) tensor on the CPU, seconds per batch at thousands of envs
    cdf = flat.cumsum(dim=1)
    draw = torch.rand(b, 1, generator=generator).to(weights.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, draw, right=True).squeeze(1).clamp(max=h * w - 1)
    return torch.stack((index % w, index // w), dim=-1).float()


class CandidateSampler:
    """Draws one candidate grasp per image from a :class:`CandidateMix`.

    Args:
        mix: the source weights.
        intrinsics: the camera (for metres <-> pixels).
        width: jaw opening to report [m].
        depth_offset: a grasp lies up to this far below the surface it is sampled on [m].
        tip_clearance: and at least this far above the bin floor [m] (the TCP's height above the fingertips).
        planner: the planner of the ``policy`` source (required when its weight is > 0).
        policy_top_k: the policy source picks uniformly among the planner's top k.
        generator: CPU generator of all draws (seeded by the caller).
    """

    def __init__(
        self,
        mix: CandidateMix,
        intrinsics: CameraIntrinsics,
        width: float = 0.05,
        depth_offset: float = 0.035,
        tip_clearance: float = 0.013,
        planner: Planner | None = None,
        policy_top_k: int = 5,
        generator: torch.Generator | None = None,
    ):
        if mix.policy > 0 and planner is None:
            raise ValueError("the candidate mix has a policy share but no planner was given")
        self.mix, self.intrinsics, self.width = mix, intrinsics, width
        self.depth_offset, self.tip_clearance = depth_offset, tip_clearance
        self.planner, self.policy_top_k = planner, policy_top_k
        self.generator = generator or torch.Generator().manual_seed(0)

    def sample(self, depth: torch.Tensor, mask: torch.Tensor) -> tuple[ImageGrasps, torch.Tensor]:
        """One grasp per image of ``depth`` (B, H, W) [m] with bin ``mask`` (B, H, W).

        Returns the grasps and the (B,) source index of each (0 uniform, 1 edge, 2 policy)."""
        b, dev = depth.shape[0], depth.device
        weights = torch.tensor([self.mix.uniform, self.mix.edge, self.mix.policy])
        source = torch.multinomial(weights.expand(b, -1), 1, generator=self.generator).squeeze(1).to(dev)
        objects = object_pixels(depth, mask)
        grasps = self._uniform(depth, mask, objects)
        if self.mix.edge > 0:
            grasps = _select(source == 1, self._edge(depth, mask, objects), grasps)
        if self.mix.policy > 0:
            grasps = _select(source == 2, self._policy(depth, mask), grasps)
        return grasps, source

    # ------------------------------------------------------------------ sources
    def _deepest(self, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) deepest allowed grasp depth: the bin floor minus the tip clearance [m]."""
        floor = torch.where(mask, depth, torch.zeros_like(depth)).flatten(1).amax(dim=1)
        return floor - self.tip_clearance

    def _uniform_angle(self, b: int, device) -> torch.Tensor:
        return ((torch.rand(b, generator=self.generator) - 0.5) * math.pi).to(device)

    def _grasp_depth(self, surface: torch.Tensor, deepest: torch.Tensor, low: float = 0.0) -> torch.Tensor:
        offset = low + torch.rand(surface.shape, generator=self.generator).to(surface.device) * (self.depth_offset - low)
        return torch.minimum(surface + offset, deepest).clamp(min=1e-3)

    def _uniform(self, depth: torch.Tensor, mask: torch.Tensor, objects: torch.Tensor) -> ImageGrasps:
        b = depth.shape[0]
        # Images without object pixels fall back to the whole mask (their grasps will be empty: also a label).
        source = torch.where(objects.flatten(1).any(dim=1).view(-1, 1, 1), objects, mask)
        center = _random_pixels(source, self.generator).to(depth.device)
        surface = _at(depth, center)
        return self._grasps(center, self._uniform_angle(b, depth.device), self._grasp_depth(surface, self._deepest(depth, mask)))

    def _edge(self, depth: torch.Tensor, mask: torch.Tensor, objects: torch.Tensor) -> ImageGrasps:
        b = depth.shape[0]
        smooth = F.avg_pool2d(depth.unsqueeze(1), 5, stride=1, padding=2)
        gu = (smooth[..., :, 2:] - smooth[..., :, :-2]).squeeze(1) / 2  # d depth / du [m/px]
        gv = (smooth[..., 2:, :] - smooth[..., :-2, :]).squeeze(1) / 2
        gu = F.pad(gu, (1, 1, 0, 0))
        gv = F.pad(gv, (0, 0, 1, 1))
        magnitude = torch.sqrt(gu * gu + gv * gv)
        # Object outlines: depth steps of more than 3 mm per pixel next to object pixels, inside the mask.
        near_object = F.max_pool2d(objects.unsqueeze(1).float(), 5, stride=1, padding=2).squeeze(1) > 0
        edges = (magnitude > 0.003) & near_object & mask
        edge = _random_pixels(edges, self.generator).to(depth.device)
        direction = torch.stack((_at(gu, edge), _at(gv, edge)), dim=-1)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-9)  # points off the object
        edge_depth = _at(smooth.squeeze(1), edge)
        half_width_m = 0.004 + torch.rand(b, generator=self.generator).to(depth.device) * (self.width / 2 - 0.008)
        half_width_px = half_width_m * self.intrinsics.fx / edge_depth.clamp(min=0.1)
        center = edge - direction * half_width_px.unsqueeze(-1)
        h, w = depth.shape[-2:]
        center = torch.stack((center[:, 0].clamp(0, w - 1), center[:, 1].clamp(0, h - 1)), dim=-1).round()
        surface = _at(depth, center)
        angle = wrap_half_turn(torch.atan2(direction[:, 1], direction[:, 0]))
        return self._grasps(center, angle, self._grasp_depth(surface, self._deepest(depth, mask), low=0.01))

    def _policy(self, depth: torch.Tensor, mask: torch.Tensor) -> ImageGrasps:
        b = depth.shape[0]
        try:
            plan = self.planner.plan(depth, self.intrinsics, mask, k=self.policy_top_k)
        except NoValidGrasps:
            return self._uniform(depth, mask, object_pixels(depth, mask))
        valid = plan.valid.float() + 1e-6  # (B, k)
        pick = torch.multinomial(valid.cpu(), 1, generator=self.generator).squeeze(1).to(depth.device)
        rows = torch.arange(b, device=depth.device)
        g = plan.grasps
        return ImageGrasps(center=g.center[rows, pick], angle=g.angle[rows, pick], depth=g.depth[rows, pick],
                           width=g.width[rows, pick], q=g.q[rows, pick])

    def _grasps(self, center: torch.Tensor, angle: torch.Tensor, depth: torch.Tensor) -> ImageGrasps:
        b = center.shape[0]
        return ImageGrasps(center=center, angle=angle, depth=depth, width=torch.full((b,), self.width, device=center.device),
                           q=torch.zeros(b, device=center.device))


def _at(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Values of (B, H, W) images at (B, 2) pixels (u, v), rounded."""
    h, w = image.shape[-2:]
    u = pixels[:, 0].round().long().clamp(0, w - 1)
    v = pixels[:, 1].round().long().clamp(0, h - 1)
    return image[torch.arange(image.shape[0], device=image.device), v, u]


def _select(choose: torch.Tensor, chosen: ImageGrasps, other: ImageGrasps) -> ImageGrasps:
    """Per image, ``chosen``'s grasp where ``choose`` (B,) is True, else ``other``'s."""
    pick = lambda a, b: torch.where(choose.view(-1, *([1] * (a.dim() - 1))), a, b)  # noqa: E731
    return ImageGrasps(*(pick(getattr(chosen, n), getattr(other, n)) for n in ("center", "angle", "depth", "width", "q")))
