"""SAC training and evaluation on the registered task ``DexRL-GraspCorrection`` (stable-baselines3).

Submodules import Isaac Lab and stable-baselines3; import them explicitly (``from dexrl.rl.train import train``).
"""
