"""``dexrl train-gqcnn DATA``: train FC-GQ-CNN on a sharded grasp dataset (format: dexrl.gqcnn.dataset);
progress bar, TensorBoard logs, a checkpoint per epoch (``--resume`` continues), the best epoch's weights.

Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel, one GPU per rank (NCCL; gloo with
``--device cpu``); ``--batch-size`` stays the global batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from dexrl.gqcnn.training import TrainConfig  # noqa: PLC0415 (torch; this command needs it anyway)

    defaults = TrainConfig(data=Path(), out=Path())
    parser.add_argument("data", type=Path, help="dataset folder with manifest.json and NPZ shards")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/gqcnn"), help="run folder (default runs/gqcnn)"
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size,
        help=f"global batch, split over torchrun's ranks (default {defaults.batch_size})"
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help=f"initial learning rate (default {defaults.lr})"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help=f"share of shards held out (default {defaults.val_fraction})",
    )
    parser.add_argument(
        "--angle-bins", type=int, default=defaults.angle_bins, help=f"default {defaults.angle_bins}"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")
    parser.add_argument(
        "--device", default=None, help="cpu or cuda:N (default: cuda:0 if available, else cpu)"
    )
    parser.add_argument(
        "--no-augment", dest="augment", action="store_false",
        help="train on the examples as recorded (default: random half turns and mirrors of each grasp)",
    )
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help="start no epoch that would end past this many seconds (--resume continues)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument(
        "--cache", choices=("auto", "device", "none"), default=defaults.cache,
        help="keep the shards on the training device after the first epoch (device), read them every epoch "
        "(none), or the device when the dataset takes at most half of its free memory (auto, the default)",
    )


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from dexrl import distributed  # noqa: PLC0415
    from dexrl.gqcnn.training import TrainConfig, train  # noqa: PLC0415

    with distributed.session(args.device) as (rank, device):
        config = TrainConfig(
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            val_fraction=args.val_fraction,
            angle_bins=args.angle_bins,
            seed=args.seed,
            device=device or ("cuda:0" if torch.cuda.is_available() else "cpu"),
            augment=args.augment,
            time_budget_s=args.time_budget,
            resume=args.resume,
            cache=args.cache,
        )
        result = train(config, rank)
    if result.history and rank.is_main:
        last = result.history[-1]
        print(
            f"epoch {last['epoch'] + 1}: val loss {last['val_loss']:.4f}, "
            f"accuracy {last['val_accuracy']:.3f}, AP {last['val_ap']:.3f}; "
            f"best weights: {result.best_weights}"
        )
    return 0
