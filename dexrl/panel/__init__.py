"""``dexrl panel``: a viser web panel over a :class:`dexrl.app.Session` (runs without Isaac Sim or a display)."""

from .app import Panel

__all__ = ["Panel"]
