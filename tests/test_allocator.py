"""glibc keeps the planner's large freed blocks once told to (measured by page faults, in fresh processes)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# Fills a 256 MB block, frees it, and fills another of the same size: the page faults of the second fill.
_REFILL_FAULTS = """
import resource, sys
import numpy as np
from dexrl.allocator import MESSAGE_BLOCK_BYTES, PLANNER_BLOCK_BYTES, keep_freed_memory
if sys.argv[1] != "default":
    assert keep_freed_memory(PLANNER_BLOCK_BYTES)
if sys.argv[1] == "keep, then ask for less":
    assert keep_freed_memory(MESSAGE_BLOCK_BYTES)
block = np.ones(64 << 20, np.float32)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(64 << 20, np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _refill_faults(mode: str) -> int:
    command = [sys.executable, "-c", _REFILL_FAULTS, mode]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


def test_a_freed_planner_sized_block_is_reused_instead_of_faulted_in_again():
    huge_pages = (256 << 20) // (2 << 20)  # fewest faults of a fresh 256 MB block: 2 MB (huge) pages
    assert _refill_faults("default") >= huge_pages  # glibc unmapped the freed block: it faults in again
    assert _refill_faults("keep") < huge_pages // 8
    assert _refill_faults("keep, then ask for less") < huge_pages // 8  # a smaller request lowers nothing
