"""Sharded grasp datasets for training FC-GQ-CNN: NPZ shards listed in a ``manifest.json``.

A dataset is a folder::

    manifest.json
    shard_00000.npz
    shard_00001.npz
    ...

Each shard is an uncompressed numpy ``.npz`` of N examples:

=========  ================  =======================================================================
``crops``  (N, 96, 96) f4    depth crops [m] centred on the grasp centre, not rotated (the FC network
                             sees every angle in one crop), missing depth already filled
``depths`` (N,) f4           grasp depth along the optical axis [m]
``angles`` (N,) f4           jaw axis angle in the image [rad], as :class:`dexrl.grasp.ImageGrasps`
``labels`` (N,) u1           1 = the grasp succeeded, 0 = it failed
=========  ================  =======================================================================

``manifest.json``::

    {"format": "dexrl-grasp-shards", "version": 1, "crop_size": 96,
     "shards": [{"file": "shard_00000.npz", "count": N, "positives": P, "meta": {...}}, ...]}

``meta`` is whatever the writer passed (seed, object set, camera, ...). Write shards with :func:`write_shard`,
one writer per manifest at a time; it keeps the manifest up to date. Several writers share a folder by writing
their own manifests (:func:`rank_manifest`, one per rank of a distributed run), which :func:`merge_manifests`
folds into ``manifest.json`` at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grid import CROP_SIZE

__all__ = [
    "MANIFEST", "SHARD_FIELDS", "GraspBatch", "ShardCache", "ShardInfo", "iterate_batches", "listed_shards", "merge_manifests",
    "rank_manifest", "read_manifest", "shard_bytes", "write_shard",
]

MANIFEST = "manifest.json"
_FORMAT = "dexrl-grasp-shards"
_VERSION = 1
SHARD_FIELDS = ("crops", "depths", "angles", "labels")
"""The arrays of a shard, in the order :func:`write_shard` takes them."""
_RANK_MANIFESTS = "manifest.rank*.json"


@dataclass(frozen=True)
class ShardInfo:
    """One shard as listed in the manifest: file name (relative to the dataset folder) and example counts."""

    file: str
    count: int
    positives: int
    meta: dict[str, Any]


@dataclass
class GraspBatch:
    """A batch of training examples as tensors: crops (N, 1, 96, 96) [m], depths (N,) [m], angles (N,) [rad],
    labels (N,) long."""

    crops: torch.Tensor
    depths: torch.Tensor
    angles: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> GraspBatch:
        return GraspBatch(*(getattr(self, name).to(device) for name in SHARD_FIELDS))


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        write(f)
    os.replace(temporary, path)


def rank_manifest(rank: int) -> str:
    """File name of the manifest that rank ``rank`` of a distributed run keeps until :func:`merge_manifests`."""
    return f"manifest.rank{rank:05d}.json"


def read_manifest(root: str | Path, name: str = MANIFEST) -> list[ShardInfo]:
    """The shards of a dataset folder (listed in its manifest ``name``); raises FileNotFoundError or
    ValueError with the reason."""
    path = Path(root) / name
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {root}: not a DexRL grasp dataset")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} v{manifest.get('version')}, "
            f"expected {_FORMAT!r} v{_VERSION}"
        )
    if manifest.get("crop_size") != CROP_SIZE:
        raise ValueError(f"{path}: crops are {manifest.get('crop_size')} px, the network needs {CROP_SIZE}")
    return [ShardInfo(**entry) for entry in manifest["shards"]]


def write_shard(
    path: str | Path,
    crops: np.ndarray,
    depths: np.ndarray,
    angles: np.ndarray,
    labels: np.ndarray,
    *,
    manifest: str = MANIFEST,
    **meta: Any,
) -> ShardInfo:
    """Write one shard ``path`` (e.g. ``data/shard_00003.npz``) and list it in the folder's manifest.

    Args:
        crops: (N, 96, 96) float32 depth crops [m]. depths: (N,) grasp depths [m].
        angles: (N,) jaw angles [rad].
        labels: (N,) 0/1. manifest: the manifest file to list the shard in (in the shard's folder).
        meta: JSON-serialisable facts about the shard, stored in the manifest.

    A shard of the same file name already in the manifest is replaced.
    """
    path = Path(path)
    arrays = {
        "crops": np.asarray(crops, np.float32),
        "depths": np.asarray(depths, np.float32).reshape(-1),
        "angles": np.asarray(angles, np.float32).reshape(-1),
        "labels": np.asarray(labels).reshape(-1),
    }
    count = arrays["crops"].shape[0]
    if arrays["crops"].shape != (count, CROP_SIZE, CROP_SIZE):
        raise ValueError(f"crops must be (N, {CROP_SIZE}, {CROP_SIZE}), got {arrays['crops'].shape}")
    if any(arrays[name].shape != (count,) for name in ("depths", "angles", "labels")):
        raise ValueError(f"depths, angles and labels must hold one value per crop ({count})")
    if not np.isin(arrays["labels"], (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    arrays["labels"] = arrays["labels"].astype(np.uint8)
    if not all(np.isfinite(arrays[name]).all() for name in ("crops", "depths", "angles")):
        raise ValueError("crops, depths and angles must be finite")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda f: np.savez(f, **arrays))
    info = ShardInfo(path.name, count, int(arrays["labels"].sum()), meta)
    shards = read_manifest(path.parent, manifest) if (path.parent / manifest).is_file() else []
    _write_manifest(path.parent, manifest, [shard for shard in shards if shard.file != path.name] + [info])
    return info


def _write_manifest(root: Path, name: str, shards: Sequence[ShardInfo]) -> None:
    manifest = {
        "format": _FORMAT,
        "version": _VERSION,
        "crop_size": CROP_SIZE,
        "shards": [vars(s) for s in shards],
    }
    _write_atomically(root / name, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def listed_shards(root: str | Path) -> list[ShardInfo]:
    """Every shard listed in ``manifest.json`` or in a rank's manifest (a distributed run that stopped before
    merging leaves those), each file once (a rank's entry wins: it is the newer)."""
    root = Path(root)
    names = [MANIFEST] if (root / MANIFEST).is_file() else []
    names += sorted(path.name for path in root.glob(_RANK_MANIFESTS))
    return list({shard.file: shard for name in names for shard in read_manifest(root, name)}.values())


def merge_manifests(root: str | Path) -> list[ShardInfo]:
    """Fold the ranks' manifests into ``manifest.json`` (every shard once, sorted by file name, so that the
    manifest does not depend on how many ranks wrote the shards) and delete them; returns the shards."""
    root = Path(root)
    shards = sorted(listed_shards(root), key=lambda shard: shard.file)
    _write_manifest(root, MANIFEST, shards)
    for path in root.glob(_RANK_MANIFESTS):
        path.unlink()
    return shards


def _load_shard(root: Path, shard: ShardInfo) -> dict[str, torch.Tensor]:
    with np.load(root / shard.file) as data:
        arrays = {name: torch.from_numpy(data[name]) for name in SHARD_FIELDS}
    if len(arrays["labels"]) != shard.count:
        raise ValueError(
            f"{root / shard.file} holds {len(arrays['labels'])} examples, the manifest says {shard.count}"
        )
    return arrays


def shard_bytes(shards: Sequence[ShardInfo]) -> int:
    """Memory that the arrays of ``shards`` take once loaded [bytes]."""
    return sum(shard.count for shard in shards) * (CROP_SIZE * CROP_SIZE * 4 + 4 + 4 + 1)


class ShardCache:
    """Shards loaded once and kept as tensors on ``device`` (e.g. the GPU that trains): epochs after the first
    read no file and copy nothing to the device. Pass it to :func:`iterate_batches` as ``load``."""

    def __init__(self, root: str | Path, device: torch.device | str):
        self.root, self.device = Path(root), torch.device(device)
        self._shards: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, shard: ShardInfo) -> dict[str, torch.Tensor]:
        if shard.file not in self._shards:
            arrays = _load_shard(self.root, shard)
            self._shards[shard.file] = {name: value.to(self.device) for name, value in arrays.items()}
        return self._shards[shard.file]


def iterate_batches(
    root: str | Path,
    shards: Sequence[ShardInfo],
    batch_size: int,
    rng: np.random.Generator | None = None,
    load: Callable[[ShardInfo], dict[str, torch.Tensor]] | None = None,
) -> Iterator[GraspBatch]:
    """Batches over ``shards``, one shard at a time; shuffled (shard order and examples) when ``rng`` is given,
    else in manifest order. The last batch may be smaller. ``load`` gives a shard's tensors (default: read its
    file; a :class:`ShardCache` keeps them on a device), and the batches lie where they do."""
    root = Path(root)
    load = load or (lambda shard: _load_shard(root, shard))
    order = rng.permutation(len(shards)) if rng is not None else range(len(shards))
    pending: dict[str, torch.Tensor] | None = None
    for index in order:
        arrays = load(shards[index])
        if rng is not None:
            permutation = torch.from_numpy(rng.permutation(shards[index].count)).to(arrays["labels"].device)
            arrays = {name: value[permutation] for name, value in arrays.items()}
        if pending is not None:
            arrays = {name: torch.cat((pending[name], arrays[name])) for name in SHARD_FIELDS}
        full = len(arrays["labels"]) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield _to_batch({name: value[start : start + batch_size] for name, value in arrays.items()})
        pending = {name: value[full:] for name, value in arrays.items()}
    if pending is not None and len(pending["labels"]):
        yield _to_batch(pending)


def _to_batch(arrays: dict[str, torch.Tensor]) -> GraspBatch:
    return GraspBatch(
        crops=arrays["crops"].unsqueeze(1),
        depths=arrays["depths"],
        angles=arrays["angles"],
        labels=arrays["labels"].long(),
    )
