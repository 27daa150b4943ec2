"""``dexrl import-weights ZIP_OR_DIR``: convert a released GQ-CNN model (FC-GQCNN-4.0-PJ or GQCNN-4.0-PJ, the
zip or its folder) to DexRL weights (.safetensors + .json model card), reading the TensorFlow checkpoint
without TensorFlow."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, metavar="ZIP_OR_DIR", help="the released model: its zip, or the unpacked folder"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="weights file to write (default: ./<model name>.safetensors, e.g. fc_gqcnn_4_0_pj)",
    )


def run(args: argparse.Namespace) -> int:
    from dexrl.gqcnn.model import save_network  # noqa: PLC0415
    from dexrl.gqcnn.official import import_official  # noqa: PLC0415
    from dexrl.gqcnn.tf_checkpoint import CheckpointError  # noqa: PLC0415

    try:
        network, provenance = import_official(args.source)
    except (CheckpointError, FileNotFoundError) as error:
        print(f"dexrl import-weights: {error}", file=sys.stderr)
        return 1
    name = re.sub(r"[^a-z0-9]+", "_", args.source.stem.lower()).strip("_") or "gqcnn"
    out = args.out or Path(f"{name}.safetensors")
    card = save_network(network, out, provenance)
    print(
        f"{card.architecture['network']} ({card.num_params:,} parameters, "
        f"normalisation {card.normalization}) -> {out} and {out.with_suffix('.json')}"
    )
    return 0
