"""``dexrl pipeline``: FC-GQ-CNN weights from a seed, in one command: ``dexrl synth`` -> ``dexrl train-gqcnn`` ->
``dexrl eval-planner`` (on each object set).

Each stage runs as its own ``dexrl`` process (a fresh simulator per stage) and writes under ``--out``::

    data/          the synthesized shards (manifest.json, shard_*.npz, synth_stats.json)
    train/         checkpoint, best.safetensors + best.json, history.json, TensorBoard logs
    eval/          eval_<set>.json / .md: FC-GQ-CNN vs the baseline planner
    pipeline.json  the stages run, their commands and wall times

Every stage resumes: run the same command again and synthesis continues after its last finished block and
training after its last finished epoch. ``--toy`` sizes everything for a 2-core CPU in a few minutes (the test
suite runs it); the defaults size it for one GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    "envs": (int, 2048, "parallel envs of synthesis and evaluation"),
    "grasps": (int, 1_000_000, "labelled grasps to synthesize"),
    "shard_size": (int, 8192, "grasps per shard"),
    "objects": (str, "seen", "object set of the training data"),
    "epochs": (int, 30, "training epochs"),
    "batch_size": (int, 256, "training batch size"),
    "lr": (float, 0.01, "training learning rate"),
    "val_fraction": (float, 0.1, "share of shards held out for validation"),
    "attempts": (int, 2048, "evaluation attempts per planner and set"),
    "sets": (str, "seen,novel", "object sets to evaluate on"),
}
"""The sized options: type, default for one GPU, help."""
TOY = {
    "envs": 8, "grasps": 448, "shard_size": 64, "objects": "blocks", "epochs": 12, "batch_size": 32, "lr": 0.003,
    "val_fraction": 0.3, "attempts": 16, "sets": "blocks",
}
"""Defaults of ``--toy``: a few easy blocks per bin, so that a CPU labels enough grasps to learn from in
minutes."""
TOY_SCENE = ["objects.count_range=[2,3]", "objects.pool_size=8"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/pipeline"), help="run folder (default out/pipeline)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every stage (default 0)")
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: cuda:0 if available, else cpu)")
    for name, (kind, default, text) in SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"{text} (default {default}; --toy: {TOY[name]})")
    parser.add_argument("--mix", default="uniform=0.5,edge=0.5", help="candidate sources (see dexrl synth)")
    parser.add_argument("--attempts-per-env", type=int, default=None, help="synthesis blocks (see dexrl synth)")
    parser.add_argument("--stream", action="store_true", help="stream the synthesis attempts (see dexrl synth)")
    parser.add_argument("--synth-seconds", type=float, default=None, help="time budget of synthesis")
    parser.add_argument("--train-seconds", type=float, default=None, help="time budget of training")
    parser.add_argument("--stages", default="synth,train,eval", help="stages to run (default synth,train,eval)")
    parser.add_argument("--toy", action="store_true", help=f"toy defaults for a CPU (options given still win), scene {TOY_SCENE}")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="scene overrides for synthesis and evaluation")


def stage_commands(args: argparse.Namespace) -> dict[str, list[list[str]]]:
    """The ``dexrl`` argument lists of each stage."""
    defaults = TOY if args.toy else {name: default for name, (_, default, _) in SIZES.items()}
    sizes = {name: defaults[name] if getattr(args, name) is None else getattr(args, name) for name in SIZES}
    scene = [*(["--device", args.device] if args.device else []), "--seed", str(args.seed), "--envs", str(sizes["envs"])]
    overrides = (TOY_SCENE if args.toy else []) + list(args.overrides)
    data, train, weights = args.out / "data", args.out / "train", args.out / "train" / "best.safetensors"
    synth = ["synth", *scene, "--objects", sizes["objects"], "--grasps", str(sizes["grasps"]), "--shard-size", str(sizes["shard_size"]),
             "--mix", args.mix, "--out", str(data), *_budget(args.synth_seconds),
             *(["--attempts-per-env", str(args.attempts_per_env)] if args.attempts_per_env else []),
             *(["--stream"] if args.stream else []), *overrides]
    training = ["train-gqcnn", str(data), "--out", str(train), "--seed", str(args.seed), "--resume",
                "--epochs", str(sizes["epochs"]), "--batch-size", str(sizes["batch_size"]), "--lr", str(sizes["lr"]),
                "--val-fraction", str(sizes["val_fraction"]),
                *(["--device", args.device] if args.device else []), *_budget(args.train_seconds)]
    evaluation = [
        ["eval-planner", *scene, "--objects", name, "--attempts", str(sizes["attempts"]), "--weights", str(weights),
         "--out", str(args.out / "eval"), *overrides]
        for name in sizes["sets"].split(",") if name
    ]
    return {"synth": [synth], "train": [training], "eval": evaluation}


def _budget(seconds: float | None) -> list[str]:
    return ["--time-budget", str(seconds)] if seconds is not None else []


def run(args: argparse.Namespace) -> int:
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    commands = stage_commands(args)
    unknown = [name for name in stages if name not in commands]
    if unknown:
        raise SystemExit(f"dexrl pipeline: --stages: unknown stage(s) {unknown}; choose from {list(commands)}")
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "pipeline.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"runs": []}
    for name in stages:
        for command in commands[name]:
            print(f"[pipeline] {name}: dexrl {' '.join(command)}", flush=True)
            start = time.perf_counter()
            code = subprocess.call([sys.executable, "-m", "dexrl", *command])
            seconds = time.perf_counter() - start
            record["runs"].append({"stage": name, "command": ["dexrl", *command], "seconds": round(seconds, 1), "exit": code})
            record_path.write_text(json.dumps(record, indent=2))
            if code != 0:
                print(f"[pipeline] {name} failed (exit {code}) after {seconds:.0f} s; fix it and run again to resume")
                return code
            print(f"[pipeline] {name} done in {seconds:.0f} s", flush=True)
    print(f"[pipeline] done: {args.out}")
    return 0
