"""Test set-up: CPU only, no network. Simulator tests share one kit-less world per module."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the simulator must not probe for a GPU in tests

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def asset_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("assets")


@pytest.fixture(scope="module")
def network():
    """A seeded FC-GQ-CNN with random weights whose q spreads over (0, 1), as a trained network's does
    (unscaled random weights saturate it)."""
    from dexrl.gqcnn.model import FCGQCNN  # noqa: PLC0415

    torch.manual_seed(0)
    network = FCGQCNN().eval()
    with torch.no_grad():
        network.fc5.weight.mul_(0.1)
    return network


@pytest.fixture(scope="session")
def box_set(tmp_path_factory):
    """An object set of one mesh file: a 3 x 7 x 4 cm box (graspable across its 3 cm side only)."""
    import trimesh  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("box_set")
    trimesh.creation.box(extents=(0.03, 0.07, 0.04)).export(folder / "box.obj")
    return folder


def grasp_task_cfg(object_set, num_envs: int = 2, seed: int = 0):
    """A CPU cfg of DexRL-GraspCorrection on ``object_set`` with one object per heap, never re-drawn early."""
    from dexrl.rl.env import task_cfg  # noqa: PLC0415
    from dexrl.sim.scene_cfg import SceneSettingsCfg  # noqa: PLC0415

    settings = SceneSettingsCfg(num_envs=num_envs, device="cpu", seed=seed)
    settings.objects.object_set = str(object_set)
    settings.objects.pool_size = 1
    settings.objects.count_range = (1, 1)
    cfg = task_cfg(settings)
    cfg.executor.attempts_per_heap = 1000
    return cfg
