"""``dexrl synth``: physics-labelled grasp data for FC-GQ-CNN, from the randomized bin scene.

Per batch: render every env's depth image, draw one candidate grasp per image (:mod:`.candidates`), execute
all of them in parallel with the grasp executor, and record (96x96 depth crop around the grasp centre, grasp
depth, jaw angle, success) per attempt. Examples go to NPZ shards (:mod:`dexrl.gqcnn.dataset`).

Work comes in blocks: in a block every env makes ``attempts_per_env`` attempts, starting on a fresh heap, and
the block's examples are split by env into shards of about ``shard_size`` grasps. An env's heaps never meet
another env's, and no heap spans two blocks, so shards are independent and held-out shards mean held-out heaps.
A run that stops can be resumed: finished blocks are kept and the next one starts from its seed.

- **Lock-step** (the default): a block is ``attempts_per_env`` batches of one attempt per env; every block
  starts all envs on fresh heaps drawn from its own seed (``seed * 100_003 + block``), so its content depends on
  that seed alone and N ``torchrun`` ranks write exactly the shards that one process would write.
- **Streamed** (``stream=True``): one stream runs all of a process's blocks (:meth:`GraspRunner.stream`). An
  env that has made its attempts of one block goes on to the next on a heap drawn for it alone, which comes to
  rest while the others carry on; a block's shards are written once its last attempt is judged. No env waits
  for the slowest one except at the end of the stream. There, once the stream's last block is known, an env
  that has made its ``attempts_per_env`` in every block takes over attempts that slower envs of its shard have
  not started yet, in whichever block they lie (on a heap drawn for that block); a slow env whose attempts were
  taken over moves on. Each shard still gets exactly its envs x ``attempts_per_env`` grasps, from its envs'
  heaps of that block alone, and the stream ends about one attempt after the last shard is full rather than
  after the slowest env's whole share. In these last blocks quick envs (whose attempts end early, in
  collisions say) label more of the grasps than slow ones.
  The generators are seeded once, from the first block's seed, so a later block's heaps depend on the order in
  which envs reached it: on a CPU a run is repeatable, but a resumed stream draws other heaps than an
  uninterrupted one would have.

Under ``torchrun`` the block is the unit of work: rank r of N runs blocks r, r + N, r + 2N, ... Ranks list their
shards in their own manifests, which rank 0 merges into ``manifest.json`` at the end.
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
from dexrl.sim.grasp_runner import GraspRunner, OutcomeTally, Proposer

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
        seed: seeds each block's heaps and candidates (block b uses ``seed * 100_003 + b``, on any rank; a
            stream seeds once, from its first block).
        time_budget_s: start no block that would end past this many seconds (estimated per rank: from the
            blocks so far in lock-step, from the stream's rate so far in a stream); None runs until ``grasps``
            are labelled. A later run with the same settings continues, with any number of ranks.
        progress: show a progress bar.
        stream: run all blocks as one stream (:meth:`GraspRunner.stream`: an env draws and starts its next
            candidate once its last is judged, and enters the next block on its own; at the end, quick envs
            take over the attempts that slow envs of their shard have not started) rather than in
            lock-step batches. The examples are the same kind; their order in a shard follows the order in
            which attempts ended.
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
    physics_overflows: int = 0
    """Heaps of this run that overflowed the physics buffers (their attempts are faults; dexrl/sim/overflow.py)."""
    block_seconds: list[float] = field(default_factory=list)
    """Wall time of each block this rank ran [s], in order. Lock-step: from drawing its heaps to writing its
    shards. Stream (blocks overlap): from the previous block's completion (the first: from the stream's start,
    its first heaps included) to this one's. A run's first block also pays one-time costs (kernel compilation,
    graph capture), and a stream's last block its tail (envs done, waiting for the slowest), so the blocks in
    between give the steady rate."""

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

    n = runner.world.num_envs
    plan = BlockPlan.of(config, n)
    config.out.mkdir(parents=True, exist_ok=True)
    done = _check_listed_blocks(config.out, plan)
    share = rank.share(plan.blocks)
    mine = [block for block in share if not all(_shard_name(s) in done for s in plan.shards(block))]
    shards_kept = (len(share) - len(mine)) * plan.shards_per_block
    bar = tqdm(total=len(mine) * plan.grasps_per_block, desc="synth grasps", unit="grasp", disable=not (config.progress and rank.is_main))
    writer = _BlockWriter(
        config.out, plan, MANIFEST if rank.world_size == 1 else rank_manifest(rank.rank), meta or {}, bar, rank.is_main
    )
    budget = TimeBudget(config.time_budget_s)
    overflows_before = runner.world.overflow.overflowed_heaps
    if mine:
        run = _stream_blocks if config.stream else _lock_step_blocks
        run(runner, sampler, _candidate_proposer(runner, sampler), config, plan, mine, writer, budget, rank)
    bar.close()
    seconds = max(all_gather_objects(budget.elapsed))
    tallies = writer.tallies
    by_source = all_reduce_sum(torch.stack([tallies[name].counts for name in SOURCES]))  # (sources, outcomes)
    for name, counts in zip(SOURCES, by_source):
        tallies[name].counts = counts
    total = OutcomeTally()
    total.counts = by_source.sum(dim=0)
    overflows = runner.world.overflow.overflowed_heaps - overflows_before
    written, kept, overflows = all_reduce_sum(torch.tensor([writer.shards_written, shards_kept, overflows])).tolist()
    stats = SynthStats(
        grasps=total.attempts,
        outcomes=total.as_dict(),
        by_source={name: tally.as_dict() for name, tally in tallies.items() if tally.attempts},
        seconds=seconds,
        shards_written=written,
        shards_kept=kept,
        physics_overflows=overflows,
        block_seconds=writer.block_seconds,
    )
    barrier()  # every rank's manifest is complete
    if rank.is_main:
        merge_manifests(config.out)
        record = {**stats.as_dict(), "ranks": rank.world_size, "meta": meta or {}}
        (config.out / "synth_stats.json").write_text(json.dumps(record, indent=2))
    return stats


def _candidate_proposer(runner: GraspRunner, sampler: CandidateSampler) -> Proposer:
    """One candidate per listed env (all envs for None), drawn on a fresh render, with what its example records."""
    world = runner.world
    intrinsics = world.settings.camera.intrinsics

    def propose(env_ids: torch.Tensor | None) -> tuple[GraspPoses, dict[str, torch.Tensor]]:
        rows = slice(None) if env_ids is None else env_ids  # all envs: no copy of the images
        depth = world.render_depth()[rows]
        grasps, source = sampler.sample(depth, world.bin_mask(depth, env_ids))
        crops = extract_crops(inpaint(depth), grasps.center.unsqueeze(1))[:, 0]
        record = {"crops": crops, "depths": grasps.depth, "angles": grasps.angle, "source": source}
        return image_to_world(grasps, intrinsics, world.extrinsics[rows]), record

    return propose


def _lock_step_blocks(
    runner: GraspRunner, sampler: CandidateSampler, propose: Proposer, config: SynthConfig, plan: BlockPlan,
    blocks: list[int], writer: _BlockWriter, budget: TimeBudget, rank: Rank,
) -> None:
    """Each block from fresh heaps drawn from its own seed, as ``attempts_per_env`` lock-step batches."""
    world, n = runner.world, runner.world.num_envs
    all_envs = torch.arange(n, device=world.device)
    for block in blocks:
        if budget.next_unit_overruns(len(writer.block_seconds)):
            print(f"[synth] rank {rank.rank}: time budget: stopping after {len(writer.block_seconds)} new blocks ({budget.elapsed:.0f} s)")
            return
        writer.restart_clock()
        block_seed = config.seed * 100_003 + block
        world.generator.manual_seed(block_seed)
        sampler.generator.manual_seed(block_seed)
        world.new_round()
        runner.executor.attempts_on_heap.zero_()
        for _ in range(plan.attempts_per_env):
            poses, record = propose(None)
            outcome = runner.executor.execute(poses).outcome
            writer.label(torch.full((n,), block, device=world.device), all_envs, outcome, record)
        writer.write(block, block_seed)


def _stream_blocks(
    runner: GraspRunner, sampler: CandidateSampler, propose: Proposer, config: SynthConfig, plan: BlockPlan,
    blocks: list[int], writer: _BlockWriter, budget: TimeBudget, rank: Rank,
) -> None:
    """All ``blocks`` as one stream: an env that has made its attempts of one block enters the next on a heap
    drawn for it alone, which comes to rest while the others go on (:meth:`BinWorld.begin_round`); a block is
    written once its last attempt is judged. With a time budget, no env enters a block that would end past it
    (estimated from the stream's rate so far). Once the last block is known, envs done with their own attempts
    take over those that slower envs of their shard have not started (:func:`_last_blocks_targets`,
    :func:`_share_room`), until every shard's are started."""
    world, executor = runner.world, runner.executor
    n, per_env = world.num_envs, plan.attempts_per_env
    seed = config.seed * 100_003 + blocks[0]
    world.generator.manual_seed(seed)
    sampler.generator.manual_seed(seed)
    writer.restart_clock()
    world.new_round()
    executor.attempts_on_heap.zero_()
    stream_started = time.perf_counter()
    block_numbers = torch.tensor(blocks, device=world.device)
    started = torch.zeros(n, dtype=torch.long)  # attempts each env has started
    heap_block = torch.zeros(n, dtype=torch.long)  # index in ``blocks`` of the block each env's heap belongs to
    shard_of = torch.zeros(n, dtype=torch.long)  # each env's shard within a block
    for index, (first, end) in enumerate(plan.env_groups()):
        shard_of[first:end] = index
    shard_quota = torch.bincount(shard_of) * per_env  # attempts of each shard of a block
    started_in = torch.zeros(len(blocks), len(shard_quota), dtype=torch.long)  # attempts started per block and shard
    next_block = torch.zeros(n, dtype=torch.long)  # the block of each env's next attempt, as admitted
    admitted = 1  # envs may enter blocks[:admitted]
    closed = False  # the budget admits no more blocks
    final: int | None = None  # index in ``blocks`` of the stream's last block, once it is known

    def fits(count: int) -> bool | None:
        """Whether ``blocks[:count]`` would end within the budget; None: too early to tell."""
        if budget.seconds is None:
            return True
        if writer.labelled < n:  # the rate of the first attempts alone would say little
            return None
        # Attempts in flight are half done on average; counting judged ones alone would underrate a young stream.
        done = writer.labelled + 0.5 * (int(started.sum()) - writer.labelled)
        rate = done / (time.perf_counter() - stream_started)
        return budget.elapsed + (count * plan.grasps_per_block - done) / rate <= budget.seconds

    def admit(env_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal admitted, closed, final
        position = started[env_ids] // per_env  # the block of each env's own next attempt
        if int(position.max()) >= admitted and admitted < len(blocks) and not closed:
            verdict = fits(admitted + 1)
            if verdict:
                admitted += 1
            elif verdict is False:
                closed = True
                print(f"[synth] rank {rank.rank}: time budget: no env enters block {blocks[admitted]} ({budget.elapsed:.0f} s)")
        if final is None and (closed or admitted == len(blocks)):
            final = admitted - 1
        if final is None:
            target, stop = position, torch.zeros_like(position, dtype=torch.bool)
        else:
            target, stop = _last_blocks_targets(position, heap_block[env_ids], shard_of[env_ids], shard_quota - started_in[: final + 1])
            own = target == position
            skipped = ~own & (target > position) & (position <= final)
            started[env_ids[skipped]] = target[skipped] * per_env  # their attempts there were taken over
        entering = (target < admitted) & (heap_block[env_ids] != target) & ~stop
        dropped = torch.zeros_like(entering)  # heaps begun here: their envs start once these are at rest
        if bool(entering.any()):  # a fresh heap for the block, unless judging the last attempt re-drew it
            ids = env_ids[entering]
            fresh = (executor.attempts_on_heap[ids.to(world.device)] == 0).cpu()
            if not bool(fresh.all()):
                world.begin_round(ids[~fresh].to(world.device))
                dropped[entering.nonzero().flatten()[~fresh]] = True
            heap_block[ids] = target[entering]
            executor.attempts_on_heap[ids.to(world.device)] = 0
        go = (target < admitted) & ~dropped & ~stop
        if final is not None and bool(go.any()):  # several envs may ask for a shard's last attempts at once
            asking = go.nonzero().flatten()
            cells = target[asking] * len(shard_quota) + shard_of[env_ids[asking]]
            room = (shard_quota - started_in[: final + 1]).flatten()
            go[asking[~_share_room(cells, (started[env_ids[asking]] // per_env) == target[asking], room)]] = False
        next_block[env_ids[go]] = target[go]
        return go, stop

    def propose_in_block(env_ids: torch.Tensor) -> tuple[GraspPoses, dict[str, torch.Tensor]]:
        ids = env_ids.cpu()
        block = next_block[ids]
        own = started[ids] // per_env == block
        started[ids[own]] += 1
        started_in.index_put_((block, shard_of[ids]), torch.ones_like(block), accumulate=True)
        poses, record = propose(env_ids)
        return poses, {**record, "block": block_numbers[block.to(world.device)]}

    for env_ids, result, record in runner.stream(None, propose=propose_in_block, admit=admit):
        writer.label(record["block"], env_ids, result.outcome, record)
        for block in writer.full_blocks():
            writer.write(block, seed)
    if writer.pending:
        raise RuntimeError(f"blocks {writer.pending} were entered but not finished")


def _last_blocks_targets(
    position: torch.Tensor, heap_block: torch.Tensor, shards: torch.Tensor, room: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where envs go once a stream's last block is known: the block of each env's next attempt, and whether it stops.

    An env with attempts of its own left goes on in its block (``position``) while its shard has room there, and
    otherwise moves on to the next block with room. An env past the last block takes over unstarted attempts
    of its shard: in its heap's block if that has room, else in the first block with room. Envs find no room
    once their shard's attempts are all started, and stop.

    Args:
        position: (m,) long, the block of each env's own next attempt (index in the stream's blocks).
        heap_block: (m,) long, the block of each env's heap.
        shards: (m,) long, each env's shard.
        room: (blocks up to the last, shards) long, attempts yet to start.
    """
    last = len(room) - 1
    has_room = room[:, shards] > 0  # (blocks, m)
    block = torch.arange(len(room)).unsqueeze(1)
    own_next = (has_room & (block >= position)).int().argmax(dim=0)  # first block with room from the own one on
    own_ok = (position <= last) & (has_room & (block >= position)).any(dim=0)
    current = heap_block.clamp(max=last)
    in_heap = has_room.gather(0, current.unsqueeze(0)).squeeze(0)
    anywhere = has_room.any(dim=0)
    target = torch.where(own_ok, own_next, torch.where(in_heap, current, has_room.int().argmax(dim=0)))
    return target, ~own_ok & ~anywhere


def _share_room(cells: torch.Tensor, own: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
    """Which of several envs asking at once for attempts get one, where attempts are counted per cell (a block's
    shard).

    Args:
        cells: (m,) long, the cell each env asks in.
        own: (m,) bool, whether the env asks for one of its own ``attempts_per_env`` (else it would take over a
            slower env's).
        room: (cells,) long, attempts each cell has yet to start.

    Returns:
        (m,) bool: per cell, envs with attempts of their own first, then the others, in order, while there is room.
    """
    order = torch.sort(cells * 2 + (~own).long(), stable=True).indices
    ranked = cells[order]
    counts = torch.bincount(ranked, minlength=len(room))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - (counts.cumsum(0) - counts)[ranked]
    return rank < room[cells]


class _BlockWriter:
    """Collects examples by block and writes a block's shards once it has all its attempts."""

    def __init__(self, out: Path, plan: BlockPlan, manifest: str, meta: dict, bar, is_main: bool):
        self.out, self.plan, self.manifest, self.meta, self.bar, self.is_main = out, plan, manifest, meta, bar, is_main
        self.tallies = {name: OutcomeTally() for name in SOURCES}
        self.labelled = 0  # attempts judged since the clock last restarted (lock-step) or the stream began
        self.shards_written = 0
        self.block_seconds: list[float] = []
        self._columns: dict[int, dict[str, list[torch.Tensor]]] = {}
        self._counts: dict[int, int] = {}
        self._since = time.perf_counter()

    def restart_clock(self) -> None:
        self._since = time.perf_counter()
        self.labelled = 0

    @property
    def pending(self) -> list[int]:
        """Blocks with examples not yet written."""
        return sorted(self._columns)

    def label(self, blocks: torch.Tensor, env_ids: torch.Tensor, outcome: torch.Tensor, record: dict[str, torch.Tensor]) -> None:
        """Keep the examples of judged attempts: their blocks, envs and outcomes ((m,) each), and ``record`` (rows of m)."""
        blocks = blocks.cpu()
        for block in blocks.unique().tolist():
            rows = (blocks == block).nonzero().flatten()
            columns = self._columns.setdefault(block, {name: [] for name in (*SHARD_FIELDS, "envs", "outcomes")})
            picked = {name: record[name][rows.to(record[name].device)].cpu() for name in ("crops", "depths", "angles")}
            block_outcome = outcome[rows.to(outcome.device)].cpu()
            for name, values in picked.items():
                columns[name].append(values)
            columns["labels"].append(block_outcome == Outcome.SUCCESS)
            columns["envs"].append(env_ids[rows.to(env_ids.device)].cpu())
            columns["outcomes"].append(block_outcome)
            self._counts[block] = self._counts.get(block, 0) + len(rows)
        source = record["source"].cpu()
        outcome = outcome.cpu()
        for index, name in enumerate(SOURCES):
            chosen = source == index
            if bool(chosen.any()):
                self.tallies[name].add(outcome[chosen])
        self.labelled += len(outcome)
        self.bar.update(len(outcome))

    def full_blocks(self) -> list[int]:
        """Blocks whose every attempt is labelled, in order."""
        return sorted(block for block, count in self._counts.items() if count == self.plan.grasps_per_block)

    def write(self, block: int, seed: int) -> None:
        """Write the shards of ``block`` (split by env) and record its time."""
        columns = self._columns.pop(block)
        count = self._counts.pop(block)
        examples = {name: torch.cat(values) for name, values in columns.items()}
        groups = self.plan.env_groups()
        shards = self.plan.shards(block)
        for shard, (first, end), part in zip(shards, groups, split_by_env(examples, groups)):
            tally = OutcomeTally()
            tally.add(part["outcomes"])
            write_shard(
                self.out / _shard_name(shard),
                *(part[name].numpy() for name in SHARD_FIELDS),
                manifest=self.manifest,
                seed=seed,
                block=block,
                env_range=[first, end],
                attempts_per_env=self.plan.attempts_per_env,
                shards_per_block=self.plan.shards_per_block,
                outcomes=tally.as_dict(),
                **self.meta,
            )
            self.shards_written += 1
        now = time.perf_counter()
        self.block_seconds.append(now - self._since)
        self._since = now
        self.bar.set_postfix(success=f"{100 * _success_rate(self.tallies):.1f}%")
        if self.is_main:
            files = _shard_name(shards[0]) + (f" .. {_shard_name(shards[-1])}" if len(shards) > 1 else "")
            self.bar.write(
                f"[synth] block {block} ({files}): {count} grasps in "
                f"{self.block_seconds[-1]:.1f} s ({3600 * count / self.block_seconds[-1]:,.0f} per hour)"
            )


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
