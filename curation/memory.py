"""Allocator settings for the data steps: keep freed memory for the next batch.

Every map step reads a shard in batches and allocates, then frees, Arrow buffers and numpy arrays
of tens of MB per batch. With the default allocators each batch gets fresh pages from the kernel:
Arrow's bundled mimalloc returns freed memory to the OS at once, and glibc's malloc serves large
blocks with mmap and trims its heap on free. The kernel then faults and zeroes those pages again,
batch after batch. Measured on the 1M-document scale run: 23-46 % of the CPU time of the big
steps was system time (heuristic filter 24 of 81 CPU-s per rank, exact hashing 12 of 28).

`tune_allocators()` (once per process, from `run_rank`) makes Arrow allocate through the system
allocator and lets glibc keep blocks up to 32 MiB on its heap and up to 256 MiB of freed heap
before trimming: freed memory is reused instead of faulted in again. Between units of work (each
shard a map step reads, each partition a reduce reads) `release_freed_memory()` trims the heap,
so what one unit left behind does not add up over the next ones (a rank's peak is that of its
biggest unit, not a growing high-water mark). Nothing is decided differently. `THRESHER_DEFAULT_ALLOCATORS=1` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks up to this size come from the heap
TRIM_THRESHOLD = 256 << 20  # freed heap memory kept before it is given back to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_state: dict[str, bool] = {}


_libc: list[ctypes.CDLL] = []  # glibc, once tuned


def _tune_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.malloc_trim  # noqa: B018 - glibc has it; without it, leave the defaults alone
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    tuned = int(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) == 1 and int(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) == 1
    if tuned:
        _libc.append(libc)
    return tuned


def release_freed_memory() -> None:
    """Between units of work (a shard, a partition): give the heap's free memory back to the OS.

    Kept freed memory serves the batches *within* a unit; across units it only piles up. Measured
    on the 10M-document run (`ingest.check`, ten 18 MB partitions per rank): the rank's RSS grew
    from 195 to 257 MB, partition after partition, with 18 MB live; trimmed before each partition,
    212 MB. Nothing to do when the allocators were not tuned (`malloc_trim` is glibc's)."""
    if _libc:
        _libc[0].malloc_trim(0)


def tune_allocators() -> bool:
    """Apply the settings above (idempotent). Returns whether glibc's malloc was tuned (False off
    glibc, where Arrow keeps its own allocator too)."""
    if "glibc" in _state:
        return _state["glibc"]
    if os.environ.get("THRESHER_DEFAULT_ALLOCATORS") == "1":
        _state["glibc"] = False
        return False
    tuned = _tune_glibc()
    if tuned:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    _state["glibc"] = tuned
    return tuned
