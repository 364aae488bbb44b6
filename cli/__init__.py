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


#: The commands that run a service: SIGTERM is the stop they are asked for (cli.common.stops_on_sigterm).
SERVICES = frozenset({"serve", "tritonserver"})


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


#: What a service command says when SIGTERM stops it (here, or in ``cli.common.stops_on_sigterm``).
SIGTERM_STOPPED = "stopped (SIGTERM)"


def _service_stopped(signum: int, frame: object) -> None:
    sys.stderr.write(SIGTERM_STOPPED + "\n")
    raise SystemExit(0)


def quiet_interrupts_while_loading() -> None:
    """Ctrl-C while ``gtc`` is still importing typer, rich and its commands exits 130 with no output.

    Python's own handler raised KeyboardInterrupt in the middle of some import, and the console
    script printed its traceback. Only the default handler is replaced (an inherited SIG_IGN, as in a
    background job, stays), only from the main thread, only in the ``gtc`` console script (a program
    or test importing our modules keeps Python's handler), and :func:`interrupts_as_usual` puts it
    back as a command starts (``cli.common.user_errors``): commands handle KeyboardInterrupt
    themselves (clean-up, one line). Until then (typer building the commands, parsing options), an
    interrupt has nothing to clean up.

    So too SIGTERM for ``gtc serve`` and ``gtc tritonserver`` (:data:`SERVICES`): a service manager
    may stop one in its first half second, which Python's default ended with exit status 143; it
    exits 0 with the line the command's own handler prints (``cli.common.stops_on_sigterm``)."""
    if Path(sys.argv[0] if sys.argv else "").stem != "gtc" or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_quietly)
    if sys.argv[1:2] and sys.argv[1] in SERVICES and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _service_stopped)


def interrupts_as_usual() -> None:
    """Undo :func:`quiet_interrupts_while_loading` (the handler is only ours to put back)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _exit_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)


quiet_interrupts_while_loading()
