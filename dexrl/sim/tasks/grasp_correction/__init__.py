"""``DexRL-GraspCorrection``: a one-step SAC agent corrects the planner's best grasp (see DESIGN.md)."""

import gymnasium as gym

from . import agents

gym.register(
    id="DexRL-GraspCorrection",
    entry_point=f"{__name__}.grasp_correction_env:GraspCorrectionEnv",
    disable_env_checker=True,
    kwargs={
        "env_cfg_entry_point": f"{__name__}.grasp_correction_env_cfg:GraspCorrectionEnvCfg",
        "sb3_cfg_entry_point": f"{agents.__name__}:sb3_ppo_cfg.yaml",
        "sb3_sac_cfg_entry_point": f"{agents.__name__}:sb3_sac_cfg.yaml",
        "default_agent": "sb3",
    },
)
