"""The web panel: viser GUI controls send session commands; a refresh thread draws the latest snapshot.

Callbacks only enqueue commands (the session's worker owns the simulator), so the page stays responsive
while physics runs.
"""

from __future__ import annotations

import threading

import numpy as np
import viser
from matplotlib import colormaps

from dexrl.app import Session, SessionState
from dexrl.app.drawing import q_picture as _q_picture
from dexrl.app.drawing import status_markdown as _status_markdown

from .geometry import bin_boxes, jaw_segments, q_colors

__all__ = ["Panel"]

_REFRESH_S = 0.1  # how often the panel looks for a new snapshot [s]
_CORRECTED_COLOR = (0, 160, 255)
_GRIPPER_COLOR = (90, 90, 90)


class Panel:
    """A viser server showing one session.

    Args:
        session: a started session.
        host: interface to bind (loopback by default: the panel has no authentication).
        port: TCP port; when it is taken viser moves on to a free one (``url`` names the port in use).
    """

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 8080):
        self.session = session
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.url = f"http://{host}:{self.server.get_port()}"
        self.glyph_count = 0  # proposed grasps drawn in the 3D scene for the selected env
        self._selected = 0
        self._drawn_version = -1
        self._scene_built = False
        self._handles: dict[str, object] = {}
        self._stop = threading.Event()
        self._build_gui()
        self._thread = threading.Thread(target=self._refresh_loop, name="dexrl-panel", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.server.stop()

    # ------------------------------------------------------------------ GUI
    def _build_gui(self) -> None:
        gui, session = self.server.gui, self.session
        self.server.gui.configure_theme(control_width="large")
        with gui.add_folder("Bins"):
            pool = session.config.settings.objects.pool_size
            high = session.config.settings.objects.count_range[1]
            self.count = gui.add_slider("Objects", min=1, max=pool, step=1, initial_value=min(high, pool))
            self.seed = gui.add_number("Seed", initial_value=int(session.config.settings.seed), min=0, step=1)
            self.noise = gui.add_checkbox(
                "Depth noise", bool(session.config.settings.randomization.depth_noise)
            )
            self.randomize = gui.add_checkbox("Randomize physics", True)
            self.spawn_button = gui.add_button("Spawn bin")
            envs = [str(i) for i in range(session.config.settings.num_envs)]
            self.env = gui.add_dropdown("Env", envs, initial_value="0")
        with gui.add_folder("Grasp"):
            self.plan_button = gui.add_button("Plan")
            self.correct_button = gui.add_button("Correct")
            self.execute_button = gui.add_button("Execute")
        with gui.add_folder("Learning"):
            self.train_button = gui.add_button("Start training")
            self.eval_button = gui.add_button("Start evaluation")
            self.save_path = gui.add_text("Checkpoint", "out/panel/corrector.zip")
            self.save_button = gui.add_button("Save checkpoint")
            self.load_button = gui.add_button("Load checkpoint")
        self.q_image = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="Q-map")
        self.status = gui.add_markdown("starting...")

        self.spawn_button.on_click(
            lambda _: session.spawn(
                count=int(self.count.value),
                seed=int(self.seed.value),
                noise=self.noise.value,
                randomize=self.randomize.value,
            )
        )
        self.plan_button.on_click(lambda _: session.plan())
        self.correct_button.on_click(lambda _: session.correct())
        self.execute_button.on_click(lambda _: session.execute())
        self.train_button.on_click(lambda _: session.set_training(not session.state().training))
        self.eval_button.on_click(lambda _: session.set_evaluation(not session.state().evaluating))
        self.save_button.on_click(lambda _: session.save_checkpoint(self.save_path.value))
        self.load_button.on_click(lambda _: session.load_checkpoint(self.save_path.value))
        self.env.on_update(lambda _: self._select(int(self.env.value)))

    def _select(self, env: int) -> None:
        self._selected = env
        self._drawn_version = -1  # redraw for the new env

    # ------------------------------------------------------------------ drawing
    def _refresh_loop(self) -> None:
        while not self._stop.wait(_REFRESH_S):
            state = self.session.state()
            if state.version != self._drawn_version:
                self._drawn_version = state.version
                self._draw(state)

    def _draw(self, state: SessionState) -> None:
        self.status.content = _status_markdown(state, self._selected)
        self.train_button.label = "Stop training" if state.training else "Start training"
        self.eval_button.label = "Stop evaluation" if state.evaluating else "Start evaluation"
        if state.geometry is None:
            return
        env = self._selected
        origin = state.geometry.env_origins[env]
        if not self._scene_built:
            self._build_scene(state)
        if state.depth is not None:
            self.q_image.image = _q_picture(state, env)
        if state.points is not None:
            points = state.points[env] - origin
            height = np.clip((points[:, 2] - state.geometry.floor_z) / 0.15, 0, 1)
            colors = (colormaps["viridis"](height)[:, :3] * 255).astype(np.uint8)
            self.server.scene.add_point_cloud("/bin/contents", points, colors, point_size=0.0025)
        proposed = state.proposed[env] if state.proposed else []
        self.glyph_count = len(proposed)
        self._draw_grasps("proposed", proposed, origin, None)
        self._draw_grasps(
            "corrected", [state.corrected[env]] if state.corrected else [], origin, _CORRECTED_COLOR
        )
        self._draw_grasps("gripper", [state.executed[env]] if state.executed else [], origin, _GRIPPER_COLOR)

    def _build_scene(self, state: SessionState) -> None:
        g = state.geometry
        for name, dimensions, centre in bin_boxes(
            g.interior_size, g.floor_z, g.wall_height, g.wall_thickness
        ):
            self.server.scene.add_box(
                f"/bin/{name}",
                color=(150, 150, 160),
                dimensions=dimensions,
                position=centre,
                opacity=0.35 if name.startswith("wall") else None,
            )
        self.server.scene.set_up_direction("+z")
        camera = self.server.initial_camera
        camera.position = (0.22, -0.32, g.floor_z + 0.36)  # [m] oblique view of the bin, env-local
        camera.look_at = (0.0, 0.0, g.floor_z)
        self._scene_built = True

    def _draw_grasps(self, name: str, grasps: list[dict], origin: np.ndarray, color) -> None:
        """Jaw glyphs with fingers (the fingers rise out of the heap, so grasps below its surface still show),
        coloured by q when ``color`` is None."""
        old = self._handles.pop(name, None)
        if not grasps:
            if old is not None:
                old.remove()
            return
        position = np.array([g["position"] for g in grasps], np.float32) - origin
        yaw = np.array([g["yaw"] for g in grasps], np.float32)
        width = np.array([g["width"] for g in grasps], np.float32)
        segments = jaw_segments(position, yaw, width)
        per_grasp = len(segments) // len(grasps)
        if color is None:
            rgb = np.repeat(q_colors(np.array([g["q"] for g in grasps])), per_grasp, 0)
        else:
            rgb = np.tile(np.array(color, np.uint8), (len(segments), 1))
        colors = np.repeat(rgb[:, None, :], 2, 1)
        self._handles[name] = self.server.scene.add_line_segments(
            f"/grasps/{name}", segments, colors, thickness=6.0, thickness_units="screen"
        )
