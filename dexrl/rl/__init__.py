"""SAC training and evaluation on the registered task ``DexRL-GraspCorrection`` (stable-baselines3).

Submodules import Isaac Lab and stable-baselines3; import them explicitly (``from dexrl.rl.train import train``).
"""

from pathlib import Path

SHIPPED_AGENT = Path(__file__).resolve().parents[2] / "assets" / "agents" / "sac_grasp_correction.zip"
"""The SAC agent the repository ships (trained on the seen set; its model card is the ``.json`` beside it)."""
