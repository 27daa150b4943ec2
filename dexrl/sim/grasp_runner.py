"""Bins, planner and executor together: render -> plan -> deproject -> execute -> tally, for all envs at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dexrl.distributed import all_reduce_sum
from dexrl.grasp import GraspPoses, NoValidGrasps, Planner, PlanResult, image_to_world
from dexrl.stats import format_rate, wilson_interval

from .bin_world import BinWorld
from .executor import AttemptResult, ExecutorCfg, GraspExecutor, Outcome
from .mounts import embodiment_entities
from .gripper import GripperCfg
from .scene_cfg import SceneSettingsCfg
from .world_factory import make_world

__all__ = ["ASSET_DIR", "AttemptBatch", "GraspRunner", "OutcomeTally", "Proposer", "View"]

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets"
"""The repository's ``assets/`` folder (generated gripper USD files live in ``assets/gripper``)."""


Proposer = Callable[[torch.Tensor], tuple[GraspPoses, dict[str, torch.Tensor]]]
"""Given env ids (n,), the world-frame grasp poses of their next attempts and per-env records (rows of n)."""


class OutcomeTally:
    """Counts of attempt outcomes."""

    def __init__(self):
        self.counts = torch.zeros(len(Outcome), dtype=torch.long)

    def add(self, outcomes: torch.Tensor) -> None:
        self.counts += torch.bincount(outcomes.cpu(), minlength=len(Outcome))

    def sum_over_ranks(self) -> OutcomeTally:
        """Sum the counts (in place) over the ranks of a distributed run, so that rates and confidence
        intervals come from every rank's attempts; unchanged for a single process. Returns the tally."""
        all_reduce_sum(self.counts)
        return self

    @property
    def attempts(self) -> int:
        return int(self.counts.sum())

    @property
    def successes(self) -> int:
        return int(self.counts[Outcome.SUCCESS])

    def as_dict(self) -> dict[str, int]:
        return {outcome.name.lower(): int(self.counts[outcome]) for outcome in Outcome}

    def score(self) -> dict:
        """Attempts, successes, success rate with its 95% Wilson interval, and the outcome counts."""
        low, high = wilson_interval(self.successes, self.attempts)
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.successes / max(1, self.attempts),
            "ci95": [low, high],
            "outcomes": self.as_dict(),
        }

    def summary(self) -> str:
        parts = ", ".join(f"{name} {count}" for name, count in self.as_dict().items() if count)
        return f"success {format_rate(self.successes, self.attempts)}; outcomes: {parts}"


@dataclass
class View:
    """What the planner saw in every env and its best grasp per env."""

    depth: torch.Tensor  # (N, H, W) [m]
    mask: torch.Tensor  # (N, H, W) bool
    plan: PlanResult
    poses: GraspPoses  # the best grasp per env in the world frame, fields of shape (N,)


@dataclass
class AttemptBatch:
    """One attempt per env: what the planner saw and proposed, and how it ended."""

    depth: torch.Tensor  # (N, H, W) [m]
    mask: torch.Tensor  # (N, H, W) bool
    plan: PlanResult
    result: AttemptResult


class GraspRunner:
    """Owns the bin world with the fingers on their mount (``settings.embodiment``), an executor and a planner."""

    def __init__(
        self,
        settings: SceneSettingsCfg,
        planner: Planner,
        gripper: GripperCfg | None = None,
        executor_cfg: ExecutorCfg | None = None,
        asset_dir: Path = ASSET_DIR / "gripper",
    ):
        gripper = gripper or GripperCfg()
        world = make_world(settings, extras=embodiment_entities(settings.embodiment, gripper, asset_dir, settings.franka))
        self._bind(world, planner, gripper, executor_cfg)

    @classmethod
    def attach(
        cls, world: BinWorld, planner: Planner, gripper: GripperCfg, executor_cfg: ExecutorCfg | None = None
    ) -> GraspRunner:
        """A runner over a world that already holds the gripper built from ``gripper`` (see
        :func:`~dexrl.sim.mounts.embodiment_entities`)."""
        runner = cls.__new__(cls)
        runner._bind(world, planner, gripper, executor_cfg)
        return runner

    def _bind(self, world: BinWorld, planner: Planner, gripper: GripperCfg, executor_cfg: ExecutorCfg | None) -> None:
        self.gripper = gripper
        self.world = world
        self.world.new_round()
        self.executor = GraspExecutor(self.world, self.gripper, executor_cfg)
        self.planner = planner
        self.tally = OutcomeTally()

    def observe(self, env_ids: torch.Tensor | None = None) -> View:
        """Render all bins and plan the best grasp per env of ``env_ids`` (all by default); the view holds
        the listed envs' rows, in that order."""
        world = self.world
        ids = None if env_ids is None else env_ids.to(world.device)
        rows = slice(None) if ids is None else ids  # all envs: no copy of the images
        intrinsics = world.settings.camera.intrinsics

        def look() -> tuple[torch.Tensor, torch.Tensor]:
            depth = world.render_depth()[rows]
            return depth, world.bin_mask(depth, ids)

        depth, mask = look()
        try:
            plan = self.planner.plan(depth, intrinsics, mask, k=1)
        except NoValidGrasps:
            # Some bin shows nothing graspable: start fresh heaps and plan again.
            world.new_round(ids)
            depth, mask = look()
            plan = self.planner.plan(depth, intrinsics, mask, k=1)
        poses = image_to_world(plan.best.to(world.device), intrinsics, world.extrinsics[rows])
        return View(depth, mask, plan, poses)

    def execute(self, poses: GraspPoses, render_after_lift: bool = False) -> AttemptResult:
        """Execute one world-frame grasp per env and tally the outcomes."""
        result = self.executor.execute(poses, render_after_lift=render_after_lift)
        self.tally.add(result.outcome)
        return result

    def attempt(self, render_after_lift: bool = False) -> AttemptBatch:
        """Render all bins, plan the best grasp per env, execute them all, and tally the outcomes."""
        view = self.observe()
        result = self.execute(view.poses, render_after_lift=render_after_lift)
        return AttemptBatch(view.depth, view.mask, view.plan, result)

    def stream(
        self,
        attempts: int | None,
        restart_at: int | None = None,
        propose: Proposer | None = None,
        admit: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> Iterator[tuple[torch.Tensor, AttemptResult, dict[str, torch.Tensor]]]:
        """Run ``attempts`` attempts (tallied) without lock-step: an env whose attempt is over is judged at once,
        and it starts its next attempt, proposed on a fresh render, while the others run on. Yields, for each
        group of attempts judged together: their envs ((n,) long), their :class:`AttemptResult`, and the
        rows of those envs of what ``propose`` recorded when it proposed the attempts.

        Every env makes the same number of attempts (``attempts`` / N, the first ``attempts`` % N envs one more),
        as in lock-step batches: envs whose attempts end quickly (collisions, say) do not make more of them, so
        the outcomes are sampled as in lock-step and only the waiting for the slowest env of each batch goes.
        When an attempt is judged, its env's heap (re-drawn or not) comes to rest while the others go on, and the
        env waits for it (:meth:`GraspExecutor.streaming`, which also waits, at the end, for heaps still coming
        to rest).

        Args:
            attempts: attempts in all; the stream ends when all of them are judged. None: no count; each env goes
                on until ``admit`` stops it (which it then must do for every env).
            restart_at: envs that wait for one render and proposal, which then starts their attempts
                together (default: an eighth of the envs, at least 1). Rendering covers every env, so on a
                GPU with many envs a render per finished env would cost more than it saves.
            propose: the next attempt's world-frame grasp poses for some envs, with per-env records (tensors
                with one row per env); default: the planner's best grasp (:meth:`observe`), no records.
            admit: given the envs judged with attempts to go whose heaps are at rest ((m,) long, on the CPU),
                which of them may start (with their group, ``restart_at`` counting only those) and which stop
                for good ((m,) bool each, disjoint); the others wait, the world stepping on, and are asked again
                at the next check. An env for which it begins a heap (:meth:`BinWorld.begin_round`) must not
                start. Default: all may start.
        """
        world, executor = self.world, self.executor
        n = world.num_envs
        restart_at = max(1, n // 8) if restart_at is None else max(1, restart_at)
        propose = propose or (lambda ids: (self.observe(ids).poses, {}))
        records: dict[str, torch.Tensor] = {}

        def start(ids: torch.Tensor) -> None:
            poses, recorded = propose(ids)
            for name, rows in recorded.items():
                if name not in records:
                    records[name] = rows.new_zeros((n, *rows.shape[1:]))
                records[name][ids] = rows
            executor.start(poses, ids)

        if attempts is None:
            if admit is None:
                raise ValueError("a stream without an attempt count needs an admit() that stops its envs")
            quota = torch.full((n,), torch.iinfo(torch.long).max // 2)  # attempts each env has yet to start
        else:
            quota = torch.full((n,), attempts // n, dtype=torch.long)
            quota[: attempts % n] += 1
        first = quota.nonzero().flatten()
        quota[first] -= 1
        in_flight = len(first)
        waiting = torch.empty(0, dtype=torch.long)  # envs judged, with attempts to go
        with executor.streaming():
            start(first.to(world.device))
            while in_flight or len(waiting):
                world.step(executor.check_every)
                executor.heaps_rested(world.rested_rounds())
                judged = executor.finished().nonzero().flatten()
                if len(judged):
                    done = judged.to(world.device)
                    result = executor.conclude(done)
                    self.tally.add(result.outcome)
                    in_flight -= len(done)
                    yield done, result, {name: rows[done] for name, rows in records.items()}
                    waiting = torch.cat((waiting, judged[quota[judged] > 0]))
                if not len(waiting):
                    continue
                go = torch.zeros_like(waiting, dtype=torch.bool)
                stop = torch.zeros_like(go)
                at_rest = ~world.coming_to_rest(waiting)  # the others wait for their heaps
                if admit is None:
                    go[at_rest] = True
                elif bool(at_rest.any()):
                    go[at_rest], stop[at_rest] = admit(waiting[at_rest])
                    quota[waiting[stop]] = 0
                    waiting, go = waiting[~stop], go[~stop]
                ready, held = int(go.sum()), len(waiting) - int(go.sum())
                # Start a group once it is full, or once it holds every env that could still join it.
                could_join = int((quota > 0).sum()) - held  # ready ones and those in flight
                if ready and ready >= min(restart_at, could_join):
                    quota[waiting[go]] -= 1
                    start(waiting[go].to(world.device))
                    in_flight += ready
                    waiting = waiting[~go]
