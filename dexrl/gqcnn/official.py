"""Import Berkeley AutoLab's released GQ-CNN models into PyTorch, without TensorFlow.

A released model (``FC-GQCNN-4.0-PJ.zip``, ``GQCNN-4.0-PJ.zip``, or the folder unpacked from one) holds
``config.json``, ``architecture.json``, normalisation ``.npy`` files and a TF1 V2 checkpoint
``model.ckpt.index`` + ``model.ckpt.data-00000-of-00001`` (read by :mod:`dexrl.gqcnn.tf_checkpoint`).

Variable names and the layout changes to PyTorch:

- ``im_stream/convX_Y/convX_Y_weights`` [k, k, in, out] (HWIO) -> ``image_stream.convX_Y.weight``,
  permute(3, 2, 0, 1).
- ``im_stream/fc3_weights`` [4624, 128], rows in (h, w, c) order of the 17x17x16 pool2 output ->
  reshape(17, 17, 16, 128).permute(3, 2, 0, 1): the 17x17 convolution of the FC network, or, flattened, the
  dense layer of the crop network (which flattens in PyTorch's (c, h, w) order).
- FC-GQ-CNN: ``im_stream/fc4_weights`` [128, 128], ``im_stream/fc5_weights`` [128, 2A] -> transposed
  1x1 convolutions.
- GQ-CNN: ``pose_stream/pc1_weights`` [1, 16], ``merge_stream/fc4_input_1_weights`` [128, 128],
  ``merge_stream/fc4_input_2_weights`` [16, 128], ``merge_stream/fc5_weights`` [128, 2] -> transposed.
- Every ``..._weights`` has its ``..._bias`` (``merge_stream/fc4_bias`` for both fc4 inputs).

Normalisation: ``im_depth_sub_mean.npy`` / ``im_depth_sub_std.npy`` (FC), ``im_mean.npy`` / ``im_std.npy`` and
``pose_mean.npy`` / ``pose_std.npy`` (crop network). A pose file may hold a whole hand-pose vector; a
parallel-jaw model uses its grasp depth, element 2.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from .model import (
    FC_GQCNN_4_0_PJ_NORMALIZATION,
    FCGQCNN,
    GQCNN,
    GQCNN_4_0_PJ_NORMALIZATION,
    Normalization,
)
from .tf_checkpoint import (
    CheckpointError,
    MissingVariable,
    ShapeMismatch,
    TFCheckpoint,
    UnknownCheckpointFormat,
    data_shard_name,
    read_index,
)

__all__ = ["convert_variables", "import_official"]

_INDEX_NAME = "model.ckpt.index"
_CONVS = {"conv1_1": (9, 1), "conv1_2": (5, 16), "conv2_1": (5, 16), "conv2_2": (5, 16)}
Layout = Callable[[np.ndarray], np.ndarray]


def _fc3_as_conv(w: np.ndarray) -> np.ndarray:
    return w.reshape(17, 17, 16, 128).transpose(3, 2, 0, 1)


def _variable_map(network: str, angle_bins: int) -> list[tuple[str, tuple[int, ...], str, Layout]]:
    """(TF name, TF shape, PyTorch name, TF -> PyTorch layout) for every parameter of ``network``."""
    keep: Layout = lambda w: w  # noqa: E731
    dense: Layout = lambda w: w.T  # noqa: E731
    one_by_one: Layout = lambda w: w.T[..., None, None]  # noqa: E731
    rows = []
    for conv, (size, channels) in _CONVS.items():
        prefix = f"im_stream/{conv}/{conv}"
        rows.append(
            (
                f"{prefix}_weights",
                (size, size, channels, 16),
                f"image_stream.{conv}.weight",
                lambda w: w.transpose(3, 2, 0, 1),
            )
        )
        rows.append((f"{prefix}_bias", (16,), f"image_stream.{conv}.bias", keep))
    rows.append(("im_stream/fc3_bias", (128,), "fc3.bias", keep))
    if network == "fc_gqcnn":
        return rows + [
            ("im_stream/fc3_weights", (4624, 128), "fc3.weight", _fc3_as_conv),
            ("im_stream/fc4_weights", (128, 128), "fc4.weight", one_by_one),
            ("im_stream/fc4_bias", (128,), "fc4.bias", keep),
            ("im_stream/fc5_weights", (128, 2 * angle_bins), "fc5.weight", one_by_one),
            ("im_stream/fc5_bias", (2 * angle_bins,), "fc5.bias", keep),
        ]
    return rows + [
        ("im_stream/fc3_weights", (4624, 128), "fc3.weight", lambda w: _fc3_as_conv(w).reshape(128, 4624)),
        ("pose_stream/pc1_weights", (1, 16), "pose_stream.pc1.weight", dense),
        ("pose_stream/pc1_bias", (16,), "pose_stream.pc1.bias", keep),
        ("merge_stream/fc4_input_1_weights", (128, 128), "fc4.weight", dense),
        ("merge_stream/fc4_input_2_weights", (16, 128), "pose_stream.to_fc4.weight", dense),
        ("merge_stream/fc4_bias", (128,), "fc4.bias", keep),
        ("merge_stream/fc5_weights", (128, 2), "fc5.weight", dense),
        ("merge_stream/fc5_bias", (2,), "fc5.bias", keep),
    ]


def _network_kind(names: set[str], source: str) -> str:
    if "pose_stream/pc1_weights" in names:
        return "gqcnn"
    if "im_stream/fc5_weights" in names:
        return "fc_gqcnn"
    shown = ", ".join(sorted(names)[:8]) or "none"
    raise UnknownCheckpointFormat(
        f"{source}: not an FC-GQ-CNN (im_stream/fc5_weights) or GQ-CNN (pose_stream/pc1_weights) checkpoint; "
        f"variables found: {shown}"
    )


def convert_variables(
    variables: Mapping[str, np.ndarray], source: str = "checkpoint"
) -> tuple[str, dict[str, torch.Tensor]]:
    """Map official variables (name -> array, TF layout) to a PyTorch state dict.

    Returns:
        ``("fc_gqcnn" | "gqcnn", state_dict)``; the FC network's angle bins follow from fc5's width.

    Raises:
        UnknownCheckpointFormat, MissingVariable, ShapeMismatch: naming the variable and both shapes.
    """
    network = _network_kind(set(variables), source)
    angle_bins = 1
    if network == "fc_gqcnn":
        fc5 = variables["im_stream/fc5_weights"]
        if fc5.ndim != 2 or fc5.shape[0] != 128 or fc5.shape[1] % 2:
            raise ShapeMismatch(
                f"{source}: im_stream/fc5_weights has shape {fc5.shape}, expected (128, 2 x angle bins)"
            )
        angle_bins = fc5.shape[1] // 2
    state = {}
    for tf_name, shape, torch_name, layout in _variable_map(network, angle_bins):
        if tf_name not in variables:
            raise MissingVariable(
                f"{source}: variable {tf_name!r} is missing (the {network} network needs it)"
            )
        value = variables[tf_name]
        if tuple(value.shape) != shape:
            raise ShapeMismatch(
                f"{source}: variable {tf_name!r} has shape {tuple(value.shape)}, expected {shape}"
            )
        state[torch_name] = torch.from_numpy(np.ascontiguousarray(layout(value.astype(np.float32))))
    return network, state


class _ModelFiles:
    """The files of a released model in a zip or a folder, named relative to the checkpoint's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            candidates = sorted(p.relative_to(path).as_posix() for p in path.rglob(_INDEX_NAME))
            self._read: Callable[[str], bytes] = lambda name: (path / name).read_bytes()
        elif zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            candidates = sorted(n for n in archive.namelist() if PurePosixPath(n).name == _INDEX_NAME)
            self._read = archive.read
        elif path.exists():
            raise UnknownCheckpointFormat(f"{path}: neither a zip archive nor a folder")
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(candidates)
            raise UnknownCheckpointFormat(
                f"{path}: expected one {_INDEX_NAME} (a TF V2 checkpoint), found {found}"
            )
        self.folder = PurePosixPath(candidates[0]).parent

    def read(self, name: str) -> bytes | None:
        """Bytes of a file next to the checkpoint, or None when absent."""
        try:
            return self._read((self.folder / name).as_posix())
        except (KeyError, FileNotFoundError):
            return None

    def label(self, name: str) -> str:
        return f"{self.path.name}:{(self.folder / name).as_posix()}"


def _scalar(files: _ModelFiles, name: str, pose: bool = False) -> float | None:
    raw = files.read(name)
    if raw is None:
        return None
    value = np.load(io.BytesIO(raw), allow_pickle=False)
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[0]
    flat = value.reshape(-1)
    if flat.size == 1:
        return float(flat[0])
    if pose and flat.size > 2:
        return float(flat[2])  # the grasp depth in a hand-pose vector
    raise CheckpointError(f"{files.label(name)} holds {flat.size} values, expected one")


def _normalization(files: _ModelFiles, network: str) -> tuple[Normalization, str]:
    """The model's statistics from its .npy files, or the released model's numbers (with a warning)."""
    if network == "fc_gqcnn":
        found = (_scalar(files, "im_depth_sub_mean.npy"), _scalar(files, "im_depth_sub_std.npy"))
        released = FC_GQCNN_4_0_PJ_NORMALIZATION
    else:
        image = [
            _scalar(files, f"{s}.npy") or _scalar(files, f"{s.removeprefix('im_')}.npy")
            for s in ("im_mean", "im_std")
        ]
        found = (
            *image,
            _scalar(files, "pose_mean.npy", pose=True),
            _scalar(files, "pose_std.npy", pose=True),
        )
        released = GQCNN_4_0_PJ_NORMALIZATION
    if all(value is not None for value in found):
        return Normalization(*found), "normalisation .npy files of the model"
    warnings.warn(
        f"{files.path.name}: normalisation files missing; using the released {network} statistics",
        stacklevel=3,
    )
    return released, "released model statistics (the .npy files were missing)"


def _config(files: _ModelFiles) -> dict[str, Any]:
    raw = files.read("config.json")
    if raw is None:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{files.label('config.json')} is not valid JSON: {error}") from None
    return config.get("gqcnn", config) if isinstance(config, dict) else {}


def import_official(path: str | Path) -> tuple[FCGQCNN | GQCNN, dict[str, Any]]:
    """Read a released GQ-CNN model (zip or folder) into a PyTorch network.

    Returns:
        The network (FC-GQ-CNN or the crop network, eval mode, on the CPU) and a provenance record.

    Raises:
        FileNotFoundError; CheckpointError subclasses: unknown format, truncated or corrupt file, missing
        variable, wrong shape, or a config.json that disagrees with the checkpoint.
    """
    files = _ModelFiles(Path(path))
    index = read_index(files.read(_INDEX_NAME), files.label(_INDEX_NAME))
    shards = []
    for shard in range(index.num_shards):
        name = data_shard_name("model.ckpt", shard, index.num_shards)
        data = files.read(name)
        if data is None:
            raise CheckpointError(f"{files.label(name)} is missing (the index names it)")
        shards.append(data)
    checkpoint = TFCheckpoint(index, shards, files.label("model.ckpt"))
    needed = {name for kind in ("fc_gqcnn", "gqcnn") for name, *_ in _variable_map(kind, angle_bins=1)}
    network_kind, state = convert_variables(
        {name: checkpoint.read(name) for name in sorted(needed) if name in checkpoint}, checkpoint.source
    )
    config = _config(files)
    expected_mode = "im_depth_sub" if network_kind == "fc_gqcnn" else "pose_stream"
    if config.get("input_depth_mode", expected_mode) != expected_mode:
        raise CheckpointError(
            f"{files.label('config.json')}: input_depth_mode {config['input_depth_mode']!r}, but the "
            f"variables are those of a {network_kind} network ({expected_mode})"
        )
    normalization, normalization_source = _normalization(files, network_kind)
    if network_kind == "fc_gqcnn":
        angle_bins = state["fc5.bias"].numel() // 2
        if config.get("angular_bins", angle_bins) != angle_bins:
            raise CheckpointError(
                f"config.json says {config['angular_bins']} angular bins, fc5 holds {angle_bins}"
            )
        network: FCGQCNN | GQCNN = FCGQCNN(angle_bins=angle_bins, normalization=normalization)
    else:
        network = GQCNN(normalization=normalization)
    network.load_state_dict(state)
    provenance = {
        "source": Path(path).name,
        "checkpoint": files.label("model.ckpt"),
        "converted_by": "dexrl import-weights (TensorFlow-free checkpoint reader)",
        "normalization_source": normalization_source,
        "normalization": asdict(normalization),
        "config": {
            k: config[k]
            for k in ("input_depth_mode", "angular_bins", "gripper_mode", "im_height", "im_width")
            if k in config
        },
    }
    return network.eval(), provenance
