"""``python -m gqcnn_bridge``: run the planner service (the same as ``dexrl serve``)."""

import argparse

from .server import configure, run

parser = argparse.ArgumentParser(
    prog="python -m gqcnn_bridge", description="Run the gqcnn_bridge websocket planner service."
)
configure(parser)
raise SystemExit(run(parser.parse_args()))
