"""The same-host shared-memory transport (PROTOCOL.md, *Shared memory*), in the manner of Triton's "system
shared memory" extension.

A client on the server's machine creates a POSIX shared-memory segment (:mod:`multiprocessing.shared_memory`),
registers it by name on its connection (``shm_register``), writes each request's depth images (and masks)
into it and sends only the header, whose array entries name the region. The server maps registered regions
once, read-only, and plans from them without copying: the depth tensor is a view of the client's memory.

Server side: :class:`ConnectionRegions`, one per connection (event-loop thread only). Client side:
:class:`ClientRegions`. Names are checked against :data:`REGION_NAME`, so a name is never a path; the server
opens only names registered on the connection, never unlinks them (the client owns its segments), and
closes its mappings when they are unregistered or the connection ends, once no request still reads them.
"""

from __future__ import annotations

import _posixshmem  # CPython's shm_open, which multiprocessing.shared_memory uses on POSIX systems
import ipaddress
import mmap
import os
import re
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from .protocol import ErrorCode, ProtocolViolation, SharedMemoryLimits

__all__ = ["REGION_NAME", "ClientRegion", "ClientRegions", "ConnectionRegions", "Lease", "is_loopback"]

REGION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What a region name may be: a POSIX shared-memory name without its leading slash, never a path."""


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback interface."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _map_read_only(name: str) -> mmap.mmap:
    """Map an existing POSIX shared-memory segment read-only, by name (as :class:`SharedMemory` opens it, but
    without adopting it: Python 3.12's resource tracker would unlink an attached segment at exit)."""
    descriptor = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    try:
        return mmap.mmap(descriptor, os.fstat(descriptor).st_size, access=mmap.ACCESS_READ)
    finally:
        os.close(descriptor)


class _Mapping:
    """One registered region as the server maps it; closed once unregistered and no request reads it."""

    def __init__(self, name: str, nbytes: int, request_id):
        self.memory = _map_read_only(name)
        if len(self.memory) < nbytes:
            size = len(self.memory)
            self.memory.close()
            raise ProtocolViolation(
                ErrorCode.SHM_UNAVAILABLE,
                f"region {name!r} has {size} bytes, fewer than the {nbytes} registered",
                request_id,
            )
        self.view = memoryview(self.memory)[:nbytes]
        self.readers = 0
        self.retired = False

    def close_when_unused(self) -> bool:
        """Close the mapping if it is retired and unread; True once closed (or left to the garbage collector
        because a view of it outlived its request, e.g. in a traceback)."""
        if not self.retired or self.readers:
            return False
        try:
            self.view.release()
            self.memory.close()
        except BufferError:  # an array still views it: the mapping goes when that array does
            pass
        return True


@dataclass(eq=False)
class Lease:
    """A request's hold on the regions it reads; :meth:`release` it once the worker is done with them."""

    owner: ConnectionRegions
    mappings: tuple[_Mapping, ...]

    def release(self) -> None:
        for mapping in self.mappings:
            mapping.readers -= 1
            if mapping.close_when_unused():
                self.owner.open_mappings.discard(mapping)
        self.mappings = ()


class ConnectionRegions:
    """The regions one connection registered (event-loop thread only).

    Args:
        limits: how many regions, how large.
        peer_host: the client's address; registration is refused unless it is loopback.
        open_mappings: the server-wide set of mappings not yet closed (for ``/healthz``).
    """

    def __init__(self, limits: SharedMemoryLimits, peer_host: str | None, open_mappings: set):
        self._limits = limits
        self._local = is_loopback(peer_host)
        self._registered: dict[str, _Mapping] = {}
        self.open_mappings = open_mappings

    @property
    def views(self) -> dict[str, memoryview]:
        """Registered name -> the region's memory (its registered size), for :func:`decode_message`."""
        return {name: mapping.view for name, mapping in self._registered.items()}

    def lease(self, names: frozenset[str]) -> Lease:
        """Hold the named regions open for a request that reads them."""
        mappings = tuple(self._registered[name] for name in names)
        for mapping in mappings:
            mapping.readers += 1
        return Lease(self, mappings)

    def handle(self, header: dict[str, Any], request_id) -> dict[str, Any]:
        """Answer an ``shm_register`` or ``shm_unregister`` message with its reply header.

        Raises:
            ProtocolViolation: bad_header (ill-typed or unknown name), too_large (region or count over the
                limits) or shm_unavailable (remote client, or no such segment on this machine).
        """
        name = header.get("name")
        if not isinstance(name, str) or not REGION_NAME.fullmatch(name):
            raise ProtocolViolation(
                ErrorCode.BAD_HEADER, f"name must match {REGION_NAME.pattern}, got {name!r}", request_id
            )
        if header["type"] == "shm_unregister":
            if name not in self._registered:
                raise ProtocolViolation(
                    ErrorCode.BAD_HEADER, f"region {name!r} is not registered", request_id
                )
            self._retire(self._registered.pop(name))
            return {"type": "shm_unregistered", "request_id": request_id, "name": name}
        self._register(name, header.get("nbytes"), request_id)
        return {"type": "shm_registered", "request_id": request_id, "name": name, "nbytes": header["nbytes"]}

    def _register(self, name: str, nbytes: Any, request_id) -> None:
        if not self._local:
            raise ProtocolViolation(
                ErrorCode.SHM_UNAVAILABLE,
                "shared memory is only for clients on the server's machine",
                request_id,
            )
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
            raise ProtocolViolation(ErrorCode.BAD_HEADER, "nbytes must be a positive integer", request_id)
        if name in self._registered:
            raise ProtocolViolation(
                ErrorCode.BAD_HEADER, f"region {name!r} is already registered", request_id
            )
        if nbytes > self._limits.max_region_bytes or len(self._registered) >= self._limits.max_regions:
            raise ProtocolViolation(
                ErrorCode.TOO_LARGE,
                f"at most {self._limits.max_regions} regions of <= {self._limits.max_region_bytes} bytes",
                request_id,
            )
        try:
            mapping = _Mapping(name, nbytes, request_id)
        except (OSError, ValueError) as error:  # no such segment here, no permission, or empty
            raise ProtocolViolation(
                ErrorCode.SHM_UNAVAILABLE, f"cannot map region {name!r}: {error}", request_id
            ) from None
        self._registered[name] = mapping
        self.open_mappings.add(mapping)

    def _retire(self, mapping: _Mapping) -> None:
        mapping.retired = True
        if mapping.close_when_unused():
            self.open_mappings.discard(mapping)

    def close(self) -> None:
        """The connection ended: unregister everything (mappings still read close when their requests end)."""
        for mapping in self._registered.values():
            self._retire(mapping)
        self._registered.clear()


class ClientRegion:
    """A segment the client created and owns: it holds one request's arrays at a time.

    Args:
        nbytes: size [bytes].
    """

    def __init__(self, nbytes: int):
        self.segment = SharedMemory(create=True, size=nbytes)
        self.nbytes = nbytes

    @property
    def name(self) -> str:
        return self.segment.name

    @property
    def region(self) -> tuple[str, memoryview]:
        """What :func:`~gqcnn_bridge.protocol.encode_plan_request` writes into."""
        return self.name, self.segment.buf[: self.nbytes]

    def destroy(self) -> None:
        """Unmap and remove the segment (the server has unmapped it, or will when its connection ends)."""
        self.segment.close()
        self.segment.unlink()


class ClientRegions:
    """A client's registered regions, each lent to one request at a time.

    Args:
        limits: what the server accepts (from its welcome).
    """

    def __init__(self, limits: SharedMemoryLimits):
        self.limits = limits
        self._idle: list[ClientRegion] = []
        self._all: list[ClientRegion] = []

    def lend(self, nbytes: int) -> tuple[ClientRegion | None, bool]:
        """A region of at least ``nbytes`` for one request, and whether it is new (to be registered first):
        the smallest idle one that fits, else a new one of ``nbytes``, else (past the server's limits) None.
        """
        fitting = [region for region in self._idle if region.nbytes >= nbytes]
        if fitting:
            region = min(fitting, key=lambda r: r.nbytes)
            self._idle.remove(region)
            return region, False
        if nbytes > self.limits.max_region_bytes or len(self._all) >= self.limits.max_regions:
            return None, False
        region = ClientRegion(nbytes)
        self._all.append(region)
        return region, True

    def give_back(self, region: ClientRegion) -> None:
        """The request that was lent ``region`` has its reply: the region may be reused."""
        if region in self._all:
            self._idle.append(region)

    def destroy(self) -> None:
        """Remove every region (on close, or when the connection is gone and the server dropped them)."""
        for region in self._all:
            region.destroy()
        self._all.clear()
        self._idle.clear()
