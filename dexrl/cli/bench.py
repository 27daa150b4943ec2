"""``dexrl bench TARGET``: benchmarks that print figures (speed targets live here, not in tests).

Each target is a module with ``configure(parser)`` and ``run(args)``, imported only when chosen.
"""

from __future__ import annotations

import argparse
import importlib

TARGETS: dict[str, tuple[str, str]] = {
    "scene": ("dexrl.sim.bench", "env-steps/s and depth images/s of the randomized bin scene"),
    "grasp": ("dexrl.sim.bench_grasp", "grasp attempts/s of the executor, rendering included"),
    "planner": ("dexrl.gqcnn.bench", "FC-GQ-CNN ms per image and images/s per inference path"),
    "bridge": (
        "gqcnn_bridge.bench",
        "websocket round-trip overhead (bytes, shared memory) vs a seed-style HTTP/JSON baseline",
    ),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module, help_text) in TARGETS.items():
        target_parser = sub.add_parser(name, help=help_text, description=help_text)
        target_parser.set_defaults(_module=module)
        try:
            importlib.import_module(module).configure(target_parser)
        except ModuleNotFoundError as error:  # a part of DexRL that this checkout does not have yet
            target_parser.description = f"{help_text} (unavailable: {error})"


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(args._module).run(args)
