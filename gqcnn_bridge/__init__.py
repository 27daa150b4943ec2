"""gqcnn_bridge: the FC-GQ-CNN planner as a websocket service (protocol in PROTOCOL.md).

``RemotePlanner`` (blocking) and ``AsyncRemotePlanner`` (asyncio) are clients; ``BridgeServer`` and
``ServerThread`` serve a ``Backend``. Names are imported on first use, so importing the package (as
``dexrl bench`` does to list its targets) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "AsyncRemotePlanner",
    "Backend",
    "Backoff",
    "BridgeServer",
    "ErrorCode",
    "Limits",
    "RemotePlanner",
    "ServerConfig",
    "ServerInfo",
    "ServerThread",
    "load_backend",
]

_MODULE_OF = {
    "AsyncRemotePlanner": "client",
    "Backoff": "client",
    "RemotePlanner": "client",
    "BridgeServer": "server",
    "ServerConfig": "server",
    "ServerThread": "server",
    "Backend": "backends",
    "load_backend": "backends",
    "ErrorCode": "protocol",
    "Limits": "protocol",
    "PROTOCOL_VERSION": "protocol",
    "ServerInfo": "protocol",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
