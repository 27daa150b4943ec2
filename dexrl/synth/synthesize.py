"""``dexrl synth``: physics-labelled grasp data for FC-GQ-CNN, from the randomized bin scene.

Per batch: render every env's depth image, draw one candidate grasp per image (:mod:`.candidates`), execute
all of them in parallel with the grasp executor, and record (96x96 depth crop around the grasp centre, grasp
depth, jaw angle, success) per attempt. Examples go to NPZ shards (:mod:`dexrl.gqcnn.dataset`).

Work comes in blocks: a block starts every env on fresh heaps from the block's own seed, makes
``attempts_per_env`` attempts in each (as one stream, or as that many lock-step batches), and splits its
examples by env into shards of about ``shard_size`` grasps. An env's heaps never meet another env's, so shards
are independent and held-out shards mean held-out heaps. A run that stops can be resumed: finished blocks are
kept, the next one starts from its seed. Long blocks make streams pay: a stream ends when its slowest env has
made its attempts, and the more attempts per env, the less of the block is spent waiting for that env.

Under ``torchrun`` the block is the unit of work: rank r of N runs blocks r, r + N, r + 2N, ... and each block's
content depends on its seed alone, so N ranks write exactly the shards that one process would write. Ranks list
their shards in their own manifests, which rank 0 merges into ``manifest.json`` at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dexrl.budget import TimeBudget
from dexrl.distributed import SINGLE_PROCESS, Rank, all_gather_objects, all_reduce_sum, barrier
from dexrl.gqcnn.dataset import SHARD_FIELDS, MANIFEST, listed_shards, merge_manifests, rank_manifest, write_shard
from dexrl.gqcnn.preprocess import extract_crops, inpaint
from dexrl.grasp import GraspPoses, image_to_world
from dexrl.sim.executor import Outcome
from dexrl.sim.grasp_runner import GraspRunner, OutcomeTally

from .candidates import CandidateSampler

__all__ = ["BlockLayoutError", "BlockPlan", "SynthConfig", "SynthStats", "split_by_env", "synthesize"]

SOURCES = ("uniform", "edge", "policy")


@dataclass
class SynthConfig:
    """What to synthesize.

    Attributes:
        out: dataset folder (manifest.json + shards).
        grasps: labelled grasps in total (rounded up to whole blocks).
        shard_size: grasps per shard: a block of N envs x ``attempts_per_env`` grasps is split by env into
            round(N x ``attempts_per_env`` / ``shard_size``) shards (at least 1, at most N).
        attempts_per_env: attempts each env makes per block; None: ``shard_size`` / N rounded up (one shard
            per block).
        seed: seeds each block's heaps and candidates (block b uses ``seed * 100_003 + b``, on any rank).
        time_budget_s: stop before a block that would end past this many seconds (estimated from the blocks
            so far, per rank); None runs until ``grasps`` are labelled. A later run with the same settings
            continues, with any number of ranks.
        progress: show a progress bar.
        stream: run the attempts streamed (:meth:`GraspRunner.stream`: an env draws and starts its next
            candidate once its last is judged) rather than in lock-step batches. The examples are the same kind;
            their order in a shard follows the order in which attempts ended.
    """

    out: Path
    grasps: int = 10_000
    shard_size: int = 8192
    attempts_per_env: int | None = None
    seed: int = 0
    time_budget_s: float | None = None
    progress: bool = True
    stream: bool = False


@dataclass
class SynthStats:
    """Counts of what was synthesized (this run plus what an earlier run left; summed over ranks, ``seconds``
    of the slowest rank)."""

    grasps: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    shards_written: int = 0
    shards_kept: int = 0
    block_seconds: list[float] = field(default_factory=list)
    """Wall time of each block this rank ran [s], in order: from drawing its heaps to writing its shards. A
    run's first block also pays one-time costs (kernel compilation, graph capture), so the later blocks give
    the steady rate."""

    @property
    def grasps_per_hour(self) -> float:
        return 3600.0 * self.grasps / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "grasps_per_hour": self.grasps_per_hour}


def synthesize(
    runner: GraspRunner, sampler: CandidateSampler, config: SynthConfig, meta: dict | None = None, rank: Rank = SINGLE_PROCESS
) -> SynthStats:
    """Label ``config.grasps`` candidate grasps in physics and write them as shards to ``config.out``.

    ``rank`` runs only its share of the blocks (:meth:`Rank.share`); the returned statistics are summed over
    the ranks of the process group, and rank 0 writes the merged manifest and ``synth_stats.json``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    world = runner.world
    n = world.num_envs
    plan = BlockPlan.of(config, n)
    config.out.mkdir(parents=True, exist_ok=True)
    manifest = MANIFEST if rank.world_size == 1 else rank_manifest(rank.rank)
    done = _check_listed_blocks(config.out, plan)
    share = rank.share(plan.blocks)
    mine = [block for block in share if not all(_shard_name(s) in done for s in plan.shards(block))]
    shards_kept = (len(share) - len(mine)) * plan.shards_per_block
    shards_written, block_seconds = 0, []
    tallies = {name: OutcomeTally() for name in SOURCES}
    intrinsics = world.settings.camera.intrinsics
    bar = tqdm(total=len(mine) * plan.grasps_per_block, desc="synth grasps", unit="grasp", disable=not (config.progress and rank.is_main))
    budget = TimeBudget(config.time_budget_s)
    for block in mine:
        if budget.next_unit_overruns(len(block_seconds)):
            print(f"[synth] rank {rank.rank}: time budget: stopping after {len(block_seconds)} new blocks ({budget.elapsed:.0f} s)")
            break
        block_started = time.perf_counter()
        block_seed = config.seed * 100_003 + block
        world.generator.manual_seed(block_seed)
        sampler.generator.manual_seed(block_seed)
        world.new_round()
        runner.executor.attempts_on_heap.zero_()
        columns: dict[str, list[torch.Tensor]] = {name: [] for name in (*SHARD_FIELDS, "envs", "outcomes")}

        def propose(env_ids: torch.Tensor | None) -> tuple[GraspPoses, dict[str, torch.Tensor]]:
            """One candidate per listed env (all envs for None), drawn on a fresh render, with what its example
            records."""
            rows = slice(None) if env_ids is None else env_ids  # all envs: no copy of the images
            depth = world.render_depth()[rows]
            grasps, source = sampler.sample(depth, world.bin_mask(depth, env_ids))
            crops = extract_crops(inpaint(depth), grasps.center.unsqueeze(1))[:, 0]
            record = {"crops": crops, "depths": grasps.depth, "angles": grasps.angle, "source": source}
            return image_to_world(grasps, intrinsics, world.extrinsics[rows]), record

        def label(env_ids: torch.Tensor, outcome: torch.Tensor, record: dict[str, torch.Tensor]) -> None:
            for name in ("crops", "depths", "angles"):
                columns[name].append(record[name].cpu())
            columns["labels"].append((outcome == Outcome.SUCCESS).cpu())
            columns["envs"].append(env_ids.cpu())
            columns["outcomes"].append(outcome.cpu())
            for index, name in enumerate(SOURCES):
                chosen = record["source"] == index
                if bool(chosen.any()):
                    tallies[name].add(outcome[chosen])
            bar.update(len(outcome))

        if config.stream:
            for env_ids, result, record in runner.stream(plan.grasps_per_block, propose=propose):
                label(env_ids, result.outcome, record)
        else:
            all_envs = torch.arange(n, device=world.device)
            for _ in range(plan.attempts_per_env):
                poses, record = propose(None)
                label(all_envs, runner.executor.execute(poses).outcome, record)
        examples = {name: torch.cat(values) for name, values in columns.items()}
        groups = plan.env_groups()
        for shard, (first, end), part in zip(plan.shards(block), groups, split_by_env(examples, groups)):
            tally = OutcomeTally()
            tally.add(part["outcomes"])
            write_shard(
                config.out / _shard_name(shard),
                *(part[name].numpy() for name in SHARD_FIELDS),
                manifest=manifest,
                seed=block_seed,
                block=block,
                env_range=[first, end],
                attempts_per_env=plan.attempts_per_env,
                shards_per_block=plan.shards_per_block,
                outcomes=tally.as_dict(),
                **(meta or {}),
            )
            shards_written += 1
        block_seconds.append(time.perf_counter() - block_started)
        bar.set_postfix(success=f"{100 * _success_rate(tallies):.1f}%")
        if rank.is_main:
            grasps, shards = len(examples["labels"]), plan.shards(block)
            files = _shard_name(shards[0]) + (f" .. {_shard_name(shards[-1])}" if len(shards) > 1 else "")
            bar.write(
                f"[synth] block {block} ({files}): {grasps} grasps in "
                f"{block_seconds[-1]:.1f} s ({3600 * grasps / block_seconds[-1]:,.0f} per hour)"
            )
    bar.close()
    seconds = max(all_gather_objects(budget.elapsed))
    by_source = all_reduce_sum(torch.stack([tallies[name].counts for name in SOURCES]))  # (sources, outcomes)
    for name, counts in zip(SOURCES, by_source):
        tallies[name].counts = counts
    total = OutcomeTally()
    total.counts = by_source.sum(dim=0)
    written, kept = all_reduce_sum(torch.tensor([shards_written, shards_kept])).tolist()
    stats = SynthStats(
        grasps=total.attempts,
        outcomes=total.as_dict(),
        by_source={name: tally.as_dict() for name, tally in tallies.items() if tally.attempts},
        seconds=seconds,
        shards_written=written,
        shards_kept=kept,
        block_seconds=block_seconds,
    )
    barrier()  # every rank's manifest is complete
    if rank.is_main:
        merge_manifests(config.out)
        record = {**stats.as_dict(), "ranks": rank.world_size, "meta": meta or {}}
        (config.out / "synth_stats.json").write_text(json.dumps(record, indent=2))
    return stats


class BlockLayoutError(ValueError):
    """The blocks asked for do not fit the settings, or the dataset folder was cut into blocks differently."""


@dataclass(frozen=True)
class BlockPlan:
    """How a run's grasps fall into blocks and shards (see the module docstring)."""

    envs: int
    attempts_per_env: int
    shards_per_block: int
    blocks: int

    @classmethod
    def of(cls, config: SynthConfig, envs: int) -> BlockPlan:
        if config.attempts_per_env is not None and config.attempts_per_env < 1:
            raise BlockLayoutError(f"attempts_per_env must be >= 1, got {config.attempts_per_env}")
        if config.shard_size < 1 or config.grasps < 1:
            raise BlockLayoutError(f"grasps and shard_size must be >= 1, got {config.grasps} and {config.shard_size}")
        attempts = config.attempts_per_env or -(-config.shard_size // envs)
        shards = min(envs, max(1, round(envs * attempts / config.shard_size)))
        return cls(envs, attempts, shards, blocks=-(-config.grasps // (envs * attempts)))

    @property
    def grasps_per_block(self) -> int:
        return self.envs * self.attempts_per_env

    def shards(self, block: int) -> range:
        """The shard indices of ``block``."""
        return range(block * self.shards_per_block, (block + 1) * self.shards_per_block)

    def env_groups(self) -> list[tuple[int, int]]:
        """[first, end) env range of each shard of a block: consecutive envs, as even as they divide."""
        bounds = [round(i * self.envs / self.shards_per_block) for i in range(self.shards_per_block + 1)]
        return list(zip(bounds[:-1], bounds[1:]))


def split_by_env(examples: dict[str, torch.Tensor], groups: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """The rows of ``examples`` (an ``envs`` column and others, one row per attempt) of each [first, end) env
    range in ``groups``, in their original order."""
    envs = examples["envs"]
    parts = []
    for first, end in groups:
        rows = ((envs >= first) & (envs < end)).nonzero().flatten()
        parts.append({name: values[rows] for name, values in examples.items()})
    return parts


def _check_listed_blocks(out: Path, plan: BlockPlan) -> set[str]:
    """Files of the shards listed in ``out``; raises if they were cut into blocks differently."""
    listed = listed_shards(out)
    for info in listed:
        cut = (info.meta.get("attempts_per_env"), info.meta.get("shards_per_block"))
        if cut != (None, None) and cut != (plan.attempts_per_env, plan.shards_per_block):
            raise BlockLayoutError(
                f"{out / info.file} comes from blocks of {cut[0]} attempts per env in {cut[1]} shards, this run makes "
                f"{plan.attempts_per_env} in {plan.shards_per_block}: resume with the same --envs, --shard-size and "
                "--attempts-per-env, or write to another folder"
            )
    return {info.file for info in listed}


def _success_rate(tallies: dict[str, OutcomeTally]) -> float:
    """Success share over all sources so far."""
    attempts = sum(t.attempts for t in tallies.values())
    return sum(t.successes for t in tallies.values()) / attempts if attempts else 0.0


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.npz"
