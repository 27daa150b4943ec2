"""``dexrl synth``: physics-labelled grasp data for FC-GQ-CNN, from the randomized bin scene.

Per batch: render every env's depth image, draw one candidate grasp per image (:mod:`.candidates`), execute
all of them in parallel with the grasp executor, and record (96x96 depth crop around the grasp centre, grasp
depth, jaw angle, success) per attempt. Examples go to NPZ shards (:mod:`dexrl.gqcnn.dataset`); each shard
starts on fresh heaps from its own seed, so that shards are independent and held-out shards mean held-out
heaps, and a run that stops can be resumed: finished shards are kept, the next one starts from its seed.

Under ``torchrun`` the shard is the unit of work: rank r of N labels shards r, r + N, r + 2N, ... and each shard's
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
from dexrl.gqcnn.dataset import MANIFEST, listed_shards, merge_manifests, rank_manifest, write_shard
from dexrl.gqcnn.preprocess import extract_crops, inpaint
from dexrl.grasp import GraspPoses, image_to_world
from dexrl.sim.executor import Outcome
from dexrl.sim.grasp_runner import GraspRunner, OutcomeTally

from .candidates import CandidateSampler

__all__ = ["SynthConfig", "SynthStats", "synthesize"]

SOURCES = ("uniform", "edge", "policy")


@dataclass
class SynthConfig:
    """What to synthesize.

    Attributes:
        out: dataset folder (manifest.json + shards).
        grasps: labelled grasps in total (rounded up to whole batches of envs).
        shard_size: grasps per shard (rounded up to whole batches).
        seed: seeds each shard's heaps and candidates (shard i uses ``seed * 100_003 + i``, on any rank).
        time_budget_s: stop before a shard that would end past this many seconds (estimated from the shards
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
    shard_seconds: list[float] = field(default_factory=list)
    """Wall time of each shard this rank wrote [s], in order: from drawing its heaps to writing its file. A run's first shard also pays one-time costs (kernel compilation, graph
    capture), so the later shards give the steady rate."""

    @property
    def grasps_per_hour(self) -> float:
        return 3600.0 * self.grasps / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "grasps_per_hour": self.grasps_per_hour}


def synthesize(
    runner: GraspRunner, sampler: CandidateSampler, config: SynthConfig, meta: dict | None = None, rank: Rank = SINGLE_PROCESS
) -> SynthStats:
    """Label ``config.grasps`` candidate grasps in physics and write them as shards to ``config.out``.

    ``rank`` labels only its share of the shards (:meth:`Rank.share`); the returned statistics are summed over
    the ranks of the process group, and rank 0 writes the merged manifest and ``synth_stats.json``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    world = runner.world
    n = world.num_envs
    per_shard = max(1, -(-config.shard_size // n))  # batches per shard
    shard_count = max(1, -(-config.grasps // (per_shard * n)))
    config.out.mkdir(parents=True, exist_ok=True)
    manifest = MANIFEST if rank.world_size == 1 else rank_manifest(rank.rank)
    done = {info.file for info in listed_shards(config.out)}
    mine = [shard for shard in rank.share(shard_count) if _shard_name(shard) not in done]
    shards_kept = len(rank.share(shard_count)) - len(mine)
    shards_written, shard_seconds = 0, []
    tallies = {name: OutcomeTally() for name in SOURCES}
    intrinsics = world.settings.camera.intrinsics
    bar = tqdm(total=len(mine) * per_shard * n, desc="synth grasps", unit="grasp", disable=not (config.progress and rank.is_main))
    budget = TimeBudget(config.time_budget_s)
    for shard in mine:
        if budget.next_unit_overruns(shards_written):
            print(f"[synth] rank {rank.rank}: time budget: stopping after {shards_written} new shards ({budget.elapsed:.0f} s)")
            break
        shard_started = time.perf_counter()
        shard_seed = config.seed * 100_003 + shard
        world.generator.manual_seed(shard_seed)
        sampler.generator.manual_seed(shard_seed)
        world.new_round()
        runner.executor.attempts_on_heap.zero_()
        columns = {"crops": [], "depths": [], "angles": [], "labels": []}
        shard_tallies = OutcomeTally()

        def propose(env_ids: torch.Tensor | None) -> tuple[GraspPoses, dict[str, torch.Tensor]]:
            """One candidate per listed env (all envs for None), drawn on a fresh render, with what its example
            records."""
            rows = slice(None) if env_ids is None else env_ids  # all envs: no copy of the images
            depth = world.render_depth()[rows]
            grasps, source = sampler.sample(depth, world.bin_mask(depth, env_ids))
            crops = extract_crops(inpaint(depth), grasps.center.unsqueeze(1))[:, 0]
            record = {"crops": crops, "depths": grasps.depth, "angles": grasps.angle, "source": source}
            return image_to_world(grasps, intrinsics, world.extrinsics[rows]), record

        def label(outcome: torch.Tensor, record: dict[str, torch.Tensor]) -> None:
            for name in ("crops", "depths", "angles"):
                columns[name].append(record[name].cpu())
            columns["labels"].append((outcome == Outcome.SUCCESS).cpu())
            shard_tallies.add(outcome)
            for index, name in enumerate(SOURCES):
                chosen = record["source"] == index
                if bool(chosen.any()):
                    tallies[name].add(outcome[chosen])
            bar.update(len(outcome))

        if config.stream:
            for _, result, record in runner.stream(per_shard * n, propose=propose):
                label(result.outcome, record)
        else:
            for _ in range(per_shard):
                poses, record = propose(None)
                label(runner.executor.execute(poses).outcome, record)
        arrays = {name: torch.cat(values).numpy() for name, values in columns.items()}
        write_shard(
            config.out / _shard_name(shard),
            arrays["crops"].astype("float32"),
            arrays["depths"].astype("float32"),
            arrays["angles"].astype("float32"),
            arrays["labels"].astype("uint8"),
            manifest=manifest,
            seed=shard_seed,
            outcomes=shard_tallies.as_dict(),
            **(meta or {}),
        )
        shards_written += 1
        shard_seconds.append(time.perf_counter() - shard_started)
        bar.set_postfix(success=f"{100 * _success_rate(tallies):.1f}%")
        if rank.is_main:
            grasps = len(arrays["labels"])
            bar.write(
                f"[synth] {_shard_name(shard)}: {grasps} grasps in {shard_seconds[-1]:.1f} s "
                f"({3600 * grasps / shard_seconds[-1]:,.0f} per hour)"
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
        shard_seconds=shard_seconds,
    )
    barrier()  # every rank's manifest is complete
    if rank.is_main:
        merge_manifests(config.out)
        record = {**stats.as_dict(), "ranks": rank.world_size, "meta": meta or {}}
        (config.out / "synth_stats.json").write_text(json.dumps(record, indent=2))
    return stats


def _success_rate(tallies: dict[str, OutcomeTally]) -> float:
    """Success share over all sources so far."""
    attempts = sum(t.attempts for t in tallies.values())
    return sum(t.successes for t in tallies.values()) / attempts if attempts else 0.0


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.npz"
