"""The ``gtc`` command line: thin typer commands over the library."""

import os

# Idle OpenMP threads sleep instead of spin-waiting. Set before torch loads its OpenMP runtime: on a
# machine whose cores are shared with other work, spinning threads steal the very cores the busy
# ones need (measured here, 2 threads next to two other jobs: 462 ms per CLUSTER training step
# with spinning, 190 ms passive, 244 ms on one thread). An explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
