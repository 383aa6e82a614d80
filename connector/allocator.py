"""glibc malloc settings that keep the connector's resident memory flat while writers run.

Measured with bench/sync_bench.py at N = 100,000 (32 writer threads, 25 ms per Stripe request):
malloc held 64 MiB of arenas for 27 MiB in use. Two defaults of glibc cause the difference:

- Every thread that allocates while another holds the main arena gets an arena of its own, up
  to 8 per core. The writer pool's threads (up to `max_in_flight`, 32 by default) each parse
  Stripe responses, so a run spreads its short-lived buffers over 16 arenas, and memory freed
  in one arena is of no use to the next thread's allocations in another. Two arenas are enough
  for one main thread plus writers that wait on the network most of the time.
- Blocks above the mmap threshold (128 KiB) are mapped and unmapped, but glibc raises the
  threshold to the size of each mapped block it frees (up to 32 MiB): after the first Bulk API
  result set (megabytes of CSV text) is freed, the next ones are carved from the heap, whose
  top is only trimmed when it is free. A fixed threshold keeps large, short-lived buffers
  mapped, so freeing one returns its pages at once.

Python's own small objects live in pymalloc's arenas, which these settings do not touch.
Settings apply to arenas and blocks allocated afterwards, so `tune()` runs first thing in
`connector.__main__`, before the imports and before any thread. Elsewhere than glibc (musl,
macOS) it does nothing; `MALLOC_ARENA_MAX` in the environment, when set, is left to win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024  # bytes; a Bulk result set or a page's JSON text is far above it


def tune() -> dict[str, bool]:
    """Apply the settings above; returns which ones glibc accepted (empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}  # not glibc (musl has no mallopt): its allocator, its defaults
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: dict[str, bool] = {}
    if "MALLOC_ARENA_MAX" not in os.environ:
        done["arena_max"] = bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        done["mmap_threshold"] = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return done
