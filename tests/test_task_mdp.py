"""MDP terms of DexRL-GraspCorrection: corrections in the grasp frame, clipping, reward, observations."""

import math

import torch

from dexrl.grasp import GraspPoses, ImageGrasps
from dexrl.sim.tasks.grasp_correction import mdp

SCALE = torch.tensor([0.02, 0.02, 0.02, math.radians(15)])


def _poses(yaw: float = 0.3) -> GraspPoses:
    return GraspPoses(
        position=torch.tensor([[0.1, -0.05, 0.04], [0.0, 0.0, 0.02]]),
        yaw=torch.tensor([yaw, -1.2]),
        width=torch.tensor([0.05, 0.05]),
    )


def test_a_zero_action_leaves_the_planner_grasp_unchanged():
    base = _poses()
    corrected = mdp.corrected_poses(base, torch.zeros(2, 4), SCALE)
    assert torch.equal(corrected.position, base.position)
    assert torch.allclose(corrected.yaw, base.yaw, atol=1e-7)
    assert torch.equal(corrected.width, base.width)


def test_actions_beyond_the_bounds_are_clipped():
    base = _poses()
    wild = mdp.corrected_poses(base, torch.tensor([[3.0, -7.0, 2.0, 9.0]] * 2), SCALE)
    bounded = mdp.corrected_poses(base, torch.tensor([[1.0, -1.0, 1.0, 1.0]] * 2), SCALE)
    assert torch.allclose(wild.position, bounded.position) and torch.allclose(wild.yaw, bounded.yaw)
    shift = torch.linalg.norm(bounded.position[:, :2] - base.position[:, :2], dim=-1)
    assert torch.allclose(shift, torch.full((2,), math.hypot(0.02, 0.02)))


def test_corrections_act_in_the_grasp_frame():
    base = _poses(yaw=math.pi / 2)  # env 0: jaw axis along world +y
    along = mdp.corrected_poses(base, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]), SCALE)
    assert torch.allclose(along.position[0] - base.position[0], torch.tensor([0.0, 0.02, 0.0]), atol=1e-7)
    across = mdp.corrected_poses(base, torch.tensor([[0, 1.0, 0, 0], [0, 0, 0, 0]]), SCALE)
    assert torch.allclose(across.position[0] - base.position[0], torch.tensor([-0.02, 0.0, 0.0]), atol=1e-7)
    deeper = mdp.corrected_poses(base, torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 0]]), SCALE)
    assert torch.allclose(deeper.position[0] - base.position[0], torch.tensor([0.0, 0.0, -0.02]), atol=1e-7)
    turned = mdp.corrected_poses(base, torch.tensor([[0, 0, 0, 1.0], [0, 0, 0, 0]]), SCALE)
    assert math.isclose(float(turned.yaw[0]), -math.pi / 2 + math.radians(15), abs_tol=1e-6)  # wrapped


def test_the_reward_is_one_only_for_a_held_lift():
    success = torch.tensor([True, False, True])
    actions = torch.tensor([[0.0] * 4, [0.0] * 4, [1.0] * 4])
    assert torch.equal(mdp.held_lift_reward(success, actions, 0.0), torch.tensor([1.0, 0.0, 1.0]))
    penalized = mdp.held_lift_reward(success, actions, 0.1)
    assert torch.allclose(penalized, torch.tensor([1.0, 0.0, 0.9]))


def _ridge_image(center=(200, 150), depth=0.55, floor=0.6) -> torch.Tensor:
    image = torch.full((1, 300, 400), floor)
    image[0, center[1], :] = depth  # a one-pixel ridge along the image's u axis through the centre
    image[0, center[1] - 1, :] = depth
    return image


def test_the_crop_turns_with_the_jaw_axis():
    image = _ridge_image()
    for angle, ridge_along_x in ((0.0, True), (math.pi / 2, False)):
        grasp = ImageGrasps(
            center=torch.tensor([[200.0, 150.0]]), angle=torch.tensor([angle]), depth=torch.tensor([0.55]),
            width=torch.tensor([0.05]), q=torch.tensor([0.9]),
        )
        crop = mdp.jaw_aligned_crops(image, grasp, window_px=64, size=32, depth_scale=0.05)[0, 0]
        assert crop.shape == (32, 32) and crop.min() >= -1 and crop.max() <= 1
        ridge = crop < 0.5  # at the grasp depth (0), the floor reads (0.6 - 0.55) / 0.05 = 1
        rows_hit, cols_hit = ridge.any(dim=1).sum(), ridge.any(dim=0).sum()
        if ridge_along_x:
            assert cols_hit == 32 and rows_hit <= 2
        else:
            assert rows_hit == 32 and cols_hit <= 2


def test_missing_pixels_read_as_far_in_the_crop():
    image = torch.full((1, 100, 100), 0.5)
    image[0, :, :50] = 0.0
    grasp = ImageGrasps(center=torch.tensor([[50.0, 50.0]]), angle=torch.tensor([0.0]), depth=torch.tensor([0.5]),
                        width=torch.tensor([0.05]), q=torch.tensor([0.5]))
    crop = mdp.jaw_aligned_crops(image, grasp, window_px=40, size=20, depth_scale=0.05)[0, 0]
    assert torch.all(crop[:, :8] == 1.0) and torch.all(crop[:, 12:] == 0.0)


def test_grasp_features_are_scaled_to_the_unit_range():
    grasp = ImageGrasps(
        center=torch.tensor([[0.0, 0.0], [399.0, 299.0]]), angle=torch.tensor([-math.pi / 2, 0.0]),
        depth=torch.tensor([0.6, 0.48]), width=torch.tensor([0.05, 0.05]), q=torch.tensor([0.0, 1.0]),
    )
    features = mdp.grasp_features(grasp, (300, 400), floor_distance=0.6, wall_height=0.12)
    assert features.shape == (2, len(mdp.GRASP_FEATURES))
    assert torch.allclose(features[0], torch.tensor([-1.0, -1.0, -1.0, -0.9975, -0.99667]), atol=1e-4)
    assert torch.allclose(features[1], torch.tensor([1.0, 0.0, 1.0, 0.9975, 0.99667]), atol=1e-4)


def test_the_task_is_registered_with_both_physics_presets():
    from isaaclab_newton.physics import NewtonCfg  # noqa: PLC0415
    from isaaclab_physx.physics import PhysxCfg  # noqa: PLC0415
    from isaaclab_tasks.utils import resolve_task_config  # noqa: PLC0415

    import dexrl.sim.tasks  # noqa: F401, PLC0415 (registers the task, as the isaaclab.tasks entry point does)

    default, agent = resolve_task_config("DexRL-GraspCorrection", "sb3_sac_cfg_entry_point", overrides=[])
    assert isinstance(default.sim.physics, NewtonCfg)
    assert agent["policy"] == "MultiInputPolicy" and "gradient_steps" in agent  # the SAC agent YAML
    physx, _ = resolve_task_config("DexRL-GraspCorrection", None, overrides=["physics=isaacsim_physx"])
    assert isinstance(physx.sim.physics, PhysxCfg)
