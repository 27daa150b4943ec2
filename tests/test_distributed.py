"""dexrl.distributed without a process group, and the per-rank manifests of a sharded dataset."""

import numpy as np
import pytest
import torch
from test_gqcnn_training import _examples

from dexrl import distributed
from dexrl.distributed import Rank
from dexrl.gqcnn.dataset import (
    MANIFEST,
    listed_shards,
    merge_manifests,
    rank_manifest,
    read_manifest,
    write_shard,
)


def test_rank_shares_deal_every_item_to_exactly_one_rank():
    for world_size in (1, 2, 3, 8):
        shares = [list(Rank(rank, world_size).share(10)) for rank in range(world_size)]
        assert sorted(item for share in shares for item in share) == list(range(10))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_rank_seeds_keep_the_single_process_seed_on_rank_zero_and_differ_elsewhere():
    seeds = [Rank(rank, 4).seed(7) for rank in range(4)]
    assert seeds[0] == 7 == Rank().seed(7)
    assert len(set(seeds)) == 4 and all(0 <= seed < 2**63 for seed in seeds)
    assert seeds == [Rank(rank, 4).seed(7) for rank in range(4)]  # reproducible
    assert Rank(1, 4).seed(8) != seeds[1]


def test_rank_and_device_from_torchruns_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.current_rank() == Rank(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    rank = distributed.current_rank()
    assert rank == Rank(5, 8, 1) and not rank.is_main
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.device_for(rank, "cuda:0") == "cuda:1" and distributed.device_for(rank, "cpu") == "cpu"
    assert distributed.device_for(Rank(), "cuda:3") == "cuda:3" and distributed.device_for(Rank(), None) is None
    assert distributed.device_for(Rank(6, 8, 3), "cuda:0") == "cuda:1"  # four ranks share two GPUs evenly
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert not distributed.shares_gpus()  # NCCL: a GPU per rank
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert distributed.shares_gpus()  # gloo


def test_collectives_leave_a_single_process_alone():
    counts = torch.tensor([3, 0, 2])
    assert distributed.all_reduce_sum(counts) is counts and counts.tolist() == [3, 0, 2]
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier()


def test_rank_manifests_merge_into_one_manifest(tmp_path):
    crops, depths, angles, labels = _examples(np.random.default_rng(0), 4)
    write_shard(tmp_path / "shard_00002.npz", crops, depths, angles, labels, seed=2)  # an earlier run's
    write_shard(tmp_path / "shard_00001.npz", crops, depths, angles, labels, manifest=rank_manifest(1), seed=1)
    write_shard(tmp_path / "shard_00000.npz", crops, depths, angles, labels, manifest=rank_manifest(0), seed=0)
    assert [s.file for s in read_manifest(tmp_path)] == ["shard_00002.npz"]
    assert sorted(s.file for s in listed_shards(tmp_path)) == [f"shard_{i:05d}.npz" for i in range(3)]
    merged = merge_manifests(tmp_path)
    assert [(s.file, s.meta["seed"]) for s in merged] == [(f"shard_{i:05d}.npz", i) for i in range(3)]
    assert read_manifest(tmp_path) == merged
    assert sorted(path.name for path in tmp_path.glob("manifest*.json")) == [MANIFEST]


def test_training_refuses_a_batch_the_ranks_cannot_share(tmp_path):
    from dexrl.gqcnn.training import TrainConfig, train  # noqa: PLC0415

    with pytest.raises(ValueError, match="multiple of the 3 ranks"):
        train(TrainConfig(data=tmp_path, out=tmp_path / "run", batch_size=64), Rank(0, 3))
