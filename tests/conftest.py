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
