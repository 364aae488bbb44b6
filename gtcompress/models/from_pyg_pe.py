"""Which positional encoding an imported PyG model is served with (part of
:func:`~gtcompress.models.from_pyg.from_pyg`).

A PyG model's encoding is computed by a transform outside the model (``AddRandomWalkPE``,
``AddLaplacianEigenvectorPE``): its modules give the encoding's width, never its kind. The kind
decides what a deployment computes for a graph that comes without its encoding, so a wrong kind is
a silently wrong answer there, while the import itself, run on the PyG model's own encodings (also
by ``example=``), agrees with the PyG model exactly: a model trained on LapPE, imported as RWSE,
answered MUTAG graphs served from their edges up to 11 off. Hence the kind is never assumed: it is
passed as ``pe_kind``, or read from ``example=``'s batch; an example's encoding is also checked
against what the runtime computes for that kind where that is exact (RWSE; a LapPE's eigenvector
signs and repeated eigenvalues' bases are arbitrary, so only "it is not RWSE" is checked for it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from gtcompress.errors import UnsupportedModelError
from gtcompress.graph import GraphBatch
from gtcompress.preprocess.batching import PYG_PE_NAMES
from gtcompress.preprocess.pe import rwse

__all__ = ["PE_KINDS", "RWSE_TOLERANCE", "dtype_tolerance", "example_pe", "pe_kind_for"]

PE_KINDS = ("rwse", "lap")
#: Largest |difference| between an example's encoding and the runtime's RWSE for it to count as RWSE
#: (PyG's ``AddRandomWalkPE`` computes in float32: 2e-7 off ours on PROTEINS).
RWSE_TOLERANCE = 1e-4


def dtype_tolerance(base: float, dtype: torch.dtype) -> float:
    """``base``, or four steps of a coarser floating ``dtype`` (float16 3.9e-3, bfloat16 3.1e-2): a
    half-precision model's (or encoding's) own rounding is that far from a float32 evaluation, so
    ``example=`` refused every float16 or bfloat16 import."""
    return max(base, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else base


_TRANSFORMS = "pe_kind='rwse' (AddRandomWalkPE) or pe_kind='lap' (AddLaplacianEigenvectorPE)"


def example_pe(batch: Any) -> tuple[dict[str, Tensor], Tensor | None]:
    """The encodings a PyG ``Data``/``Batch`` carries: by kind under PyG's attribute names
    (``random_walk_pe``, ...), and the one under ``pe`` (PyG's GPS example), whose kind is unnamed."""
    named = {ours: batch[name] for name, ours in PYG_PE_NAMES.items() if name in batch}
    unnamed = getattr(batch, "pe", None)
    return named, unnamed if isinstance(unnamed, Tensor) else None


def _rwse_diff(batch: Any, pe: Tensor) -> tuple[float, bool]:
    """(max |pe - RWSE the runtime computes from ``batch``'s edges|, whether an edge is repeated)."""
    gb = GraphBatch.from_pyg(batch)
    ei = gb.edge_index.detach().cpu().numpy().astype(np.int64)
    want = rwse(ei, gb.ptr.cpu().numpy(), int(pe.shape[1]))
    diff = float(np.abs(pe.detach().cpu().double().numpy() - want).max()) if want.size else 0.0
    return diff, len(np.unique(ei, axis=1).T) < ei.shape[1]


def pe_kind_for(pe_kind: str | None, example: tuple[Any, Tensor] | None, k: int, where: str) -> str:
    """The kind of the encoding the PE encoder at ``where`` (``k`` columns in) was trained on.

    ``pe_kind`` given: checked against ``example=``'s encoding where there is one. Not given: the
    kind the example's encoding is (named by its attribute, of several the one as wide as the encoder's
    input, or RWSE as the runtime computes it);
    without an example, refused. ``pe_kind`` is one of :data:`PE_KINDS` or ``None`` (``from_pyg``
    checks it before any part is read)."""
    if example is None:
        if pe_kind is None:
            raise ValueError(
                f"pe_kind is required for a model with a PE encoder ({where}, {k} columns in): the encoding is "
                "computed by a transform outside the model, and a deployment given a graph without it computes "
                f"the model's kind from the edges; pass {_TRANSFORMS}, or example=(batch, output) to read it "
                "from the batch"
            )
        return pe_kind
    batch = example[0]
    named, unnamed = example_pe(batch)
    if pe_kind is None and unnamed is None and named:
        # several kinds (AddRandomWalkPE and AddLaplacianEigenvectorPE both run): the encoder's width tells
        # which one it takes, unless both have it
        fits = [kind for kind, t in named.items() if t.dim() == 2 and t.shape[1] == k]
        if len(named) > 1 and len(fits) != 1:
            have = ", ".join(f"{kind} ({t.shape[-1]} columns)" for kind, t in sorted(named.items()))
            raise ValueError(
                f"pe_kind: the example's batch carries encodings of several kinds ({have}) and the PE encoder "
                f"{where} takes {k} columns; pass {_TRANSFORMS}"
            )
        pe_kind = fits[0] if fits else next(iter(named))
    pe = named.get(pe_kind) if pe_kind is not None else None
    pe = pe if pe is not None else unnamed
    if pe is None:
        have = ", ".join(sorted(named)) or "none"
        raise UnsupportedModelError(
            f"example=: the batch carries no encoding for the PE encoder {where} (encodings by kind: {have}); "
            "give it the one the PyG model was run with, as `pe` or under PyG's attribute name "
            "(random_walk_pe, laplacian_eigenvector_pe)"
        )
    if pe.dim() != 2 or pe.shape[1] != k:
        raise UnsupportedModelError(
            f"example=: the batch's encoding has shape {list(pe.shape)}, the PE encoder {where} takes {k} columns"
        )
    diff, repeated = _rwse_diff(batch, pe)
    tolerance = dtype_tolerance(RWSE_TOLERANCE, pe.dtype)
    is_rwse = diff <= tolerance
    # PyG's AddRandomWalkPE sets a repeated edge's step once but counts it in the degree; we count it twice
    dup = "; the batch repeats edges, which PyG's AddRandomWalkPE counts otherwise: remove them" if repeated else ""
    if getattr(batch, "edge_weight", None) is not None:  # AddRandomWalkPE walks by it; a deployment has none
        dup += "; the batch has edge_weight, by which PyG's AddRandomWalkPE weights its walks and the runtime does not"
    if pe_kind is None:
        if not is_rwse:
            raise ValueError(
                f"pe_kind: the example's encoding for {where} is not RWSE as the runtime computes it from the "
                f"edges (max |diff| {diff:.3g}{dup}); pass {_TRANSFORMS}"
            )
        return "rwse"
    if pe_kind == "rwse" and not is_rwse:
        raise UnsupportedModelError(
            f"pe_kind='rwse': the example's encoding for {where} differs from the RWSE the runtime computes from "
            f"the edges (max |diff| {diff:.3g}, tolerance {tolerance:.3g}{dup}): a graph served without its "
            "encoding would be answered otherwise; pass pe_kind='lap' if it is AddLaplacianEigenvectorPE"
        )
    if pe_kind == "lap" and is_rwse:
        raise UnsupportedModelError(
            f"pe_kind='lap': the example's encoding for {where} is RWSE (the runtime's, within {tolerance:.3g}), "
            "not LapPE; pass pe_kind='rwse'"
        )
    return pe_kind
