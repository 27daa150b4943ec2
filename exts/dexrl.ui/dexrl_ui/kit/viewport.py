"""Grasps, bin outlines and the heap drawn in the viewport with Isaac Sim's debug draw.

Debug draw keeps one global list of lines and one of points: clearing them also clears what other code drew.
"""

from __future__ import annotations

from isaacsim.util.debug_draw import _debug_draw

from ..view import ViewUpdate

__all__ = ["ViewportDrawing"]


class ViewportDrawing:
    """Replaces the drawing with each update's lines and points."""

    def __init__(self):
        self._draw = _debug_draw.acquire_debug_draw_interface()
        self.lines_drawn = 0
        self.points_drawn = 0

    def show(self, update: ViewUpdate) -> None:
        self.clear()
        lines, points = update.lines, update.points
        if lines.starts:
            self._draw.draw_lines(lines.starts, lines.ends, lines.colors, lines.widths)
        if points.points:
            self._draw.draw_points(points.points, points.colors, points.sizes)
        self.lines_drawn, self.points_drawn = len(lines.starts), len(points.points)

    def clear(self) -> None:
        self._draw.clear_lines()
        self._draw.clear_points()
        self.lines_drawn = self.points_drawn = 0
