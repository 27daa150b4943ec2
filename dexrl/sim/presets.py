"""Physics, camera-renderer and gripper presets of the bin world: ``newton_mjwarp`` (the default, kit-less
Newton + MuJoCo-Warp, measured) and ``isaacsim_physx`` (PhysX through Isaac Sim, for Isaac Sim users).

The presets are Isaac Lab :class:`~isaaclab_tasks.utils.PresetCfg` nodes: put them in an env cfg and Isaac
Lab's resolver (``isaaclab_tasks.utils.hydra``) replaces each node with one alternative, chosen on the
command line with ``physics=isaacsim_physx`` (typed: must land on a physics cfg), ``renderer=isaacsim_rtx``
or ``presets=isaacsim_physx``; without a selection the ``default`` field (Newton) is used. A selected name
applies to every preset node that declares it, so ``physics=isaacsim_physx`` also picks the PhysX variant of
the gripper.

The ``isaacsim_physx`` alternatives construct, validate and resolve, but have not been run: PhysX needs
Isaac Sim (Kit). BinWorld itself still reads Newton's model (see ``docs/isaacsim.md``).
"""

from __future__ import annotations

from dataclasses import MISSING
from pathlib import Path

from isaaclab.actuators import ImplicitActuatorCfg
from isaaclab.assets import ArticulationCfg
from isaaclab.utils import configclass
from isaaclab_newton.physics import NewtonCfg
from isaaclab_newton.renderers import NewtonWarpRendererCfg
from isaaclab_physx.physics import PhysxCfg
from isaaclab_physx.renderers import IsaacRtxRendererCfg
from isaaclab_tasks.utils import PresetCfg
from isaaclab_tasks.utils.presets import MultiBackendRendererCfg

from .bin_world import physics_cfg
from .franka import FrankaCfg, franka_articulation_cfg
from .gripper import GripperCfg, gantry_articulation_cfg
from .scene_cfg import SceneSettingsCfg

__all__ = [
    "GRIPPER_COLLIDERS",
    "PHYSX_POSITION_ITERATIONS",
    "PHYSX_VELOCITY_ITERATIONS",
    "STATIC_COLLIDERS",
    "BinPhysicsCfg",
    "GripperPresetCfg",
    "camera_renderer_presets",
    "gripper_presets",
    "physics_presets",
    "physx_gpu_buffers",
    "franka_presets",
    "physx_gripper_cfg",
    "physx_variant",
    "physx_physics_cfg",
]

PHYSX_POSITION_ITERATIONS = 16
"""TGS position iterations for every actor of the PhysX scene. Not derived from ``solver_iterations``: that is
MuJoCo-Warp's cap on Newton-method iterations (which stop early at tolerance), a different algorithm. Isaac
Lab's own lift task pairs MJWarp ``iterations=100`` with 16 position iterations on the grasped objects."""

PHYSX_VELOCITY_ITERATIONS = 0
"""TGS velocity iterations (PhysxCfg's default; Isaac Lab's lift task uses 0 on grasped objects too)."""

STATIC_COLLIDERS = 6
"""Static colliders per env in :func:`~dexrl.sim.bin_world.build_scene_cfg`: table, bin floor, 4 walls."""

GRIPPER_COLLIDERS = 3
"""Collision shapes of the gantry gripper: the palm box and two pads."""

CONTACT_MARGIN = 2
"""Head-room on the contact buffer: ``nconmax`` was measured with Newton's collision pipeline, PhysX builds
its own contact manifolds."""


def _pow2_at_least(value: int, floor: int) -> int:
    """The smallest power of two >= ``value``, and never below ``floor`` (PhysxCfg's default)."""
    value = max(int(value), 1)
    return max(floor, 1 << (value - 1).bit_length())


def physx_gpu_buffers(settings: SceneSettingsCfg) -> dict[str, int]:
    """GPU buffer capacities of the PhysX scene for ``num_envs`` bins of ``pool_size`` objects (PhysX's GPU
    pipeline cannot grow them at run time). Estimates, never below PhysxCfg's defaults:

    - contacts: ``num_envs x nconmax x CONTACT_MARGIN``; ``nconmax`` is the per-env contact budget measured
      for the object set (:meth:`SceneSettingsCfg.physics_buffers`).
    - patches and found/lost pairs: ``num_envs x`` the body pairs that can touch in one env (pool objects with
      each other, with the static colliders and with the gripper). A new round teleports the whole pool, so
      every pair of an env may be found or lost in the same step. Objects made of several convex pieces have
      more shapes than bodies: PhysX logs which buffer overflowed, raise it then.
    """
    n, pool = settings.num_envs, settings.objects.pool_size
    pairs = pool * (pool - 1) // 2 + pool * (STATIC_COLLIDERS + GRIPPER_COLLIDERS)
    defaults = PhysxCfg()
    return {
        "gpu_max_rigid_contact_count": _pow2_at_least(
            n * settings.physics_buffers()[1] * CONTACT_MARGIN, defaults.gpu_max_rigid_contact_count
        ),
        "gpu_max_rigid_patch_count": _pow2_at_least(n * pairs, defaults.gpu_max_rigid_patch_count),
        "gpu_found_lost_pairs_capacity": _pow2_at_least(n * pairs, defaults.gpu_found_lost_pairs_capacity),
    }


def physx_physics_cfg(
    settings: SceneSettingsCfg,
    *,
    position_iterations: int = PHYSX_POSITION_ITERATIONS,
    velocity_iterations: int = PHYSX_VELOCITY_ITERATIONS,
) -> PhysxCfg:
    """PhysX settings for parallel-jaw grasping in clutter (the ``isaacsim_physx`` physics preset).

    From ``settings``: the GPU buffers (``num_envs``, ``pool_size``, ``nconmax``; see
    :func:`physx_gpu_buffers`). ``dt`` and the device live in the SimulationCfg, shared by both backends.
    MuJoCo-Warp's ``cone``/``impratio`` (soft-contact friction) and ``ls_iterations``/``njmax`` have no
    PhysX counterpart.

    Args:
        settings: the scene settings (validated here).
        position_iterations: TGS position iterations, used as both the minimum and the maximum, so every actor
            of the scene (objects, gripper) gets exactly this count whatever its USD authors.
        velocity_iterations: TGS velocity iterations, likewise.
    """
    settings.check()
    if not 1 <= position_iterations <= 255:
        raise ValueError(f"position_iterations must lie within [1, 255], got {position_iterations}")
    if not 0 <= velocity_iterations <= 255:
        raise ValueError(f"velocity_iterations must lie within [0, 255], got {velocity_iterations}")
    return PhysxCfg(
        solver_type=1,  # TGS (PhysxCfg's default; what the iteration counts above refer to)
        min_position_iteration_count=position_iterations,
        max_position_iteration_count=position_iterations,
        min_velocity_iteration_count=velocity_iterations,
        max_velocity_iteration_count=velocity_iterations,
        # PhysxCfg's docstring: the default articulation solver order "may not be ideal for gripping scenarios";
        # this solves dynamic contacts last (available from Isaac Sim 5.1).
        solve_articulation_contact_last=True,
        # Contact points closer than this share one friction anchor; the default (0.025 m) is wider than a pad
        # (0.02 m) and than many pool objects. 0.00625 m is what Isaac Lab's cabinet (drawer-handle grasp) and
        # Factory tasks use.
        friction_correlation_distance=0.00625,
        # PhysX's default: restitution acts only on impacts faster than 0.5 m/s (the drops into the bin), not on
        # the resting heap's jitter. MuJoCo-Warp ignores restitution entirely.
        bounce_threshold_velocity=0.5,
        # PhysxCfg recommends stabilization only for dt > 1/30 s and warns that it skews contact-force reports,
        # which the executor's descent stop reads. dt here is 1/120 s.
        enable_stabilization=False,
        # CCD is not supported with GPU dynamics (PhysxManager turns it off with a warning); the bin floor's
        # collider is deep instead (bin_world.FLOOR_EXTRA_DEPTH).
        enable_ccd=False,
        **physx_gpu_buffers(settings),
    )


@configclass
class BinPhysicsCfg(PresetCfg):
    """Physics presets of the bin world, for ``SimulationCfg.physics``: ``newton_mjwarp`` (default) and
    ``isaacsim_physx``. Build it with :func:`physics_presets`; the field defaults are for the default
    :class:`SceneSettingsCfg`."""

    default: NewtonCfg = physics_cfg(SceneSettingsCfg())
    newton_mjwarp: NewtonCfg = physics_cfg(SceneSettingsCfg())
    isaacsim_physx: PhysxCfg = physx_physics_cfg(SceneSettingsCfg())


def physics_presets(settings: SceneSettingsCfg, **physx_options) -> BinPhysicsCfg:
    """The physics presets of ``settings``: :func:`~dexrl.sim.bin_world.physics_cfg` (Newton, the default) and
    :func:`physx_physics_cfg` (``physx_options`` go to it)."""
    return BinPhysicsCfg(
        default=physics_cfg(settings),
        newton_mjwarp=physics_cfg(settings),
        isaacsim_physx=physx_physics_cfg(settings, **physx_options),
    )


def camera_renderer_presets(settings: SceneSettingsCfg) -> MultiBackendRendererCfg:
    """Renderer presets of the depth camera (``CameraCfg.renderer_cfg``), after Isaac Lab's own
    :class:`~isaaclab_tasks.utils.presets.MultiBackendRendererCfg`: the Newton Warp ray tracer by default
    whatever the physics (as in :func:`~dexrl.sim.bin_world.build_scene_cfg` and Isaac Lab's camera tasks),
    ``renderer=isaacsim_rtx`` for Isaac Sim's RTX, and Isaac Lab's ``rtx``/``ovrtx``.

    The RTX alternative writes 0 where a ray hits nothing, like Newton (the bin world also zeroes inf/NaN).
    """
    use_cuda_graph = settings.physics.use_cuda_graph
    return MultiBackendRendererCfg(
        default=NewtonWarpRendererCfg(use_cuda_graph=use_cuda_graph),
        newton_renderer=NewtonWarpRendererCfg(use_cuda_graph=use_cuda_graph),
        isaacsim_rtx=IsaacRtxRendererCfg(depth_clipping_behavior="zero"),
    )


def physx_variant(articulation: ArticulationCfg) -> ArticulationCfg:
    """The PhysX variant of a Newton articulation cfg of the fingers' mount (gantry or Franka): the same USD,
    joints, drive gains and effort limits, with two changes.

    - ``activate_contact_sensors``: PhysX's contact sensor only reports bodies that carry PhysX's contact-report
      API, which this flag authors; without it the executor's ``gripper_contacts`` sensor (palm and pads)
      fails to initialize under PhysX. Newton's sensor does not need it.
    - No finger armature (0 instead of ``GripperCfg.finger_armature``): the armature is there to keep the light
      pads from sinking into MuJoCo's mass-scaled soft contacts, a reason that does not carry over to PhysX's
      contacts, and it multiplies the closing finger's inertia by 11 (0.05 kg + 0.5 kg). Isaac Lab's preset
      example treats armature as Newton-only the same way (``preset(default=0.0, newton_mjwarp=0.01)``).
      Not measured under PhysX: set ``actuators["fingers"].armature`` to restore it.

    Solver iterations come from the scene (:func:`physx_physics_cfg` sets min = max), so none are authored here.
    The Franka arm's gravity compensation reaches PhysX as ``physxRigidBody:disableGravity`` in its USD.
    """
    physx = articulation.copy()
    physx.spawn.activate_contact_sensors = True
    fingers: ImplicitActuatorCfg = physx.actuators["fingers"]
    fingers.armature = 0.0
    return physx


def physx_gripper_cfg(
    cfg: GripperCfg, usd_path: str | Path, prim_path: str = "{ENV_REGEX_NS}/Gripper", home=(0.38, 0.0)
) -> ArticulationCfg:
    """The gantry gripper for PhysX: :func:`physx_variant` of :func:`~dexrl.sim.gripper.gantry_articulation_cfg`."""
    return physx_variant(gantry_articulation_cfg(cfg, usd_path, prim_path=prim_path, home=home))


@configclass
class GripperPresetCfg(PresetCfg):
    """Presets of the scene's ``gripper`` entity (the gantry or the Franka arm with the fingers):
    ``newton_mjwarp`` (default) and ``isaacsim_physx``. Build it with :func:`gripper_presets` or
    :func:`franka_presets`."""

    default: ArticulationCfg = MISSING
    newton_mjwarp: ArticulationCfg = MISSING
    isaacsim_physx: ArticulationCfg = MISSING


def _presets_of(newton: ArticulationCfg) -> GripperPresetCfg:
    return GripperPresetCfg(default=newton, newton_mjwarp=newton.copy(), isaacsim_physx=physx_variant(newton))


def gripper_presets(
    cfg: GripperCfg, usd_path: str | Path, prim_path: str = "{ENV_REGEX_NS}/Gripper", home=(0.38, 0.0)
) -> GripperPresetCfg:
    """The gantry gripper's presets: :func:`~dexrl.sim.gripper.gantry_articulation_cfg` (Newton, the default) and
    its :func:`physx_variant`, over the same USD file (:func:`~dexrl.sim.gripper.write_gantry_usd`)."""
    return _presets_of(gantry_articulation_cfg(cfg, usd_path, prim_path=prim_path, home=home))


def franka_presets(
    gripper: GripperCfg, franka: FrankaCfg, usd_path: str | Path, prim_path: str = "{ENV_REGEX_NS}/Gripper"
) -> GripperPresetCfg:
    """The Franka embodiment's presets: :func:`~dexrl.sim.franka.franka_articulation_cfg` (Newton, the default)
    and its :func:`physx_variant`, over the same USD file (:func:`~dexrl.sim.franka.write_franka_usd`)."""
    return _presets_of(franka_articulation_cfg(gripper, franka, usd_path, prim_path=prim_path))
