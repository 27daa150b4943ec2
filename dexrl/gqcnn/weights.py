"""DexRL's weights format: a safetensors file plus a JSON model card next to it (same stem, ``.json``).

``fcgqcnn_dexrl.safetensors`` holds the tensors under PyTorch state-dict names; ``fcgqcnn_dexrl.json`` says
what they are::

    {"format": "dexrl-gqcnn-weights", "format_version": 1,
     "architecture": {"network": "fc_gqcnn", "angle_bins": 16, "depth_input": "subtract"},
     "normalization": {"image_mean": 0.0101286, "image_std": 0.0500007, "pose_mean": null, "pose_std": null},
     "num_params": 633200,
     "sha256": "<of the safetensors file>",
     "provenance": {"source": "...", ...}}

The card is what a person opens to learn where weights come from; loading checks the file against its sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["CARD_FORMAT", "ModelCard", "card_path", "read_weights", "save_weights"]

CARD_FORMAT = "dexrl-gqcnn-weights"
_CARD_VERSION = 1


@dataclass
class ModelCard:
    """What a weights file holds and where it comes from.

    Attributes:
        architecture: ``{"network": "fc_gqcnn" | "gqcnn", ...}``, the network's constructor arguments.
        normalization: ``image_mean``, ``image_std``, ``pose_mean``, ``pose_std`` [m] (pose ones may be None).
        num_params: number of parameters, checked on load.
        provenance: free-form record of the source (checkpoint, training run, dataset, date).
        sha256: hex digest of the safetensors file; filled in by :func:`save_weights`.
    """

    architecture: dict[str, Any]
    normalization: dict[str, float | None]
    num_params: int
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps({"format": CARD_FORMAT, "format_version": _CARD_VERSION, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        data = json.loads(text)
        if data.get("format") != CARD_FORMAT:
            raise ValueError(f"{source} is not a DexRL model card (format {data.get('format')!r})")
        if data.get("format_version") != _CARD_VERSION:
            raise ValueError(f"{source}: card format version {data.get('format_version')} is not supported")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def card_path(weights_path: str | Path) -> Path:
    """The model card belonging to a weights file: same folder and stem, ``.json``."""
    return Path(weights_path).with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> ModelCard:
    """Write the tensors (contiguous, on the CPU) and the card; returns the card with its sha256 set."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights files end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # imported here: the planner bench runs on hosts with only torch and numpy
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file(
        {name: t.detach().cpu().contiguous() for name, t in state_dict.items()},
        str(path),
        {"format": CARD_FORMAT},
    )
    card = ModelCard(**{**asdict(card), "sha256": _sha256(path)})
    card_path(path).write_text(card.to_json() + "\n")
    return card


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read a weights file and its card; raises FileNotFoundError or ValueError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    card_file = card_path(path)
    if not card_file.is_file():
        raise FileNotFoundError(f"model card not found next to the weights: {card_file}")
    card = ModelCard.from_json(card_file.read_text(), str(card_file))
    if card.sha256 is not None and card.sha256 != _sha256(path):
        raise ValueError(
            f"{path} does not match the sha256 in {card_file.name}: the file is damaged or was replaced"
        )
    from safetensors.torch import load_file  # noqa: PLC0415

    return load_file(str(path)), card
