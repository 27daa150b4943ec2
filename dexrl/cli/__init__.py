"""The ``dexrl`` command line: one sub-command per module in this package.

Sub-command modules are imported only when chosen, so ``dexrl --help`` and light commands start fast
(the simulator stack takes seconds to import). Each module defines ``configure(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["console_main", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "Build randomized bins, plan and execute grasps, write pictures (the README's demo)."),
    "scene": ("scene", "Build, randomize and settle bins; write depth images, masks and what was drawn."),
    "grasp": ("grasp", "Execute grasp attempts in parallel envs and report outcomes."),
    "plan": ("plan", "Plan grasps on a depth image with FC-GQ-CNN; write the q-map overlay and JSON."),
    "import-weights": ("import_weights", "Convert official GQ-CNN TensorFlow checkpoints to DexRL weights."),
    "train-gqcnn": ("train_gqcnn", "Train FC-GQ-CNN on sharded grasp datasets."),
    "synth": ("synth", "Synthesize physics-labelled grasps for FC-GQ-CNN training (NPZ shards)."),
    "eval-planner": ("eval_planner", "Closed-loop success of FC-GQ-CNN and the baseline planner on held-out heaps."),
    "pipeline": ("pipeline", "FC-GQ-CNN weights from a seed: synth -> train-gqcnn -> eval-planner in one command."),
    "reach": ("reach", "Where the Franka arm can grasp top-down in the bin (IK reachability map)."),
    "train": ("train", "Train the SAC grasp corrector on the DexRL-GraspCorrection task."),
    "eval": ("eval", "The result table: planner alone vs planner + SAC on the seen and novel sets."),
    "panel": ("panel", "Web panel (viser): spawn bins, plan, correct, execute, train and evaluate, live."),
    "serve": ("serve", "Run the gqcnn_bridge websocket planner service."),
    "bench": ("bench", "Benchmarks: scene, grasp, planner, bridge."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexrl", description="DexRL: FC-GQ-CNN grasping and SAC correction on Isaac Lab.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the error about an unknown command
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    command_parser = argparse.ArgumentParser(prog=f"dexrl {name}", description=help_text)
    module.configure(command_parser)
    args = command_parser.parse_args(rest)
    return int(module.run(args) or 0)


def console_main() -> None:
    """Entry point of the ``dexrl`` script.

    Exits with ``os._exit`` once the command has finished and flushed its output: after a simulation, the
    interpreter's own teardown of Warp/Newton objects can abort the process ("munmap_chunk(): invalid pointer",
    exit status 134) although all work is done and written.
    """
    import os  # noqa: PLC0415

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
