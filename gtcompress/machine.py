"""What this machine has, for refusing work that cannot fit before it starts (torch-free)."""

from __future__ import annotations

import os


def machine_memory() -> int | None:
    """Physical memory in bytes, or ``None`` where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
