"""Grasp-dataset shards and the FC-GQ-CNN training loop."""

import json
import math

import numpy as np
import pytest
import torch

from dexrl.gqcnn.dataset import MANIFEST, GraspBatch, ShardCache, iterate_batches, read_manifest, write_shard
from dexrl.gqcnn.grid import bin_to_angle
from dexrl.gqcnn.model import FCGQCNN, load_network
from dexrl.gqcnn.training import TrainConfig, _labelled_bin_logits, binary_metrics, random_symmetries, train


def _examples(rng: np.random.Generator, count: int):
    """Crops of a box on a floor; the grasp succeeds (label 1) when its depth lies below the box top, i.e. the
    jaws reach around the box, and fails when it lies above. Angles fall in two bins (the label ignores
    them)."""
    crops = np.full((count, 96, 96), 0.70, np.float32)
    tops = rng.uniform(0.60, 0.67, count)
    for crop, top in zip(crops, tops):
        h, w = rng.integers(24, 60, 2)
        crop[48 - h // 2 : 48 + h - h // 2, 48 - w // 2 : 48 + w - w // 2] = top
    crops += rng.normal(0, 0.0005, crops.shape).astype(np.float32)
    labels = rng.integers(0, 2, count)
    depths = tops + (2 * labels - 1) * rng.uniform(0.005, 0.03, count)
    angles = rng.choice([0.0, math.pi / 2], count) + rng.uniform(-0.05, 0.05, count)
    return crops, depths, angles, labels.astype(np.uint8)


def _dataset(folder, shards: int, per_shard: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for index in range(shards):
        write_shard(folder / f"shard_{index:05d}.npz", *_examples(rng, per_shard), seed=seed, heap=index)
    return folder


def test_write_shard_keeps_the_manifest(tmp_path):
    crops, depths, angles, labels = _examples(np.random.default_rng(0), 10)
    write_shard(tmp_path / "shard_00000.npz", crops, depths, angles, labels, seed=3)
    write_shard(tmp_path / "shard_00001.npz", crops[:4], depths[:4], angles[:4], labels[:4])
    write_shard(
        tmp_path / "shard_00000.npz", crops[:6], depths[:6], angles[:6], labels[:6], seed=4
    )  # replaced
    shards = read_manifest(tmp_path)
    assert [(s.file, s.count, s.meta) for s in shards] == [
        ("shard_00001.npz", 4, {}),
        ("shard_00000.npz", 6, {"seed": 4}),
    ]
    assert shards[1].positives == int(labels[:6].sum())
    assert json.loads((tmp_path / MANIFEST).read_text())["crop_size"] == 96
    with np.load(tmp_path / "shard_00000.npz") as data:
        assert data["labels"].dtype == np.uint8 and np.array_equal(data["crops"], crops[:6])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: (a[0][:, :90], *a[1:]), "crops must be"),
        (lambda a: (a[0], a[1][:3], *a[2:]), "one value per crop"),
        (lambda a: (*a[:3], a[3] + 1), "0 or 1"),
        (lambda a: (a[0], a[1] * np.nan, *a[2:]), "finite"),
    ],
)
def test_write_shard_refuses_malformed_examples(tmp_path, change, message):
    arrays = change(_examples(np.random.default_rng(0), 5))
    with pytest.raises(ValueError, match=message):
        write_shard(tmp_path / "shard.npz", *arrays)


def test_batches_cover_every_example_once_in_a_seeded_order(tmp_path):
    _dataset(tmp_path, shards=3, per_shard=10)
    shards = read_manifest(tmp_path)
    ordered = torch.cat([b.depths for b in iterate_batches(tmp_path, shards, batch_size=4)])
    first = [b.depths for b in iterate_batches(tmp_path, shards, 4, np.random.default_rng(7))]
    again = torch.cat([b.depths for b in iterate_batches(tmp_path, shards, 4, np.random.default_rng(7))])
    assert [len(b) for b in first] == [4] * 7 + [2]
    assert torch.equal(torch.cat(first), again)
    assert not torch.equal(torch.cat(first), ordered)
    assert torch.equal(torch.sort(torch.cat(first)).values, torch.sort(ordered).values)


def test_only_the_labelled_angle_bins_logits_get_gradients():
    torch.manual_seed(0)
    model = FCGQCNN()
    crops, depths, _, labels = _examples(np.random.default_rng(1), 3)
    batch = GraspBatch(
        torch.from_numpy(crops).unsqueeze(1),
        torch.from_numpy(depths).float(),
        bin_to_angle(torch.tensor([2, 2, 9]), 16),
        torch.from_numpy(labels).long(),
    )
    torch.nn.functional.cross_entropy(_labelled_bin_logits(model, batch), batch.labels).backward()
    rows_with_gradient = model.fc5.weight.grad.flatten(1).abs().sum(dim=1).nonzero().flatten().tolist()
    assert rows_with_gradient == [4, 5, 18, 19]  # logits (fail, success) of bins 2 and 9


def _jaw_line(angle: float) -> torch.Tensor:
    """A 96x96 crop, zero but for a line through the grasp centre (pixel 48, 48) along the jaw axis
    (cos angle, sin angle) in image coordinates (x right, y down), 1 on one side and 2 on the other."""
    crop = torch.zeros(96, 96)
    for t in range(-30, 31):
        if t:
            x, y = 48 + round(t * math.cos(angle)), 48 + round(t * math.sin(angle))
            crop[y, x] = 1.0 if t > 0 else 2.0
    return crop


@pytest.mark.parametrize("angle", [0.4, -1.1, 1.3, math.pi / 2])
def test_symmetries_keep_the_grasp_centre_and_follow_the_jaw_axis(angle):
    batch = GraspBatch(
        _jaw_line(angle).expand(64, 1, 96, 96), torch.full((64,), 0.6), torch.full((64,), angle),
        torch.ones(64, dtype=torch.long),
    )
    augmented = random_symmetries(batch, torch.Generator().manual_seed(0))
    kinds = set()
    for crop, new_angle in zip(augmented.crops[:, 0], augmented.angles):
        # the jaw axis of the new angle passes through the same centre pixel and covers the drawn line
        on_axis = (_jaw_line(float(new_angle)) > 0) & (crop > 0)
        assert on_axis.sum() >= 0.9 * (crop > 0).sum(), float(new_angle)
        ahead = crop[48 + round(10 * math.sin(new_angle)), 48 + round(10 * math.cos(new_angle))]
        kinds.add((round(float(new_angle), 4), float(ahead)))
    # identity, half turn (same angle, sides swapped), the two mirrors (negated angle, either side ahead)
    assert len(kinds) == 4
    assert torch.equal(augmented.labels, batch.labels) and torch.equal(augmented.depths, batch.depths)


def test_binary_metrics():
    q = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.2])
    labels = torch.tensor([1, 0, 1, 1, 0])
    metrics = binary_metrics(q, labels)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert metrics["auc"] == pytest.approx(4 / 6)  # positive above negative in 4 of the 6 pairs
    assert binary_metrics(q, torch.tensor([1, 1, 0, 0, 0]))["ap"] == pytest.approx(1.0)
    assert binary_metrics(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1, 0, 0]))["auc"] == pytest.approx(0.75)


def test_training_learns_a_synthetic_task(tmp_path):
    data = _dataset(tmp_path / "data", shards=4, per_shard=64)
    config = TrainConfig(
        data=data, out=tmp_path / "run", epochs=3, batch_size=16, lr=0.003, val_fraction=0.25, progress=False
    )
    result = train(config)
    history = result.history
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.65  # balanced labels: chance is 0.5
    assert max(h["val_ap"] for h in history) > 0.75
    network, card = load_network(result.best_weights)
    assert card.provenance["source"] == "dexrl train-gqcnn" and card.provenance["dataset"]["examples"] == 192
    assert isinstance(network, FCGQCNN) and network.normalization.image_std > 0
    assert (config.out / "history.json").is_file() and any((config.out / "tensorboard").iterdir())


def test_training_resumes_from_its_checkpoint(tmp_path):
    data = _dataset(tmp_path / "data", shards=2, per_shard=8)
    base = {"data": data, "batch_size": 8, "val_fraction": 0.5, "progress": False, "seed": 3}
    straight = train(TrainConfig(out=tmp_path / "straight", epochs=2, **base))
    train(TrainConfig(out=tmp_path / "resumed", epochs=1, **base))
    resumed = train(TrainConfig(out=tmp_path / "resumed", epochs=2, resume=True, **base))
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_training_needs_a_held_out_shard(tmp_path):
    data = _dataset(tmp_path / "data", shards=1, per_shard=4)
    with pytest.raises(ValueError, match="at least 2"):
        train(TrainConfig(data=data, out=tmp_path / "run", epochs=1, progress=False))


def test_cached_shards_train_exactly_as_shards_read_every_epoch(tmp_path):
    data = _dataset(tmp_path / "data", shards=3, per_shard=12)
    base = {"data": data, "epochs": 2, "batch_size": 8, "val_fraction": 0.34, "progress": False, "seed": 5}
    from_files = train(TrainConfig(out=tmp_path / "files", cache="none", **base))
    cached = train(TrainConfig(out=tmp_path / "cached", cache="device", **base))
    for a, b in zip(from_files.history, cached.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    with pytest.raises(ValueError, match="cache must be"):
        train(TrainConfig(out=tmp_path / "bad", cache="disk", **base))


def test_a_shard_cache_reads_each_file_once(tmp_path):
    data = _dataset(tmp_path / "data", shards=2, per_shard=6)
    shards = read_manifest(data)
    cache = ShardCache(data, "cpu")
    first = torch.cat([b.depths for b in iterate_batches(data, shards, 4, np.random.default_rng(1), cache)])
    (data / shards[0].file).unlink()  # later epochs must not need the files
    again = torch.cat([b.depths for b in iterate_batches(data, shards, 4, np.random.default_rng(1), cache)])
    assert torch.equal(first, again) and len(first) == 12
