"""glibc allocator settings for the web processes, which take bodies of tens of megabytes.

A batch of a hundred captures is a ~40 MB JSON body holding a hundred
~390 KB base64 strings, decoded into a hundred ~290 KB photos. glibc serves
blocks above its mmap threshold with fresh mappings and gives freed heap
back to the system above its trim threshold; both thresholds start low
(128 KB) and only drift up, so every request had the kernel supply, zero
and take back hundreds of megabytes of pages (page faults were a large part
of the web process's system time). With the thresholds fixed high, those
blocks are reused from the heap from one request to the next; memory that
is freed stays with the process up to ``TRIM_THRESHOLD`` (its working set
for one batch), so its resident size stays flat instead of breathing.

Only where the C library is glibc; elsewhere (musl, macOS) nothing changes.
The same can be had without code through the environment variables
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (docs/operations.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024


def malloc_tune_for_large_bodies() -> bool:
    """Fix glibc's thresholds for this process; True if they were set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
