"""Build a :class:`dexrl.app.Session` that plans through the gqcnn_bridge websocket service.

The session always plans with a :class:`gqcnn_bridge.client.RemotePlanner`. With ``local_server`` on, a bridge
server is first started in this process (a :class:`gqcnn_bridge.server.ServerThread`, what ``dexrl serve``
runs), bound to the URL's host and port; otherwise the URL names a server started elsewhere with
``dexrl serve``. No omni import here: pytest runs this module.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["DEFAULT_URL", "LaunchOptions", "Launched", "server_address", "start_session"]

DEFAULT_URL = "ws://127.0.0.1:8765"
"""Where ``dexrl serve`` listens by default (``gqcnn_bridge.client.DEFAULT_URL``)."""

SERVER_PLANNERS = ("fcgqcnn", "highest-object")
"""What a local server can serve (``dexrl serve --planner``)."""


@dataclass
class LaunchOptions:
    """What the panel's Session section sets; the fields of ``dexrl panel``'s options.

    Attributes:
        envs, seed, objects, device: the scene (``--envs``, ``--seed``, ``--objects seen|novel|FOLDER``,
            ``--device``; None picks cuda:0 when a GPU is visible).
        overrides: ``key=value`` overrides of ``config/scene.yaml``, separated by spaces.
        planner_url: the gqcnn_bridge server, ``ws://host:port``.
        local_server: start that server in this process (port 0 picks a free one).
        server_planner: what the local server serves; ``fcgqcnn`` falls back to ``highest-object`` when its
            weights do not load.
        weights: FC-GQ-CNN weights file for the local server (None: the packaged default).
        token: the server's token (default: ``$DEXRL_BRIDGE_TOKEN``).
        top_k: grasps planned and drawn per env.
        trainer: build the SAC corrector (without it Train is refused and Correct needs a loaded checkpoint).
    """

    envs: int = 2
    seed: int = 0
    objects: str | None = None
    device: str | None = None
    overrides: str = ""
    planner_url: str = DEFAULT_URL
    local_server: bool = True
    server_planner: str = "fcgqcnn"
    weights: str | None = None
    token: str | None = field(default_factory=lambda: os.environ.get("DEXRL_BRIDGE_TOKEN") or None)
    top_k: int = 5
    trainer: bool = True


@dataclass
class Launched:
    """A running session and what it plans with; :meth:`close` stops all of it."""

    session: object  # dexrl.app.Session (typed loosely: this module imports dexrl lazily)
    planner: object  # gqcnn_bridge.client.RemotePlanner
    server: object | None  # gqcnn_bridge.server.ServerThread when started here
    planner_name: str
    notes: list[str] = field(default_factory=list)

    def close(self, timeout_s: float = 30.0) -> None:
        self.session.close(timeout_s)
        self.planner.close()
        if self.server is not None:
            self.server.stop()


def server_address(url: str) -> tuple[str, int]:
    """(host, port) of a ``ws://host:port`` URL; raises ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.port is None:
        raise ValueError(f"planner URL must look like ws://host:port, got {url!r}")
    return parts.hostname, parts.port


def _backend(options: LaunchOptions, device: str | None, notes: list[str]):
    from gqcnn_bridge.backends import load_backend

    if options.server_planner not in SERVER_PLANNERS:
        raise ValueError(f"server planner must be one of {SERVER_PLANNERS}, got {options.server_planner!r}")
    if options.server_planner == "fcgqcnn":
        try:
            return load_backend("fcgqcnn", weights=options.weights, device=device)
        except (ImportError, FileNotFoundError, OSError) as error:
            notes.append(f"FC-GQ-CNN unavailable ({error}); serving the highest-object baseline")
    return load_backend("highest-object")


def start_session(options: LaunchOptions, *, runner_factory: Callable | None = None) -> Launched:
    """Settings, planner server (if asked), remote planner, optional SAC trainer, then a started Session.

    Blocks for seconds (imports, weights); front-ends call it off their UI thread. ``runner_factory`` is the
    Session's hook for a stand-in simulator (tests).
    """
    from dexrl.app import Session, SessionConfig
    from dexrl.sim.settings import load_scene_settings
    from gqcnn_bridge.server import ServerConfig, ServerThread

    if options.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # as the CLI: keep Warp off a GPU it must not use
    settings = load_scene_settings(
        shlex.split(options.overrides),
        num_envs=options.envs,
        seed=options.seed,
        device=options.device,
        **{"objects.object_set": options.objects},
    )
    host, port = server_address(options.planner_url)
    notes: list[str] = []
    server = None
    url = options.planner_url
    if options.local_server:
        backend = _backend(options, settings.device, notes)
        server = ServerThread(backend, ServerConfig(host=host, port=port, token=options.token)).start()
        url = server.url
        notes.append(f"started a {backend.model_id} planner server at {url}")
    from gqcnn_bridge.client import RemotePlanner

    planner = RemotePlanner(url, token=options.token)
    trainer = None
    try:
        if options.trainer:
            from dexrl.app.sac_corrector import SacCorrector

            trainer = SacCorrector(settings, seed=settings.seed)
        config = SessionConfig(settings, planner_name=f"remote {url}", top_k=options.top_k)
        session = Session(config, planner, trainer=trainer, runner_factory=runner_factory).start()
    except BaseException:
        planner.close()
        if server is not None:
            server.stop()
        raise
    return Launched(session, planner, server, config.planner_name, notes)
