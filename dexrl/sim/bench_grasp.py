"""``dexrl bench grasp``: grasp attempts per second (render + plan + execute + judge) on the current device.

With ``--profile``, as many batches again run after the timed ones, on the same schedule (lock-step or
streamed), with every phase of an attempt timed (:class:`PhaseTimer`); the attempts/s figure always comes from
the timed batches, which are not instrumented.

Three schedules:

- lock-step (default): ``--batches`` batches, each one attempt per env, rendered and planned together;
- ``--stream``: the same attempts streamed (:meth:`~dexrl.sim.grasp_runner.GraspRunner.stream`): an env
  starts its next attempt once its last is judged, every env makes ``--batches`` attempts, and the timed span
  ends when the last is judged, so it includes the drain: the end of the stream, where the envs with the
  longest attempts run on alone;
- ``--sustained``: the rate of a stream that never drains, as in a long ``dexrl synth --stream`` run or an
  RL rollout with per-env resets. The stream runs with no per-env count; once the envs have made one attempt
  each on average (the start-up transient), the next ``--batches`` x envs judged attempts are timed, and only
  then are envs stopped. The timed attempts are weighted by rate: an env whose attempts end quickly makes
  more of them, so their outcome mix (``timed_outcomes``) leans to quick outcomes (collisions) and is no
  success rate.

Next to the rate, ``env_busy_share`` says how much of the simulated time the envs spent in attempts: the
attempts' durations summed, over the physics steps of the timed span times the envs. The rest is time an env
waited (for the slowest attempt of its lock-step batch, for its restart group, for its heap to settle, for the
end of a drained stream).

Under ``torchrun --nproc_per_node=N -m dexrl bench grasp ...`` each rank runs ``--envs`` envs of the same
objects on heaps of its own seed, and the figures count every rank's attempts over the slowest rank's time.
On a CPU this is how a run uses several cores: Warp runs each CPU kernel on one thread, and the physics step
is most of an attempt there.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PHASES", "PhaseTimer", "Span", "configure", "instrument", "run"]

PHASES: dict[str, str] = {
    "render": "BinWorld.render_depth: depth images of all envs (Newton Warp ray caster)",
    "mask": "BinWorld.bin_mask: bin-interior masks from the depth images",
    "plan": "planner.plan: grasp candidates and the best grasp per env",
    "observe": "GraspRunner.observe, the rest: deprojection of the grasps to the world frame",
    "executor": "GraspExecutor.execute, start, conclude and the state machine per step (contact-sensor reads "
    "included), the rest: teleports, judgement, parking of grasped objects",
    "physics": "BinWorld.step, the rest: its Python loop",
    "physics.write": "actuator targets to the simulation (InteractiveScene.write_data_to_sim)",
    "physics.step": "SimulationContext.step: collision, MuJoCo-Warp solver, contact sensor (one graph launch "
    "when CUDA or CPU graphs are on)",
    "physics.update": "InteractiveScene.update: asset data buffers",
    "redraw": "BinWorld.new_round and begin_round, the rest: drawing, material and pose writes, resets, settle "
    "checks",
    "redraw.physics": "BinWorld.step while re-drawn heaps settle, the rest: its Python loop",
    "redraw.physics.write": "as physics.write, while re-drawn heaps settle",
    "redraw.physics.step": "as physics.step, while re-drawn heaps settle (the whole world steps)",
    "redraw.physics.update": "as physics.update, while re-drawn heaps settle",
    "other": "GraspRunner.attempt or stream, the rest: the outcome tally, the stream's bookkeeping and checks "
    "for heaps at rest",
}
"""Phases of a batch of attempts, each timed exclusive of the phases nested in it; their sum is the batch."""


class PhaseTimer:
    """Wall-clock seconds per phase (:data:`PHASES`), from methods of one runner's objects wrapped in place.

    Each timed call is charged only its own time, not that of timed calls nested in it. Physics steps inside
    a re-draw are charged to ``redraw.*`` phases. ``sync`` runs before and after every timed call: on CUDA
    it must wait for the device, or asynchronous kernels are charged to whichever phase waits for them
    next; it then also costs one device synchronisation per timed call (several per physics step).

    Args:
        sync: waits until the device is idle (a no-op on the CPU, where Warp and torch run synchronously).
    """

    def __init__(self, sync: Callable[[], None]):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.physics_steps: Counter = Counter()  # "physics" or "redraw.physics" -> steps
        self._sync = sync
        self._stack: list[str] = []
        self._wrapped: list[tuple[object, str, bool, object]] = []

    def _phase(self, name: str) -> str:
        """``name`` in an attempt, ``redraw.<name>`` for the physics steps of a re-draw."""
        inside_redraw = bool(self._stack) and self._stack[-1].startswith("redraw")
        return f"redraw.{name}" if inside_redraw and name.startswith("physics") else name

    def wrap(self, owner: object, attr: str, name: str, steps: Callable[..., int] | None = None) -> None:
        """Time ``owner.attr`` (a bound method, replaced on the instance) as phase ``name``; ``steps`` gives the
        physics steps of a call from its arguments."""
        method = getattr(owner, attr)
        had_own = attr in vars(owner)

        @functools.wraps(method)
        def timed(*args, **kwargs):
            phase = self._phase(name)
            self._sync()
            start = time.perf_counter()
            self._stack.append(phase)
            try:
                return method(*args, **kwargs)
            finally:
                self._sync()
                elapsed = time.perf_counter() - start
                self._stack.pop()
                self.seconds[phase] += elapsed
                self.calls[phase] += 1
                if self._stack:
                    self.seconds[self._stack[-1]] -= elapsed
                if steps is not None:
                    self.physics_steps[phase] += steps(*args, **kwargs)

        setattr(owner, attr, timed)
        self._wrapped.append((owner, attr, had_own, method))

    def restore(self) -> None:
        """Put the wrapped methods back."""
        for owner, attr, had_own, method in reversed(self._wrapped):
            if had_own:
                setattr(owner, attr, method)
            else:
                delattr(owner, attr)
        self._wrapped.clear()

    def charge(self, name: str, wall: float) -> None:
        """Charge phase ``name`` with what of ``wall`` seconds (a span around the timed calls) they did not take."""
        self.seconds[name] += max(0.0, wall - sum(self.seconds.values()))
        self.calls[name] += 1

    def report(self, batches: int, attempts_per_batch: int) -> dict:
        """Seconds per batch and share of each phase (:data:`PHASES` order), physics steps per batch and the
        wall time per physics step [ms] of attempts and of re-draws (write + step + update + loop)."""
        total = sum(self.seconds.values())
        per_batch = {p: round(self.seconds[p] / batches, 4) for p in PHASES if self.calls[p]}
        share = {p: round(self.seconds[p] / total, 4) for p in per_batch}
        figures = {
            "batches": batches,
            "attempts": batches * attempts_per_batch,
            "s_per_batch": round(total / batches, 4),
            "phase_s_per_batch": per_batch,
            "phase_share": share,
        }
        for group in ("physics", "redraw.physics"):
            steps = self.physics_steps[group]
            seconds = sum(s for p, s in self.seconds.items() if p == group or p.startswith(group + "."))
            figures[f"{group}_steps_per_batch"] = round(steps / batches, 1)
            figures[f"{group}_ms_per_step"] = round(1000 * seconds / steps, 3) if steps else None
        return figures


def instrument(runner, timer: PhaseTimer) -> None:
    """Wrap the phases of ``runner`` (a :class:`~dexrl.sim.grasp_runner.GraspRunner`) in ``timer``."""
    world = runner.world
    timer.wrap(runner, "attempt", "other")
    timer.wrap(runner, "observe", "observe")
    for method in ("execute", "start", "conclude", "_control"):  # _control: the state machine, once per step
        timer.wrap(runner.executor, method, "executor")
    timer.wrap(runner.planner, "plan", "plan")
    timer.wrap(world, "render_depth", "render")
    timer.wrap(world, "bin_mask", "mask")
    timer.wrap(world, "new_round", "redraw")
    timer.wrap(world, "begin_round", "redraw")
    timer.wrap(world, "step", "physics", steps=lambda steps=1: steps)
    timer.wrap(world.scene, "write_data_to_sim", "physics.write")
    timer.wrap(world.sim, "step", "physics.step")
    timer.wrap(world.scene, "update", "physics.update")


def print_profile(figures: dict) -> None:
    """The profile as a table with what each phase covers."""
    print(f"  profile ({figures['batches']} more batches, each phase timed; device synchronised around each "
          f"phase on CUDA, so these batches run slower than the timed ones)")
    print(f"    {'phase':<22} {'s/batch':>8} {'share':>6}  what")
    for phase, seconds in figures["phase_s_per_batch"].items():
        print(f"    {phase:<22} {seconds:>8.3f} {figures['phase_share'][phase]:>6.1%}  {PHASES[phase]}")
    print(f"    {'total':<22} {figures['s_per_batch']:>8.3f}")
    for group in ("physics", "redraw.physics"):
        ms = figures[f"{group}_ms_per_step"]
        per_step = f", {ms:.2f} ms per step (write + step + update)" if ms is not None else ""
        print(f"    {group} steps per batch: {figures[f'{group}_steps_per_batch']}{per_step}")


def configure(parser: argparse.ArgumentParser) -> None:
    from dexrl.cli._common import add_scene_arguments  # noqa: PLC0415

    add_scene_arguments(parser)
    parser.add_argument(
        "--batches", type=int, default=3, help="timed attempts per env: batches in lock-step (default 3)"
    )
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument(
        "--stream",
        action="store_true",
        help="time the same number of attempts streamed (GraspRunner.stream: an env starts its next attempt "
        "once its last is judged) instead of in lock-step batches",
    )
    schedule.add_argument(
        "--sustained",
        action="store_true",
        help="time a stream that never drains: after one attempt per env (the start-up), the next --batches "
        "x envs judged attempts, with every env still running; the rate of a long synth run, its outcome "
        "mix weighted to quick attempts",
    )
    parser.add_argument(
        "--restart-at",
        type=int,
        default=None,
        help="with --stream or --sustained: envs that wait for one render and plan together (default: an "
        "eighth of the envs)",
    )
    parser.add_argument("--planner", choices=("baseline", "fcgqcnn"), default="baseline")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then run the schedule again with the seconds of each phase timed (physics "
        "steps, render, plan, executor state machine, re-draws); on CUDA each phase synchronises the device; "
        "with --sustained the profile covers the whole stream, start-up and end included (read its shares)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from dexrl import distributed  # noqa: PLC0415

    with distributed.session(args.device) as (rank, device):
        args.device = device
        figures = _measure(args, rank)
    if not rank.is_main:
        return 0
    print("dexrl bench grasp")
    for key, value in figures.items():
        if key != "profile":
            print(f"  {key:<17} {value}")
    if args.profile:
        print_profile(figures["profile"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _measure(args: argparse.Namespace, rank) -> dict:
    """This rank's attempts, timed, with the figures summed over the ranks of a torchrun job (each rank runs
    ``--envs`` envs of the same objects on heaps of its own seed; the wall time is the slowest rank's)."""
    import torch  # noqa: PLC0415

    from dexrl.cli._common import scene_settings_from_args  # noqa: PLC0415
    from dexrl.cli.grasp import make_planner  # noqa: PLC0415
    from dexrl.distributed import all_gather_objects, all_reduce_sum, barrier  # noqa: PLC0415

    settings = scene_settings_from_args(args)
    from dexrl.sim.cpu_graph import cpu_step_graph_stats  # noqa: PLC0415
    from dexrl.sim.executor import Outcome  # noqa: PLC0415
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415

    start = time.perf_counter()
    runner = GraspRunner(settings, make_planner(args.planner, None, settings.device))
    heap_seed = rank.seed(settings.seed)
    if heap_seed != settings.seed:  # ranks after the first: the same objects, heaps of their own
        runner.world.generator.manual_seed(heap_seed)
        runner.world.new_round()
    startup = time.perf_counter() - start
    runner.attempt()  # warm-up: first-use kernel compilation
    cuda = settings.device.startswith("cuda")
    sync = functools.partial(torch.cuda.synchronize, settings.device) if cuda else (lambda: None)
    sync()
    executor, world = runner.executor, runner.world

    def heap_counters() -> torch.Tensor:  # re-drawn, of those settled, physics faults, buffer overflows
        overflows = world.overflow.overflowed_heaps
        return torch.tensor((executor.redrawn_heaps, executor.redrawn_settled, world.heap_faults, overflows))

    def timed_span() -> Span:
        """The schedule's timed attempts (``--batches`` per env, or as many in a sustained stream)."""
        if args.sustained:
            return _sustained_span(runner, warm_up=settings.num_envs, timed=args.batches * settings.num_envs,
                                   restart_at=args.restart_at)
        busy = torch.zeros((), device=world.device)
        counts, steps_before = runner.tally.counts.clone(), world.steps_taken
        start = time.perf_counter()
        if args.stream:
            for _, result, _ in runner.stream(args.batches * settings.num_envs, args.restart_at):
                busy += result.duration.sum()
        else:
            for _ in range(args.batches):
                busy += runner.attempt().result.duration.sum()
        sync()
        return Span(time.perf_counter() - start, runner.tally.counts - counts, float(busy),
                    world.steps_taken - steps_before)

    before = heap_counters()
    barrier()  # the ranks start their timed attempts together
    span = timed_span()
    wall = max(all_gather_objects(span.seconds))
    redrawn, settled, heap_faults, overflows = all_reduce_sum(heap_counters() - before).tolist()
    busy_s, env_s = all_reduce_sum(
        torch.tensor((span.busy_s, span.steps * world.dt * settings.num_envs), dtype=torch.float64)
    ).tolist()
    timed_outcomes = all_reduce_sum(span.outcomes.clone())
    attempts = int(timed_outcomes.sum())
    if args.sustained:  # each rank's own window: the rates add up
        rate = sum(all_gather_objects(span.attempts / span.seconds))
    else:
        rate = attempts / wall
    p = settings.physics
    figures = {
        "device": settings.device,
        "ranks": rank.world_size,
        "heap_seeds": all_gather_objects(heap_seed),
        "num_envs": settings.num_envs * rank.world_size,
        "embodiment": settings.embodiment,
        "planner": args.planner,
        "schedule": "sustained" if args.sustained else "stream" if args.stream else "lock-step",
        "graphs": ("cuda" if p.use_cuda_graph else "off") if cuda else ("cpu" if p.use_cpu_graph else "off"),
        "overrides": list(args.overrides),
        "solver": {"solver": p.solver, "iterations": p.solver_iterations, "ls_iterations": p.ls_iterations},
        "startup_s": round(max(all_gather_objects(startup)), 2),
        "attempts": attempts,
        "attempts_per_s": round(rate, 2),
        "s_per_batch": round(wall / args.batches, 3),
        # Physics steps of the timed span (rank 0's), and the share of the envs' simulated time spent in attempts.
        "physics_steps": span.steps,
        "env_busy_share": round(busy_s / env_s, 4),
        # Heaps re-drawn during the schedule (a sustained stream's start-up and end included), how many were
        # at rest when the next attempt began, and how often a heap's physics failed while settling (it was
        # drawn again).
        "redrawn_heaps": redrawn,
        "redrawn_settled": settled,
        "heap_faults": heap_faults,
        # Constraint rows and contacts per env, and the heaps that overflowed them (counted as faults).
        "physics_buffers": dict(zip(("njmax", "nconmax"), settings.physics_buffers())),
        "physics_overflows": overflows,
    }
    if not cuda:
        figures["cpu_graph_replays"] = sum(all_gather_objects(cpu_step_graph_stats()["replays"]))
    if args.profile:  # every rank runs the profiled batches; the profile printed is rank 0's
        timer = PhaseTimer(sync)
        instrument(runner, timer)
        start = time.perf_counter()
        timed_span()
        sync()
        timer.charge("other", time.perf_counter() - start)  # what no wrapped call took (a stream has no outer call)
        timer.restore()
        figures["profile"] = timer.report(args.batches, settings.num_envs)
    # Outcomes of the timed attempts, and of every attempt made (warm-up, profiled ones), all ranks.
    figures["timed_outcomes"] = {outcome.name.lower(): int(timed_outcomes[outcome]) for outcome in Outcome}
    figures["outcomes"] = runner.tally.sum_over_ranks().as_dict()
    return figures


@dataclass
class Span:
    """The timed attempts of one rank."""

    seconds: float  # wall time [s]
    outcomes: torch.Tensor  # (len(Outcome),) long: the timed attempts' outcome counts
    busy_s: float  # the timed attempts' durations summed [simulated s]
    steps: int  # physics steps taken meanwhile

    @property
    def attempts(self) -> int:
        return int(self.outcomes.sum())


def _sustained_span(runner, warm_up: int, timed: int, restart_at: int | None) -> Span:
    """Time a stream that never drains: after ``warm_up`` judged attempts, the span until ``timed`` more are
    judged (whole groups, so a few more may count), every env running on meanwhile; then stop the envs and let
    the stream end, untimed."""
    import torch  # noqa: PLC0415

    world, tally = runner.world, runner.tally
    stopping = False

    def admit(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        go = torch.full((len(ids),), not stopping)
        return go, ~go

    judged, opened, span = 0, None, None
    busy = torch.zeros((), device=world.device)
    for done, result, _ in runner.stream(None, restart_at, admit=admit):
        judged += len(done)
        if opened is None:
            if judged >= warm_up:
                opened = (time.perf_counter(), tally.counts.clone(), world.steps_taken)
        elif span is None:
            busy += result.duration.sum()
            if judged >= warm_up + timed:
                start, counts, steps = opened
                seconds = time.perf_counter() - start
                span = Span(seconds, tally.counts - counts, float(busy), world.steps_taken - steps)
                stopping = True
    return span
