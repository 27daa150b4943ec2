"""FC-GQ-CNN and GQ-CNN: sizes, the dense-to-convolution equivalence, the exact fast paths, weights files."""

import json

import pytest
import torch

from dexrl.gqcnn.grid import cell_centers, output_size
from dexrl.gqcnn.model import (
    FC_GQCNN_4_0_PJ_NORMALIZATION,
    FCGQCNN,
    GQCNN,
    FCGQCNNWeights,
    count_parameters,
    fc_gqcnn_4_0_pj,
    gqcnn_4_0_pj,
    load_network,
    save_network,
)
from dexrl.gqcnn.preprocess import extract_crops


def _depth(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Depth images [m]: a floor at 0.7 m with a raised box and 1 mm noise."""
    generator = torch.Generator().manual_seed(seed)
    depth = torch.full((batch, height, width), 0.7)
    depth[:, height // 4 : height // 2, width // 3 : width // 2] = 0.64
    return depth + 0.001 * torch.randn(depth.shape, generator=generator)


def test_parameter_counts_match_the_released_models():
    assert count_parameters(FCGQCNN()) == 633_200
    assert count_parameters(GQCNN()) == 631_410
    assert FCGQCNNWeights.DEFAULT is FCGQCNNWeights.DEXRL_V1
    assert FCGQCNNWeights.DEFAULT.value.num_params == count_parameters(fc_gqcnn_4_0_pj())
    assert count_parameters(gqcnn_4_0_pj()) == 631_410


@pytest.mark.parametrize("size", [(96, 96), (97, 101), (121, 143), (130, 150)])
def test_output_size_formula_matches_the_network(size):
    torch.manual_seed(0)
    with torch.no_grad():
        logits = FCGQCNN()(_depth(1, *size).unsqueeze(1), torch.tensor([[0.66, 0.7]]))
    assert logits.shape == (1, 2, 16, 2, *output_size(*size))


def test_output_size_of_the_phoxi_image():
    assert output_size(386, 516) == (74, 106)
    assert output_size(480, 640) == (97, 137)
    with torch.no_grad():  # one depth bin keeps this cheap
        logits = FCGQCNN()(_depth(1, 386, 516).unsqueeze(1), torch.tensor([[0.68]]))
    assert logits.shape[-2:] == (74, 106)


def test_fc_map_at_a_cell_equals_the_crop_network_on_the_crop_centred_there():
    torch.manual_seed(1)
    crop_network = GQCNN().eval()
    fc = FCGQCNN.from_crop_network(crop_network)
    depth = _depth(2, 124, 140, seed=1)
    grasp_depth = torch.tensor([[0.64, 0.69], [0.66, 0.71]])
    rows, cols = torch.tensor([0, 3, 7]), torch.tensor([0, 5, 11])
    with torch.no_grad():
        fc_logits = fc(depth.unsqueeze(1), grasp_depth)  # (2, 2, 1, 2, 8, 12)
        crops = extract_crops(depth, cell_centers(rows, cols).expand(2, 3, 2))  # (2, 3, 96, 96)
        crop_logits = crop_network(
            crops.repeat_interleave(2, dim=0).reshape(-1, 1, 96, 96),
            grasp_depth.repeat_interleave(3, dim=1).reshape(-1),
        ).reshape(2, 2, 3, 2)  # (image, depth, cell, logit)
    expected = crop_logits.permute(0, 2, 1, 3)  # (image, cell, depth, logit)
    torch.testing.assert_close(
        fc_logits[:, :, 0, :, rows, cols].permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-4
    )


def test_fc_map_is_the_network_on_each_cells_crop():
    """Stride 4 and the 96-pixel receptive field: a cell of the image's map equals the map of its crop."""
    torch.manual_seed(2)
    network = FCGQCNN().eval()
    depth = _depth(1, 120, 136, seed=2)
    with torch.no_grad():
        image_map = network(depth.unsqueeze(1), torch.tensor([[0.67]]))
        for row, col in [(0, 0), (2, 9), (6, 10)]:
            crop = extract_crops(depth, cell_centers(torch.tensor([[row]]), torch.tensor([[col]])))
            crop_map = network(crop, torch.tensor([[0.67]]))
            torch.testing.assert_close(crop_map[..., 0, 0], image_map[..., row, col], rtol=1e-4, atol=1e-4)


def test_shared_first_convolution_equals_the_plain_network():
    torch.manual_seed(3)
    network = FCGQCNN().eval()
    depth = _depth(2, 110, 130, seed=3)
    grasp_depth = torch.tensor([[0.62, 0.66, 0.7, 0.74], [0.6, 0.65, 0.69, 0.71]])
    with torch.no_grad():
        shared = network(depth.unsqueeze(1), grasp_depth, share_first_conv=True)
        plain = network(depth.unsqueeze(1), grasp_depth, share_first_conv=False)
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-4)


def test_bfloat16_after_the_first_convolution_stays_close_to_float32():
    torch.manual_seed(4)
    network = FCGQCNN().eval()
    with torch.no_grad():
        network.fc5.weight.mul_(0.1)  # logits of order 1, as trained networks give
        depth, grasp_depth = _depth(1, 110, 130, seed=4).unsqueeze(1), torch.tensor([[0.64, 0.7]])
        q32 = torch.softmax(network(depth, grasp_depth), dim=3)[:, :, :, 1]
        q16 = torch.softmax(network(depth, grasp_depth, autocast_dtype=torch.bfloat16), dim=3)[:, :, :, 1]
    assert (q16 - q32).abs().max() < 0.05
    assert (q16 - q32).abs().mean() < 0.01


def test_initialisation_is_he_normal_with_zero_biases():
    torch.manual_seed(5)
    network = FCGQCNN()
    assert all(not b.any() for name, b in network.named_parameters() if name.endswith("bias"))
    fan_in = 16 * 17 * 17
    assert abs(network.fc3.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05


def test_pose_statistics_must_match_the_depth_input():
    with pytest.raises(ValueError, match="pose"):
        FCGQCNN(depth_input="pose_stream", normalization=FC_GQCNN_4_0_PJ_NORMALIZATION)
    with pytest.raises(ValueError, match="pose"):
        GQCNN(normalization=FC_GQCNN_4_0_PJ_NORMALIZATION)


def test_weights_round_trip_through_safetensors_and_the_model_card(tmp_path):
    torch.manual_seed(6)
    network = FCGQCNN(angle_bins=8).eval()
    path = tmp_path / "net.safetensors"
    card = save_network(network, path, {"source": "test"})
    assert json.loads((tmp_path / "net.json").read_text())["architecture"] == {
        "network": "fc_gqcnn",
        "angle_bins": 8,
        "depth_input": "subtract",
    }
    loaded, loaded_card = load_network(path)
    assert isinstance(loaded, FCGQCNN) and loaded.angle_bins == 8 and loaded_card == card
    for (name, a), (_, b) in zip(network.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    crop_path = tmp_path / "crop.safetensors"
    save_network(GQCNN(), crop_path, {})
    assert isinstance(gqcnn_4_0_pj(weights=crop_path), GQCNN)
    with pytest.raises(TypeError, match="crop network"):
        fc_gqcnn_4_0_pj(weights=crop_path)


def test_damaged_or_incomplete_weights_are_refused(tmp_path):
    path = tmp_path / "net.safetensors"
    save_network(FCGQCNN(), path, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_network(path)
    (tmp_path / "net.json").unlink()
    with pytest.raises(FileNotFoundError, match="model card"):
        load_network(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_network(tmp_path / "absent.safetensors")
