"""FC-GQ-CNN training with DistributedDataParallel: two gloo processes on the CPU against one process."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from test_gqcnn_training import _dataset, _examples

from dexrl import distributed
from dexrl.gqcnn.dataset import GraspBatch
from dexrl.gqcnn.model import FCGQCNN
from dexrl.gqcnn.training import TrainConfig, _optimizer, _train_step, train

WORLD_SIZE = 2


def _spawn(worker, *args) -> None:
    """Run ``worker(rank, *args)`` in two processes that join one gloo group as torchrun's ranks would."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(worker, args=(port, *args), nprocs=WORLD_SIZE, join=True)


def _join(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _global_batches(steps: int, size: int) -> list[GraspBatch]:
    rng = np.random.default_rng(4)
    batches = []
    for _ in range(steps):
        crops, depths, angles, labels = _examples(rng, size)
        batches.append(GraspBatch(torch.from_numpy(crops).unsqueeze(1), torch.from_numpy(depths).float(),
                                  torch.from_numpy(angles).float(), torch.from_numpy(labels).long()))
    return batches


def _sgd(batches: list[GraspBatch], rank: distributed.Rank, model_of=lambda network: network) -> FCGQCNN:
    """A seeded network after one SGD step per global batch, fed this rank's equal part of each."""
    torch.manual_seed(0)
    network = FCGQCNN().to(memory_format=torch.channels_last)
    model = model_of(network)
    config = TrainConfig(data=Path(), out=Path(), lr=0.01)
    optimizer = _optimizer(network, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    for batch in batches:
        part = len(batch.labels) // rank.world_size
        mine = slice(rank.rank * part, (rank.rank + 1) * part)
        _train_step(model, optimizer, schedule, GraspBatch(batch.crops[mine], batch.depths[mine], batch.angles[mine], batch.labels[mine]))
    return network


def _ddp_steps_worker(rank: int, port: int, out: Path) -> None:
    _join(rank, port)
    with distributed.session("cpu") as (me, _):
        network = _sgd(_global_batches(3, 8), me, torch.nn.parallel.DistributedDataParallel)
    torch.save(network.state_dict(), out / f"rank{rank}.pt")


def test_ddp_steps_equal_single_process_steps_on_the_same_global_batch(tmp_path):
    _spawn(_ddp_steps_worker, tmp_path)
    batches = _global_batches(3, 8)
    single = _sgd(batches, distributed.SINGLE_PROCESS).state_dict()
    for rank in range(WORLD_SIZE):
        weights = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.items():
            torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-5, msg=name)
    # not vacuous: the steps move the weights, and half a batch alone moves them elsewhere
    torch.manual_seed(0)
    initial = FCGQCNN().fc5.weight
    half_alone = _sgd(batches, distributed.Rank(0, WORLD_SIZE)).fc5.weight
    assert (single["fc5.weight"] - initial).abs().max() > 1e-3
    assert (single["fc5.weight"] - half_alone).abs().max() > 1e-4


def _train_worker(rank: int, port: int, data: Path, out: Path) -> None:
    _join(rank, port)
    base = {"data": data, "batch_size": 8, "val_fraction": 0.25, "progress": False, "seed": 3}
    with distributed.session("cpu") as (me, _):
        straight = train(TrainConfig(out=out / "straight", epochs=2, **base), me)
        train(TrainConfig(out=out / "resumed", epochs=1, **base), me)
        resumed = train(TrainConfig(out=out / "resumed", epochs=2, resume=True, **base), me)
    (out / f"histories{rank}.json").write_text(json.dumps([straight.history, resumed.history]))


def test_ddp_training_writes_once_reduces_metrics_and_resumes(tmp_path):
    data = _dataset(tmp_path / "data", shards=4, per_shard=8)
    _spawn(_train_worker, data, tmp_path)
    histories = [json.loads((tmp_path / f"histories{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert histories[0] == histories[1]  # metrics reduced over the ranks: every rank holds the same
    straight, resumed = histories[0]
    assert [h["epoch"] for h in resumed] == [0, 1]
    for a, b in zip(straight, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert json.loads((tmp_path / "straight" / "history.json").read_text()) == straight
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert checkpoint["world_size"] == WORLD_SIZE and len(checkpoint["augment_rngs"]) == WORLD_SIZE
    assert sorted(path.name for path in (tmp_path / "resumed").glob("*.tmp")) == []
