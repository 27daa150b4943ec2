"""Keep large freed memory blocks in the process instead of handing them back to the kernel (glibc only).

glibc's allocator serves blocks above its mmap threshold (128 KiB at first, raised adaptively up to 32 MiB)
with fresh ``mmap`` calls, and trims the heap top once enough of it is free; either way the next block of
that size faults its pages in again, one 4 KiB page at a time. Two places pay for that on every call:

- the bridge's messages pass through several buffers of their own size (0.8 MB per depth image): on a
  2-core VM a plain websockets echo of one image took 1.24 ms p50 by default and 0.42 ms with 32 MiB blocks
  kept, in both processes;
- the FC-GQ-CNN fast path on a CPU allocates activations of up to a few hundred MB per layer: on a 2-core
  Intel Xeon VM one 386x516 image took about 1.0 s by default and 0.58-0.62 s with 1 GiB blocks kept
  (``dexrl bench planner --device cpu --modes fast --images 2``, 2026-12-03).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["MESSAGE_BLOCK_BYTES", "PLANNER_BLOCK_BYTES", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, from glibc's malloc.h

MESSAGE_BLOCK_BYTES = 32 << 20
"""Largest block kept for the bridge's messages (one message of 64 images comes in 1 MiB fragments)."""

PLANNER_BLOCK_BYTES = 1 << 30
"""Largest block kept for the CPU planner's activations."""

TOP_PAD_BYTES = 16 << 20
"""Extra heap obtained whenever the heap grows, so that growing by one block does not fault page by page."""

_kept_bytes = 0  # the largest block size set so far in this process


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory(largest_block_bytes: int = MESSAGE_BLOCK_BYTES) -> bool:
    """Have glibc's malloc keep freed blocks of up to ``largest_block_bytes`` (and as much free heap, at least
    256 MiB) for reuse instead of unmapping them.

    Process-wide; a call never lowers what an earlier one set. The process keeps more memory mapped (at most
    about that much beyond what it uses) in exchange for not faulting it in again. Returns False, changing
    nothing, where the C library is not glibc or refuses the value.
    """
    global _kept_bytes
    libc = _libc()
    if libc is None:
        return False
    if largest_block_bytes <= _kept_bytes:
        return True
    settings = (
        (_M_MMAP_THRESHOLD, largest_block_bytes),
        (_M_TRIM_THRESHOLD, max(largest_block_bytes, 256 << 20)),
        (_M_TOP_PAD, TOP_PAD_BYTES),
    )
    if not all(libc.mallopt(parameter, ctypes.c_int(value)) == 1 for parameter, value in settings):
        return False
    _kept_bytes = largest_block_bytes
    return True
