"""The session controller: a worker thread owns the simulator; commands reach it through a queue.

Every command returns a :class:`concurrent.futures.Future`; front-ends need not wait on it. The worker
publishes a new :class:`SessionState` after each step, and turns failures into state (planner status and a
message) so a front-end never dies with the simulator. While training or evaluation is on and no command is
queued, the worker keeps running attempts: plan -> correct -> execute -> learn.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from dexrl.grasp import (
    CameraExtrinsics,
    GraspPoses,
    NoValidGrasps,
    Planner,
    PlannerUnavailable,
    PlanResult,
    image_to_world,
)
from dexrl.stats import wilson_interval

from .policy import GraspObservation, GraspPolicy, GraspTrainer, PolicyLoader
from .qmap import display_q_map
from .state import PlannerStatus, SceneGeometry, SessionState

if TYPE_CHECKING:
    from dexrl.sim.scene_cfg import SceneSettingsCfg

__all__ = ["Session", "SessionConfig"]

_IDLE_POLL_S = 0.05  # how often an idle worker looks at its queue [s]
_UNAVAILABLE_RETRY_S = 1.0  # pause of the training loop while the planner is unreachable [s]


@dataclass
class SessionConfig:
    """How a session is built.

    Attributes:
        settings: the scene settings (a ``SceneSettingsCfg``); the pool size bounds the object count.
        planner_name: shown in the UI (e.g. "baseline", "fcgqcnn", "remote ws://...").
        top_k: grasps planned per env for display.
        points_per_env: bin points sent to front-ends per env.
    """

    settings: SceneSettingsCfg
    planner_name: str = "planner"
    top_k: int = 5
    points_per_env: int = 12000


@dataclass
class _Mode:
    name: str = "manual"
    attempts: int = 0
    successes: int = 0


@dataclass
class _Plan:
    result: PlanResult
    obs: GraspObservation
    corrected: GraspPoses | None = None


@dataclass
class _Command:
    name: str
    run: Callable[[], object]
    future: Future = field(default_factory=Future)


class Session:
    """One simulator session (bins, gripper, planner, optional policy/trainer) behind a command queue.

    Args:
        config: scene and display settings.
        planner: any :class:`dexrl.grasp.Planner` (local, or a ``RemotePlanner`` for a gqcnn_bridge server).
        trainer: optional learning policy; it is also the policy used by ``correct``.
        policy_loader: builds a policy from a checkpoint for :meth:`load_checkpoint` when there is no trainer.
        runner_factory: builds the simulator (default :class:`dexrl.sim.grasp_runner.GraspRunner`) in the worker.
    """

    def __init__(
        self,
        config: SessionConfig,
        planner: Planner,
        trainer: GraspTrainer | None = None,
        policy_loader: PolicyLoader | None = None,
        runner_factory: Callable | None = None,
    ):
        self.config = config
        self.planner = planner
        self.trainer = trainer
        self.policy: GraspPolicy | None = trainer
        self.policy_loader = policy_loader
        self._runner_factory = runner_factory
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._lock = threading.Lock()
        self._state = SessionState(
            planner_name=config.planner_name, has_trainer=trainer is not None, has_policy=trainer is not None
        )
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._mode = _Mode()
        self._plan: _Plan | None = None
        self._runner = None
        self._property_ranges: dict[str, tuple[float, float]] = {}
        self._thread = threading.Thread(target=self._main, name="dexrl-session", daemon=True)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Session:
        """Start the worker; it builds the simulator and spawns the first bins."""
        self._thread.start()
        return self

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the worker after its current step."""
        self._stop.set()
        self._thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ observation
    def state(self) -> SessionState:
        """The latest snapshot (cheap; safe from any thread)."""
        with self._lock:
            return self._state

    def wait_for(self, predicate: Callable[[SessionState], bool], timeout_s: float) -> SessionState:
        """Block until ``predicate(state)`` holds; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self._state):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"session state did not reach the condition in {timeout_s} s: {self._state.message}"
                    )
                self._changed.wait(left)
            return self._state

    # ------------------------------------------------------------------ commands
    def spawn(
        self,
        count: int | None = None,
        seed: int | None = None,
        noise: bool | None = None,
        randomize: bool | None = None,
    ) -> Future:
        """New heaps in all bins: ``count`` objects each, re-seeded by ``seed``, with depth ``noise`` and
        randomized physical properties (mass, friction, restitution) on or off; None keeps the setting."""
        return self._submit("spawn", lambda: self._spawn(count, seed, noise, randomize))

    def plan(self) -> Future:
        """Render the bins and plan the top-k grasps and q-maps of every env."""
        return self._submit("plan", self._plan_now)

    def correct(self) -> Future:
        """Corrected poses of the current plan from the loaded policy."""
        return self._submit("correct", self._correct)

    def execute(self) -> Future:
        """Execute one attempt per env: the corrected grasp when there is one, else the planner's best."""
        return self._submit("execute", lambda: self._attempt(learn=False))

    def set_training(self, on: bool) -> Future:
        """Training on: the worker loops plan -> explore -> execute -> learn until switched off."""
        return self._submit("training", lambda: self._set_mode(training=on, evaluating=False))

    def set_evaluation(self, on: bool) -> Future:
        """Evaluation on: the worker loops plan -> correct -> execute without learning; its own tally."""
        return self._submit("evaluation", lambda: self._set_mode(training=False, evaluating=on))

    def save_checkpoint(self, path: Path) -> Future:
        """Write the trainer's checkpoint to ``path``; the future holds the file written."""
        return self._submit("save", lambda: self._save(Path(path)))

    def load_checkpoint(self, path: Path) -> Future:
        """Load a policy checkpoint (into the trainer, or through the policy loader)."""
        return self._submit("load", lambda: self._load(Path(path)))

    def _submit(self, name: str, run: Callable[[], object]) -> Future:
        command = _Command(name, run)
        if not self._thread.is_alive() and self._thread.ident is not None:
            command.future.set_exception(RuntimeError("the session has stopped"))
        else:
            self._commands.put(command)
        return command.future

    # ------------------------------------------------------------------ worker
    def _main(self) -> None:
        try:
            self._build()
        except Exception as error:  # noqa: BLE001 (a broken scene must still show in the UI)
            self._publish(
                busy="stopped",
                message=f"simulator failed to start: {error!r}",
                planner_status=PlannerStatus.ERROR,
            )
        else:
            self._serve_commands()
        while not self._commands.empty():  # nobody will run these: do not leave their callers waiting
            self._commands.get().future.set_exception(RuntimeError("the session has stopped"))

    def _serve_commands(self) -> None:
        while not self._stop.is_set():
            looping = self._state.training or self._state.evaluating
            try:
                command = self._commands.get(timeout=0 if looping else _IDLE_POLL_S)
            except queue.Empty:
                if looping:
                    self._run_safely(
                        "train" if self._state.training else "evaluate",
                        lambda: self._attempt(learn=self._state.training),
                    )
                continue
            result = self._run_safely(command.name, command.run)
            if isinstance(result, BaseException):
                command.future.set_exception(result)
            else:
                command.future.set_result(result)

    def _run_safely(self, name: str, run: Callable[[], object]) -> object:
        self._publish(busy=name)
        try:
            result = run()
        except PlannerUnavailable as error:
            self._publish(
                busy="", planner_status=PlannerStatus.UNAVAILABLE, message=f"planner unavailable: {error}"
            )
            if self._state.training or self._state.evaluating:
                self._stop.wait(_UNAVAILABLE_RETRY_S)
            return error
        except NoValidGrasps as error:
            self._publish(
                busy="", planner_status=PlannerStatus.NO_GRASPS, message=f"{error} - spawn new bins"
            )
            return error
        except Exception as error:  # noqa: BLE001 (shown, never fatal to the session)
            self._publish(busy="", message=f"{name} failed: {error!r}")
            return error
        self._publish(busy="")
        return result

    def _publish(self, **changes) -> None:
        with self._changed:
            self._state = dataclasses.replace(self._state, version=self._state.version + 1, **changes)
            self._changed.notify_all()

    def _build(self) -> None:
        if self._runner_factory is None:
            from dexrl.sim.grasp_runner import GraspRunner

            self._runner_factory = GraspRunner
        self._publish(
            busy="building the simulator", message="building the simulator (first run compiles kernels)"
        )
        self._runner = self._runner_factory(self.config.settings, self.planner)
        world = self._runner.world
        rnd = world.settings.randomization
        self._property_ranges = {
            name: getattr(rnd, name)
            for name in ("mass_range", "static_friction_range", "dynamic_friction_range", "restitution_range")
        }
        bin_cfg = world.settings.bin
        geometry = SceneGeometry(
            env_origins=world.env_origins.cpu().numpy(),
            interior_size=tuple(bin_cfg.interior_size),
            floor_z=float(bin_cfg.floor_z),
            wall_height=float(bin_cfg.wall_height),
            wall_thickness=float(bin_cfg.wall_thickness),
            camera_positions=world.extrinsics.position.cpu().numpy(),
            pool_size=int(world.settings.objects.pool_size),
        )
        self._publish(geometry=geometry, planner_status=PlannerStatus.READY, message="ready")
        self._observe_scene()

    # ------------------------------------------------------------------ command bodies (worker thread)
    def _spawn(self, count: int | None, seed: int | None, noise: bool | None, randomize: bool | None) -> None:
        world = self._runner.world
        settings = world.settings
        if count is not None:
            if not 1 <= count <= settings.objects.pool_size:
                raise ValueError(f"object count must be in [1, {settings.objects.pool_size}], got {count}")
            settings.objects.count_range = (count, count)
        if seed is not None:
            world.generator.manual_seed(seed)
        if noise is not None:
            settings.randomization.depth_noise = noise
        if randomize is not None:
            for name, (low, high) in self._property_ranges.items():
                middle = (low + high) / 2
                setattr(settings.randomization, name, (low, high) if randomize else (middle, middle))
        world.new_round()
        self._observe_scene(
            message=f"spawned {settings.objects.count_range[0]}-{settings.objects.count_range[1]} "
            f"objects per bin"
        )

    def _observe_scene(self, message: str | None = None) -> None:
        """Render the bins and publish depth and points; the previous plan no longer applies."""
        world = self._runner.world
        depth = world.render_depth()
        self._plan = None
        self._publish(
            depth=depth.cpu().numpy(),
            points=self._bin_points(depth),
            q_map=None,
            q_map_source="",
            proposed=[],
            corrected=None,
            **({"message": message} if message else {}),
        )

    def _bin_points(self, depth: torch.Tensor) -> np.ndarray:
        world = self._runner.world
        mask = world.bin_mask(depth)
        points = world.extrinsics.camera_to_world(world.settings.camera.intrinsics.deproject_image(depth))
        n = self.config.points_per_env
        out = np.zeros((len(depth), n, 3), np.float32)
        for env in range(len(depth)):  # few envs; per env because the masks differ in size
            inside = points[env][mask[env]]
            if len(inside):
                pick = torch.linspace(0, len(inside) - 1, min(n, len(inside))).long()
                chosen = inside[pick].cpu().numpy()
                out[env, : len(chosen)] = chosen
                # Pad by repeating a point: a fixed shape, and nothing that is not there gets drawn.
                out[env, len(chosen) :] = chosen[-1]
        return out

    def _plan_now(self) -> _Plan:
        world = self._runner.world
        intrinsics = world.settings.camera.intrinsics
        depth = world.render_depth()
        mask = world.bin_mask(depth)
        result = self.planner.plan(depth, intrinsics, mask, k=self.config.top_k, return_q_map=True)
        q_map, source, stride, offset = display_q_map(result.q_map, depth, mask, result.q_map_grid)
        cpu_extrinsics = CameraExtrinsics(world.extrinsics.position.cpu(), world.extrinsics.rotation.cpu())
        best = result.best.to("cpu")
        obs = GraspObservation(
            depth.cpu(),
            mask.cpu(),
            best,
            image_to_world(best, intrinsics, cpu_extrinsics),
            intrinsics,
            cpu_extrinsics,
        )
        self._plan = _Plan(result, obs)
        self._publish(
            depth=depth.cpu().numpy(),
            q_map=q_map,
            q_map_source=source,
            q_map_grid=(stride, offset),
            corrected=None,
            proposed=self._proposed_records(result, cpu_extrinsics),
            planner_status=PlannerStatus.READY,
            message=f"planned up to {self.config.top_k} grasps per env",
        )
        return self._plan

    def _proposed_records(self, result: PlanResult, extrinsics: CameraExtrinsics) -> list[list[dict]]:
        grasps = result.grasps.to("cpu")
        n, k = grasps.q.shape
        flat = type(grasps)(
            **{name: value.reshape(n * k, *value.shape[2:]) for name, value in vars(grasps).items()}
        )
        repeated = CameraExtrinsics(
            extrinsics.position.repeat_interleave(k, 0), extrinsics.rotation.repeat_interleave(k, 0)
        )
        poses = image_to_world(flat, self._runner.world.settings.camera.intrinsics, repeated)
        valid = result.valid.cpu().reshape(-1)
        fx = self._runner.world.settings.camera.intrinsics.fx
        width_px = (flat.width * fx / flat.depth.clamp_min(1e-6)).tolist()
        records = [
            dict(pose, q=q, center=center, angle=angle, width_px=px)
            for pose, q, center, angle, px in zip(
                poses.to_records(), flat.q.tolist(), flat.center.tolist(), flat.angle.tolist(), width_px
            )
        ]
        return [[records[env * k + i] for i in range(k) if bool(valid[env * k + i])] for env in range(n)]

    def _correct(self) -> GraspPoses:
        if self.policy is None:
            raise RuntimeError("no policy loaded: train one or load a checkpoint")
        plan = self._plan or self._plan_now()
        plan.corrected = self.policy.correct(plan.obs)
        self._publish(corrected=plan.corrected.to_records(), message="corrected the best grasps")
        return plan.corrected

    def _attempt(self, learn: bool) -> torch.Tensor:
        """One attempt per env; returns the outcomes (N,)."""
        from dexrl.sim.executor import Outcome

        started = time.perf_counter()
        runner = self._runner
        plan = self._plan_or_respawn()
        if learn:
            poses = self.trainer.explore(plan.obs)
            self._publish(corrected=poses.to_records())
        elif self._state.evaluating and self.policy is not None:
            poses = self.policy.correct(plan.obs)
            self._publish(corrected=poses.to_records())
        else:
            poses = plan.corrected if plan.corrected is not None else plan.obs.proposed_poses
        result = runner.executor.execute(poses.to(runner.world.device))
        outcome = result.outcome.cpu()
        runner.tally.add(outcome)
        success = outcome == Outcome.SUCCESS
        if learn:
            self.trainer.learn(success.float())
        mode = self._mode
        mode.attempts += len(outcome)
        mode.successes += int(success.sum())
        elapsed = time.perf_counter() - started
        names = [Outcome(int(value)).name.lower() for value in outcome]
        self._observe_scene()
        self._publish(
            executed=result.reached.to("cpu").to_records(),
            last_outcome=names,
            mode=mode.name,
            attempts=mode.attempts,
            successes=mode.successes,
            success_ci=wilson_interval(mode.successes, mode.attempts),
            attempts_per_s=len(outcome) / elapsed,
            updates=self.trainer.updates if self.trainer is not None else 0,
            message=f"attempt outcomes: {', '.join(names)}",
        )
        return outcome

    def _plan_or_respawn(self) -> _Plan:
        """The current plan, else a new one; bins with nothing graspable get new heaps first (as in training)."""
        if self._plan is not None:
            return self._plan
        try:
            return self._plan_now()
        except NoValidGrasps:
            self._runner.world.new_round()
            self._observe_scene(message="a bin had nothing graspable: spawned new heaps")
            return self._plan_now()

    def _set_mode(self, training: bool, evaluating: bool) -> None:
        if training and self.trainer is None:
            raise RuntimeError("no trainer is plugged into this session")
        name = "train" if training else "evaluate" if evaluating else "manual"
        if name != self._mode.name:
            self._mode = _Mode(name)
        self._publish(
            training=training,
            evaluating=evaluating,
            mode=name,
            attempts=0,
            successes=0,
            success_ci=(0.0, 1.0),
            message=f"mode: {name}",
        )

    def _save(self, path: Path) -> Path:
        if self.trainer is None:
            raise RuntimeError("no trainer to save")
        written = self.trainer.save(path)
        self._publish(message=f"saved {written}")
        return written

    def _load(self, path: Path) -> None:
        if self.trainer is not None:
            self.trainer.load(path)
        elif self.policy_loader is not None:
            self.policy = self.policy_loader(path)
        else:
            raise RuntimeError("no trainer or policy loader to load a checkpoint into")
        self._publish(has_policy=True, message=f"loaded {path}")
