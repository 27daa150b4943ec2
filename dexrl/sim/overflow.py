"""Which envs lost contacts or constraint rows to full physics buffers.

MuJoCo-Warp keeps at most ``njmax`` constraint rows per world and drops the rest; Newton's collision pipeline
hands it at most ``naconmax`` contacts (``nconmax`` per env, one pool for all envs) and drops the rest. Both
only print a warning. A heap simulated without some of its contacts is not physics we can label grasps with,
so :class:`~dexrl.sim.bin_world.BinWorld` treats an overflowed env as a faulted one (its attempt is a fault,
its heap is drawn again), and small buffers that fit the object set are safe to use.

What is read:
- MuJoCo-Warp's per-world ``overflow`` bit mask (sticky until cleared): rows past ``njmax``, and its own
  contact buffers where MuJoCo's collision runs (``use_mujoco_contacts``). The solver's iteration-limit bits
  are not overflows and are ignored.
- Newton's contact count against ``naconmax``, after every step: the pool is shared, so an overflow there
  marks every env (until each is cleared).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import warp as wp
from mujoco_warp import OverflowType

__all__ = ["BUFFER_OVERFLOW_BITS", "OverflowWatch"]

BUFFER_OVERFLOW_BITS = int(
    OverflowType.NEFC
    | OverflowType.NJMAX_NNZ
    | OverflowType.BROADPHASE
    | OverflowType.NARROWPHASE
    | OverflowType.CCD
)
"""MuJoCo-Warp's overflow bits for dropped constraint rows or contacts (not, e.g., its iteration limits)."""


class _Views(NamedTuple):
    """Torch views of the live simulation's arrays, and the objects they belong to."""

    solver: Any
    contacts: Any
    marks: torch.Tensor  # (num_envs,) int: MuJoCo-Warp's overflow bits per world
    contact_count: torch.Tensor | None  # (1,) int: Newton's contacts in the last step (None: MuJoCo's own)
    contact_pool: int  # naconmax


class OverflowWatch:
    """Sticky per-env overflow flags of a Newton + MuJoCo-Warp simulation.

    Args:
        manager: Isaac Lab's Newton physics manager (``SimulationContext.physics_manager``).
        num_envs: envs, one MuJoCo-Warp world each.
        device: where the flags live.
    """

    def __init__(self, manager, num_envs: int, device: torch.device):
        self._manager = manager
        self.num_envs = num_envs
        self._contacts_lost = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self._views: _Views | None = None
        self.overflowed_heaps = 0  # heaps that overflowed, counted when they are cleared

    def _live(self) -> _Views | None:
        """Views of the live solver's arrays (a hard reset of the simulation replaces the solver); None where
        the physics is not MuJoCo-Warp with one world per env."""
        solver, contacts = getattr(self._manager, "_solver", None), getattr(self._manager, "_contacts", None)
        data = getattr(solver, "mjw_data", None)
        if data is None or data.nworld != self.num_envs:
            return None
        if self._views is None or self._views.solver is not solver or self._views.contacts is not contacts:
            count = None if contacts is None else wp.to_torch(contacts.rigid_contact_count)
            self._views = _Views(solver, contacts, wp.to_torch(data.overflow), count, data.naconmax)
        return self._views

    def after_step(self) -> None:
        """Note a contact overflow of the step just taken (one comparison on the device, no sync)."""
        views = self._live()
        if views is not None and views.contact_count is not None:
            self._contacts_lost |= views.contact_count[0] > views.contact_pool

    def envs(self) -> torch.Tensor:
        """(num_envs,) bool: envs that lost contacts or constraint rows since they were last cleared."""
        views = self._live()
        if views is None:
            return self._contacts_lost.clone()
        return ((views.marks & BUFFER_OVERFLOW_BITS) != 0) | self._contacts_lost

    def clear(self, env_ids: torch.Tensor) -> None:
        """Forget the overflows of ``env_ids`` as their heaps are drawn again; count them in
        :attr:`overflowed_heaps` (and warn the first time)."""
        overflowed = int(self.envs()[env_ids].sum())
        if overflowed:
            if not self.overflowed_heaps:
                warnings.warn(
                    f"{overflowed} heap(s) lost contacts or constraint rows to full physics buffers and "
                    "count as faults; raise physics.njmax (rows per env) or physics.nconmax (contacts per "
                    "env)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self.overflowed_heaps += overflowed
        views = self._live()
        if views is not None:
            views.marks[env_ids] = 0
        self._contacts_lost[env_ids] = False
