"""Configuration of the randomized bin scene: tote, table, object pool, depth camera, randomization.

Units: metres, kilograms, seconds, radians. Positions are env-local (Isaac Lab adds each env's origin);
world Z is up; the table top is at z = 0.
"""

from __future__ import annotations

import math

from isaaclab.utils import configclass

from .franka import FrankaCfg

from dexrl.config import ConfigError
from dexrl.grasp import PHOXI_S, CameraIntrinsics

__all__ = [
    "BinCfg",
    "CameraSettingsCfg",
    "ConfigError",
    "ObjectPoolCfg",
    "PhysicsSettingsCfg",
    "RandomizationCfg",
    "SceneSettingsCfg",
    "SettleCfg",
]


def _check_range(key: str, value: tuple[float, float], low: float = -math.inf, high: float = math.inf) -> None:
    if len(value) != 2 or not all(math.isfinite(v) for v in value):
        raise ConfigError(f"{key} must be a (min, max) pair of finite numbers, got {value!r}")
    if value[0] > value[1]:
        raise ConfigError(f"{key}: min {value[0]} is greater than max {value[1]}")
    if value[0] < low or value[1] > high:
        raise ConfigError(f"{key} must lie within [{low}, {high}], got {value!r}")


@configclass
class BinCfg:
    """The tote: a floor and four walls, static colliders built from cuboids (nothing downloaded)."""

    interior_size: tuple[float, float] = (0.40, 0.30)  # [m] inside length (x) and width (y)
    wall_height: float = 0.12  # [m] above the bin floor
    wall_thickness: float = 0.015  # [m]
    floor_thickness: float = 0.01  # [m]; the floor rests on the table top (z = 0)
    table_size: tuple[float, float, float] = (1.0, 0.8, 0.05)  # [m]; covers the camera's view of z <= 0

    @property
    def floor_z(self) -> float:
        """Height of the bin floor's top surface [m]."""
        return self.floor_thickness

    def check(self) -> None:
        for i, size in enumerate(self.interior_size):
            if not 0.05 <= size <= 2.0:
                raise ConfigError(f"bin.interior_size[{i}] must lie within [0.05, 2.0] m, got {size}")
        if not 0.02 <= self.wall_height <= 0.5:
            raise ConfigError(f"bin.wall_height must lie within [0.02, 0.5] m, got {self.wall_height}")


@configclass
class CameraSettingsCfg:
    """Overhead depth camera, one per env, looking straight down at the bin centre."""

    height_above_floor: float = 0.60  # [m] optical centre above the bin floor
    intrinsics: CameraIntrinsics = PHOXI_S
    near: float = 0.05  # [m] clipping range
    far: float = 2.0  # [m]

    def check(self) -> None:
        if not 0.2 <= self.height_above_floor <= 2.0:
            raise ConfigError(f"camera.height_above_floor must lie within [0.2, 2.0] m, got {self.height_above_floor}")


@configclass
class ObjectPoolCfg:
    """Which shapes fill each env's pool, and how many of them go into the bin per round."""

    object_set: str = "seen"  # "seen", "novel", or a folder of meshes
    pool_size: int = 24  # objects per env; all envs hold the same shapes (Newton clones env 0)
    rotation: int = 0  # which shapes of the set fill the pool: change it between scene builds
    count_range: tuple[int, int] = (5, 12)  # objects dropped into the bin per round, inclusive

    def check(self) -> None:
        if self.pool_size < 1:
            raise ConfigError(f"objects.pool_size must be >= 1, got {self.pool_size}")
        _check_range("objects.count_range", self.count_range, low=1, high=self.pool_size)


@configclass
class RandomizationCfg:
    """Per env and round domain randomization; every draw comes from the world's seeded generator."""

    mass_range: tuple[float, float] = (0.02, 0.4)  # [kg] per object
    static_friction_range: tuple[float, float] = (0.5, 1.0)
    dynamic_friction_range: tuple[float, float] = (0.4, 0.9)  # clipped to <= the static draw
    restitution_range: tuple[float, float] = (0.0, 0.2)
    rolling_friction: float = 0.002  # [m] rolling resistance arm; MuJoCo's default lets cylinders roll forever
    drop_height: float = 0.06  # [m] of the lowest dropped layer above the bin floor; drops from above the
    # walls (2+ m/s impacts) set objects spinning until MuJoCo's explicit gyroscopic terms blew them up
    drop_margin: float = 0.03  # [m] kept between drop positions and the walls
    depth_noise: bool = False  # Dex-Net 2.0 noise: multiplicative Gamma + correlated Gaussian
    gamma_shape: float = 1000.0
    gaussian_sigma: float = 0.005  # [m]
    gaussian_rate: float = 0.5  # fraction of pixels with an independent Gaussian sample before upsampling

    def check(self) -> None:
        _check_range("randomization.mass_range", self.mass_range, low=1e-4)
        _check_range("randomization.static_friction_range", self.static_friction_range, low=0.0, high=5.0)
        _check_range("randomization.dynamic_friction_range", self.dynamic_friction_range, low=0.0, high=5.0)
        _check_range("randomization.restitution_range", self.restitution_range, low=0.0, high=1.0)
        if self.dynamic_friction_range[0] > self.static_friction_range[1]:
            raise ConfigError(
                "randomization.dynamic_friction_range lies entirely above static_friction_range; "
                "static friction must be >= dynamic friction"
            )
        if self.gamma_shape <= 0:
            raise ConfigError(f"randomization.gamma_shape must be > 0, got {self.gamma_shape}")


@configclass
class SettleCfg:
    """A round ends when every placed object is at rest (or at the timeout), not after a fixed wait."""

    linear_speed: float = 0.02  # [m/s]
    angular_speed: float = 0.5  # [rad/s]
    quiet_time: float = 0.1  # [s] below both thresholds before an env counts as settled
    timeout: float = 4.0  # [s] of simulated time
    # [s] for heaps re-drawn between grasp attempts (faulted, emptied or spent bins), during which the whole
    # world steps; the first round keeps ``timeout``. Measured (seen set, CPU): 96 heaps whose physics did not
    # fail came to rest after 0.5-1.9 s (median 0.8 s, 95% by 1.2 s); none after that.
    redraw_timeout: float = 2.0


@configclass
class PhysicsSettingsCfg:
    """Newton / MuJoCo-Warp settings measured to hold parallel-jaw grasps (see "Physics notes" in the README)."""

    dt: float = 1.0 / 120.0  # [s]
    use_cuda_graph: bool = True  # only used on CUDA devices
    # Only used on the CPU: replay each physics step from a Warp CPU graph instead of launching its ~190
    # kernels from Python (bit-identical physics; see dexrl/sim/cpu_graph.py).
    use_cpu_graph: bool = True
    solver: str = "newton"  # MuJoCo-Warp's constraint solver: "newton" (dense Hessian, Cholesky) or "cg"
    solver_iterations: int = 100  # cap; on a GPU every world steps until the slowest one converges or hits it
    ls_iterations: int = 50
    # Constraint rows per env and contacts per env (one pool for all envs); None: sized for the object set
    # (SceneSettingsCfg.physics_buffers). An env that overflows them counts as faulted (dexrl/sim/overflow.py).
    njmax: int | None = None
    nconmax: int | None = None
    # Friction cone and frictional-to-normal impedance ratio. With pyramidal cones and impratio 1, friction was
    # soft: held objects crept down the pads and a 0.4 kg box slipped out at 20 N grip (measured); elliptic
    # cones with impratio 10 held single primitives in 16 of 16 attempts (2 of 24 before).
    cone: str = "elliptic"
    impratio: float = 10.0
    # Newton's collision pipeline: in the probes it rested boxes at their true height and had no fall-through
    # at 32k envs, where MuJoCo's own contacts (True) let boxes sink and fall.
    use_mujoco_contacts: bool = False


PHYSICS_BUFFERS = {"seen": (1000, 250), "novel": (3000, 1000)}
"""(njmax, nconmax) per env for the built-in object sets, at most 12 objects per heap. Measured peaks: seen,
816 constraint rows and ~200 contacts in a world; novel, ~3,000 rows and ~430 contacts (3 novel heaps overflowed
3 x 500 contacts). Many solver kernels run over the whole row buffer, so unused rows cost time: a CPU step at
rest took 13.1 ms with the seen set's sizes against 15.6 ms with the novel set's (docs/executor_speed.md)."""


@configclass
class SceneSettingsCfg:
    """Everything that defines the randomized bin scene."""

    num_envs: int = 4
    env_spacing: float = 2.0  # [m]
    seed: int = 0
    device: str = "cpu"
    bin: BinCfg = BinCfg()
    camera: CameraSettingsCfg = CameraSettingsCfg()
    objects: ObjectPoolCfg = ObjectPoolCfg()
    randomization: RandomizationCfg = RandomizationCfg()
    settle: SettleCfg = SettleCfg()
    physics: PhysicsSettingsCfg = PhysicsSettingsCfg()
    embodiment: str = "gantry"  # what carries the fingers: "gantry" (4-DoF, idealised) or "franka" (Panda arm)
    franka: FrankaCfg = FrankaCfg()  # the arm's placement, home pose, drives and IK (embodiment "franka")

    def physics_buffers(self) -> tuple[int, int]:
        """(njmax, nconmax): ``physics.njmax`` and ``physics.nconmax``, or where unset, those measured for the
        object set (:data:`PHYSICS_BUFFERS`; a folder of meshes gets the novel set's)."""
        njmax, nconmax = PHYSICS_BUFFERS.get(self.objects.object_set, PHYSICS_BUFFERS["novel"])
        p = self.physics
        return (njmax if p.njmax is None else p.njmax, nconmax if p.nconmax is None else p.nconmax)

    def check(self) -> None:
        if self.num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {self.num_envs}")
        for name in ("njmax", "nconmax"):
            value = getattr(self.physics, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"physics.{name} must be a positive integer, got {value!r}")
        if self.embodiment not in ("gantry", "franka"):
            raise ConfigError(f"embodiment must be 'gantry' or 'franka', got {self.embodiment!r}")
        for part in (self.bin, self.camera, self.objects, self.randomization):
            part.check()
