"""What the bridge serves: a planner plus the model description sent to clients in the handshake.

Any :class:`dexrl.grasp.Planner` can be served by constructing a :class:`Backend` around it (tests inject
their own); :func:`load_backend` builds the command line's choices, importing models only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dexrl.grasp import Planner

__all__ = ["Backend", "load_backend"]


@dataclass(frozen=True)
class Backend:
    """A planner to serve and how to describe it.

    Attributes:
        planner: called from one worker thread, one batch at a time.
        model_id: name of the model (shown to clients).
        provenance: where the weights come from (file, sha256, source checkpoint, ...).
        device: where inference runs.
    """

    planner: Planner
    model_id: str = "injected"
    provenance: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"


def _highest_object_backend() -> Backend:
    from dexrl.grasp.baseline import HighestObjectPlanner  # noqa: PLC0415

    return Backend(
        HighestObjectPlanner(),
        model_id="highest-object",
        provenance={"source": "dexrl.grasp.baseline (no weights)"},
    )


def _fcgqcnn_backend(weights: str | None, device: str | None) -> Backend:
    import torch  # noqa: PLC0415

    from dexrl.gqcnn import load_planner  # noqa: PLC0415
    from dexrl.gqcnn.model import FCGQCNNWeights  # noqa: PLC0415

    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    path = FCGQCNNWeights.DEFAULT.path if weights is None else Path(weights)
    planner = load_planner(path, device)
    card = planner.card
    provenance = {str(key): str(value) for key, value in card.provenance.items()}
    provenance.update(weights_file=path.name, sha256=str(card.sha256), num_params=str(card.num_params))
    return Backend(
        planner, model_id=f"{path.stem}@{str(card.sha256)[:12]}", provenance=provenance, device=device
    )


def load_backend(planner: str, *, weights: str | None = None, device: str | None = None) -> Backend:
    """Build the served planner by name.

    Args:
        planner: ``fcgqcnn`` (the PyTorch FC-GQ-CNN) or ``highest-object`` (the weight-free baseline).
        weights: FC-GQ-CNN weights file; None picks the packaged default.
        device: ``cpu`` or ``cuda:N``; None picks ``cuda:0`` when available.
    """
    if planner == "highest-object":
        return _highest_object_backend()
    if planner == "fcgqcnn":
        return _fcgqcnn_backend(weights, device)
    raise ValueError(f"unknown planner {planner!r}; choose fcgqcnn or highest-object")
