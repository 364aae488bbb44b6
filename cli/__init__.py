"""The ``gtc`` command line: thin typer commands over the library."""

import os
import signal
import sys
import threading
from pathlib import Path


def _busy_machine() -> bool:
    """Other work already occupies a core (1-minute load average)."""
    try:
        return os.getloadavg()[0] >= 0.75
    except OSError:  # not available on this platform
        return False


# Idle OpenMP threads sleep instead of spin-waiting when the machine is already busy. It must be
# set before torch loads its OpenMP runtime. Measured on 2 cores: next to two other jobs, spinning
# threads steal the cores the busy ones need (462 ms per CLUSTER training step spinning, 190 ms
# passive); on an idle machine, passive waiting costs 30–40 % (the default pipeline's pruning stages).
# An explicit user setting wins.
if _busy_machine():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def quiet_interrupts_while_loading() -> None:
    """Ctrl-C while ``gtc`` is still importing typer, rich and its commands exits 130 with no output.

    Python's own handler raised KeyboardInterrupt in the middle of some import, and the console
    script printed its traceback. Only the default handler is replaced (an inherited SIG_IGN, as in a
    background job, stays), only from the main thread, only in the ``gtc`` console script (a program
    or test importing our modules keeps Python's handler), and :func:`interrupts_as_usual` puts it
    back as a command starts (``cli.common.user_errors``): commands handle KeyboardInterrupt
    themselves (clean-up, one line). Until then (typer building the commands, parsing options), an
    interrupt has nothing to clean up."""
    if (
        Path(sys.argv[0] if sys.argv else "").stem == "gtc"
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _exit_quietly)


def interrupts_as_usual() -> None:
    """Undo :func:`quiet_interrupts_while_loading` (the handler is only ours to put back)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _exit_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)


quiet_interrupts_while_loading()
