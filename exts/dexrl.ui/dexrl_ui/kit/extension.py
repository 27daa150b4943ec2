"""The extension's entry point: opens the DexRL window and, on Kit's update loop, shows the session's state.

Each frame it asks :meth:`PanelModel.poll` what changed (a lock and a tuple compare when nothing did) and
hands any update to the window and the viewport drawing. The session's worker thread does all the work.
"""

from __future__ import annotations

import asyncio
import time

import carb
import omni.ext
import omni.kit.app
import omni.usd
from pxr import UsdGeom

from ..view import PanelModel, StageFrame
from .viewport import ViewportDrawing
from .window import DexrlWindow

__all__ = ["DexrlUiExtension", "get_instance"]

_instance: DexrlUiExtension | None = None


def get_instance() -> DexrlUiExtension | None:
    """The running extension (tests reach the model, window and drawing through it)."""
    return _instance


def _stage_frame() -> StageFrame:
    stage = omni.usd.get_context().get_stage()
    if stage is None:
        return StageFrame()
    return StageFrame(UsdGeom.GetStageMetersPerUnit(stage), str(UsdGeom.GetStageUpAxis(stage)))


class DexrlUiExtension(omni.ext.IExt):
    """Owns the panel model, the window, the viewport drawing and the polling task; shutdown undoes startup."""

    def on_startup(self, ext_id: str) -> None:
        global _instance
        self.model = PanelModel()
        self.drawing = ViewportDrawing()
        self.window = DexrlWindow(self.model)
        self._task = asyncio.ensure_future(self._poll())
        _instance = self

    def on_shutdown(self) -> None:
        global _instance
        _instance = None
        self._task.cancel()
        self.model.close()  # stops the session's worker and the local planner server
        self.drawing.clear()
        self.window.destroy()
        self.window = None

    async def _poll(self) -> None:
        app = omni.kit.app.get_app()
        while True:
            await app.next_update_async()
            try:
                update = self.model.poll(time.monotonic(), _stage_frame())
                if update is not None:
                    self.window.show(update)
                    self.drawing.show(update)
            except Exception as error:  # noqa: BLE001 (keep polling; the log says what broke)
                carb.log_error(f"[dexrl.ui] update failed: {error!r}")
