"""Isaac Lab tasks of DexRL, registered with gymnasium on import (the ``isaaclab.tasks`` entry point)."""

from . import grasp_correction  # noqa: F401
