"""``dexrl panel``: the web panel (viser) over one simulator session; open the printed URL in a browser.

Spawn randomized bins, plan (q-map and top-k grasps), correct with the SAC corrector, execute, train and
evaluate, live. Binds 127.0.0.1 unless ``--host`` says otherwise. Plans with FC-GQ-CNN when its weights load,
else the baseline planner, or with a gqcnn_bridge server (``--remote ws://host:port``).
"""

from __future__ import annotations

import argparse
import time

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser, default_envs=2)
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="TCP port (default 8080; the next free one if taken)"
    )
    parser.add_argument(
        "--remote", default=None, metavar="URL", help="plan with a gqcnn_bridge server at this ws:// URL"
    )
    parser.add_argument("--top-k", type=int, default=5, help="grasps planned and shown per env (default 5)")
    parser.add_argument(
        "--no-trainer", action="store_true", help="do not build the SAC corrector (Train is disabled)"
    )


def _planner(args: argparse.Namespace, device: str):
    if args.remote:
        from gqcnn_bridge.client import RemotePlanner

        return RemotePlanner(args.remote), f"remote {args.remote}"
    from dexrl.planning import default_planner

    return default_planner(device)


def run(args: argparse.Namespace) -> int:
    settings = scene_settings_from_args(args)
    from dexrl.app import Session, SessionConfig
    from dexrl.panel import Panel

    planner, planner_name = _planner(args, settings.device)
    trainer = None
    if not args.no_trainer:
        from dexrl.app.sac_corrector import SacCorrector

        trainer = SacCorrector(settings, seed=settings.seed)
    session = Session(
        SessionConfig(settings, planner_name=planner_name, top_k=args.top_k), planner, trainer=trainer
    )
    session.start()
    panel = Panel(session, host=args.host, port=args.port)
    print(f"[panel] {settings.num_envs} bins on {settings.device}, planner: {planner_name}")
    print(f"[panel] open {panel.url} in a browser (Ctrl+C stops)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("[panel] stopping")
    finally:
        panel.close()
        session.close()
    return 0
