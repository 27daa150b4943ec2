"""``dexrl eval-planner``: closed-loop success of planners (best grasp, executed in physics) on held-out heaps.

Every planner meets the same heaps: the world's generator is reseeded before each planner's run, so the
first heaps are identical (later ones diverge with the outcomes). Heap seeds live far from the seeds that
:mod:`.synthesize` uses, so evaluation heaps are never training heaps.

Under ``torchrun`` each rank runs every N-th batch of attempts on heaps of its own seed (:meth:`Rank.seed`; rank 0
keeps the single-process seed), and the outcome counts are summed over the ranks before the intervals are
computed: N ranks give the counts of N single-process runs with those seeds and batch shares, added up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dexrl.distributed import SINGLE_PROCESS, Rank
from dexrl.grasp import Planner
from dexrl.sim.grasp_runner import GraspRunner, OutcomeTally
from dexrl.stats import format_rate

__all__ = ["EVAL_SEED_OFFSET", "PlannerScore", "evaluate_planners", "markdown_table"]

EVAL_SEED_OFFSET = 1_000_000_007
"""Added to the seed of evaluation heaps (synthesis uses ``seed * 100_003 + shard``)."""


@dataclass
class PlannerScore:
    """Closed-loop result of one planner on one object set."""

    planner: str
    object_set: str
    tally: OutcomeTally

    def as_dict(self) -> dict:
        return {"planner": self.planner, "object_set": self.object_set, **self.tally.score()}


def evaluate_planners(
    runner: GraspRunner,
    planners: dict[str, Planner],
    attempts: int,
    seed: int = 0,
    progress: bool = True,
    rank: Rank = SINGLE_PROCESS,
) -> list[PlannerScore]:
    """Run ``attempts`` attempts (rounded up to whole batches) with each planner on fresh held-out heaps;
    ``rank`` runs its share of the batches, and the scores count the attempts of all ranks."""
    from tqdm import tqdm  # noqa: PLC0415

    world = runner.world
    batches = len(rank.share(max(1, -(-attempts // world.num_envs))))
    scores = []
    for name, planner in planners.items():
        world.generator.manual_seed(EVAL_SEED_OFFSET + rank.seed(seed))
        world.new_round()
        runner.executor.attempts_on_heap.zero_()
        runner.planner, runner.tally = planner, OutcomeTally()
        for _ in tqdm(range(batches), desc=f"eval {name}", unit="batch", disable=not (progress and rank.is_main)):
            runner.attempt()
        scores.append(PlannerScore(name, world.settings.objects.object_set, runner.tally.sum_over_ranks()))
        if rank.is_main:
            print(f"{name} on {world.settings.objects.object_set}: {runner.tally.summary()}")
    return scores


def markdown_table(scores: list[PlannerScore]) -> str:
    """The result table: success with 95% CI and the outcome breakdown per planner and object set."""
    outcome_names = list(scores[0].tally.as_dict()) if scores else []
    lines = [
        "| object set | planner | success [95% CI] | " + " | ".join(outcome_names) + " |",
        "|---|---|---|" + "---|" * len(outcome_names),
    ]
    for score in scores:
        counts = score.tally.as_dict()
        share = [f"{100 * counts[o] / max(1, score.tally.attempts):.1f}%" for o in outcome_names]
        rate = format_rate(score.tally.successes, score.tally.attempts)
        lines.append(f"| {score.object_set} | {score.planner} | {rate} | " + " | ".join(share) + " |")
    return "\n".join(lines) + "\n"


def write_scores(scores: list[PlannerScore], out: Path, meta: dict) -> None:
    """``eval_<set>.json`` and ``eval_<set>.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    object_set = scores[0].object_set if scores else "none"
    (out / f"eval_{object_set}.json").write_text(json.dumps({"meta": meta, "scores": [s.as_dict() for s in scores]}, indent=2))
    (out / f"eval_{object_set}.md").write_text(markdown_table(scores))
