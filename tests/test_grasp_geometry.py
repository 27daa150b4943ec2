"""Grasp types and frame conversions (pure torch)."""

import math

import pytest
import torch

from dexrl.grasp import PHOXI_S, CameraExtrinsics, GraspPoses, ImageGrasps, image_to_world, look_at_rotation, world_to_image


def _cameras(n: int):
    eyes = torch.tensor([[0.1, -0.2, 0.7]] * n) + torch.arange(n).unsqueeze(1) * torch.tensor([2.0, 0.0, 0.0])
    targets = eyes.clone()
    targets[:, 2] = 0.0
    targets[:, 0] += 0.05  # slightly oblique
    return CameraExtrinsics(position=eyes.double(), rotation=look_at_rotation(eyes.double(), targets.double()))


def test_rotation_is_proper_and_points_the_optical_axis_at_the_target():
    cams = _cameras(3)
    r = cams.rotation
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3, dtype=r.dtype).expand(3, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(3, dtype=r.dtype))
    straight_down = look_at_rotation(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 0.0]]))[0]
    assert torch.allclose(straight_down[:, 2], torch.tensor([0.0, 0.0, -1.0]))  # optical axis down
    assert torch.allclose(straight_down[:, 0], torch.tensor([1.0, 0.0, 0.0]))  # image x along world +X
    assert torch.allclose(straight_down[:, 1], torch.tensor([0.0, -1.0, 0.0]))  # image rows along world -Y


def test_project_deproject_round_trip():
    k = PHOXI_S
    pixels = torch.tensor([[0.0, 0.0], [255.5, 191.75], [515.0, 385.0], [100.3, 20.7]], dtype=torch.float64)
    depth = torch.tensor([0.5, 0.6, 0.7, 0.65], dtype=torch.float64)
    assert torch.allclose(k.project(k.deproject(pixels, depth)), pixels, atol=1e-9)
    assert torch.allclose(k.deproject(torch.tensor([[k.cx, k.cy]]), torch.tensor([0.6]))[0], torch.tensor([0.0, 0.0, 0.6]))


def test_image_world_round_trip_of_grasps():
    n = 3
    cams = _cameras(n)
    grasps = ImageGrasps(
        center=torch.tensor([[200.0, 150.0], [300.0, 250.0], [10.0, 370.0]], dtype=torch.float64),
        angle=torch.tensor([0.0, 1.2, -1.5], dtype=torch.float64),
        depth=torch.tensor([0.6, 0.65, 0.62], dtype=torch.float64),
        width=torch.full((n,), 0.05, dtype=torch.float64),
        q=torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64),
    )
    poses = image_to_world(grasps, PHOXI_S, cams)
    back = world_to_image(poses, PHOXI_S, cams, q=grasps.q)
    assert torch.allclose(back.center, grasps.center, atol=1e-9)
    assert torch.allclose(back.depth, grasps.depth, atol=1e-12)
    # Angles survive up to the jaw's half-turn symmetry (the camera is slightly oblique: within 0.5 degree).
    diff = torch.remainder(back.angle - grasps.angle + math.pi / 2, math.pi) - math.pi / 2
    assert diff.abs().max() < math.radians(0.5)


def test_straight_down_camera_maps_image_axis_to_world_yaw():
    cams = CameraExtrinsics(
        position=torch.tensor([[0.0, 0.0, 0.6]]),
        rotation=look_at_rotation(torch.tensor([[0.0, 0.0, 0.6]]), torch.tensor([[0.0, 0.0, 0.0]])),
    )
    grasp = ImageGrasps(
        center=torch.tensor([[PHOXI_S.cx, PHOXI_S.cy]]), angle=torch.tensor([math.pi / 4]),
        depth=torch.tensor([0.5]), width=torch.tensor([0.05]), q=torch.tensor([1.0]),
    )
    pose = image_to_world(grasp, PHOXI_S, cams)
    assert torch.allclose(pose.position, torch.tensor([[0.0, 0.0, 0.1]]), atol=1e-6)
    # Image x is world +X, image y (down) is world -Y: 45 degrees in the image is -45 degrees in the world.
    assert pose.yaw.item() == pytest.approx(-math.pi / 4, abs=1e-6)


def test_batches_index_and_serialise():
    poses = GraspPoses(position=torch.zeros(4, 3), yaw=torch.linspace(-1, 1, 4), width=torch.full((4,), 0.05))
    assert len(poses) == 4 and len(poses[1:3]) == 2
    records = poses.to_records()
    assert records[3]["yaw"] == pytest.approx(1.0) and records[0]["position"] == [0.0, 0.0, 0.0]
