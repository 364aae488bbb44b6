"""Building blocks shared by every model: the one attention definition and its layouts, the fused op,
the multi-head module, token selection, encoders, FFN, MPNN.

Nothing here imports :mod:`gtcompress.models` or :mod:`gtcompress.compress` (they build on it), and
the submodules load on demand: this file imports none of them.
"""
