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


def _program_is_gtc() -> bool:
    """This process is the ``gtc`` program: its console script, or ``python -m cli.main``.

    Python sets ``sys.argv[0]`` to ``"-m"`` while it locates the module ``-m`` names, which imports
    this package first; a program or test that imports ``cli`` otherwise has an argv[0] of its own."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or Path(argv0).stem == "gtc"


#: Read once, as this package loads: ``python -m`` replaces argv[0] with cli/main.py's path afterwards.
PROGRAM = _program_is_gtc()


def quiet_interrupts_while_loading() -> None:
    """Ctrl-C while ``gtc`` is still importing typer, rich and its commands exits 130 with no output.

    Python's own handler raised KeyboardInterrupt in the middle of some import, and the console
    script printed its traceback. Only the default handler is replaced (an inherited SIG_IGN, as in a
    background job, stays), only from the main thread, only in the ``gtc`` program (:data:`PROGRAM`: a
    program or test importing our modules keeps Python's handler), and :func:`interrupts_as_usual` puts it
    back as a command starts (``cli.common.user_errors``): commands handle KeyboardInterrupt
    themselves (clean-up, one line). Until then (typer building the commands, parsing options), an
    interrupt has nothing to clean up.

    So too SIGTERM for ``gtc serve`` and ``gtc tritonserver`` (:data:`SERVICES`): a service manager
    may stop one in its first half second, which Python's default ended with exit status 143; it
    exits 0 with the line the command's own handler prints (``cli.common.stops_on_sigterm``)."""
    if not PROGRAM or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_quietly)
    if sys.argv[1:2] and sys.argv[1] in SERVICES and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _service_stopped)


def interrupts_as_usual() -> None:
    """Undo :func:`quiet_interrupts_while_loading` (the handler is only ours to put back)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _exit_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupts_ignored_from_now() -> None:
    """The command's work is done, whichever way it ended: a Ctrl-C from here on is ignored, so that
    ``gtc`` exits with the command's own status and nothing more on stderr.

    Exiting still runs Python code (typer's exit, atexit and torch's finalizers, threading's shutdown),
    where a KeyboardInterrupt printed a traceback ("Exception ignored in …"), or exit 130 with the
    output complete; and interpreter finalisation puts SIGINT back to the system default, which
    then killed the process (status -2) after its output was written. Only ``SIG_IGN`` survives
    finalisation. Only in the ``gtc`` program (:data:`PROGRAM`), from the main thread.

    It also forgets a Ctrl-C that CPython takes for the program's end though it was caught: a
    KeyboardInterrupt leaving an ``exec``/``eval`` of a string (which dataclasses and namedtuple run
    to define their methods) sets the interpreter's "unhandled KeyboardInterrupt" flag for good, and
    ``python -m`` then ends itself by SIGINT once finalised, after "interrupted" and whatever status
    the command had (the console script exits through another path that does not look). Each ``exec``
    of a string resets that flag as it starts (CPython's ``run_eval_code_obj``): running an empty one
    clears it without reaching into the interpreter's private state."""
    if PROGRAM and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        exec("")


quiet_interrupts_while_loading()
