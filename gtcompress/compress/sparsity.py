r"""Unstructured weight sparsity: ℓ0-ball projection (TEDDY) and gradual magnitude pruning.

**Projection.** :func:`l0_project_` keeps the :math:`k` largest-magnitude entries over *all*
chosen parameters together (one global threshold) and zeroes the rest — the Euclidean projection
onto :math:`\{w : \|w\|_0 \le k\}`. Run after every optimiser step, this is projected gradient
descent on the ℓ0 ball (TEDDY). By default the chosen parameters are the weight matrices and
embedding tables (``ndim ≥ 2``); biases and norm parameters (1-D) are excluded.

**Gradual magnitude pruning** (Zhu & Gupta 2017, the pruning half of GraNet): sparsity rises along
:math:`s_t = s_f (1 - (1 - t/T)^3)` and the same projection enforces it after each step.

Honest accounting: the zeros stay inside dense matrices, so dense GEMMs (CPU, GPU, TensorRT) do
exactly the same work; :mod:`gtcompress.cost` reports this as ``nonzero_params``/sparsity, not as
fewer FLOPs. Only sparse kernels or structured pruning turn it into speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.optim.optimizer as _optim
from torch import nn

__all__ = ["cubic_sparsity", "l0_project_", "nonzero", "projected", "prunable_weights"]


def prunable_weights(model: nn.Module, include_1d: bool = False) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the weights sparsity applies to (``ndim ≥ 2`` unless ``include_1d``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and (include_1d or p.dim() >= 2)]


def nonzero(params: list[nn.Parameter]) -> int:
    return sum(int(torch.count_nonzero(p)) for p in params)


@torch.no_grad()
def l0_project_(params: list[nn.Parameter] | list[torch.Tensor], k: int) -> None:
    """In place: keep exactly the ``k`` largest-magnitude entries over all ``params`` (ties broken
    by position), zero every other entry."""
    total = sum(p.numel() for p in params)
    if k >= total:
        return
    flat = torch.cat([p.detach().reshape(-1).abs() for p in params])
    keep = torch.zeros(total, dtype=torch.bool, device=flat.device)
    if k > 0:
        # topk alone picks an unspecified subset of equal magnitudes (on CPU from the middle of the
        # tensor: of 10 equal entries, k = 3 kept positions 6-8), so tied weights such as norm scales
        # at 1.0 were zeroed arbitrarily; its k-th value is the threshold, and ties at it go by position.
        thr = torch.topk(flat, k, sorted=False).values.min()
        above, tied = flat > thr, flat == thr
        keep = above | (tied & (torch.cumsum(tied, 0) <= k - int(above.sum())))
    offset = 0
    for p in params:
        n = p.numel()
        p.mul_(keep[offset : offset + n].view_as(p).to(p.dtype))
        offset += n


def cubic_sparsity(step: int, total: int, final: float, start_frac: float = 0.0, end_frac: float = 0.75) -> float:
    """Zhu & Gupta's schedule: 0 before ``start_frac·total``, ``final`` after ``end_frac·total``."""
    t0, t1 = start_frac * total, max(end_frac * total, start_frac * total + 1)
    if step <= t0:
        return 0.0
    x = min(1.0, (step - t0) / (t1 - t0))
    return final * (1.0 - (1.0 - x) ** 3)


@contextmanager
def projected(params: list[nn.Parameter], k_at_step: Callable[[int], int]) -> Iterator[dict[str, Any]]:
    """While active, every optimiser step that updates ``params`` is followed by
    ``l0_project_(params, k_at_step(step))``. Works with optimisers created elsewhere
    (:func:`gtcompress.train.loop.train`) through torch's global step post-hook."""
    ids = {id(p) for p in params}
    state: dict[str, Any] = {"steps": 0}

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not any(id(p) in ids for g in optimizer.param_groups for p in g["params"]):
            return
        state["steps"] += 1
        l0_project_(params, k_at_step(state["steps"]))

    handle = _optim.register_optimizer_step_post_hook(hook)
    try:
        yield state
    finally:
        handle.remove()
