"""FC-GQ-CNN in PyTorch: networks, pre-processing, the grasping policy, weights (incl. the official TensorFlow
checkpoints, read without TensorFlow), training and benchmarks.

Names are imported on first use, so ``import dexrl.gqcnn`` (``dexrl bench`` does it to list its targets) is
light.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .policy import FCGQCNNPlanner, PlannerOptions

__all__ = [
    "FCGQCNN",
    "GQCNN",
    "FCGQCNNPlanner",
    "FCGQCNNWeights",
    "PlannerOptions",
    "extract_crops",
    "fc_gqcnn_4_0_pj",
    "gqcnn_4_0_pj",
    "import_official",
    "inpaint",
    "load_network",
    "load_planner",
    "save_network",
]

_LAZY = {
    "FCGQCNN": "model",
    "FCGQCNNWeights": "model",
    "GQCNN": "model",
    "fc_gqcnn_4_0_pj": "model",
    "gqcnn_4_0_pj": "model",
    "load_network": "model",
    "save_network": "model",
    "FCGQCNNPlanner": "policy",
    "PlannerOptions": "policy",
    "extract_crops": "preprocess",
    "inpaint": "preprocess",
    "import_official": "official",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_planner(
    weights: str | Path | None = None, device: str = "cpu", options: PlannerOptions | None = None
) -> FCGQCNNPlanner:
    """An FC-GQ-CNN planner with weights from a file (DexRL format: ``.safetensors`` + ``.json`` card).

    Args:
        weights: the weights file; None loads the shipped ``assets/weights/fcgqcnn_dexrl.safetensors``. A crop
            network's weights are converted to an FC network that plans horizontal jaw axes only.
        device: ``cpu`` or ``cuda:N``.
        options: planning options (defaults: the released policy's).

    Raises:
        FileNotFoundError: the weights (or their card) do not exist; the message says how to get them.
    """
    from .model import FCGQCNN, FCGQCNNWeights, load_network  # noqa: PLC0415
    from .policy import FCGQCNNPlanner  # noqa: PLC0415

    path = FCGQCNNWeights.DEFAULT.path if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"FC-GQ-CNN weights not found at {path}. Train them with `dexrl train-gqcnn`, or convert a "
            "released model with `dexrl import-weights FC-GQCNN-4.0-PJ.zip`, and pass the .safetensors file "
            "as weights"
        )
    network, card = load_network(path, device)
    if not isinstance(network, FCGQCNN):
        network = FCGQCNN.from_crop_network(network)
    return FCGQCNNPlanner(network, device, options, card=card)
