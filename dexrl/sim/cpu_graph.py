"""Warp CPU graphs for the physics step of a Newton scene on the CPU.

On a GPU, Isaac Lab replays each physics step (collision pipeline, MuJoCo-Warp solver, contact sensors) from
a CUDA graph. On the CPU it launches the same ~190 Warp kernels one by one from Python, and packing their
arguments costs about as much as running them (2-core CPU, 4 bin envs). Warp 1.17 records graphs on the CPU
too (:func:`warp.capture_begin` on the CPU device, replayed in C++ by :func:`warp.capture_launch`), with
on-device loops such as MuJoCo-Warp's early-exit solver loop (:func:`warp.capture_while`) kept as loops.

:func:`use_cpu_step_graph` does for the CPU what Isaac Lab does for CUDA: it records the step function that
Isaac Lab records on CUDA (``_simulate_full`` or ``_simulate_physics_only`` of the Newton manager) once,
after running it eagerly (lazy allocations and kernel loads happen outside the recording, as on CUDA), and
replays it while the model, solver, states and contact buffers that it was recorded on are the live ones. A
hard reset replaces those objects, and the next step records again. The kernels and their inputs are the
same, so the physics is bit-identical to eager stepping (``tests/test_cpu_graph_sim.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import warp as wp

from isaaclab.utils.string import string_to_callable

__all__ = ["cpu_step_graph_stats", "use_cpu_step_graph"]

STEP_FUNCTIONS = ("_simulate_full", "_simulate_physics_only")
"""Newton-manager classmethods that run one physics step after the actuators, the ones Isaac Lab captures
on CUDA (which one runs depends on whether all actuators are graph-safe)."""


@dataclass
class _Recording:
    graph: wp.Graph
    buffers: tuple  # the objects whose arrays the graph reads and writes (compared by identity)
    loop: tuple[int, int]  # (decimation, num_substeps): the Python loop counts baked into the graph


@dataclass
class _Switch:
    enabled: bool = False
    recordings: int = 0  # graphs recorded in this process
    replays: int = 0  # physics steps replayed from a graph


_switch = _Switch()
_recordings: dict[str, _Recording] = {}


def _buffers(manager: type) -> tuple:
    """The objects whose Warp arrays a recorded step uses; a hard reset of the simulation replaces them."""
    backend = manager.backend
    return (
        manager._solver,
        backend.model,
        backend.state_0,
        backend.state_1,
        backend.control,
        manager._contacts,
        manager._collision_pipeline,
    )


def _replayable(manager: type) -> bool:
    """True where a recording is valid for every step: on the CPU, with MuJoCo-Warp copying the Newton state
    in every step (``update_data_interval == 1``; other intervals branch in Python on a step counter)."""
    solver = manager._solver
    return str(manager.get_device()).startswith("cpu") and getattr(solver, "update_data_interval", 1) == 1


def _replaying(eager, name: str):
    """``eager`` (a bound classmethod of the manager), replayed from a CPU graph while the switch is on."""

    @functools.wraps(eager)
    def step() -> None:
        manager = eager.__self__
        if not (_switch.enabled and _replayable(manager)):
            eager()
            return
        buffers, loop = _buffers(manager), (manager._decimation, manager._num_substeps)
        recording = _recordings.get(name)
        if recording is not None and recording.loop == loop and all(a is b for a, b in zip(recording.buffers, buffers)):
            wp.capture_launch(recording.graph)
            _switch.replays += 1
            return
        eager()  # this step; first-use allocations and kernel loads stay out of the recording
        wp.capture_begin(device="cpu")
        try:
            eager()  # recorded, not run
        except BaseException:
            wp.capture_end(device="cpu")
            raise
        _recordings[name] = _Recording(wp.capture_end(device="cpu"), buffers, loop)
        _switch.recordings += 1

    step.cpu_step_graph = True
    return step


def use_cpu_step_graph(manager: type | str, enabled: bool) -> None:
    """Replay the physics steps of ``manager`` (the simulation's Newton manager class, or Isaac Lab's
    ``module:Class`` reference to it, as in ``SimulationContext.physics_manager``) from Warp CPU graphs
    (``enabled``) or launch them eagerly, from now on in this process. CUDA devices are left to Isaac Lab's
    own CUDA graphs either way."""
    if isinstance(manager, str):
        manager = string_to_callable(str(manager))
    for name in STEP_FUNCTIONS:
        current = getattr(manager, name)
        if not getattr(current, "cpu_step_graph", False):
            setattr(manager, name, staticmethod(_replaying(current, name)))
    _switch.enabled = enabled
    _recordings.clear()


def cpu_step_graph_stats() -> dict[str, int | bool]:
    """Whether CPU graphs are on, how many were recorded and how many steps were replayed in this process."""
    return {"enabled": _switch.enabled, "recordings": _switch.recordings, "replays": _switch.replays}
