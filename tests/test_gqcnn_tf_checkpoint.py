"""The TensorFlow-free checkpoint reader against checkpoints TensorFlow 1.15 wrote (tests/fixtures/tf_gqcnn,
made by scripts/make_tf_fixture.py), and its errors."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dexrl.cli import main as dexrl_main
from dexrl.gqcnn.model import FCGQCNN, GQCNN, load_network
from dexrl.gqcnn.official import convert_variables, import_official
from dexrl.gqcnn.tf_checkpoint import (
    CorruptCheckpoint,
    MissingVariable,
    ShapeMismatch,
    TFCheckpoint,
    TruncatedCheckpoint,
    UnknownCheckpointFormat,
    crc32c,
    read_index,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tf_gqcnn"
FC_DIR, CROP_DIR = FIXTURES / "fc_gqcnn", FIXTURES / "gqcnn"
DATA = "model.ckpt.data-00000-of-00001"


def _checkpoint(folder: Path) -> TFCheckpoint:
    index = read_index((folder / "model.ckpt.index").read_bytes())
    return TFCheckpoint(index, [(folder / DATA).read_bytes()])


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_crc32c_matches_the_castagnoli_check_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    register = 0xFFFFFFFF  # bit-by-bit definition, for a length that is not a multiple of the chunk size
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ (0x82F63B78 if register & 1 else 0)
    assert crc32c(data) == register ^ 0xFFFFFFFF


def test_index_lists_the_official_variable_names_and_shapes():
    entries = _checkpoint(FC_DIR).entries
    assert entries["im_stream/conv1_1/conv1_1_weights"].shape == (9, 9, 1, 16)
    assert entries["im_stream/fc3_weights"].shape == (4624, 128)
    assert entries["im_stream/fc5_weights"].shape == (128, 32)
    assert len(entries) == 14
    crop = _checkpoint(CROP_DIR).entries
    assert crop["merge_stream/fc4_input_2_weights"].shape == (16, 128)
    assert crop["pose_stream/pc1_weights"].shape == (1, 16)


def test_fc_network_reproduces_tensorflow():
    network, provenance = import_official(FC_DIR)
    assert isinstance(network, FCGQCNN) and network.angle_bins == 16
    assert provenance["normalization_source"].startswith("normalisation .npy")
    images = torch.from_numpy(np.load(FC_DIR / "inputs_images.npy"))[..., 0].unsqueeze(1)  # (2, 1, 121, 143)
    depths = torch.from_numpy(np.load(FC_DIR / "inputs_depths.npy"))  # (2, 3)
    expected = torch.from_numpy(np.load(FC_DIR / "outputs_logits.npy"))  # (2, 3, h, w, 32), TF layout
    expected = expected.unflatten(-1, (16, 2)).permute(0, 1, 4, 5, 2, 3)  # (2, 3, 16, 2, h, w)
    with torch.no_grad():
        for share in (True, False):
            torch.testing.assert_close(
                network(images, depths, share_first_conv=share), expected, rtol=1e-5, atol=1e-5
            )


def test_crop_network_reproduces_tensorflow_also_as_a_fully_convolutional_network():
    network, _ = import_official(CROP_DIR)
    assert isinstance(network, GQCNN)
    crops = torch.from_numpy(np.load(CROP_DIR / "inputs_crops.npy"))[..., 0].unsqueeze(1)  # (4, 1, 96, 96)
    depths = torch.from_numpy(np.load(CROP_DIR / "inputs_depths.npy"))[:, 0]
    expected = torch.from_numpy(np.load(CROP_DIR / "outputs_logits.npy"))  # (4, 2)
    with torch.no_grad():
        torch.testing.assert_close(network(crops, depths), expected, rtol=1e-5, atol=1e-5)
        fc_logits = FCGQCNN.from_crop_network(network)(crops, depths[:, None])
    torch.testing.assert_close(fc_logits[:, 0, 0, :, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_a_zip_imports_like_its_folder(tmp_path):
    archive = tmp_path / "FC-GQCNN-4.0-PJ.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in FC_DIR.iterdir():
            z.write(file, f"FC-GQCNN-4.0-PJ/{file.name}")
    from_zip, provenance = import_official(archive)
    from_folder, _ = import_official(FC_DIR)
    assert provenance["source"] == "FC-GQCNN-4.0-PJ.zip"
    for (name, a), (_, b) in zip(from_zip.state_dict().items(), from_folder.state_dict().items()):
        assert torch.equal(a, b), name


def test_import_weights_command_writes_weights_the_planner_loads(tmp_path, capsys):
    out = tmp_path / "fc.safetensors"
    assert dexrl_main(["import-weights", str(FC_DIR), "--out", str(out)]) == 0
    assert "633,200 parameters" in capsys.readouterr().out
    network, card = load_network(out)
    assert card.provenance["config"]["input_depth_mode"] == "im_depth_sub"
    reference, _ = import_official(FC_DIR)
    for (name, a), (_, b) in zip(network.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert dexrl_main(["import-weights", str(tmp_path / "absent.zip")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_truncated_data_is_reported(tmp_path):
    folder = _copy(FC_DIR, tmp_path)
    data = (folder / DATA).read_bytes()
    (folder / DATA).write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedCheckpoint, match="truncated"):
        import_official(folder)


def test_truncated_or_foreign_index_is_reported(tmp_path):
    folder = _copy(FC_DIR, tmp_path)
    index = (folder / "model.ckpt.index").read_bytes()
    (folder / "model.ckpt.index").write_bytes(index[:-10])
    with pytest.raises(UnknownCheckpointFormat, match="truncated"):
        import_official(folder)
    (folder / "model.ckpt.index").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(UnknownCheckpointFormat, match="V2 checkpoint index"):
        import_official(folder)


def test_damaged_bytes_fail_the_checksums(tmp_path):
    folder = _copy(FC_DIR, tmp_path)
    data = bytearray((folder / DATA).read_bytes())
    data[100_000] ^= 0x01
    (folder / DATA).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="im_stream/fc3_weights"):
        import_official(folder)
    index = bytearray((FC_DIR / "model.ckpt.index").read_bytes())
    index[20] ^= 0x01
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        read_index(bytes(index))


def test_missing_variables_and_wrong_shapes_are_named():
    checkpoint = _checkpoint(CROP_DIR)
    variables = {name: checkpoint.read(name) for name in checkpoint.entries}
    with pytest.raises(MissingVariable, match="merge_stream/fc4_input_2_weights"):
        convert_variables({k: v for k, v in variables.items() if k != "merge_stream/fc4_input_2_weights"})
    with pytest.raises(
        ShapeMismatch, match=r"im_stream/conv2_1/conv2_1_weights.*\(5, 5, 16, 8\).*\(5, 5, 16, 16\)"
    ):
        convert_variables(
            {**variables, "im_stream/conv2_1/conv2_1_weights": np.zeros((5, 5, 16, 8), np.float32)}
        )
    with pytest.raises(UnknownCheckpointFormat, match="variables found: global_step"):
        convert_variables({"global_step": np.zeros((), np.int64)})


def test_folders_without_a_checkpoint_are_unknown_formats(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"a V1 checkpoint")
    with pytest.raises(UnknownCheckpointFormat, match="model.ckpt.index"):
        import_official(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(UnknownCheckpointFormat, match="neither a zip"):
        import_official(tmp_path / "weights.bin")
