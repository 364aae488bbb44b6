"""The sizes of the layout tensors a pre-processed request supplies, checked against its graph.

The server rebuilds every layout after merging requests (merging renumbers nodes), so their values are
never read; a size that cannot be the graph's is still refused, naming the tensor, since Triton, which
takes the layout as sent, could not answer such a request right. Kept apart from :mod:`runtime.served`,
which calls :func:`check_layout_sizes` for every full input set.
"""

from __future__ import annotations

import numpy as np

from runtime.errors import ShapeError

_LAYOUT_DIMS = {"node_slot": "n", "nbr_src": "n", "nbr_edge": "n", "nbr_mask": "n", "rowptr": "n+1"}
_LAYOUT_DIMS.update({"col": "e", "perm": "e", "pad_mask": "rows", "node_counts": "b"})


def check_layout_sizes(inputs: dict[str, np.ndarray], n: int, e: int, b: int, widest: int) -> None:
    """Sizes of supplied layout tensors must agree with the graph and with each other (they are rebuilt,
    not trusted, so their values are not read): a request whose layout cannot be its graph's is refused
    rather than served, since Triton, which takes the layout as is, could not answer it right. ``pad_mask``
    has one row per graph, or fewer when small graphs share rows (packed), and a column per node of the
    largest graph (``widest``). The degree-bucketed neighbour lists (``nbr_node_b``, ``nbr_src_b``, ``nbr_edge_b``,
    ``nbr_mask_b``, ``nbr_inv``: :func:`gtcompress.preprocess.layouts.bucketed_layout`) have a row per
    node, plus a dummy row for each bucket no node falls in."""
    sizes = {"n": (n, n), "n+1": (n + 1, n + 1), "e": (e, e), "b": (b, b), "rows": (1, b)}
    for name, what in _LAYOUT_DIMS.items():
        a = inputs.get(name)
        lo, hi = sizes[what]
        if a is not None and not lo <= a.shape[0] <= hi:
            implied = f"1 to {b} rows" if what == "rows" else str(hi)
            raise ShapeError(name, f"dimension 0 is {a.shape[0]} but the graph implies {implied}")
    pad = inputs.get("pad_mask")
    if pad is not None and pad.shape[1] != widest:
        raise ShapeError("pad_mask", f"dimension 1 is {pad.shape[1]} but the largest graph has {widest} nodes")
    _check_same_shape(inputs, ["nbr_src", "nbr_edge", "nbr_mask"], None)
    inv = inputs.get("nbr_inv")
    if inv is not None and inv.shape[0] != n:
        raise ShapeError("nbr_inv", f"dimension 0 is {inv.shape[0]} but the graph implies {n}")
    buckets = [name[len("nbr_node_") :] for name in inputs if name.startswith("nbr_node_")]
    rows = 0
    for k in buckets:
        r = inputs[f"nbr_node_{k}"].shape[0]
        if r < 1:
            raise ShapeError(f"nbr_node_{k}", "dimension 0 is 0 but every bucket has a row (a dummy one when empty)")
        _check_same_shape(inputs, [f"nbr_src_{k}", f"nbr_edge_{k}", f"nbr_mask_{k}"], (f"nbr_node_{k}", r))
        rows += r
    if buckets and not n <= rows <= n + len(buckets):
        names = ", ".join(f"nbr_node_{k}" for k in buckets)
        raise ShapeError(
            f"nbr_node_{buckets[0]}",
            f"the buckets' rows ({names}) add up to {rows} but the graph's {n} nodes imply {n} to "
            f"{n + len(buckets)} (a row per node, and one for each empty bucket)",
        )


def _check_same_shape(inputs: dict[str, np.ndarray], names: list[str], rows: tuple[str, int] | None) -> None:
    """The neighbour-list tensors ``names`` (sources, edge ids, mask of the same slots) share one shape,
    and with ``rows`` (the bucket's ``nbr_node_b`` and its length) that many rows."""
    present = [(name, inputs[name]) for name in names if name in inputs]
    if not present:
        return
    first, shape = present[0][0], present[0][1].shape
    if rows is not None and shape[0] != rows[1]:
        raise ShapeError(first, f"dimension 0 is {shape[0]} but {rows[0]} has {rows[1]} rows")
    for name, a in present[1:]:
        if a.shape != shape:
            raise ShapeError(
                name, f"shape {list(a.shape)} differs from {first}'s {list(shape)}: they index the same slots"
            )
