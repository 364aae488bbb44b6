"""Numpy-only graph pre-processing shared by training (torch side) and deployment (``runtime/``).

Nothing here imports torch: a deployed model repeats exactly these steps on every request.
"""

from gtcompress.preprocess.batching import NumpyGraph, graph_ptr, split_by_graph, union_graphs
from gtcompress.preprocess.pe import laplacian_pe, rwse
from gtcompress.preprocess.spec import InputSpec, Lowering, choose_lowering
from gtcompress.preprocess.teddy import teddy_edge_scores, teddy_keep_mask, teddy_sparsify

__all__ = [
    "InputSpec",
    "Lowering",
    "NumpyGraph",
    "choose_lowering",
    "graph_ptr",
    "laplacian_pe",
    "rwse",
    "split_by_graph",
    "teddy_edge_scores",
    "teddy_keep_mask",
    "teddy_sparsify",
    "union_graphs",
]
