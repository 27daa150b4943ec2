"""Planners by name: the baseline, FC-GQ-CNN in this process, or a gqcnn_bridge server by its URL."""

from __future__ import annotations

from pathlib import Path

from dexrl.grasp import Planner

__all__ = ["default_planner", "make_planner"]


def make_planner(name: str, weights: Path | None = None, device: str = "cpu") -> Planner:
    """``"baseline"`` (highest object across its minor axis), ``"fcgqcnn"`` (``weights`` or the shipped ones,
    on ``device``) or ``"ws://host:port"`` (a remote FC-GQ-CNN served by ``dexrl serve``)."""
    if name == "baseline":
        from dexrl.grasp.baseline import HighestObjectPlanner  # noqa: PLC0415

        return HighestObjectPlanner()
    if name == "fcgqcnn":
        from dexrl.gqcnn import load_planner  # noqa: PLC0415

        return load_planner(weights, device=device)
    if name.startswith(("ws://", "wss://")):
        from gqcnn_bridge.client import RemotePlanner  # noqa: PLC0415

        return RemotePlanner(name)
    raise ValueError(f"unknown planner {name!r}: expected 'baseline', 'fcgqcnn' or a ws:// URL of a gqcnn_bridge")


def default_planner(device: str) -> tuple[Planner, str]:
    """FC-GQ-CNN with the shipped weights when they load, else the baseline planner; and its name."""
    try:
        return make_planner("fcgqcnn", None, device), "fcgqcnn"
    except (ImportError, FileNotFoundError, OSError) as error:
        print(f"[dexrl] FC-GQ-CNN unavailable ({error}); using the baseline planner")
        return make_planner("baseline", None, device), "baseline"
