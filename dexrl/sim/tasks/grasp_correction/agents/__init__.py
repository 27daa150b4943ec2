"""Agent hyperparameters of DexRL-GraspCorrection (one YAML per algorithm)."""
