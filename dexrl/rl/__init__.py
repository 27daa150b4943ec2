"""SAC training and evaluation on the registered task ``DexRL-GraspCorrection`` (stable-baselines3).

Submodules import Isaac Lab and stable-baselines3; import them explicitly (``from dexrl.rl.train import train``).
"""

import json
from pathlib import Path

SHIPPED_AGENT = Path(__file__).resolve().parents[2] / "assets" / "agents" / "sac_grasp_correction.zip"
"""The SAC agent the repository ships (trained on the seen set; its model card is the ``.json`` beside it)."""


def shipped_agent_planner() -> str:
    """The planner whose grasps the shipped agent learned to correct (``"planner"`` in its model card)."""
    return json.loads(SHIPPED_AGENT.with_suffix(".json").read_text())["planner"]
