"""Child processes that end with the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable


def stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for the child: SIGTERM when this process dies (Linux ``PR_SET_PDEATHSIG``), so that
    a killed owner (SIGKILL, the OOM killer), which cannot stop its child itself, does not leave it
    running: a ``tritonserver`` holding its port, ``gtc profile``'s measuring process loading a core.
    ``None`` (nothing to run) off Linux and off the main thread: the signal fires when the *thread* that
    started the child ends, and a child started from a worker thread must outlive it."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the owner died between fork and prctl: nobody will signal
            os.kill(os.getpid(), signal.SIGTERM)

    return child


_PR_SET_PDEATHSIG = 1
