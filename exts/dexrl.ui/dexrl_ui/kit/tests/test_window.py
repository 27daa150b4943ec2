"""The window inside Kit: its controls exist, and a session started from it spawns, plans and draws.

Run inside Isaac Sim (see docs/README.md); the session test builds the kit-less simulator on the CPU with a
local highest-object planner server, so it needs no weights and no network.
"""

from __future__ import annotations

import time

import omni.kit.app
import omni.kit.test
from omni.kit import ui_test

from dexrl_ui.kit import get_instance
from dexrl_ui.kit.window import WINDOW_TITLE
from dexrl_ui.launch import LaunchOptions

__all__ = ["TestDexrlWindow"]


def _button(text: str):
    return ui_test.find(f"{WINDOW_TITLE}//Frame/**/Button[*].text=='{text}'")


class TestDexrlWindow(omni.kit.test.AsyncTestCase):
    async def _until(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            await omni.kit.app.get_app().next_update_async()

    async def test_controls_exist(self):
        await ui_test.human_delay()
        for text in ("Start", "Stop", "Plan", "Correct", "Execute", "Start training", "Start evaluation"):
            self.assertIsNotNone(_button(text), text)

    async def test_session_spawns_plans_and_draws(self):
        extension = get_instance()
        model = extension.model
        options = LaunchOptions(
            envs=1,
            device="cpu",
            planner_url="ws://127.0.0.1:0",
            server_planner="highest-object",
            trainer=False,
        )
        self.assertIsNotNone(model.start(options))
        ready = lambda: model.session is not None and model.session.state().geometry is not None
        await self._until(ready, 900, "the simulator")
        await self._until(lambda: _button("Spawn bin") is not None, 10, "the Bins controls")
        await _button("Spawn bin").click()
        await _button("Plan").click()
        await self._until(lambda: bool(model.session.state().proposed), 300, "a plan")
        await self._until(lambda: extension.drawing.lines_drawn > 12, 10, "grasps in the viewport")
        self.assertIsNotNone(extension.window.image_shape)
        await _button("Stop").click()
        await self._until(lambda: not model.busy and model.session is None, 120, "the session to stop")
