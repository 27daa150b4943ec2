"""Test set-up: CPU only, no network. Simulator tests share one kit-less world per module."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the simulator must not probe for a GPU in tests

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def asset_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("assets")
