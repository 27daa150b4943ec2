"""Training FC-GQ-CNN on sharded grasp datasets (:mod:`dexrl.gqcnn.dataset`) as the paper trains it.

The network sees the unrotated 96x96 crop (one output cell) at the grasp depth; the labelled angle picks one
of the A angle bins, and the loss is softmax cross-entropy on that bin's two logits only. Released recipe:
momentum SGD (0.9), learning rate 0.01 decayed x0.95 every 1.5 epochs (staircase), batch 64, 50 epochs, L2
5e-4 on the weights, He-normal initialisation; the input statistics (x = (I - z - mean) / std) come from the
training data.

Validation shards are held out by shard (neighbouring grasps of one heap stay on one side). Written to
``out``: ``checkpoint.pt`` (everything needed to resume, after every epoch), ``best.safetensors`` +
``best.json`` (the epoch with the best validation average precision, in DexRL's weights format),
``history.json`` (metrics per epoch) and TensorBoard logs under ``tensorboard/``.

Under ``torchrun`` (:mod:`dexrl.distributed`) the network trains with DistributedDataParallel: every epoch
deals the training shards to the ranks, each rank feeds ``batch_size / N`` examples per step, and DDP averages
the gradients, so that a step sees one global batch of ``batch_size``. Validation shards are split the same way
and the metrics computed from every rank's predictions; rank 0 writes all files, and a run resumes with the
same number of ranks.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dexrl.budget import TimeBudget
from dexrl.distributed import SINGLE_PROCESS, Rank, all_gather_objects, all_reduce_sum, barrier

from .dataset import GraspBatch, ShardCache, ShardInfo, iterate_batches, read_manifest, shard_bytes
from .grid import angle_to_bin
from .model import FCGQCNN, Normalization, save_network
from .preprocess import inpaint

__all__ = ["TrainConfig", "TrainResult", "binary_metrics", "random_symmetries", "train"]


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the released FC-GQ-CNN recipe).

    Attributes:
        data: dataset folder (manifest.json + shards). out: run folder for checkpoints, weights and logs.
        epochs, batch_size, lr, momentum, weight_decay: SGD settings; ``lr`` decays by ``lr_decay`` every
            ``decay_epochs`` epochs (staircase). ``batch_size`` is the global batch, whatever the number of
            ranks (which must divide it).
        val_fraction: share of shards held out for validation (at least one).
        angle_bins: A, angle bins of the network.
        seed: seeds initialisation, the validation split and the data order.
        device: ``cpu`` or ``cuda:N``.
        normalization_samples: training examples used to estimate the input statistics.
        augment: apply a random symmetry of the parallel-jaw grasp to each training example
            (:func:`random_symmetries`); validation examples are never augmented.
        time_budget_s: start no epoch that would end past this many seconds (estimated from the epochs so
            far); None trains all ``epochs``. ``resume`` continues a stopped run.
        resume: continue from ``out/checkpoint.pt`` when it exists.
        cache: where the shards stay between epochs: ``"device"`` (loaded once onto the training device: later
            epochs read no file and copy nothing), ``"none"`` (read from the files every epoch) or ``"auto"``
            (the device when the dataset takes at most half of the device's free memory).
        progress: show a progress bar.
        log_every: steps between the training loss's readings (each one waits for the device).
    """

    data: Path
    out: Path
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    lr_decay: float = 0.95
    decay_epochs: float = 1.5
    weight_decay: float = 5e-4
    val_fraction: float = 0.1
    angle_bins: int = 16
    seed: int = 0
    device: str = "cpu"
    normalization_samples: int = 10_000
    augment: bool = True
    time_budget_s: float | None = None
    resume: bool = False
    cache: str = "auto"
    progress: bool = True
    log_every: int = 50


@dataclass
class TrainResult:
    """Per-epoch metrics (``train_loss``, ``val_loss``, ``val_accuracy``, ``val_precision``, ``val_recall``,
    ``val_ap``, ``lr``, and ``seconds``: the epoch's wall time on its slowest rank, validation included) and
    the files written."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_weights: Path | None = None
    checkpoint: Path | None = None


def binary_metrics(q: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision and recall at ``threshold``; average precision (mean precision at the rank of each
    positive, examples sorted by q; a random ranking scores the positive rate); and ROC AUC (the chance that a
    positive outranks a negative, ties half; a random ranking scores 0.5) of predicted success probabilities
    q (N,) against 0/1 labels (N,)."""
    labels = labels.bool()
    predicted = q >= threshold
    true_positives = (predicted & labels).sum().item()
    order = torch.argsort(q, descending=True)
    hits = labels[order].double()
    precision_at_rank = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    positives = labels.sum().item()
    negatives = len(labels) - positives
    ranks = _average_ranks(q.double())
    auc = (ranks[labels].sum().item() - positives * (positives + 1) / 2) / (positives * negatives)
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "precision": true_positives / max(predicted.sum().item(), 1),
        "recall": true_positives / max(positives, 1),
        "ap": (precision_at_rank * hits).sum().item() / positives if positives else math.nan,
        "auc": auc if positives and negatives else math.nan,
    }


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values`` in ascending order, tied values sharing their mean rank."""
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    return (last - (counts.double() - 1) / 2)[inverse]


def random_symmetries(batch: GraspBatch, generator: torch.Generator) -> GraspBatch:
    """Each example as itself, turned by 180 degrees, or mirrored left-right or up-down, with equal odds.

    The jaws are symmetric and the camera looks down, so these are the same grasp on a mirrored or turned
    heap: a half turn keeps the jaw angle, a mirror negates it. A mirror maps crop column i to 95 - i, so
    mirrored crops are rolled by one pixel to keep the grasp centre on pixel 48 (the one wrapped row or
    column is a copy of the edge).
    """
    crops, angles = batch.crops, batch.angles
    choice = torch.randint(4, (len(angles),), generator=generator).to(crops.device)
    turned = crops.flip(-1, -2).roll((1, 1), (-1, -2))
    mirrored_lr = crops.flip(-1).roll(1, -1)
    mirrored_ud = crops.flip(-2).roll(1, -2)
    pick = choice.view(-1, 1, 1, 1)
    crops = torch.where(pick == 1, turned, torch.where(pick == 2, mirrored_lr, torch.where(pick == 3, mirrored_ud, crops)))
    angles = torch.where(choice >= 2, -angles, angles)
    return GraspBatch(crops.contiguous(), batch.depths, angles, batch.labels)


def _labelled_bin_logits(model: FCGQCNN | DistributedDataParallel, batch: GraspBatch) -> torch.Tensor:
    """The two logits (N, 2) of each example's labelled angle bin, from the crop's single output cell."""
    crops = inpaint(batch.crops[:, 0]).unsqueeze(1).contiguous(memory_format=torch.channels_last)
    logits = model(crops, batch.depths[:, None])[:, 0, :, :, 0, 0]  # (N, A, 2)
    bins = angle_to_bin(batch.angles, logits.shape[1]).to(logits.device)
    return logits[torch.arange(len(bins), device=logits.device), bins]


def _shard_loader(config: TrainConfig, shards: list[ShardInfo]) -> ShardCache | None:
    """A cache of ``shards`` on the training device, as ``config.cache`` asks; None reads the files."""
    if config.cache not in ("auto", "device", "none"):
        raise ValueError(f"cache must be 'auto', 'device' or 'none', got {config.cache!r}")
    if config.cache == "none":
        return None
    device = torch.device(config.device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if config.cache == "auto" and shard_bytes(shards) > free / 2:
        return None
    return ShardCache(config.data, device)


def _estimate_normalization(
    root: Path, shards: list[ShardInfo], samples: int, load: ShardCache | None = None
) -> Normalization:
    """Mean and standard deviation of I - z over the first ``samples`` training examples."""
    total, total_sq, count = 0.0, 0.0, 0
    for batch in iterate_batches(root, shards, batch_size=1024, load=load):
        relative = (inpaint(batch.crops[:, 0]) - batch.depths[:, None, None]).double()
        total, total_sq, count = (
            total + relative.sum().item(),
            total_sq + (relative**2).sum().item(),
            count + relative.numel(),
        )
        if count >= samples * relative[0].numel():
            break
    mean = total / count
    return Normalization(image_mean=mean, image_std=math.sqrt(max(total_sq / count - mean**2, 1e-12)))


def _split(shards: list[ShardInfo], fraction: float, seed: int) -> tuple[list[ShardInfo], list[ShardInfo]]:
    if len(shards) < 2:
        raise ValueError(
            f"the dataset has {len(shards)} shard(s); at least 2 are needed to hold one out for validation"
        )
    held_out = min(len(shards) - 1, max(1, round(fraction * len(shards))))
    order = np.random.default_rng(seed).permutation(len(shards))
    return [shards[i] for i in sorted(order[held_out:])], [shards[i] for i in sorted(order[:held_out])]


def _epoch_share(
    shards: list[ShardInfo], config: TrainConfig, epoch: int, rank: Rank
) -> tuple[list[ShardInfo], np.random.Generator, int]:
    """This rank's training shards of ``epoch``, the generator that shuffles them, and the number of steps.

    One process: every shard, shuffled by (seed, epoch), every example once (the last batch may be smaller).
    N ranks: the shards dealt round robin after a fresh permutation per epoch; every rank takes the same number
    of full local batches (``batch_size / N``), so that each step averages the gradients of one global batch.
    A rank's surplus examples (when its shards hold more) wait for another epoch's deal.
    """
    if rank.world_size == 1:
        steps = math.ceil(sum(s.count for s in shards) / config.batch_size)
        return shards, np.random.default_rng((config.seed, epoch)), steps
    order = np.random.default_rng((config.seed, epoch)).permutation(len(shards))
    dealt = [[shards[i] for i in order[r :: rank.world_size]] for r in range(rank.world_size)]
    local_batch = config.batch_size // rank.world_size
    steps = min(sum(s.count for s in part) // local_batch for part in dealt)
    if steps == 0:
        raise ValueError(
            f"each of the {rank.world_size} ranks needs training shards of at least one local batch "
            f"({local_batch} examples); use more shards or fewer ranks"
        )
    return dealt[rank.rank], np.random.default_rng((config.seed, epoch, rank.rank)), steps


def _train_step(
    model: FCGQCNN | DistributedDataParallel,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    batch: GraspBatch,
) -> torch.Tensor:
    """One SGD step on ``batch``; under DDP ``batch`` is this rank's equal part of the global batch and the
    gradients are averaged over the ranks. Returns the mean loss over ``batch`` (a scalar tensor on the
    device: reading it waits for the step)."""
    loss = F.cross_entropy(_labelled_bin_logits(model, batch), batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.detach()


@torch.no_grad()
def _evaluate(
    model: FCGQCNN,
    root: Path,
    shards: list[ShardInfo],
    config: TrainConfig,
    rank: Rank = SINGLE_PROCESS,
    load: ShardCache | None = None,
) -> dict[str, float]:
    """Validation metrics over ``shards``: each rank predicts its share, the metrics use every prediction."""
    model.eval()
    loss, qs, labels = 0.0, [torch.empty(0)], [torch.empty(0, dtype=torch.long)]
    for batch in iterate_batches(root, shards[rank.rank :: rank.world_size], config.batch_size, load=load):
        batch = batch.to(config.device)
        logits = _labelled_bin_logits(model, batch)
        loss += F.cross_entropy(logits, batch.labels, reduction="sum").item()
        qs.append(torch.softmax(logits, dim=1)[:, 1].cpu())
        labels.append(batch.labels.cpu())
    parts = all_gather_objects((loss, torch.cat(qs), torch.cat(labels)))
    q, label = torch.cat([part[1] for part in parts]), torch.cat([part[2] for part in parts])
    metrics = binary_metrics(q, label)
    metrics["loss"] = sum(part[0] for part in parts) / len(label)
    return {f"val_{name}": value for name, value in metrics.items()}


def _optimizer(model: FCGQCNN, config: TrainConfig) -> torch.optim.SGD:
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    return torch.optim.SGD(
        [{"params": weights, "weight_decay": config.weight_decay}, {"params": biases, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
    )


def train(config: TrainConfig, rank: Rank = SINGLE_PROCESS) -> TrainResult:
    """Train (or resume) a run; returns the metrics history and the files written. Under a process group,
    every rank calls this with its :class:`Rank` (see the module's notes); all ranks return the same history."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (imports tensorboard)
    from tqdm import tqdm  # noqa: PLC0415

    if config.batch_size % rank.world_size:
        raise ValueError(f"the batch size {config.batch_size} must be a multiple of the {rank.world_size} ranks")
    root, out = Path(config.data), Path(config.out)
    train_shards, val_shards = _split(read_manifest(root), config.val_fraction, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path, best_path = out / "checkpoint.pt", out / "best.safetensors"
    torch.manual_seed(config.seed)
    augment_generator = torch.Generator().manual_seed(rank.seed(config.seed))
    resume = (
        torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if config.resume and checkpoint_path.is_file()
        else None
    )
    if resume and resume.get("world_size", 1) != rank.world_size:
        raise ValueError(
            f"{checkpoint_path} was written by {resume.get('world_size', 1)} rank(s); resume it with as many"
        )
    load = _shard_loader(config, train_shards + val_shards)
    normalization = (
        Normalization(**resume["normalization"])
        if resume
        else _estimate_normalization(root, train_shards, config.normalization_samples, load)
    )
    network = FCGQCNN(angle_bins=config.angle_bins, normalization=normalization)
    network = network.to(config.device, memory_format=torch.channels_last)  # about twice as fast on CPUs and GPUs
    optimizer = _optimizer(network, config)
    decay_steps = max(1, round(config.decay_epochs * math.ceil(sum(s.count for s in train_shards) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: config.lr_decay ** (step // decay_steps)
    )
    result = TrainResult(checkpoint=checkpoint_path)
    best_ap, first_epoch = -math.inf, 0
    if resume:
        network.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        result.history, best_ap, first_epoch = resume["history"], resume["best_ap"], resume["epoch"] + 1
        torch.set_rng_state(resume["torch_rng"])
        augment_generator.set_state(resume.get("augment_rngs", [resume.get("augment_rng")])[rank.rank])
        if best_path.is_file():
            result.best_weights = best_path
    model = network
    if rank.world_size > 1:  # DDP broadcasts rank 0's weights and averages the gradients in backward()
        on_gpu = torch.device(config.device).type == "cuda"
        model = DistributedDataParallel(network, device_ids=[torch.device(config.device).index] if on_gpu else None)
    writer = SummaryWriter(str(out / "tensorboard")) if rank.is_main else None
    provenance = {
        "source": "dexrl train-gqcnn",
        "dataset": {
            "folder": root.name,
            "train_shards": [s.file for s in train_shards],
            "val_shards": [s.file for s in val_shards],
            "examples": sum(s.count for s in train_shards),
            "positives": sum(s.positives for s in train_shards),
        },
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("data", "out", "progress")
        },
    }
    budget = TimeBudget(config.time_budget_s)
    for epoch in range(first_epoch, config.epochs):
        over_budget = budget.next_unit_overruns(epoch - first_epoch)
        if all_reduce_sum(torch.tensor([int(over_budget)])).item():  # all ranks stop together
            print(f"[train-gqcnn] time budget: stopping after epoch {epoch} ({budget.elapsed:.0f} s)")
            break
        model.train()
        epoch_started = time.perf_counter()
        shards, rng, steps = _epoch_share(train_shards, config, epoch, rank)
        batches = tqdm(
            itertools.islice(iterate_batches(root, shards, config.batch_size // rank.world_size, rng, load), steps),
            total=steps,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not (config.progress and rank.is_main),
        )
        loss_sum, seen = torch.zeros((), dtype=torch.float64, device=config.device), 0
        for step, batch in enumerate(batches, 1):
            batch = batch.to(config.device)
            if config.augment:
                batch = random_symmetries(batch, augment_generator)
            loss = _train_step(model, optimizer, schedule, batch)
            loss_sum, seen = loss_sum + loss * len(batch.labels), seen + len(batch.labels)
            if step % config.log_every == 0 or step == steps:
                if writer is not None:
                    writer.add_scalar("train/loss", loss.item(), schedule.last_epoch)
                batches.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
        loss_sum, seen = all_reduce_sum(torch.tensor([loss_sum.item(), seen], dtype=torch.float64)).tolist()
        metrics = {"epoch": epoch, "train_loss": loss_sum / seen, "lr": optimizer.param_groups[0]["lr"]}
        metrics |= _evaluate(network, root, val_shards, config, rank, load)
        # the slowest rank's wall time, so that every rank records the same history
        metrics["seconds"] = round(max(all_gather_objects(time.perf_counter() - epoch_started)), 2)
        result.history.append(metrics)
        improved = metrics["val_ap"] > best_ap or result.best_weights is None
        if improved:
            best_ap = metrics["val_ap"] if not math.isnan(metrics["val_ap"]) else best_ap
            result.best_weights = best_path
        augment_states = all_gather_objects(augment_generator.get_state())
        if not rank.is_main:
            continue  # the files are rank 0's
        for name, value in metrics.items():
            if name != "epoch":
                writer.add_scalar(name.replace("_", "/", 1), value, epoch)
        if improved:
            save_network(network, best_path, {**provenance, "epoch": epoch, "metrics": metrics})
        state = {
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "epoch": epoch,
            "history": result.history,
            "best_ap": best_ap,
            "torch_rng": torch.get_rng_state(),
            "augment_rngs": augment_states,
            "world_size": rank.world_size,
            "normalization": asdict(normalization),
        }
        torch.save(state, checkpoint_path.with_suffix(".tmp"))
        os.replace(checkpoint_path.with_suffix(".tmp"), checkpoint_path)
        (out / "history.json").write_text(json.dumps(result.history, indent=2))
    if writer is not None:
        writer.close()
    barrier()  # rank 0's files are written when any rank returns
    return result
