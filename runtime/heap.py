"""Giving the C heap's free memory back to the system after a large call.

A request's pre-processing and outputs are numpy arrays freed when it ends, but glibc keeps freed
memory in its heap: after one 160,000-node request a server process held 47 MiB more through every
small request after it, on every instance or worker. ``malloc_trim`` returns it; it costs a walk of
the heap, so the servers call it only after a call larger than their soft limits (what calls
within them free, the next ones reuse)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_heap() -> None:
    """``malloc_trim(0)`` where the C library has it; nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
