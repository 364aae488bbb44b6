"""Shared helpers for benchmarks: machine description, results folder, data root."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or the ``shared/data`` folder next to the repository."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(),
    }
