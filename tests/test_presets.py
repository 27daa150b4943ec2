"""The physics / renderer / gripper presets (``newton_mjwarp`` default, ``isaacsim_physx``): they construct,
validate, follow the settings, and Isaac Lab's own resolver picks them. Config only: PhysX cannot run here."""

import itertools

import gymnasium as gym
import isaaclab.sim as sim_utils
import pytest
from isaaclab.app import validate_launch
from isaaclab.scene import InteractiveSceneCfg
from isaaclab.sensors import ContactSensorCfg
from isaaclab.utils import configclass, validate
from isaaclab_newton.physics import NewtonCfg
from isaaclab_newton.renderers import NewtonWarpRendererCfg
from isaaclab_physx.physics import PhysxCfg
from isaaclab_physx.renderers import IsaacRtxRendererCfg
from isaaclab_tasks.utils import PresetCfg, resolve_presets, resolve_task_config
from isaaclab_tasks.utils.preset_target import PresetTarget
from primitive_pools import box

from dexrl.config import ConfigError
from dexrl.sim.bin_world import build_scene_cfg, physics_cfg
from dexrl.sim.franka import FrankaCfg
from dexrl.sim.gripper import GripperCfg
from dexrl.sim.presets import (
    BinPhysicsCfg,
    camera_renderer_presets,
    franka_presets,
    gripper_presets,
    physics_presets,
    physx_gpu_buffers,
    physx_gripper_cfg,
    physx_physics_cfg,
)
from dexrl.sim.scene_cfg import SceneSettingsCfg

GPU_FIELDS = ("gpu_max_rigid_contact_count", "gpu_max_rigid_patch_count", "gpu_found_lost_pairs_capacity")
USD = "/nonexistent/gantry_gripper.usda"  # cfgs only store the path


def _settings(**changes) -> SceneSettingsCfg:
    settings = SceneSettingsCfg(device="cpu")
    for key, value in changes.items():
        target = settings
        *parts, leaf = key.split("__")
        for part in parts:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return settings


# ---------------------------------------------------------------------------------------------- PhysX cfg
def test_physx_cfg_is_a_valid_physics_cfg_with_grasping_settings():
    cfg = physx_physics_cfg(_settings())
    assert isinstance(cfg, PhysxCfg)
    assert PresetTarget.PHYSICS.matches(cfg)
    assert validate(cfg) == []
    assert cfg.solver_type == 1
    assert cfg.solve_articulation_contact_last
    pad_width = GripperCfg().pad_size[0]
    assert cfg.friction_correlation_distance < pad_width < PhysxCfg().friction_correlation_distance
    assert not cfg.enable_stabilization and not cfg.enable_ccd
    # one iteration count for every actor: min == max
    assert cfg.min_position_iteration_count == cfg.max_position_iteration_count == 16
    assert cfg.min_velocity_iteration_count == cfg.max_velocity_iteration_count == 0


def test_iteration_counts_are_an_explicit_physx_choice():
    cfg = physx_physics_cfg(_settings(), position_iterations=40, velocity_iterations=2)
    assert (cfg.min_position_iteration_count, cfg.max_position_iteration_count) == (40, 40)
    assert (cfg.min_velocity_iteration_count, cfg.max_velocity_iteration_count) == (2, 2)
    # MuJoCo-Warp's Newton-method iteration cap is another algorithm's knob: it does not leak into PhysX
    assert physx_physics_cfg(_settings(physics__solver_iterations=7)) == physx_physics_cfg(_settings())
    for bad in ({"position_iterations": 0}, {"position_iterations": 256}, {"velocity_iterations": -1}):
        with pytest.raises(ValueError, match="iterations"):
            physx_physics_cfg(_settings(), **bad)


def test_invalid_settings_are_rejected():
    with pytest.raises(ConfigError, match="num_envs"):
        physx_physics_cfg(_settings(num_envs=0))


def test_gpu_buffers_keep_physx_defaults_for_a_few_envs():
    defaults, cfg = PhysxCfg(), physx_physics_cfg(_settings(num_envs=4))
    assert all(getattr(cfg, name) == getattr(defaults, name) for name in GPU_FIELDS)


@pytest.mark.parametrize("num_envs", [1, 4096, 32768])
@pytest.mark.parametrize("pool_size", [8, 24, 48])
def test_gpu_buffers_hold_every_body_pair_and_the_contact_budget(num_envs, pool_size):
    settings = _settings(num_envs=num_envs, objects__pool_size=pool_size, objects__count_range=(1, 5))
    cfg, defaults = physx_physics_cfg(settings), PhysxCfg()
    # every pool object with every other, the 6 static colliders (table, floor, 4 walls) and 3 gripper shapes
    pairs = pool_size * (pool_size - 1) // 2 + pool_size * (6 + 3)
    assert cfg.gpu_max_rigid_patch_count >= num_envs * pairs
    assert cfg.gpu_found_lost_pairs_capacity >= num_envs * pairs
    assert cfg.gpu_max_rigid_contact_count >= 2 * num_envs * settings.physics_buffers()[1]
    for name in GPU_FIELDS:
        value = getattr(cfg, name)
        assert value >= getattr(defaults, name)
        assert value == getattr(defaults, name) or value & (value - 1) == 0, f"{name} = {value}: not a power of two"
        assert value <= 4 * max(getattr(defaults, name), 2 * num_envs * max(pairs, settings.physics_buffers()[1]))


def test_physics_buffers_are_sized_for_the_object_set_unless_set():
    assert _settings().physics_buffers() == (1000, 250)
    assert _settings(objects__object_set="novel").physics_buffers() == (3000, 1000)
    assert _settings(objects__object_set="my_meshes/").physics_buffers() == (3000, 1000)  # unknown: the larger
    assert _settings(physics__njmax=1500).physics_buffers() == (1500, 250)
    assert physics_cfg(_settings(objects__object_set="novel")).solver_cfg.njmax == 3000
    for bad in (0, -5, 2.5, "many", True):
        with pytest.raises(ConfigError, match="physics.nconmax must be a positive integer"):
            _settings(physics__nconmax=bad).check()


def test_gpu_buffers_follow_envs_pool_and_contact_budget():
    base = physx_gpu_buffers(_settings(num_envs=4096))
    more_envs = physx_gpu_buffers(_settings(num_envs=8 * 4096))
    bigger_pool = physx_gpu_buffers(_settings(num_envs=4096, objects__pool_size=96))
    more_contacts = physx_gpu_buffers(_settings(num_envs=4096, physics__nconmax=4000))
    assert all(more_envs[name] > base[name] for name in GPU_FIELDS)
    assert bigger_pool["gpu_max_rigid_patch_count"] > base["gpu_max_rigid_patch_count"]
    assert bigger_pool["gpu_found_lost_pairs_capacity"] > base["gpu_found_lost_pairs_capacity"]
    assert more_contacts["gpu_max_rigid_contact_count"] > base["gpu_max_rigid_contact_count"]
    assert physx_physics_cfg(_settings(num_envs=8 * 4096)).gpu_max_rigid_patch_count == more_envs[
        "gpu_max_rigid_patch_count"
    ]


# ------------------------------------------------------------------------------------------ preset nodes
def test_physics_presets_hold_both_backends_built_from_the_settings():
    settings = _settings(num_envs=4096, physics__solver_iterations=37, physics__nconmax=900)
    presets = physics_presets(settings, position_iterations=24)
    assert isinstance(presets, PresetCfg) and isinstance(presets, BinPhysicsCfg)
    assert validate(presets) == []
    for newton in (presets.default, presets.newton_mjwarp):
        assert isinstance(newton, NewtonCfg)
        assert newton.solver_cfg.iterations == 37 and newton.solver_cfg.nconmax == 900
        assert newton.to_dict() == physics_cfg(settings).to_dict()
    physx = presets.isaacsim_physx
    assert isinstance(physx, PhysxCfg)
    assert physx.to_dict() == physx_physics_cfg(settings, position_iterations=24).to_dict()
    assert physx.gpu_max_rigid_contact_count >= 2 * 4096 * 900
    # the class defaults are the default settings'
    assert BinPhysicsCfg().isaacsim_physx.to_dict() == physx_physics_cfg(SceneSettingsCfg()).to_dict()


def test_camera_renderer_presets():
    settings = _settings(physics__use_cuda_graph=False)
    presets = camera_renderer_presets(settings)
    assert isinstance(presets, PresetCfg)
    assert validate(presets) == []
    for newton in (presets.default, presets.newton_renderer):
        assert isinstance(newton, NewtonWarpRendererCfg) and newton.use_cuda_graph is False
    assert isinstance(presets.isaacsim_rtx, IsaacRtxRendererCfg)
    assert presets.isaacsim_rtx.depth_clipping_behavior == "zero"  # misses read 0, as with Newton


def test_physx_gripper_differs_from_newton_only_in_contact_reports_and_armature():
    gripper = GripperCfg(finger_armature=0.3, finger_force=15.0)
    presets = gripper_presets(gripper, USD, home=(0.2, -0.1))
    assert validate(presets) == []
    newton, physx = presets.default, presets.isaacsim_physx
    assert presets.newton_mjwarp.to_dict() == newton.to_dict()
    assert physx.to_dict() == physx_gripper_cfg(gripper, USD, home=(0.2, -0.1)).to_dict()
    assert newton.spawn.activate_contact_sensors is False and physx.spawn.activate_contact_sensors is True
    assert newton.actuators["fingers"].armature == 0.3 and physx.actuators["fingers"].armature == 0.0
    assert physx.actuators["fingers"].joint_effort_limit == 15.0
    assert physx.init_state.joint_pos["joint_x"] == 0.2
    newton_dict, physx_dict = newton.to_dict(), physx.to_dict()
    physx_dict["spawn"]["activate_contact_sensors"] = False
    physx_dict["actuators"]["fingers"]["armature"] = 0.3
    assert physx_dict == newton_dict


def test_franka_presets_differ_like_the_gantrys_and_keep_the_arm_drives():
    franka = FrankaCfg(stiffness=1500.0, wrist_effort=10.0)
    presets = franka_presets(GripperCfg(finger_armature=0.3), franka, USD)
    assert validate(presets) == []
    newton, physx = presets.default, presets.isaacsim_physx
    assert presets.newton_mjwarp.to_dict() == newton.to_dict()
    assert newton.spawn.activate_contact_sensors is False and physx.spawn.activate_contact_sensors is True
    assert newton.actuators["fingers"].armature == 0.3 and physx.actuators["fingers"].armature == 0.0
    for arm in (newton.actuators["arm"], physx.actuators["arm"]):
        assert arm.stiffness == 1500.0 and arm.joint_effort_limit["panda_joint[5-7]"] == 10.0
    assert physx.init_state.pos == franka.base_position
    assert physx.init_state.joint_pos["panda_joint4"] == franka.home[3]


# ------------------------------------------------------------------------ Isaac Lab's preset resolution
@configclass
class _BinEnvCfg:
    """The two parts of an env cfg the presets live in (a DirectRLEnvCfg has both)."""

    sim: sim_utils.SimulationCfg = sim_utils.SimulationCfg()
    scene: InteractiveSceneCfg = InteractiveSceneCfg(num_envs=1, env_spacing=1.0)


SETTINGS = {
    "num_envs": 16384,
    "objects__pool_size": 2,
    "objects__count_range": (1, 2),
    "physics__solver_iterations": 42,
}


def _env_cfg() -> _BinEnvCfg:
    settings = _settings(**SETTINGS)
    extras = {
        "gripper": gripper_presets(GripperCfg(), USD),
        "gripper_contacts": ContactSensorCfg(prim_path="{ENV_REGEX_NS}/Gripper/(palm|finger_l|finger_r)"),
    }
    scene = build_scene_cfg(settings, [box((0.04, 0.04, 0.04), "a"), box((0.03, 0.05, 0.02), "b")], extras)
    scene.camera.renderer_cfg = camera_renderer_presets(settings)
    return _BinEnvCfg(
        sim=sim_utils.SimulationCfg(dt=settings.physics.dt, device="cpu", physics=physics_presets(settings)),
        scene=scene,
    )


@pytest.fixture(scope="module")
def task():
    """A gym task whose env cfg holds the presets, as a registered Isaac Lab task would."""
    name = "DexRL-PresetsTest"
    gym.register(id=name, entry_point="dummy:Env", kwargs={"env_cfg_entry_point": _env_cfg})
    yield name
    del gym.registry[name]


def _resolve(task, *tokens):
    """The command-line path: ``physics=``/``renderer=``/``presets=`` tokens through Isaac Lab's resolver."""
    env_cfg, _ = resolve_task_config(task, None, overrides=list(tokens))
    return env_cfg


def _backend(env_cfg) -> tuple[type, bool, float, type]:
    """(physics cfg type, gripper reports contacts, finger armature, camera renderer cfg type)."""
    gripper = env_cfg.scene.gripper
    return (
        type(env_cfg.sim.physics),
        gripper.spawn.activate_contact_sensors,
        gripper.actuators["fingers"].armature,
        type(env_cfg.scene.camera.renderer_cfg),
    )


NEWTON = (NewtonCfg, False, GripperCfg().finger_armature, NewtonWarpRendererCfg)
PHYSX = (PhysxCfg, True, 0.0, NewtonWarpRendererCfg)


def test_resolver_defaults_to_newton(task):
    env_cfg = _resolve(task)
    assert _backend(env_cfg) == NEWTON
    assert env_cfg.sim.physics.solver_cfg.iterations == 42


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (("physics=newton_mjwarp",), NEWTON),
        (("physics=isaacsim_physx",), PHYSX),
        (("presets=isaacsim_physx",), PHYSX),
        (("physics=isaacsim_physx", "renderer=isaacsim_rtx"), PHYSX[:3] + (IsaacRtxRendererCfg,)),
        (("renderer=isaacsim_rtx",), NEWTON[:3] + (IsaacRtxRendererCfg,)),
        (("env.sim.physics=isaacsim_physx",), (PhysxCfg, False, GripperCfg().finger_armature, NewtonWarpRendererCfg)),
    ],
)
def test_resolver_picks_the_selected_presets(task, tokens, expected):
    env_cfg = _resolve(task, *tokens)
    assert _backend(env_cfg) == expected
    assert validate(env_cfg) == []
    if expected[0] is PhysxCfg:  # the preset built from this env's settings, not the class default
        assert env_cfg.sim.physics.to_dict() == physx_physics_cfg(_settings(**SETTINGS)).to_dict()
        assert env_cfg.sim.physics.gpu_max_rigid_patch_count > PhysxCfg().gpu_max_rigid_patch_count


def test_resolve_presets_function_walks_the_whole_tree():
    newton = resolve_presets(_env_cfg())
    physx = resolve_presets(_env_cfg(), ["isaacsim_physx"])
    assert _backend(newton) == NEWTON and _backend(physx) == PHYSX
    leftover = [
        path
        for cfg in (newton, physx)
        for path, value in _walk(cfg)
        if isinstance(value, PresetCfg)
    ]
    assert leftover == []


def _walk(cfg, path=""):
    for name, value in vars(cfg).items() if hasattr(cfg, "__dataclass_fields__") else ():
        child = f"{path}.{name}"
        yield child, value
        if hasattr(value, "__dataclass_fields__"):
            yield from _walk(value, child)
        elif isinstance(value, dict):
            for key, item in value.items():
                yield f"{child}.{key}", item
                yield from _walk(item, f"{child}.{key}")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (("physics=physx",), "Unknown preset"),  # not declared: only newton_mjwarp and isaacsim_physx are
        (("renderer=isaacsim_physx",), "did not match"),  # a typed selector must land on its own type
        (("physics=isaacsim_rtx",), "did not match"),
    ],
)
def test_resolver_rejects_wrong_selections(task, tokens, message):
    with pytest.raises(ValueError, match=message):
        _resolve(task, *tokens)


def test_launch_scan_kitless_by_default_and_kit_for_physx(task):
    """Isaac Lab's launch scan: the default runs kit-less; PhysX (and RTX) need Isaac Sim / Kit."""
    _, kit = validate_launch(_resolve(task), {"livestream": 0})
    assert kit == ()
    _, kit = validate_launch(_resolve(task, "physics=isaacsim_physx"), {"livestream": 0})
    assert any("PhysxCfg" in source for source in kit)
    _, kit = validate_launch(_resolve(task, "physics=isaacsim_physx", "renderer=isaacsim_rtx"), {"livestream": 0})
    assert any("PhysxCfg" in source for source in kit) and any("IsaacRtxRendererCfg" in s for s in kit)


def test_every_selectable_combination_resolves(task):
    """Each (physics, renderer) pair the presets declare resolves to a valid config."""
    physics = [None, "newton_mjwarp", "isaacsim_physx"]
    renderers = [None, "newton_renderer", "isaacsim_rtx"]
    for selected_physics, renderer in itertools.product(physics, renderers):
        tokens = [f"physics={selected_physics}"] * bool(selected_physics) + [f"renderer={renderer}"] * bool(renderer)
        env_cfg = _resolve(task, *tokens)
        assert validate(env_cfg) == []
        assert not isinstance(env_cfg.sim.physics, PresetCfg)
