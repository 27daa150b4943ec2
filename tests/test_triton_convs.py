"""The fast path's Triton kernels (:mod:`dexrl.gqcnn.triton_convs`: image stream, head, inpainting) against
PyTorch, on the CPU through Triton's interpreter, in a fresh process (see ``tests/triton_interpreted.py``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")  # Linux builds of PyTorch bring it along; CPU-only builds elsewhere may not

from dexrl.gqcnn.policy import FCGQCNNPlanner, PlannerOptions  # noqa: E402
from dexrl.gqcnn.triton_convs import conv5x5_relu  # noqa: E402

CHECKS = Path(__file__).with_name("triton_interpreted.py")


@pytest.fixture(scope="module")
def interpreted_errors() -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, str(CHECKS)],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("pool", [False, True])
def test_one_layer_equals_pytorchs_convolution_relu_and_pool(interpreted_errors, pool):
    assert interpreted_errors[f"conv_pool_{pool}"] < 1e-5


@pytest.mark.parametrize("width", [38, 37])
@pytest.mark.parametrize("pool", [False, True])
def test_one_layer_by_blocks_of_output_pixels_equals_pytorchs(interpreted_errors, pool, width):
    assert interpreted_errors[f"blocks_pool_{pool}_{width}"] < 1e-5


def test_shifted_first_layer_equals_adding_each_pairs_shift(interpreted_errors):
    assert interpreted_errors["shifted_relu"] == 0  # the same float32 sum and ReLU


def test_an_inpainting_round_fills_each_hole_next_to_valid_depth_with_their_average(interpreted_errors):
    assert interpreted_errors["inpaint_round"] < 1e-6


def test_the_shared_first_convolution_equals_the_networks(interpreted_errors):
    assert interpreted_errors["first_conv"] < 1e-5


@pytest.mark.parametrize("blocks", [False, True])
def test_the_stream_equals_the_networks_image_stream(interpreted_errors, blocks):
    assert interpreted_errors[f"stream_blocks_{blocks}"] < 1e-4


def test_the_head_kernel_equals_fc3_to_the_softmax(interpreted_errors):
    assert interpreted_errors["head"] < 1e-5
    assert interpreted_errors["head_refuses_8_angles"]


@pytest.mark.parametrize("case", ["planner_all_bins", "planner_live_bins"])
def test_fast_path_quality_is_the_same_with_the_triton_stream_and_head(interpreted_errors, case):
    assert 0 < interpreted_errors[f"{case}_evaluated"] <= 1  # the case evaluates pairs (live ones only)
    assert interpreted_errors[case] < 1e-5
    assert interpreted_errors[f"{case}_head"] < 1e-5


def test_rescoring_through_the_triton_stream_gives_pytorchs_q(interpreted_errors):
    assert interpreted_errors["rescoring"] < 1e-6
    assert 1e-3 < interpreted_errors["rescoring_q_from_half"] < 0.4  # q neither saturated nor all alike


@pytest.mark.parametrize("case", ["chunks", "one_chunk"])
def test_top_k_equals_torchs(interpreted_errors, case):
    assert interpreted_errors[f"top_k_{case}"] == 0
    assert interpreted_errors[f"top_k_{case}_index"] == 0  # the indices point at those values


def test_top_k_finds_a_best_score_in_the_last_chunk_and_keeps_ties_apart(interpreted_errors):
    assert interpreted_errors["top_k_found_last_and_lone"] == 1
    assert interpreted_errors["top_k_distinct_ties"] == 1  # 15 equal scores after the best, each once


def test_cpu_tensors_need_the_interpreter(network):
    x, weight = torch.zeros(1, 9, 9, 16), torch.zeros(5, 5 * 16, 16)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        conv5x5_relu(x, weight, torch.zeros(16), False)
    with pytest.raises(ValueError, match="runs on CUDA"):
        FCGQCNNPlanner(network, "cpu", PlannerOptions(path="fast", stream_convs="triton"))
    with pytest.raises(ValueError, match="runs on CUDA"):
        FCGQCNNPlanner(network, "cpu", PlannerOptions(path="fast", fc3="triton"))
