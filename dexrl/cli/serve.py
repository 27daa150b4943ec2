"""``dexrl serve``: run the gqcnn_bridge websocket planner service (options: ``dexrl serve --help``)."""

from gqcnn_bridge.server import configure, run

__all__ = ["configure", "run"]
