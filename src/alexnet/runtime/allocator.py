"""CPU memory allocation tuned for training: big blocks reused, not mapped afresh.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
mmap and returns it to the kernel on free. A batch of conv1 maps is 74 MB, so each
step of the paper net maps, page-faults and unmaps dozens of such buffers: on the CPU
box, first touch of a fresh 74 MB tensor costs 40-50 ms against 5-9 ms for a pass over
a reused one. Turning mmap off for the allocator (the heap then keeps freed blocks)
made a batch-64 training step 25% faster there, for about 20% more peak memory
(docs/benchmarks.md). jemalloc or tcmalloc via LD_PRELOAD do the same job; this needs
nothing installed.

The CLI calls `tune_cpu_allocator()` once at start; library users may call it too.
Set ALEXNET_MALLOC=default to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_done: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks in the heap (glibc only). Returns whether it applied."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("ALEXNET_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return _done
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def allocator_tuned() -> bool:
    """Whether `tune_cpu_allocator` has been applied in this process."""
    return bool(_done)
