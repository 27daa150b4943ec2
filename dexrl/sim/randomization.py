"""Per env and round draws of the bin scene: which objects, their masses and contact materials, the drop
poses, and the Dex-Net 2.0 depth noise. Every draw takes the world's seeded ``torch.Generator`` (CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .scene_cfg import RandomizationCfg, SceneSettingsCfg

if TYPE_CHECKING:
    from .bin_world import BinWorld, PoolObject

LAYER_GAP = 0.01
"""Vertical clearance between layers of dropped objects [m]."""

__all__ = ["RoundDraw", "draw_round", "drop_poses", "random_quaternions", "depth_noise", "write_contact_materials"]


@dataclass
class RoundDraw:
    """Random values of one round for n envs and P pool objects (CPU tensors)."""

    placed: torch.Tensor  # (n, P) bool
    mass: torch.Tensor  # (n, P) [kg]
    static_friction: torch.Tensor  # (n, P)
    dynamic_friction: torch.Tensor  # (n, P), <= static_friction
    restitution: torch.Tensor  # (n, P)


def _uniform(bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def draw_round(settings: SceneSettingsCfg, pool: list["PoolObject"], n: int, generator: torch.Generator) -> RoundDraw:
    """Draw the objects (K per env, uniform in ``count_range``) and their physical properties."""
    rnd, num_pool = settings.randomization, len(pool)
    low, high = settings.objects.count_range
    counts = torch.randint(low, high + 1, (n,), generator=generator)
    # A random permutation per env; its first `count` entries are the placed objects.
    ranks = torch.rand((n, num_pool), generator=generator).argsort(dim=1).argsort(dim=1)
    placed = ranks < counts.unsqueeze(1)
    static = _uniform(rnd.static_friction_range, (n, num_pool), generator)
    dynamic = torch.minimum(_uniform(rnd.dynamic_friction_range, (n, num_pool), generator), static)
    return RoundDraw(
        placed=placed,
        mass=_uniform(rnd.mass_range, (n, num_pool), generator),
        static_friction=static,
        dynamic_friction=dynamic,
        restitution=_uniform(rnd.restitution_range, (n, num_pool), generator),
    )


def random_quaternions(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniformly distributed rotations on SO(3) as (x, y, z, w) quaternions, shape (*shape, 4)."""
    q = torch.randn((*shape, 4), generator=generator)
    q = q / q.norm(dim=-1, keepdim=True)
    return q * torch.where(q[..., 3:] < 0, -1.0, 1.0)


def drop_poses(
    settings: SceneSettingsCfg, pool: list["PoolObject"], placed: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Env-local drop poses (n, P, 7) for the placed objects: spread over a grid of cells above the bin,
    one object per cell and layer, layers stacked by the largest object they hold, random orientation."""
    n, num_pool = placed.shape
    length, width = settings.bin.interior_size
    margin = settings.randomization.drop_margin
    radius = torch.tensor([item.radius for item in pool])
    cell = 2 * float(radius.max()) + 0.005  # [m] no two objects of a layer can touch, whatever their rotation
    columns = max(1, int((length - 2 * margin) // cell))
    rows = max(1, int((width - 2 * margin) // cell))
    cells_per_layer = columns * rows
    # Order of the placed objects in each env decides their cell and layer.
    order = torch.cumsum(placed.long(), dim=1) - 1
    cell = order % cells_per_layer
    layer = order // cells_per_layer
    num_layers = int(layer.max().item()) + 1
    layer_height = torch.zeros(n, num_layers)
    for i in range(num_layers):  # a handful of layers, not envs
        in_layer = placed & (layer == i)
        layer_height[:, i] = torch.where(in_layer, 2 * radius, torch.zeros(())).amax(dim=1)
    layer_base = torch.cumsum(layer_height, dim=1) - layer_height + LAYER_GAP * torch.arange(num_layers)
    cell_w, cell_h = (length - 2 * margin) / columns, (width - 2 * margin) / rows
    cx = -length / 2 + margin + (cell % columns + 0.5) * cell_w
    cy = -width / 2 + margin + (cell // columns + 0.5) * cell_h
    # Jitter inside the cell, kept clear of the walls by the object's radius where the cell allows it.
    slack_x = (cell_w / 2 - radius).clamp(min=0.0)
    slack_y = (cell_h / 2 - radius).clamp(min=0.0)
    jitter = torch.rand((n, num_pool, 2), generator=generator) * 2 - 1
    top = settings.bin.floor_z + settings.randomization.drop_height
    poses = torch.zeros(n, num_pool, 7)
    poses[..., 0] = cx + jitter[..., 0] * slack_x
    poses[..., 1] = cy + jitter[..., 1] * slack_y
    poses[..., 2] = top + torch.gather(layer_base, 1, layer.clamp(min=0)) + radius
    poses[..., 3:] = random_quaternions((n, num_pool), generator)
    return poses


def write_contact_materials(world: "BinWorld", env_ids: torch.Tensor, draw: RoundDraw) -> None:
    """Write friction, rolling friction and restitution of every collision shape of the pool objects of
    ``env_ids``, through the (env, slot) of each shape's body (objects may have several convex pieces).

    Newton has one friction coefficient per shape: it gets the *dynamic* draw (the conservative value for
    holding a grasp). Restitution is written to Newton's shape material; MuJoCo-Warp ignores it (its
    contacts are soft and inelastic); the PhysX preset uses it.
    """
    import warp as wp  # noqa: PLC0415
    from newton import ModelFlags  # noqa: PLC0415

    manager = world.sim.physics_manager
    model = manager.get_model()
    shape_ids, shape_env, shape_slot = (t.to(world.device) for t in world.pool_shapes)
    row_of_env = torch.full((world.num_envs,), -1, dtype=torch.long, device=world.device)
    row_of_env[env_ids.long()] = torch.arange(len(env_ids), device=world.device)
    rows = row_of_env[shape_env]
    chosen = rows >= 0
    ids, rows, slots = shape_ids[chosen], rows[chosen], shape_slot[chosen]
    mu = wp.to_torch(model.shape_material_mu)
    mu[ids.to(mu.device)] = draw.dynamic_friction.to(mu.device)[rows, slots].to(mu.dtype)
    restitution = wp.to_torch(model.shape_material_restitution)
    restitution[ids.to(mu.device)] = draw.restitution.to(mu.device)[rows, slots].to(restitution.dtype)
    rolling = wp.to_torch(model.shape_material_mu_rolling)
    rolling[ids.to(mu.device)] = world.settings.randomization.rolling_friction
    manager.add_model_change(ModelFlags.SHAPE_PROPERTIES)


def depth_noise(depth: torch.Tensor, cfg: RandomizationCfg, generator: torch.Generator) -> torch.Tensor:
    """Dex-Net 2.0 depth noise: a multiplicative Gamma(shape k, scale 1/k) factor per image and additive
    Gaussian noise (sigma) sampled on a coarse grid and upsampled bicubically, so it is spatially correlated.
    Missing pixels (0) stay missing. ``depth``: (N, H, W) [m]."""
    n, h, w = depth.shape
    scale = _gamma_sample(cfg.gamma_shape, n, generator)
    coarse_h, coarse_w = max(1, int(h * cfg.gaussian_rate)), max(1, int(w * cfg.gaussian_rate))
    coarse = torch.randn((n, 1, coarse_h, coarse_w), generator=generator) * cfg.gaussian_sigma
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[:, 0]
    noisy = depth * scale.view(n, 1, 1).to(depth) + field.to(depth)
    return torch.where(depth > 0, noisy, depth)


def _gamma_sample(shape: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Gamma(shape, scale=1/shape) samples from a seeded generator (Marsaglia-Tsang, shape >= 1)."""
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n)
    filled = 0
    while filled < n:
        x = torch.randn(2 * n, generator=generator)
        u = torch.rand(2 * n, generator=generator)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp(min=1e-12)) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp(min=1e-12)))
        accepted = (d * v)[ok][: n - filled]
        out[filled : filled + len(accepted)] = accepted
        filled += len(accepted)
    return out / shape
