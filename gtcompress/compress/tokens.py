"""Token (node) pruning: re-exported from :mod:`gtcompress.nn.tokens`, where the code lives.

The node scorer and the per-graph top-k run inside every token-pruned model at inference, and
models never import compression (``tests/test_import_rules.py``), so :class:`TokenSelector` and its
helpers moved to :mod:`gtcompress.nn.tokens`. This module only keeps the old import path,
``from gtcompress.compress.tokens import TokenSelector``, working; new code imports from
:mod:`gtcompress.nn.tokens`.
"""

from __future__ import annotations

from gtcompress.nn.tokens import Selection, TokenSelector, keep_counts, topk_per_graph

__all__ = ["Selection", "TokenSelector", "keep_counts", "topk_per_graph"]
