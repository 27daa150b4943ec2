"""Small pools of primitive shapes for simulator tests (the object sets have their own tests)."""

from __future__ import annotations

import isaaclab.sim as sim_utils

from dexrl.sim.bin_world import PoolObject
from dexrl.sim.contact_props import with_condim


def _rigid(spawn, mass: float = 0.1):
    spawn.rigid_props = sim_utils.UsdPhysicsRigidBodyCfg()
    spawn.collision_props = sim_utils.UsdPhysicsCollisionCfg()
    spawn.mass_props = sim_utils.MassCfg(mass=mass)
    return spawn


def box(size: tuple[float, float, float], name: str = "box", condim: int = 6) -> PoolObject:
    return PoolObject(name, with_condim(_rigid(sim_utils.CuboidCfg(size=size)), condim), size)


def mixed_pool(count: int) -> list[PoolObject]:
    """Boxes, spheres, cylinders and capsules of 3-7 cm, cycling."""
    makers = [
        lambda i: box((0.03 + 0.005 * (i % 3), 0.05, 0.03), f"box{i}"),
        lambda i: PoolObject(f"sphere{i}", with_condim(_rigid(sim_utils.SphereCfg(radius=0.02))), (0.04, 0.04, 0.04)),
        lambda i: PoolObject(
            f"cylinder{i}", with_condim(_rigid(sim_utils.CylinderCfg(radius=0.02, height=0.06))), (0.04, 0.04, 0.06)
        ),
        lambda i: PoolObject(
            f"capsule{i}", with_condim(_rigid(sim_utils.CapsuleCfg(radius=0.015, height=0.04))), (0.03, 0.03, 0.07)
        ),
    ]
    return [makers[i % len(makers)](i) for i in range(count)]
