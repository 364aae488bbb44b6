r"""The one definition of graph attention, and the functions of its layouts.

For queries :math:`q_i`, keys :math:`k_j`, values :math:`v_j` (per head) and an attention graph
given as edges :math:`j \to i`, the output at node :math:`i` is

.. math::
    o_i = \sum_{e = (j \to i)} \alpha_e v_j, \qquad
    \alpha_e = \frac{\exp(s_e)}{\sum_{e' = (j' \to i)} \exp(s_{e'})}, \qquad
    s_e = \tau\, q_i^\top k_j + b_e

with :math:`\tau = 1/\sqrt{d_h}` and an optional per-edge, per-head bias :math:`b_e`.
Semantics every lowering must reproduce exactly:

* every *edge instance* counts: a duplicated edge contributes twice to both sums;
* a self-loop is an ordinary edge (nothing is added or removed implicitly);
* a node with no incoming edge gets :math:`o_i = 0`;
* a node with an infinite score (float overflow) gets NaN, which the runtime refuses
  (:func:`overflow_to_nan`); the layouts that mask by adding also give NaN where a score may come
  near their mask (:func:`score_bound_rows`).

:func:`sparse_attention` is the reference (Gather + scatter). :func:`dense_attention` is the same
function on a padded per-graph layout, where the multiplicity of each (dst, src) pair enters as
an additive :math:`\log(\text{count})` bias (``-inf`` where there is no edge), so duplicates stay
exact. :func:`padded_attention` is the same function on neighbour lists. Models use whichever
layout is cheaper; tests check all of them against each other.

This module is the bottom of :mod:`gtcompress.nn`'s attention stack and imports nothing of it but
:mod:`~gtcompress.nn.scatter`: the layouts (:mod:`~gtcompress.nn.layout`, which takes :data:`MASK`
from here), the fused op (:mod:`~gtcompress.nn.fused`, whose CPU implementation is
:func:`sparse_attention`) and the multi-head module (:mod:`~gtcompress.nn.mha`) all import it, so
the order ``attention → layout, fused → mha`` has no circle (``tests/test_import_rules.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.nn import functional as F

from gtcompress.nn.scatter import scatter_max, scatter_sum


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor,
    bias: Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Reference sparse attention. ``q,k,v [N,H,D]``, ``edge_index [2,E]`` (src, dst), ``bias [E,H]``."""
    n, _, d = q.shape
    src, dst = edge_index[0], edge_index[1]
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    # Reduce over dim 2, not -1: with E = 0 ONNX Runtime (1.31 CPU) ignores a negative ReduceSum axis on an
    # empty tensor and returns [0,H,D] unreduced, which then breaks the bias Add and the ScatterElements.
    score = (q.index_select(0, dst) * k.index_select(0, src)).sum(dim=2) * tau  # [E,H]
    if bias is not None:
        score = score + bias
    score = overflow_to_nan(score)
    # Half precision softmaxes in float32, as the fused kernel does: a node with 65,505 or more in-edges
    # summed its exp terms (each up to 1) past float16's largest value, and its output was 0. A float32
    # model traces the same graph as before (the branch is on the dtype).
    low = score.dtype in (torch.float16, torch.bfloat16)
    if low:
        score = score.float()
    smax = scatter_max(score.detach(), dst, n)
    ex = torch.exp(score - smax.index_select(0, dst))
    denom = scatter_sum(ex, dst, n)
    alpha = ex / denom.index_select(0, dst)
    if low:
        alpha = alpha.to(v.dtype)
    if dropout > 0.0 and training:
        alpha = F.dropout(alpha, p=dropout, training=True)
    msg = alpha.unsqueeze(-1) * v.index_select(0, src)  # [E,H,D]
    return scatter_sum(msg, dst, n)


#: Finite stand-in for ``-inf`` in dense score biases ("no edge", padding): half of float32's range
#: (about -1.7e38). A mask is *added* to a score, so it must dominate every score short of overflow: a
#: masked cell holds ``score + MASK``, which stays below every real score while scores are within
#: ``|MASK| / 2`` of zero (features of 1e16 give scores near 1e32: a mask of -1e30 there hands a
#: non-edge the weight). ``exp(MASK - m) == 0`` exactly for any real row maximum ``m``, and a row
#: made only of MASK stays finite (no NaN in the softmax or its gradient); such rows are zeroed
#: through ``row_valid``.
MASK = torch.finfo(torch.float32).min / 2

#: How far below its row's largest score :func:`dense_attention` lifts a masked score (``lift_masked``)
#: before the softmax: ``exp(-80)`` (1.8e-35) is still a normal float32, so no exp term computes through
#: denormals (ONNX Runtime's CPU exp does so from about -87 on, and clamps only below -104).
MASK_LIFT = 80.0


def overflow_to_nan(score: Tensor) -> Tensor:
    """``score`` with its infinite entries made NaN.

    An infinite score is an overflow: float32 lost the score's value, and a sum that overflowed to
    ``-inf`` may stand for any value (``a - b`` of two large products, one of which rounded past the
    range). The softmax would weigh ``-inf`` as 0 and answer a finite value that no check of the output
    can catch; as NaN it reaches the output, which the runtime refuses (a 400 naming the input). ``+inf``
    gave NaN already (``inf - inf`` in the softmax). Same rule in every layout: this function in the
    scatter reference (and the plugin's ONNX function and kernel), a row minimum on the neighbour lists
    (:func:`overflow_rows`), and on the dense layout, which masks by adding, a bound from Q and K that
    also refuses scores near the mask (:func:`score_bound_rows`; float16 the row minimum). ``x - x``
    keeps its NaN through ONNX Runtime and torch.compile (checked: neither folds it to 0).

    Near the range's end the rule is only as exact as the sum it judges: where ``sum_d |q_d k_d|`` passes
    float32's largest value but ``q . k`` does not, whether a partial sum overflows depends on the order of
    the sum, which differs between torch's CPU reduction (the reference and the op's CPU implementation),
    ONNX Runtime's ReduceSum (the plugin's ONNX function), the GEMMs of the dense layout and the kernel. Such
    a score is finite in one and ``inf`` in another, so lowerings may disagree on which graph answers NaN
    (a refusal) there (4 of 400 graphs with linked nodes at 1e18-1e20, D = 32); none answers it finitely
    and wrongly. Scaling ``q`` by a power of two before the sum would move that edge 256x further out, in
    every layout at once (the kernel and the TensorRT plugin too), and the padded layout, which folds the
    scale into its weights, could not follow."""
    return score + (score - score)  # inf - inf is NaN; a finite score is unchanged (x + 0)


def overflow_rows(score: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """0 for each row of ``score`` (reduced over ``dim``, kept) without an infinite entry, NaN for each
    row with one: added to the factor that zeroes rows without keys, it carries a row's overflow to its
    output (see :func:`overflow_to_nan`). One ReduceMin over the scores, where a Where over them would
    read and write them again; ``+inf`` needs no test (the softmax gives NaN for it)."""
    low = score.detach().amin(dim=dim, keepdim=True)
    return low - low  # -inf - -inf is NaN


def score_bound_rows(q: Tensor, k: Tensor, tau: float, limit: float) -> Tensor:
    """0 for each query row of ``q [..., L, D]`` whose scores against every key of ``k [..., L, D]`` stay
    within ``limit`` in magnitude, NaN for each row where one may not: ``|tau q.k| <= tau |q|_1 max |k|_1``.

    For layouts that mask by adding (:func:`dense_attention`): a score near overflow lets a non-edge
    outrank real edges past the mask, or overflows to ``-inf`` (see :func:`overflow_to_nan`), and either
    is a finite wrong answer. With every score within a quarter of the mask, the mask dominates and
    nothing overflows. A bound from two ReduceL1 over Q and K, not a scan of the scores: it reads
    ``D / L`` of what a ReduceMin over the scores would. On ONNX Runtime CPU (1 thread, a 4-layer GT,
    hidden 64, 32 SBM graphs of about 117 nodes) the scan made the model 10-19 % slower, the bound 0-6 %
    (ReduceL1 about 2.5 % of its profile). It can refuse a row whose scores stay in range (by up to a
    factor ``D``); a norm that overflows is ``inf``, which refuses its rows.

    The bound takes every key of the row, non-edges too: a GT node with one feature at 1e20-1e30 scores
    1e40 or more against its own key (no edge), so the dense layout answers NaN for its row, a refusal,
    where the edge lowerings and torch answer finitely. Selecting non-edges out before the softmax (a
    Where, then a row minimum over the scores) answers it, but held one more score-sized tensor a head on
    ONNX Runtime CPU (66 against 45 B a cell at 4 heads) and took 16-25 % longer on 16 graphs of 128 nodes:
    a cost on every call for inputs no trained model sees, whose answer here is a refusal, never wrong."""
    qn = torch.linalg.vector_norm(q.detach(), ord=1, dim=-1, keepdim=True)  # [..., L, 1]
    kn = torch.linalg.vector_norm(k.detach(), ord=1, dim=-1, keepdim=True).amax(dim=-2, keepdim=True)  # [..., 1, 1]
    # Scaled so that the bound overflows to inf past `limit`, and inf - inf is NaN: two arithmetic ops on
    # the rows, where a Where against scalars (and a Greater) took ONNX Runtime 0.7 ms on [32, 4, 132, 1].
    big = qn * (kn * (tau * torch.finfo(q.dtype).max / limit))
    return big - big


def mask_value(dtype: torch.dtype) -> float:
    """:data:`MASK` as a finite value of ``dtype``: half the most negative finite value of ``dtype``,
    or :data:`MASK` where that is lower (float64).

    A mask is half the range, not its end: it leaves room for real scores and biases added to it
    without overflowing (in float16 a lower mask rounds to ``-inf``: a row of masked scores, a node
    without incoming edge or padding, is then all ``-inf``, its softmax NaN, and the zeroing
    multiplication keeps the NaN), and ``exp(mask - m)`` is still exactly 0 for any real row
    maximum ``m``."""
    return max(MASK, torch.finfo(dtype).min / 2)


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
    row_valid: Tensor | None = None,
    lift_masked: bool = False,
    graph_bias: Tensor | None = None,
) -> Tensor:
    """Padded attention: ``q,k,v [B,H,L,D]``, ``attn_bias [B,1|H,L,L]`` (``-inf`` or :data:`MASK` = no edge;
    cast to the dtype of ``q`` with masked entries at :func:`mask_value`).

    Rows without any key (padding, or nodes with no incoming edge) give zeros. ``row_valid``
    (``[B,1|H,L|1,1]``, 1.0 / 0.0 in the dtype of ``q``) says which rows have one; callers that
    pass it promise a bias whose masked entries are :data:`MASK` (finite), so the per-call mask
    scan and clamp are skipped. The softmax is one ``Softmax`` node in ONNX (a single fused pass
    in ONNX Runtime, several times cheaper than max/sub/exp/sum/div as separate nodes); rows are
    zeroed by a multiplication (cheaper than a broadcast ``Where`` there, and never ``0 * inf``:
    the clamped scores are finite).

    ``lift_masked`` is for a bias that masks most pairs (an attention graph: GT's edges, GPS's
    sparsified graph): masked scores are lifted to :data:`MASK_LIFT` below their row's largest score
    and their weights zeroed after the softmax, the same weights without the float32 denormals that
    make ONNX Runtime's CPU Softmax 11x slower on a mostly masked row (``bench/HISTORY.md``). It costs
    a ReduceMax, a Max and a Mul over the scores: more than it saves where little is masked (padding
    only: GPS's complete-graph attention and Graphormer on single graphs measured 7-16 % slower).
    ``graph_bias`` (``[B,1,L,L]``), where given, says which weights the lift zeroes instead of
    ``attn_bias``: a per-head ``attn_bias`` masking the same pairs in every head (GT's edge-feature bias)
    would take a mask a head, 5 B a cell each (boolean, then float32), where the graph's takes one.
    """
    d = q.shape[-1]
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    mask = mask_value(q.dtype)
    # float16's range is too narrow for the bound's slack (a factor up to D: q and k entries of 4 at D = 64
    # would pass it): there, after the scores, their row minimum
    nan_rows = None if q.dtype == torch.float16 else score_bound_rows(q, k, tau, -mask / 4)
    if row_valid is None:
        row_valid = (attn_bias.amax(dim=-1, keepdim=True) > mask).to(q.dtype)
        attn_bias = attn_bias.clamp(min=mask)
    elif attn_bias.dtype != q.dtype:
        attn_bias = attn_bias.clamp(min=mask)  # a float32 MASK would become -inf in float16
    # Biases built in float32 (edge counts) meet half-precision scores in the scores' dtype: added as
    # they were, they promoted the scores (and the output) to float32, which the next half-precision
    # Linear refused. Python-level checks: a float32 model traces no Cast.
    if attn_bias.dtype != q.dtype:
        attn_bias = attn_bias.to(q.dtype)
    if row_valid.dtype != q.dtype:
        row_valid = row_valid.to(q.dtype)
    if statically_known_true(attn_bias.shape[-2] == 1):
        # A per-key bias (key padding: GPS) rides in the score MatMul as one more dimension,
        # [tau q, 1] . [k, b] = tau q.k + b, instead of a broadcast Add over the whole score matrix.
        # Only a bias built with one query row (a literal 1): a per-pair bias whose query size is a
        # graph size that is 1 in the traced example (the tokens a layer keeps, round(ratio * 9) for
        # ratio < 1/6) would make the export take this path for every input.
        key_bias = attn_bias.transpose(-1, -2).expand(*k.shape[:-1], 1).to(q.dtype)
        q = torch.cat([q * tau, torch.ones_like(q[..., :1])], dim=-1)
        score = torch.matmul(q, torch.cat([k, key_bias], dim=-1).transpose(-1, -2))
    else:
        score = torch.matmul(q, k.transpose(-1, -2)) * tau + attn_bias
    if nan_rows is None:  # before the lift, which would raise an overflowed -inf to the floor
        nan_rows = overflow_rows(score, -1)
    if lift_masked:
        # exp of a masked score (about MASK below the row's largest) underflows through float32 denormals,
        # which ONNX Runtime's CPU Softmax computes about 11x slower. Lifted to `floor`, MASK_LIFT below the
        # row's largest score, its exp is a normal float, and its weight is zeroed after the softmax. Real
        # scores above the floor and the row sums are unchanged (the lifted terms, at most L * 1.8e-35,
        # vanish against a sum of at least 1), so real weights round as before; a real score below it
        # weighs exp(-80) / sum instead of less, a change under 1.8e-35. Where 80 is under 128 units in the
        # last place of |max| the floor is those 128 units below it instead (2**-16 of |max| in float32, past
        # 5.2e6; all of |max| in bfloat16, whose 8 bits put 80 below any score past 32768 back on that score):
        # a floor that rounds onto the largest score would weigh every lifted term as much as it. A row
        # without any key is lifted onto itself and zeroed, as before, by `row_valid`.
        # Each step rebinds `score`, so that eager torch holds two score-sized tensors at a time, as the
        # plain softmax does. A Mul, not a Where: ONNX Runtime reuses a Mul's input buffer (a Where took
        # 16-45 B a cell more at 1-8 heads), at the cost of a float mask of the bias's size.
        row_max = score.detach().amax(dim=-1, keepdim=True)
        floor = row_max - (row_max.abs() * (128 * torch.finfo(score.dtype).eps)).clamp(min=MASK_LIFT)
        score = torch.maximum(score, floor)
        score = torch.softmax(score, dim=-1)
        keep = attn_bias if graph_bias is None else graph_bias  # masked entries: at most `mask`, or -inf
        alpha = score * (keep > mask / 2).to(score.dtype)
        del score
    else:
        alpha = torch.softmax(score, dim=-1)
    if dropout > 0.0 and training:
        alpha = F.dropout(alpha, p=dropout, training=True)
    return torch.matmul(alpha, v) * (row_valid + nan_rows)


def padded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    nbr_src: Tensor,
    nbr_mask: Tensor,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Neighbour-list (ELL) layout: ``nbr_src [N,K]`` incoming sources per node, left-aligned
    (slot 0 is valid iff the node has an incoming edge), ``nbr_mask [N,K]``, ``bias [N,K,H]`` per slot.

    Laid out for ONNX Runtime: keys and values are gathered per (node, head) row straight into
    ``[N,H,K,D]`` (row ``src * H + h`` of ``[N*H, D]``), so both contractions are batched MatMuls with
    no Transpose of a gathered tensor (``kn @ q`` and ``alpha @ vn``), instead of broadcast Mul +
    ReduceSum over ``[N,K,H,D]``. Padding enters as the finite additive :data:`MASK` and the
    softmax is one ``Softmax`` node; nodes without incoming edges are zeroed by a multiplication.
    """
    n, h, d = q.shape
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    heads = torch.arange(h, dtype=nbr_src.dtype, device=nbr_src.device).view(1, h, 1)
    rows = (nbr_src.unsqueeze(1) * h + heads).reshape(-1)  # [N*H*K] rows of [N*H, D]
    kn = k.reshape(-1, d).index_select(0, rows).view(n, h, -1, d)  # [N,H,K,D]
    vn = v.reshape(-1, d).index_select(0, rows).view(n, h, -1, d)
    score = torch.matmul(kn, (q * tau).unsqueeze(-1)).squeeze(-1)  # [N,H,K]
    if bias is not None:
        score = score + bias.transpose(1, 2)
    score = mask_slots(score, nbr_mask.unsqueeze(1))
    alpha = torch.softmax(score, dim=-1)
    row_valid = nbr_mask[:, :1].to(score.dtype).unsqueeze(-1) + overflow_rows(score, -1)  # [N,H,1]
    out = torch.matmul(alpha.unsqueeze(2), vn).squeeze(2)  # [N,H,D]
    return out * row_valid


def mask_slots(score: Tensor, mask: Tensor) -> Tensor:
    """Neighbour-list scores with each padding slot (``mask`` False) set to the dtype's lowest finite value.

    Set, not added: a padding slot gathers a real row (source 0), and an added mask left it that row's
    score plus the mask, which outranked a real slot once the gathered score passed half the range,
    and turned NaN, in every padded row of the call, when it overflowed. Set to the lowest finite
    value, it is below or equal to every finite real score and its exp is 0 next to any of them, and a
    row of padding alone (a node without incoming edges) stays finite for the zeroing that follows."""
    return torch.where(mask, score, torch.finfo(score.dtype).min)
