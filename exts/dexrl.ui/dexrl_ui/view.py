"""The panel's model: session commands, env selection, and what to show, as plain Python (no omni).

The Kit window binds its widgets to :class:`PanelModel` and applies the :class:`ViewUpdate` that
:meth:`PanelModel.poll` returns on Kit's update loop: status text, the q-map as RGBA pixels, and the viewport
drawing as debug-draw line and point lists in stage coordinates. Nothing here blocks: session commands are
queued (each returns the session's Future), starting and stopping a session run on a helper thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .launch import Launched, LaunchOptions, start_session

__all__ = [
    "BIN_COLOR",
    "CORRECTED_COLOR",
    "PROPOSED_COLOR",
    "BinControls",
    "Lines",
    "PanelModel",
    "Points",
    "StageFrame",
    "ViewUpdate",
    "line_batch",
    "to_stage",
]

PROPOSED_COLOR = (1.0, 0.55, 0.0, 1.0)  # RGBA: the planner's top-k grasps (amber)
CORRECTED_COLOR = (0.0, 0.63, 1.0, 1.0)  # RGBA: the SAC-corrected grasp (blue)
BIN_COLOR = (0.6, 0.6, 0.65, 1.0)  # RGBA: bin outline
PROPOSED_WIDTH, CORRECTED_WIDTH, BIN_WIDTH = 2.0, 4.0, 1.0  # [px]
POINT_SIZE = 3.0  # [px]
HEIGHT_SPAN = 0.15  # [m] heap height mapped onto the full point colour ramp


@dataclass(frozen=True)
class StageFrame:
    """The open stage's units and up axis (``UsdGeom.GetStageMetersPerUnit`` / ``GetStageUpAxis``)."""

    meters_per_unit: float = 1.0
    up_axis: str = "Z"


@dataclass(frozen=True)
class Lines:
    """Arguments of debug draw's ``draw_lines``: segment starts and ends (stage units), RGBA, widths [px]."""

    starts: list[tuple[float, float, float]] = field(default_factory=list)
    ends: list[tuple[float, float, float]] = field(default_factory=list)
    colors: list[tuple[float, float, float, float]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)

    def __add__(self, other: Lines) -> Lines:
        return Lines(
            self.starts + other.starts,
            self.ends + other.ends,
            self.colors + other.colors,
            self.widths + other.widths,
        )


@dataclass(frozen=True)
class Points:
    """Arguments of debug draw's ``draw_points``: positions (stage units), RGBA, sizes [px]."""

    points: list[tuple[float, float, float]] = field(default_factory=list)
    colors: list[tuple[float, float, float, float]] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BinControls:
    """Ranges and initial values of the Bins widgets, from the running session's settings."""

    envs: int
    pool_size: int
    count: int
    seed: int
    noise: bool


@dataclass(frozen=True)
class ViewUpdate:
    """Everything the window and the viewport show, for one session snapshot."""

    status: str
    running: bool
    training: bool = False
    evaluating: bool = False
    image: np.ndarray | None = None  # (H, W, 4) uint8 RGBA of the selected env's q-map picture
    lines: Lines = field(default_factory=Lines)
    points: Points = field(default_factory=Points)


def to_stage(points: np.ndarray, frame: StageFrame) -> np.ndarray:
    """World points (..., 3) [m], Z up, in the stage's units and up axis (Y up: (x, y, z) -> (x, z, -y))."""
    points = np.asarray(points, np.float64) / frame.meters_per_unit
    if frame.up_axis.upper() == "Y":
        points = np.stack((points[..., 0], points[..., 2], -points[..., 1]), -1)
    return points


def line_batch(segments: np.ndarray, color: tuple, width: float, frame: StageFrame) -> Lines:
    """(n, 2, 3) world segments [m] -> :class:`Lines` of one colour and width, in stage coordinates."""
    segments = to_stage(np.asarray(segments).reshape(-1, 2, 3), frame)
    return Lines(
        [tuple(p) for p in segments[:, 0].tolist()],
        [tuple(p) for p in segments[:, 1].tolist()],
        [tuple(color)] * len(segments),
        [float(width)] * len(segments),
    )


def _in_thread(run: Callable[[], object], name: str) -> Future:
    future: Future = Future()

    def main() -> None:
        try:
            future.set_result(run())
        except BaseException as error:  # noqa: BLE001 (handed to the future, shown by the panel)
            future.set_exception(error)

    threading.Thread(target=main, name=name, daemon=True).start()
    return future


class PanelModel:
    """One panel's state: the launched session (or none), the selected env, and the last shown snapshot.

    Args:
        starter: builds the session from :class:`LaunchOptions` (default :func:`start_session`).
        min_interval_s: shortest time between two updates (training publishes several snapshots a step) [s].
        max_points: heap points drawn for the selected env.
    """

    def __init__(
        self,
        starter: Callable[[LaunchOptions], Launched] = start_session,
        min_interval_s: float = 0.1,
        max_points: int = 4000,
    ):
        self.launched: Launched | None = None
        self.selected = 0
        self._starter = starter
        self._min_interval_s = min_interval_s
        self._max_points = max_points
        self._pending: tuple[str, Future] | None = None
        self._error = ""
        self._shown_key: tuple | None = None
        self._shown_at = float("-inf")

    # ------------------------------------------------------------------ session life cycle
    @property
    def session(self):
        """The running :class:`dexrl.app.Session`, or None."""
        self._settle()
        return self.launched.session if self.launched is not None else None

    def _settle(self) -> None:
        """Take the outcome of a finished start (the session, or the error to show)."""
        if self._pending is None or not self._pending[1].done():
            return
        label, future = self._pending
        self._pending = None
        if label.startswith("starting"):
            try:
                self.launched = future.result()
            except Exception as error:  # noqa: BLE001 (shown in the status)
                self._error = f"the session failed to start: {error!r}"

    @property
    def busy(self) -> bool:
        """A session is being started or stopped."""
        return self._pending is not None and not self._pending[1].done()

    def start(self, options: LaunchOptions) -> Future | None:
        """Start a session in the background (None while one runs or is being started/stopped)."""
        if self.busy or self.session is not None:
            return None
        self._error = ""
        future = _in_thread(lambda: self._starter(options), "dexrl-ui-start")
        self._pending = ("starting the session (imports, planner server, simulator)", future)
        return future

    def stop(self) -> Future | None:
        """Stop the session in the background (None when there is none)."""
        if self.busy or self.session is None:
            return None
        launched, self.launched = self.launched, None
        self.selected = 0
        self._pending = ("stopping the session", _in_thread(launched.close, "dexrl-ui-stop"))
        return self._pending[1]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop everything now (extension shutdown); waits up to ``timeout_s`` for the session's worker."""
        if self._pending is not None and self._pending[0].startswith("starting"):
            future = self._pending[1]
            try:
                self.launched = future.result(timeout_s)
            except TimeoutError:  # still starting: close it once it has
                future.add_done_callback(lambda done: done.exception() is None and done.result().close())
            except Exception:  # noqa: BLE001 (it failed to start: nothing to close)
                self.launched = None
        self._pending = None
        if self.launched is not None:
            self.launched.close(timeout_s)
            self.launched = None

    def controls(self) -> BinControls | None:
        """Ranges and initial values for the Bins widgets (None without a session)."""
        session = self.session
        if session is None:
            return None
        settings = session.config.settings
        return BinControls(
            envs=settings.num_envs,
            pool_size=settings.objects.pool_size,
            count=min(settings.objects.count_range[1], settings.objects.pool_size),
            seed=int(settings.seed),
            noise=bool(settings.randomization.depth_noise),
        )

    # ------------------------------------------------------------------ commands (each returns a Future)
    def spawn(self, count: int, seed: int, noise: bool, randomize: bool) -> Future | None:
        session = self.session
        if session is None:
            return None
        return session.spawn(count=int(count), seed=int(seed), noise=bool(noise), randomize=bool(randomize))

    def plan(self) -> Future | None:
        session = self.session
        return None if session is None else session.plan()

    def correct(self) -> Future | None:
        session = self.session
        return None if session is None else session.correct()

    def execute(self) -> Future | None:
        session = self.session
        return None if session is None else session.execute()

    def toggle_training(self) -> Future | None:
        session = self.session
        return None if session is None else session.set_training(not session.state().training)

    def toggle_evaluation(self) -> Future | None:
        session = self.session
        return None if session is None else session.set_evaluation(not session.state().evaluating)

    def save_checkpoint(self, path: str) -> Future | None:
        session = self.session
        return None if session is None else session.save_checkpoint(Path(path))

    def load_checkpoint(self, path: str) -> Future | None:
        session = self.session
        return None if session is None else session.load_checkpoint(Path(path))

    def select(self, env: int) -> int:
        """Show env ``env`` (clamped to the session's envs); returns the env selected."""
        controls = self.controls()
        high = controls.envs - 1 if controls is not None else 0
        self.selected = min(max(int(env), 0), high)
        return self.selected

    # ------------------------------------------------------------------ view
    def poll(self, now: float, stage: StageFrame = StageFrame()) -> ViewUpdate | None:
        """What to show now, or None when nothing changed (or the last update is under ``min_interval_s``
        old). Cheap when nothing changed: one lock and a tuple compare."""
        session = self.session
        state = session.state() if session is not None else None
        key = (
            id(self.launched),
            state.version if state is not None else None,
            self._pending[0] if self._pending else self._error,
            self.selected,
            stage,
        )
        if key == self._shown_key or now - self._shown_at < self._min_interval_s:
            return None
        self._shown_key, self._shown_at = key, now
        if state is None:
            if self._pending is not None:
                return ViewUpdate(f"{self._pending[0]}...", running=False)
            return ViewUpdate(self._error or "no session: set the options and press Start", running=False)
        return self._snapshot_view(state, stage)

    def _snapshot_view(self, state, stage: StageFrame) -> ViewUpdate:
        from dexrl.app.drawing import bin_outline_segments, grasp_segments, q_picture, rgba, status_text

        env = self.selected
        lines = [f"Env {env} of {len(state.geometry.env_origins) if state.geometry is not None else '?'}"]
        lines.append(status_text(state, env))
        lines.extend(self.launched.notes)
        image = rgba(q_picture(state, env)) if state.depth is not None else None
        drawn, points = Lines(), Points()
        geometry = state.geometry
        if geometry is not None:
            outline = bin_outline_segments(geometry.interior_size, geometry.floor_z, geometry.wall_height)
            every_bin = (outline[None] + geometry.env_origins[:, None, None, :]).reshape(-1, 2, 3)
            drawn = line_batch(every_bin, BIN_COLOR, BIN_WIDTH, stage)
            proposed = [g for grasps in state.proposed for g in grasps]
            drawn += line_batch(grasp_segments(proposed), PROPOSED_COLOR, PROPOSED_WIDTH, stage)
            corrected = list(state.corrected or [])
            drawn += line_batch(grasp_segments(corrected), CORRECTED_COLOR, CORRECTED_WIDTH, stage)
            if state.points is not None:
                points = self._heap_points(
                    state.points[env], geometry.env_origins[env][2] + geometry.floor_z, stage
                )
        return ViewUpdate(
            status="\n".join(lines),
            running=True,
            training=state.training,
            evaluating=state.evaluating,
            image=image,
            lines=drawn,
            points=points,
        )

    def _heap_points(self, world: np.ndarray, floor_z: float, stage: StageFrame) -> Points:
        from matplotlib import colormaps

        world = np.unique(world, axis=0)  # the session pads with repeats of the last point
        if len(world) > self._max_points:
            world = world[np.linspace(0, len(world) - 1, self._max_points).astype(int)]
        height = np.clip((world[:, 2] - floor_z) / HEIGHT_SPAN, 0.0, 1.0)
        colors = colormaps["viridis"](height)
        return Points(
            [tuple(p) for p in to_stage(world, stage).tolist()],
            [tuple(c) for c in colors.tolist()],
            [POINT_SIZE] * len(world),
        )
