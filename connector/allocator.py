"""Process memory settings: glibc malloc tuned so resident memory stays flat while writers run,
and the start-up objects moved out of the garbage collector's scans.

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
import gc
import os
import sys
import threading

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


_freeze_lock = threading.Lock()
_frozen = False


def freeze_startup_objects() -> bool:
    """Move every object alive now into the collector's permanent generation, once per process.

    The imports (the Stripe SDK's resource classes, SQLAlchemy, pydantic, simple-salesforce),
    the config, the compiled mappings and the clients are a few hundred thousand tracked
    objects that live as long as the process. Every full collection walks all of them, and a
    run allocates enough containers per record to trigger one every few thousand records:
    measured with bench/cpu_per_record.py (n = 2,000, five runs each), a re-check of unchanged
    orders cost 0.063 to 0.111 ms per order without this and 0.062 to 0.068 with it, and a
    create 0.95 to 1.01 ms against 0.87 to 0.96. Frozen objects are never collected, so this
    runs once, when the first pipeline is built: whatever that run later drops in a reference
    cycle stays (a bounded, one-time cost), where freezing before every run of a daemon would
    keep each run's cycles for good. Returns whether this call froze.
    """
    global _frozen
    with _freeze_lock:
        if _frozen:
            return False
        _frozen = True
        # Garbage of start-up (parsed YAML, import-time temporaries) is freed, not frozen.
        gc.collect()
        gc.freeze()
        return True
