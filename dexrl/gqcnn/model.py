"""FC-GQ-CNN 4.0 PJ and the GQ-CNN 4.0 PJ crop network in PyTorch (Satish et al. 2019, Mahler et al. 2019).

Both share the image stream: conv1_1 9x9 1->16, conv1_2 5x5 16->16, 2x2 max-pool, conv2_1 5x5, conv2_2 5x5,
2x2 max-pool (no padding, ReLU after every convolution, pools round up like TensorFlow's "SAME"). Then:

- :class:`FCGQCNN` (633,200 parameters) is fully convolutional: fc3 as a 17x17 convolution 16->128, fc4 and
  fc5 as 1x1 convolutions 128->128->2A, i.e. two logits (fail, success) per angle bin at every output cell.
  The grasp depth z enters by subtraction in the graph: x = (I - z - mean) / std.
- :class:`GQCNN` (631,410 parameters) scores one 96x96 crop (grasp axis horizontal, grasp at the centre): fc3
  dense 4624->128, a pose stream pc1 1->16 on the standardised depth, fc4 = ReLU(W1 fc3 + W2 pc1 + b),
  fc5 -> 2. :meth:`FCGQCNN.from_crop_network` turns its dense layers into convolutions (one angle bin, the
  horizontal jaw axis).

Depth images are float32 metres along the optical axis, (B, 1, H, W); grasp depths are (B, D) metres, one row
of D depth bins per image. The file follows torchvision's layout: modules, weights enum, builders.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .weights import ModelCard, read_weights, save_weights

__all__ = [
    "FCGQCNN",
    "FC_GQCNN_4_0_PJ_NORMALIZATION",
    "GQCNN",
    "GQCNN_4_0_PJ_NORMALIZATION",
    "FCGQCNNWeights",
    "ImageStream",
    "Normalization",
    "PoseStream",
    "Weights",
    "build_network",
    "count_parameters",
    "fc_gqcnn_4_0_pj",
    "gqcnn_4_0_pj",
    "load_network",
    "save_network",
]

DepthInput = Literal["subtract", "pose_stream"]
"""How the grasp depth enters: subtracted from the image (FC-GQ-CNN 4.0 PJ) or by a pose stream (GQ-CNN)."""

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"


@dataclass(frozen=True)
class Normalization:
    """How a network standardises its inputs (statistics of its training set), all in metres.

    With ``depth_input="subtract"``: x = (I - z - image_mean) / image_std, and no pose statistics.
    With ``depth_input="pose_stream"``: x = (I - image_mean) / image_std and p = (z - pose_mean) / pose_std.
    """

    image_mean: float
    image_std: float
    pose_mean: float | None = None
    pose_std: float | None = None


FC_GQCNN_4_0_PJ_NORMALIZATION = Normalization(image_mean=0.0101286, image_std=0.0500007)
GQCNN_4_0_PJ_NORMALIZATION = Normalization(
    image_mean=0.772803, image_std=0.068166, pose_mean=0.755629, pose_std=0.068934
)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ImageStream(nn.Module):
    """The four convolutions and two pools shared by both networks: (N, 1, H, W) -> (N, 16, P2, Q2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1_1 = nn.Conv2d(1, 16, 9)
        self.conv1_2 = nn.Conv2d(16, 16, 5)
        self.conv2_1 = nn.Conv2d(16, 16, 5)
        self.conv2_2 = nn.Conv2d(16, 16, 5)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised depth (N, 1, H, W) -> features (N, 16, P2, Q2)."""
        return self.after_first_conv(F.relu(self.conv1_1(x)))

    def after_first_conv(self, h: torch.Tensor) -> torch.Tensor:
        """The stream from ReLU(conv1_1) (N, 16, H - 8, W - 8) on, so callers may compute conv1_1 their way.
        ReLU follows the pools here: max-pooling and ReLU commute, and pooled tensors are 4 times smaller."""
        h = F.relu(self.pool(self.conv1_2(h)), inplace=True)
        h = F.relu(self.conv2_1(h), inplace=True)
        return F.relu(self.pool(self.conv2_2(h)), inplace=True)


class PoseStream(nn.Module):
    """pc1 (1 -> 16, ReLU) on the standardised grasp depth and its term W2 pc1 in fc4 (16 -> 128, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.pc1 = nn.Linear(1, 16)
        self.to_fc4 = nn.Linear(16, 128, bias=False)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        """Standardised grasp depths (...) -> their additive contribution to fc4 (..., 128)."""
        return self.to_fc4(F.relu(self.pc1(depth.unsqueeze(-1))))


def _dense_layer(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; where x is one cell's input (the size of the layer's kernel: fc3 of a 96x96 crop's
    features, fc4 and fc5 after it, as the fast path rescores crops), as the matrix product it then is: cuDNN's
    convolutions took 0.23 ms (fc3) and 0.02 ms (fc4 and fc5) for 16 crops in float32 on an H200
    (2026-12-04)."""
    if x.shape[-2:] != layer.weight.shape[-2:]:
        return layer(x)
    return F.linear(x.flatten(1), layer.weight.flatten(1), layer.bias)[..., None, None]


class FCGQCNN(nn.Module):
    """The fully convolutional GQ-CNN: a quality map per angle bin and grasp depth in one pass.

    Args:
        angle_bins: A, the number of jaw-axis angle bins (16 for FC-GQ-CNN 4.0 PJ).
        depth_input: ``"subtract"`` (FC-GQ-CNN 4.0 PJ) or ``"pose_stream"`` (converted from a crop network).
        normalization: input statistics; pose statistics exactly when ``depth_input == "pose_stream"``.
    """

    def __init__(
        self,
        *,
        angle_bins: int = 16,
        depth_input: DepthInput = "subtract",
        normalization: Normalization = FC_GQCNN_4_0_PJ_NORMALIZATION,
    ) -> None:
        super().__init__()
        if (normalization.pose_mean is not None) != (depth_input == "pose_stream"):
            raise ValueError(
                f"depth_input={depth_input!r} needs pose statistics exactly for a pose stream: "
                f"{normalization}"
            )
        self.angle_bins, self.depth_input, self.normalization = angle_bins, depth_input, normalization
        self.image_stream = ImageStream()
        self.fc3 = nn.Conv2d(16, 128, 17)
        self.fc4 = nn.Conv2d(128, 128, 1)
        self.pose_stream = PoseStream() if depth_input == "pose_stream" else None
        self.fc5 = nn.Conv2d(128, 2 * angle_bins, 1)
        _he_normal_init(self)

    def forward(
        self,
        depth: torch.Tensor,
        grasp_depth: torch.Tensor,
        *,
        share_first_conv: bool = True,
        autocast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Logits of every grasp.

        Args:
            depth: (B, 1, H, W) depth images [m], missing pixels already filled; H, W >= 96.
            grasp_depth: (B, D) grasp depths [m] to evaluate per image.
            share_first_conv: compute conv1_1 once per image and shift it per grasp depth (exact: the layer is
                linear, conv(I - z) = conv(I) - z sum(w)); False runs each (image, depth) pair separately.
            autocast_dtype: run everything after conv1_1 in this dtype (e.g. ``torch.bfloat16``); conv1_1
                stays float32 because it sees raw depths, whose millimetre differences bfloat16 cannot hold.

        Returns:
            (B, D, A, 2, h, w) float32 logits (fail, success) per depth, angle bin and output cell; see
            :mod:`dexrl.gqcnn.grid` for where cells and bins lie in the image.
        """
        batch, bins = grasp_depth.shape
        first = self._first_conv(depth, grasp_depth, share_first_conv, autocast_dtype or torch.float32)
        precision = (
            nullcontext()
            if autocast_dtype is None
            else torch.autocast(depth.device.type, dtype=autocast_dtype)
        )
        with precision:
            features = self.image_stream.after_first_conv(first)
            if self.pose_stream is None:
                logits = self.quality_logits(features)
            else:
                norm = self.normalization
                pose_term = self.pose_stream((grasp_depth - norm.pose_mean) / norm.pose_std)  # (B, D, 128)
                fc4 = self.fc4(F.relu(self._fc3(features)))
                logits = self.fc5(F.relu(fc4.unsqueeze(1) + pose_term[..., None, None]).flatten(0, 1))
        return logits.float().unflatten(0, (batch, bins)).unflatten(2, (self.angle_bins, 2))

    def quality_logits(self, features: torch.Tensor) -> torch.Tensor:
        """fc3 -> fc4 -> fc5 with their ReLUs, for a network without a pose stream: logits (N, 2A, h, w),
        (fail, success) per angle bin, of the image stream's features (N, 16, P2, Q2)."""
        fc4 = _dense_layer(self.fc4, F.relu(self._fc3(features)))
        return _dense_layer(self.fc5, F.relu(fc4))

    def _fc3(self, features: torch.Tensor) -> torch.Tensor:
        """fc3 of the image stream's features (N, 16, P2, Q2)."""
        return _dense_layer(self.fc3, features)

    def _first_conv(
        self, depth: torch.Tensor, grasp_depth: torch.Tensor, share: bool, dtype: torch.dtype
    ) -> torch.Tensor:
        """ReLU(conv1_1(normalised input)): per image (B, 16, H - 8, W - 8) with a pose stream, else per image
        and grasp depth (B * D, 16, H - 8, W - 8) with x = (I - z - mean) / std. The convolution runs in
        float32; with a shared convolution, the per-depth shift and the ReLU run in the trunk's ``dtype``."""
        conv, norm = self.image_stream.conv1_1, self.normalization
        if self.pose_stream is not None:
            return F.relu(conv((depth - norm.image_mean) / norm.image_std))
        if not share:
            x = (depth.unsqueeze(1) - grasp_depth[:, :, None, None, None] - norm.image_mean) / norm.image_std
            return F.relu(conv(x.flatten(0, 1)))
        reference = grasp_depth.mean(dim=1)
        shared = self.shared_first_conv(depth, reference)  # (B, 16, ., .)
        shifts = self.first_conv_shifts(grasp_depth, reference)  # (B, D, 16)
        shifted = shared.to(dtype).unsqueeze(1) + shifts.to(dtype)[..., None, None]  # (B, D, 16, ., .)
        return F.relu(shifted.flatten(0, 1), inplace=True)

    def shared_first_conv(self, depth: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The depth-independent part of conv1_1, once per image: conv((I - reference) / std) without bias,
        (B, 16, H - 8, W - 8) float32, of depth images (B, 1, H, W) [m] and per-image reference depths (B,)
        [m].

        conv1_1 is linear, so at grasp depth z it equals this plus :meth:`first_conv_shifts` (per channel).
        Subtracting a reference near the grasp depths first keeps the sums small (float32 holds them to
        about 1e-6 of the input's millimetre structure). Only for ``depth_input == "subtract"``."""
        return F.conv2d(depth - reference[:, None, None, None], self.shared_first_conv_weight)

    @property
    def shared_first_conv_weight(self) -> torch.Tensor:
        """The weight (16, 1, 9, 9) of :meth:`shared_first_conv`: conv1_1's divided by the image std [1/m]."""
        return self.image_stream.conv1_1.weight / self.normalization.image_std

    def first_conv_shifts(self, grasp_depth: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-channel offsets (B, D, 16) that turn :meth:`shared_first_conv` into conv1_1 (bias included) at
        grasp depths (B, D) [m]: bias - (z - reference + mean) sum(w) / std."""
        conv, norm = self.image_stream.conv1_1, self.normalization
        kernel_sums = conv.weight.sum(dim=(1, 2, 3)) / norm.image_std  # (16,)
        offsets = grasp_depth - reference[:, None] + norm.image_mean  # (B, D)
        return conv.bias - offsets[..., None] * kernel_sums

    @classmethod
    def from_crop_network(cls, crop: GQCNN) -> FCGQCNN:
        """The crop network's dense layers as convolutions: one angle bin (horizontal jaw axis) per cell, and
        the value at each cell equals ``crop`` on the 96x96 crop centred there."""
        fc = cls(angle_bins=1, depth_input="pose_stream", normalization=crop.normalization)
        state = crop.state_dict()
        state["fc3.weight"] = state["fc3.weight"].reshape(128, 16, 17, 17)
        state["fc4.weight"] = state["fc4.weight"][..., None, None]
        state["fc5.weight"] = state["fc5.weight"][..., None, None]
        fc.load_state_dict(state)
        return fc.to(next(crop.parameters()).device)

    def architecture(self) -> dict[str, Any]:
        """What :func:`build_network` needs to rebuild this network (stored in the model card)."""
        return {"network": "fc_gqcnn", "angle_bins": self.angle_bins, "depth_input": self.depth_input}


class GQCNN(nn.Module):
    """The GQ-CNN crop network: logits for grasps at the centre of 96x96 crops, the jaw axis horizontal."""

    def __init__(self, *, normalization: Normalization = GQCNN_4_0_PJ_NORMALIZATION) -> None:
        super().__init__()
        if normalization.pose_mean is None or normalization.pose_std is None:
            raise ValueError(f"the crop network needs pose statistics: {normalization}")
        self.normalization = normalization
        self.image_stream = ImageStream()
        self.fc3 = nn.Linear(16 * 17 * 17, 128)
        self.pose_stream = PoseStream()
        self.fc4 = nn.Linear(128, 128)
        self.fc5 = nn.Linear(128, 2)
        _he_normal_init(self)

    def forward(self, crops: torch.Tensor, grasp_depth: torch.Tensor) -> torch.Tensor:
        """Crops (N, 1, 96, 96) [m] and grasp depths (N,) [m] -> logits (N, 2) (fail, success)."""
        norm = self.normalization
        features = self.image_stream((crops - norm.image_mean) / norm.image_std).flatten(1)  # (c, h, w) order
        pose_term = self.pose_stream((grasp_depth - norm.pose_mean) / norm.pose_std)
        return self.fc5(F.relu(self.fc4(F.relu(self.fc3(features))) + pose_term))

    def architecture(self) -> dict[str, Any]:
        return {"network": "gqcnn"}


def _he_normal_init(module: nn.Module) -> None:
    """He-normal weights (fan in, ReLU gain) and zero biases, as the released models were initialised."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


# --- weights files ----------------------------------------------------------------------------------------


def build_network(card: ModelCard) -> FCGQCNN | GQCNN:
    """An untrained network of the architecture and normalisation a model card describes."""
    architecture, normalization = dict(card.architecture), Normalization(**card.normalization)
    kind = architecture.pop("network", None)
    if kind == "fc_gqcnn":
        return FCGQCNN(normalization=normalization, **architecture)
    if kind == "gqcnn" and not architecture:
        return GQCNN(normalization=normalization)
    raise ValueError(f"unknown network architecture in the model card: {card.architecture}")


def save_network(network: FCGQCNN | GQCNN, path: str | Path, provenance: dict[str, Any]) -> ModelCard:
    """Write ``network`` as safetensors plus its JSON model card (see :mod:`dexrl.gqcnn.weights`)."""
    card = ModelCard(
        architecture=network.architecture(),
        normalization=asdict(network.normalization),
        num_params=count_parameters(network),
        provenance=provenance,
    )
    return save_weights(path, network.state_dict(), card)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[FCGQCNN | GQCNN, ModelCard]:
    """Read a weights file and its card; returns the network (eval mode) and the card."""
    state, card = read_weights(path)
    network = build_network(card)
    network.load_state_dict(state)
    if count_parameters(network) != card.num_params:
        raise ValueError(
            f"{path}: the card says {card.num_params} parameters, the network has {count_parameters(network)}"
        )
    return network.to(device).eval(), card


@dataclass(frozen=True)
class Weights:
    """A weights file that ships with DexRL (under ``assets/weights``) and what is known about it.

    Attributes:
        file: file name of the safetensors file (its model card sits next to it).
        num_params: parameters of the network, checked by the tests.
        angle_bins: angle bins of the network.
        recipe: how the weights were made.
        min_size: smallest image (H, W) the network accepts [px].
    """

    file: str
    num_params: int
    angle_bins: int
    recipe: str
    min_size: tuple[int, int] = (96, 96)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


class FCGQCNNWeights(Enum):
    """FC-GQ-CNN weights that ship with DexRL."""

    DEXRL_V1 = Weights(
        file="fcgqcnn_dexrl.safetensors",
        num_params=633_200,
        angle_bins=16,
        recipe="dexrl train-gqcnn on grasps synthesised in the DexRL bin scene",
    )
    DEFAULT = DEXRL_V1

    @property
    def path(self) -> Path:
        return self.value.path


def fc_gqcnn_4_0_pj(*, weights: FCGQCNNWeights | str | Path | None = None) -> FCGQCNN:
    """FC-GQ-CNN 4.0 PJ: 16 angle bins, depth subtracted in the graph; untrained without ``weights``.

    Args:
        weights: a shipped weights enum member, or the path of a weights file (e.g. one written by
            ``dexrl import-weights``).
    """
    if weights is None:
        return FCGQCNN()
    network, _ = load_network(weights.path if isinstance(weights, FCGQCNNWeights) else weights)
    if not isinstance(network, FCGQCNN):
        raise TypeError(f"{weights} holds a crop network; use gqcnn_4_0_pj or FCGQCNN.from_crop_network")
    return network


def gqcnn_4_0_pj(*, weights: str | Path | None = None) -> GQCNN:
    """GQ-CNN 4.0 PJ crop network; untrained without ``weights`` (a weights file path)."""
    if weights is None:
        return GQCNN()
    network, _ = load_network(weights)
    if not isinstance(network, GQCNN):
        raise TypeError(f"{weights} holds an FC network, not the crop network")
    return network
