"""The UI-independent session controller: one simulator session driven by commands, observed as snapshots.

Front-ends (the ``dexrl panel`` web panel, an Isaac Sim extension) import only this package's public names;
nothing here imports a UI toolkit.
"""

from .policy import GraspObservation, GraspPolicy, GraspTrainer, PolicyLoader
from .session import Session, SessionConfig
from .state import PlannerStatus, SceneGeometry, SessionState

__all__ = [
    "GraspObservation",
    "GraspPolicy",
    "GraspTrainer",
    "PlannerStatus",
    "PolicyLoader",
    "SceneGeometry",
    "Session",
    "SessionConfig",
    "SessionState",
]
