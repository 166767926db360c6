"""Process-level tuning for the command line and the benchmark scripts (never applied on import).

PyTorch on CPU allocates and frees tensors of several MB for every convolution. glibc serves
blocks that large with fresh mmap pages and hands freed memory back to the OS, so every layer
pays page faults again: encoding 10 s of audio took 80-170 ms from run to run on the 2-core
machine, and a steady 85 ms with freed memory kept for reuse (tools/bench_speed.py).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(limit_bytes: int = 32 << 20) -> bool:
    """Let glibc reuse freed blocks up to ``limit_bytes`` instead of returning them to the OS.

    Returns whether the setting took effect (False on other C libraries, where it does nothing).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, limit_bytes)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError, TypeError):
        return False
