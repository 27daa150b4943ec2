"""Physics-labelled grasp data for FC-GQ-CNN and closed-loop planner evaluation (``dexrl synth``,
``dexrl eval-planner``)."""

from .candidates import CandidateMix, CandidateSampler, object_pixels

__all__ = ["CandidateMix", "CandidateSampler", "object_pixels"]
