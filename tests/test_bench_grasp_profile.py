"""The phase timer of ``dexrl bench grasp --profile``: exclusive times, re-draw physics, steps, syncs."""

import time

from dexrl.sim.bench_grasp import PHASES, PhaseTimer


class _World:
    def __init__(self):
        self.stepped = 0

    def step(self, steps: int = 1) -> None:
        self.stepped += steps
        time.sleep(0.005 * steps)

    def new_round(self) -> None:
        time.sleep(0.02)
        self.step(3)  # settling: charged to the re-draw's physics


class _Executor:
    def __init__(self, world: _World):
        self.world = world

    def execute(self) -> None:
        time.sleep(0.02)
        for _ in range(4):
            self.world.step()
        self.world.new_round()


def _timed() -> tuple[PhaseTimer, _World, _Executor, list]:
    syncs = []
    timer = PhaseTimer(lambda: syncs.append(1))
    world = _World()
    executor = _Executor(world)
    timer.wrap(executor, "execute", "executor")
    timer.wrap(world, "step", "physics", steps=lambda steps=1: steps)
    timer.wrap(world, "new_round", "redraw")
    return timer, world, executor, syncs


def test_each_phase_is_charged_its_own_time_only():
    timer, world, executor, syncs = _timed()
    start = time.perf_counter()
    executor.execute()
    wall = time.perf_counter() - start
    s = timer.seconds
    assert set(s) == {"executor", "physics", "redraw", "redraw.physics"} <= set(PHASES)
    assert abs(sum(s.values()) - wall) < 0.002  # nothing counted twice, nothing lost
    # Each at least its own sleeps, and less than with the nested calls' (exclusive times).
    assert 0.02 <= s["executor"] < 0.02 + 0.02  # the nested steps and re-draw slept 0.055 s
    assert 0.02 <= s["physics"] < 0.035 and 0.015 <= s["redraw.physics"] < 0.02 + 0.015
    assert 0.02 <= s["redraw"] < 0.02 + 0.015
    assert timer.physics_steps == {"physics": 4, "redraw.physics": 3}
    assert timer.calls == {"executor": 1, "physics": 4, "redraw": 1, "redraw.physics": 1}
    assert len(syncs) == 2 * 7  # before and after every timed call
    report = timer.report(batches=1, attempts_per_batch=4)
    assert report["physics_steps_per_batch"] == 4 and report["redraw.physics_steps_per_batch"] == 3
    assert abs(sum(report["phase_share"].values()) - 1) < 1e-3


def test_restore_puts_the_methods_back():
    timer, world, executor, _ = _timed()
    timer.restore()
    executor.execute()
    assert not timer.seconds and world.stepped == 7
    assert "step" not in vars(world) and "execute" not in vars(executor)


def test_charge_gives_a_phase_what_the_timed_calls_did_not_take():
    timer, _, executor, _ = _timed()
    start = time.perf_counter()
    executor.execute()
    time.sleep(0.01)  # e.g. a stream's bookkeeping between its timed calls
    wall = time.perf_counter() - start
    timer.charge("other", wall)
    assert 0.01 <= timer.seconds["other"] < 0.015
    assert abs(sum(timer.seconds.values()) - wall) < 1e-9
