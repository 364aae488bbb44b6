"""The kernel configs ``bench/kernel.py``'s sweep measured fastest on a GPU, per ``(heads, head_dim, dtype)``.

Data, not logic: ``python bench/kernel_tuned.py bench/results/kernel/kernel.json`` writes this table
from a GPU run's result (each entry with a comment naming the run), and :mod:`trt_plugins.spec`
turns it into ``KernelConfig`` objects (:data:`trt_plugins.spec.TUNED`). Every field is written, so
that a later change of a default cannot change what was measured. Kept apart from ``spec`` so that
the tool rewrites a table and nothing else. Empty until a GPU run has been carried in.
"""

MEASURED: dict[tuple[int, int, str], dict[str, int | bool | str]] = {}
