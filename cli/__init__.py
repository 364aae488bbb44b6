"""The ``gtc`` command line: thin typer commands over the library."""

import os


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
