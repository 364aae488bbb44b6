"""Shared helpers for benchmarks: machine description, results folder, data root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or the ``shared/data`` folder next to the repository."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> dict[str, Any]:
    """The runtime's machine description plus the torch side (version, intra-op threads)."""
    import torch

    from runtime.profile import machine_info

    return {**machine_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
