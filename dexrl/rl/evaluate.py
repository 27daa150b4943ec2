"""The result table of the grasp-correction agent (``dexrl eval``).

Each object set gets one world whose envs are dealt round-robin to the arms being compared (the planner alone,
i.e. the zero action, and one or more agents). Every env draws its heaps from the same distribution, so the
arms meet statistically identical heaps in one run. Heap seeds are offset by
:data:`dexrl.synth.evaluate.EVAL_SEED_OFFSET`, away from the seeds of training heaps.

Under ``torchrun`` each rank runs its share of the attempts on heaps of its own seed (:meth:`Rank.seed`; rank 0
keeps the single-process seed) and the outcome counts are summed over the ranks before the intervals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import SAC

from dexrl.distributed import SINGLE_PROCESS, Rank
from dexrl.sim.executor import Outcome
from dexrl.sim.grasp_runner import OutcomeTally
from dexrl.sim.tasks.grasp_correction.grasp_correction_env import GraspCorrectionEnv
from dexrl.synth.evaluate import EVAL_SEED_OFFSET

__all__ = ["ArmScore", "Policy", "evaluate_arms", "markdown_table", "plot_scores", "sac_policy", "summarize", "write_results", "zero_policy"]

Policy = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""Maps the task's batched policy observation to actions (n, 4) in [-1, 1]."""


def zero_policy(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The planner's grasp unchanged."""
    return torch.zeros(len(obs["grasp"]), 4, device=obs["grasp"].device)


def sac_policy(checkpoint: Path, device: str = "auto") -> Policy:
    """The deterministic actions of a saved SAC agent."""
    model = SAC.load(checkpoint, device=device)

    def act(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        actions, _ = model.predict({key: value.cpu().numpy() for key, value in obs.items()}, deterministic=True)
        return torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=obs["grasp"].device)

    return act


@dataclass
class ArmScore:
    """Closed-loop result of one arm (the planner alone, or planner + agent) on one object set."""

    arm: str
    object_set: str
    tally: OutcomeTally

    def as_dict(self) -> dict:
        return {"arm": self.arm, "object_set": self.object_set, **self.tally.score()}


def evaluate_arms(
    env: GraspCorrectionEnv,
    arms: dict[str, Policy],
    attempts: int,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    rank: Rank = SINGLE_PROCESS,
) -> list[ArmScore]:
    """Run at least ``attempts`` attempts per arm on fresh held-out heaps of ``env`` (seeded by ``seed``); envs
    are dealt round-robin to the arms. ``rank`` runs its share of the attempts (at least ``len(rank.share(
    attempts))`` per arm), and the scores count the attempts of all ranks."""
    if env.num_envs < len(arms):
        raise ValueError(f"{len(arms)} arms need at least as many envs, got {env.num_envs}")
    names = list(arms)
    owner = torch.arange(env.num_envs, device=env.device) % len(names)
    tallies = {name: OutcomeTally() for name in names}
    world = env.runner.world
    world.generator.manual_seed(EVAL_SEED_OFFSET + rank.seed(seed))
    world.new_round()
    env.runner.executor.attempts_on_heap.zero_()
    obs, _ = env.reset()
    object_set = env.runner.world.settings.objects.object_set
    while min(tally.attempts for tally in tallies.values()) < len(rank.share(attempts)):
        actions = torch.zeros(env.num_envs, 4, device=env.device)
        for index, name in enumerate(names):
            mine = owner == index
            actions[mine] = arms[name]({key: value[mine] for key, value in obs["policy"].items()})
        obs, *_ = env.step(actions)
        outcome = env.last.result.outcome
        for index, name in enumerate(names):
            tallies[name].add(outcome[owner == index])
        if rank.is_main:
            progress(f"[dexrl eval] {object_set}: " + "; ".join(f"{name} {tallies[name].summary()}" for name in names))
    return [ArmScore(name, object_set, tallies[name].sum_over_ranks()) for name in names]


def summarize(scores: list[ArmScore], baseline: str = "planner") -> dict:
    """Scores as a dict, with the fraction of the baseline's failures each arm removes (per object set)."""
    rows = [score.as_dict() for score in scores]
    failure = {(row["object_set"], row["arm"]): 1 - row["success_rate"] for row in rows}
    for row in rows:
        base = failure.get((row["object_set"], baseline))
        mine = failure[(row["object_set"], row["arm"])]
        row["failures_removed"] = None if not base or row["arm"] == baseline else 1 - mine / base
    return {"rows": rows}


def markdown_table(summary: dict) -> str:
    """The result table in Markdown."""
    lines = [
        "| object set | arm | attempts | success [95% CI] | failures removed | " + " | ".join(o.name.lower() for o in Outcome) + " |",
        "|---|---|---|---|---|" + "---|" * len(Outcome),
    ]
    for row in summary["rows"]:
        low, high = row["ci95"]
        removed = "-" if row["failures_removed"] is None else f"{100 * row['failures_removed']:.1f}%"
        counts = " | ".join(str(row["outcomes"][o.name.lower()]) for o in Outcome)
        lines.append(
            f"| {row['object_set']} | {row['arm']} | {row['attempts']} | {100 * row['success_rate']:.1f}% "
            f"[{100 * low:.1f}, {100 * high:.1f}] | {removed} | {counts} |"
        )
    return "\n".join(lines)


def plot_scores(summary: dict, path: Path) -> Path:
    """A bar chart of success with 95% CIs per object set and arm."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = summary["rows"]
    sets = list(dict.fromkeys(row["object_set"] for row in rows))
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(sets), 3.2))
    for index, arm in enumerate(arms):
        mine = [next((r for r in rows if r["object_set"] == s and r["arm"] == arm), None) for s in sets]
        xs = [i + (index - (len(arms) - 1) / 2) * width for i, row in enumerate(mine) if row]
        rates = [100 * row["success_rate"] for row in mine if row]
        errors = [[100 * (row["success_rate"] - row["ci95"][0]) for row in mine if row],
                  [100 * (row["ci95"][1] - row["success_rate"]) for row in mine if row]]
        ax.bar(xs, rates, width, yerr=errors, capsize=3, label=arm)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel("grasp success [%] (95% CI)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(summary: dict, out: Path) -> list[Path]:
    """results.json, results.md and results.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(markdown_table(summary) + "\n")
    return [out / "results.json", out / "results.md", plot_scores(summary, out / "results.png")]
