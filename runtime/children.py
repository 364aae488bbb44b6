"""Child processes that end with the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
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


def exit_if_stop_is_not_heard(grace_s: float) -> None:
    """In a child: end the process ``grace_s`` seconds after SIGTERM or SIGINT if it has not ended by then.

    Python runs a signal's handler between bytecodes only, so a child inside one long native call
    (scipy's LU factorisation of a LapPE for a graph of 100,000 nodes, an ONNX Runtime run) heard
    the SIGTERM of its dead parent (:func:`stop_with_parent`) or the terminal's Ctrl-C only when that
    call returned: minutes later, or never, orphaned on a core meanwhile. The C-level handler writes the
    signal's number to a wake-up fd at once (:func:`signal.set_wakeup_fd`); a thread waiting on it
    gives the handler ``grace_s`` to clean up, then ends the process with the signal's exit status.
    Such calls release the GIL, which is what lets the thread run. Call from the main thread, after
    installing the handlers (the wake-up fd is written only for signals with a Python handler).

    POSIX only: on Windows, whose Python 3.11 has no ``os.set_blocking`` for a pipe (added in 3.12),
    the child would die before measuring anything; a stop there is not a signal another process sends
    (``TerminateProcess`` ends the child outright), so the child keeps the handlers alone."""
    if os.name != "posix":
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block on it
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    stops = {int(signal.SIGTERM), int(signal.SIGINT)}

    def watch() -> None:
        while True:
            try:
                got = os.read(read_fd, 64)
            except OSError:
                return
            heard = [n for n in got if n in stops]
            if heard:
                break
        time.sleep(grace_s)  # the handler's clean-up, when the main thread hears it in time
        os._exit(128 + heard[0])

    threading.Thread(target=watch, name="exit-if-stop-not-heard", daemon=True).start()
