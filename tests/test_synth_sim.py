"""``dexrl synth`` at toy size with the real kit-less engine: shards, labels, statistics and resume."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dexrl.gqcnn.dataset import read_manifest
from dexrl.grasp.baseline import HighestObjectPlanner
from dexrl.sim.grasp_runner import GraspRunner
from dexrl.sim.scene_cfg import SceneSettingsCfg
from dexrl.synth.candidates import CandidateMix, CandidateSampler
from dexrl.synth.synthesize import BlockLayoutError, BlockPlan, SynthConfig, _last_blocks_targets, _share_room, split_by_env, synthesize

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    settings = SceneSettingsCfg(num_envs=2, device="cpu", seed=5)
    settings.objects.pool_size = 4
    settings.objects.count_range = (2, 3)
    return GraspRunner(settings, HighestObjectPlanner(), asset_dir=tmp_path_factory.mktemp("gripper"))


def test_synth_writes_labelled_shards_and_resumes(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    stats = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=4, shard_size=2, seed=1, progress=False))
    shards = read_manifest(tmp_path)
    assert [s.file for s in shards] == ["shard_00000.npz", "shard_00001.npz"] and stats.shards_written == 2
    assert stats.grasps == 4 == sum(stats.outcomes.values())
    assert len(stats.block_seconds) == 2 and 0 < sum(stats.block_seconds) <= stats.seconds
    for shard in shards:
        data = np.load(tmp_path / shard.file)
        assert data["crops"].shape == (2, 96, 96) and data["crops"].dtype == np.float32
        assert set(np.unique(data["labels"])) <= {0, 1} and shard.positives == int(data["labels"].sum())
        assert (data["depths"] > 0.3).all() and (np.abs(data["angles"]) <= np.pi / 2).all()
        assert shard.meta["outcomes"]["success"] == shard.positives
    again = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=6, shard_size=2, seed=1, progress=False))
    assert again.shards_kept == 2 and again.shards_written == 1 and again.grasps == 2
    assert len(read_manifest(tmp_path)) == 3


def test_a_stream_judges_each_attempt_once_and_leaves_the_runner_ready_for_lock_step(runner):
    before = runner.tally.attempts
    judged = [(envs.tolist(), result) for envs, result, _ in runner.stream(5)]
    envs = [env for group, _ in judged for env in group]
    assert len(envs) == 5 and set(envs) == {0, 1}
    assert runner.tally.attempts == before + 5
    for group, result in judged:
        assert len(result.outcome) == len(group) == len(result.duration)
        assert ((result.outcome >= 0) & (result.duration >= 0)).all()
    assert not runner.world.pre_step_callbacks
    batch = runner.attempt()
    assert len(batch.result.outcome) == 2 and runner.tally.attempts == before + 7


def test_a_stream_runs_its_blocks_back_to_back_each_env_on_fresh_heaps_and_splits_them_by_env(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    drawn: list[list[int]] = []  # the envs of each heap draw (the real draws, observed)
    world = runner.world
    draw, begin = world.new_round, world.begin_round

    def observed_draw(env_ids=None, timeout=None):
        drawn.append([0, 1] if env_ids is None else env_ids.tolist())
        return draw(env_ids, timeout)

    def observed_begin(env_ids, timeout=None):
        drawn.append(env_ids.tolist())
        return begin(env_ids, timeout)

    world.new_round, world.begin_round = observed_draw, observed_begin
    try:
        config = SynthConfig(out=tmp_path, grasps=8, shard_size=2, attempts_per_env=2, seed=2, progress=False, stream=True)
        stats = synthesize(runner, sampler, config)
    finally:
        del world.new_round, world.begin_round
    shards = read_manifest(tmp_path)
    assert [shard.file for shard in shards] == [f"shard_0000{i}.npz" for i in range(4)] and len(stats.block_seconds) == 2
    assert [shard.meta["block"] for shard in shards] == [0, 0, 1, 1]
    assert [shard.meta["env_range"] for shard in shards] == [[0, 1], [1, 2]] * 2
    assert {shard.meta["seed"] for shard in shards} == {2 * 100_003}  # a stream seeds once, from its first block
    assert stats.grasps == 8 == sum(stats.outcomes.values()) == sum(shard.count for shard in shards)
    for shard in shards:  # every env made its 2 attempts in each block
        data = np.load(tmp_path / shard.file)
        assert shard.count == 2 == len(data["labels"]) and data["crops"].shape == (2, 96, 96) and (data["depths"] > 0.3).all()
        assert shard.positives == int(data["labels"].sum()) == shard.meta["outcomes"]["success"]
    assert drawn[0] == [0, 1]  # the stream's first heaps; then each env alone gets a fresh heap for block 1
    assert {env for envs in drawn[1:] for env in envs} == {0, 1} and all(len(envs) <= 2 for envs in drawn[1:])
    assert sum(sum(counts.values()) for counts in stats.by_source.values()) == 8
    with pytest.raises(BlockLayoutError, match="1 in 1"):
        synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=4, shard_size=2, seed=2, progress=False))


def test_a_heap_begun_in_one_env_comes_to_rest_while_the_world_steps_and_leaves_the_other_env_alone(runner):
    world = runner.world
    world.new_round()
    others_before = world.object_positions()[0].clone()
    world.begin_round(torch.tensor([1]))
    with pytest.raises(ValueError, match="still coming to rest"):
        world.begin_round(torch.tensor([1]))
    dropped = world.object_positions()[1].clone()
    rested, steps = [], 0
    while not rested and steps < 400:
        world.step(5)
        steps += 5
        rested = world.rested_rounds().tolist()
    assert rested == [1] and world.round.settled[1] and 0 < float(world.round.settle_time[1]) <= 2.0
    placed = world.round.placed[1]
    now = world.object_positions()[1]
    assert (dropped[placed, 2] - now[placed, 2] > 0.01).all()  # they fell into the bin ...
    assert not world.faulty_envs(0.05)[1]  # ... and lie still inside it
    assert torch.allclose(world.object_positions()[0], others_before, atol=2e-3)
    assert world.rested_rounds().tolist() == []
    # Heaps begun at different times rest at different times, each reported once.
    world.begin_round(torch.tensor([0]))
    world.step(3)
    world.begin_round(torch.tensor([1]))
    reported, steps = [], 0
    while len(reported) < 2 and steps < 400:
        world.step(2)
        steps += 2
        reported += world.rested_rounds().tolist()
    assert sorted(reported) == [0, 1] and world.round.settled.all() and (world.round.settle_time <= 2.0).all()


def test_a_stream_under_a_spent_time_budget_finishes_the_block_it_entered_and_enters_no_other(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    config = SynthConfig(
        out=tmp_path, grasps=8, shard_size=2, attempts_per_env=2, seed=3, progress=False, stream=True, time_budget_s=1e-3
    )
    stats = synthesize(runner, sampler, config)
    assert stats.grasps == 4 and stats.shards_written == 2 and len(stats.block_seconds) == 1
    assert [shard.meta["block"] for shard in read_manifest(tmp_path)] == [0, 0]
    again = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=8, shard_size=2, attempts_per_env=2, seed=3, progress=False, stream=True))
    assert again.shards_kept == 2 and again.shards_written == 2 and again.grasps == 4
    assert [shard.meta["block"] for shard in read_manifest(tmp_path)] == [0, 0, 1, 1]


def test_a_stream_ends_with_every_shard_holding_its_envs_share_however_the_envs_split_it(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    judged = torch.zeros(3, 2, dtype=torch.long)  # (block, env): attempts judged, observed on the real stream
    stream = runner.stream

    def observed_stream(*args, **kwargs):
        for env_ids, result, record in stream(*args, **kwargs):
            judged.index_put_((record["block"].cpu(), env_ids.cpu()), torch.ones(len(env_ids), dtype=torch.long), accumulate=True)
            yield env_ids, result, record

    runner.stream = observed_stream
    try:  # one shard of both envs per block
        config = SynthConfig(out=tmp_path, grasps=12, shard_size=4, attempts_per_env=2, seed=6, progress=False, stream=True)
        stats = synthesize(runner, sampler, config)
    finally:
        del runner.stream
    shards = read_manifest(tmp_path)
    assert sorted(shard.meta["block"] for shard in shards) == [0, 1, 2] and [shard.count for shard in shards] == [4, 4, 4]
    assert all(shard.meta["env_range"] == [0, 2] for shard in shards) and stats.grasps == 12
    assert judged.sum(dim=1).tolist() == [4, 4, 4]


def test_at_the_end_envs_go_on_where_their_shard_has_room_take_over_slower_envs_attempts_or_stop():
    room = torch.tensor([[0, 2], [1, 0], [3, 0]])  # (block, shard) attempts yet to start; block 2 is the last
    position = torch.tensor([1, 0, 3, 3, 1, 0])  # the block of each env's own next attempt (3: done)
    heap_block = torch.tensor([1, 0, 2, 0, 1, 0])
    shards = torch.tensor([0, 0, 0, 0, 1, 1])
    target, stop = _last_blocks_targets(position, heap_block, shards, room)
    # env 0 goes on in block 1; env 1's block 0 is full, so it moves on to block 1; env 2 fills in its heap's
    # block 2; env 3's heap block 0 is full, so it fills the first block with room (1); shard 1 has room only in
    # block 0: env 4 (own block 1, nothing later) goes back to fill it, and env 5 goes on in its own block 0
    assert target.tolist() == [1, 1, 2, 1, 0, 0] and not stop.any()
    target, stop = _last_blocks_targets(position, heap_block, shards, torch.tensor([[0, 0], [0, 0], [1, 0]]))
    assert stop.tolist() == [False, False, False, False, True, True] and target[:4].tolist() == [2, 2, 2, 2]


def test_envs_asking_at_once_get_a_cells_room_own_attempts_first_then_in_order():
    cells = torch.tensor([0, 1, 0, 0, 1, 1])
    own = torch.tensor([False, True, True, False, False, False])
    assert _share_room(cells, own, room=torch.tensor([2, 1])).tolist() == [True, True, True, False, False, False]
    assert _share_room(cells, own, room=torch.tensor([0, 3])).tolist() == [False, True, False, False, True, True]
    assert not _share_room(cells[:0], own[:0], room=torch.tensor([1, 1])).any()


def test_split_by_env_keeps_each_env_range_in_its_judging_order():
    envs = torch.tensor([3, 0, 1, 3, 2, 0])
    examples = {"envs": envs, "labels": torch.arange(6)}
    first, second = split_by_env(examples, BlockPlan(envs=4, attempts_per_env=2, shards_per_block=2, blocks=1).env_groups())
    assert first["envs"].tolist() == [0, 1, 0] and first["labels"].tolist() == [1, 2, 5]
    assert second["envs"].tolist() == [3, 3, 2] and second["labels"].tolist() == [0, 3, 4]


def test_block_plan_cuts_blocks_into_shards_of_whole_envs():
    plan = BlockPlan.of(SynthConfig(out=Path("unused"), grasps=200_000, shard_size=8192, attempts_per_env=24), envs=4096)
    assert (plan.grasps_per_block, plan.shards_per_block, plan.blocks) == (98304, 12, 3)
    groups = plan.env_groups()
    assert groups[0][0] == 0 and groups[-1][1] == 4096 and all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    assert {end - first for first, end in groups} == {341, 342} and list(plan.shards(1)) == list(range(12, 24))
    one = BlockPlan.of(SynthConfig(out=Path("unused"), grasps=4, shard_size=2), envs=2)  # the default: a shard per block
    assert (one.attempts_per_env, one.shards_per_block, one.blocks) == (1, 1, 2)
    with pytest.raises(BlockLayoutError):
        BlockPlan.of(SynthConfig(out=Path("unused"), attempts_per_env=0), envs=2)
