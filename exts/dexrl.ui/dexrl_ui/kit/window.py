"""The DexRL window (omni.ui). Widgets read their values and call :class:`PanelModel`; :meth:`show` applies a
:class:`ViewUpdate`. No logic lives here: see ``dexrl_ui.view`` and ``dexrl.app``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from omni import ui

from ..launch import DEFAULT_URL, SERVER_PLANNERS, LaunchOptions
from ..view import PanelModel, ViewUpdate

__all__ = ["WINDOW_TITLE", "DexrlWindow"]

WINDOW_TITLE = "DexRL"
LABEL_WIDTH = 130  # [px]
IMAGE_WIDTH = 380  # [px] the q-map picture keeps the depth image's aspect ratio


def _row(label: str, make: Callable[[], ui.Widget], value=None) -> ui.Widget:
    """A labelled widget built by ``make`` inside the row, its model set to ``value``."""
    with ui.HStack(height=22):
        ui.Label(label, width=LABEL_WIDTH)
        built = make()
    if value is not None:
        built.model.set_value(value)
    return built


def _buttons(*pairs) -> list[ui.Button]:
    with ui.HStack(height=26, spacing=4):
        return [ui.Button(text, clicked_fn=run) for text, run in pairs]


class DexrlWindow(ui.Window):
    """Session options, Bins, Grasp, Learning, the selected env's q-map and the status."""

    def __init__(self, model: PanelModel):
        super().__init__(WINDOW_TITLE, width=440, height=940)
        self._model = model
        self._provider = ui.ByteImageProvider()
        self._running = False
        self._shown: ViewUpdate | None = None  # re-applied when the frame is (re)built
        self._status: ui.Label | None = None  # set once the frame is built
        self.image_shape: tuple[int, int] | None = None  # (H, W) of the picture shown
        self.frame.set_build_fn(self._build)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        defaults = LaunchOptions()
        with ui.ScrollingFrame(), ui.VStack(spacing=4, height=0):
            with ui.CollapsableFrame("Session", height=0), ui.VStack(spacing=2, height=0):
                self._envs = _row("Envs", lambda: ui.IntField(), defaults.envs)
                self._seed = _row("Seed", lambda: ui.IntField(), defaults.seed)
                self._objects = _row("Objects (seen|novel|dir)", lambda: ui.StringField(), "seen")
                self._device = _row("Device (blank: auto)", lambda: ui.StringField(), "")
                self._overrides = _row("Overrides key=value", lambda: ui.StringField(), "")
                self._url = _row("Planner URL", lambda: ui.StringField(), DEFAULT_URL)
                self._local = _row("Start local server", lambda: ui.CheckBox(), defaults.local_server)
                self._served = _row("Server planner", lambda: ui.ComboBox(0, *SERVER_PLANNERS))
                self._trainer = _row("SAC trainer", lambda: ui.CheckBox(), defaults.trainer)
                _buttons(("Start", self._start), ("Stop", self._model.stop))
            self._bins = ui.Frame(build_fn=self._build_bins, height=0)
            with ui.CollapsableFrame("Grasp", height=0):
                _buttons(
                    ("Plan", self._model.plan),
                    ("Correct", self._model.correct),
                    ("Execute", self._model.execute),
                )
            with ui.CollapsableFrame("Learning", height=0), ui.VStack(spacing=2, height=0):
                self._train, self._evaluate = _buttons(
                    ("Start training", self._model.toggle_training),
                    ("Start evaluation", self._model.toggle_evaluation),
                )
                self._checkpoint = _row("Checkpoint", lambda: ui.StringField(), "out/panel/corrector.zip")
                _buttons(
                    (
                        "Save checkpoint",
                        lambda: self._model.save_checkpoint(self._checkpoint.model.as_string),
                    ),
                    (
                        "Load checkpoint",
                        lambda: self._model.load_checkpoint(self._checkpoint.model.as_string),
                    ),
                )
            ui.Label("Q-map (selected env)", height=0)
            self._image = ui.ImageWithProvider(self._provider, width=IMAGE_WIDTH, height=IMAGE_WIDTH * 3 // 4)
            self._status = ui.Label("no session: set the options and press Start", word_wrap=True, height=0)
        self._running, self.image_shape = self._model.session is not None, None  # as the new widgets are
        if self._shown is not None:
            self._apply(self._shown)

    def _build_bins(self) -> None:
        controls = self._model.controls()
        with ui.CollapsableFrame("Bins", height=0):
            if controls is None:
                ui.Label("Start a session to spawn bins.", height=0)
                return
            with ui.VStack(spacing=2, height=0):
                count = _row("Objects", lambda: ui.IntSlider(min=1, max=controls.pool_size), controls.count)
                seed = _row("Seed", lambda: ui.IntField(), controls.seed)
                noise = _row("Depth noise", lambda: ui.CheckBox(), controls.noise)
                randomize = _row("Randomize physics", lambda: ui.CheckBox(), True)
                _buttons(
                    (
                        "Spawn bin",
                        lambda: self._model.spawn(
                            count.model.as_int,
                            seed.model.as_int,
                            noise.model.as_bool,
                            randomize.model.as_bool,
                        ),
                    )
                )
                env = _row(
                    "Env", lambda: ui.IntSlider(min=0, max=max(controls.envs - 1, 1)), self._model.selected
                )
                env.model.add_value_changed_fn(lambda m: self._model.select(m.as_int))

    # ------------------------------------------------------------------ actions and updates
    def _start(self) -> None:
        self._model.start(
            LaunchOptions(
                envs=self._envs.model.as_int,
                seed=self._seed.model.as_int,
                objects=self._objects.model.as_string.strip() or None,
                device=self._device.model.as_string.strip() or None,
                overrides=self._overrides.model.as_string,
                planner_url=self._url.model.as_string.strip(),
                local_server=self._local.model.as_bool,
                server_planner=SERVER_PLANNERS[self._served.model.get_item_value_model().as_int],
                trainer=self._trainer.model.as_bool,
            )
        )

    def show(self, update: ViewUpdate) -> None:
        """Show ``update`` now, or when the frame is built (Kit builds it lazily, at its first draw)."""
        self._shown = update
        if self._status is not None:
            self._apply(update)

    def _apply(self, update: ViewUpdate) -> None:
        if update.running != self._running:  # a session started or stopped: new ranges for the Bins widgets
            self._running = update.running
            self._bins.rebuild()
        self._status.text = update.status
        self._train.text = "Stop training" if update.training else "Start training"
        self._evaluate.text = "Stop evaluation" if update.evaluating else "Start evaluation"
        image = update.image if update.image is not None else np.zeros((1, 1, 4), np.uint8)
        height, width = image.shape[:2]
        self._provider.set_data_array(image, [width, height])
        if update.image is not None and image.shape[:2] != self.image_shape:
            self._image.height = ui.Pixel(IMAGE_WIDTH * height / width)
        self.image_shape = image.shape[:2] if update.image is not None else None
