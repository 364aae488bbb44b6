"""Kernel v1 (one program per block of 16 destinations and one head), kept callable for
``bench/kernel.py`` only, so that v2's gains are measured side by side until v2 wins everywhere.

Not used by the op, the plugin or the AOT manifest. Its work per program grows with the largest
in-degree in a block, which is why power-law graphs collapse it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from trt_plugins import spec
from trt_plugins._kernel_v1 import sparse_graph_attention_fwd

BLOCK_M = 16


@functools.cache
def _jit() -> JITFunction:
    return JITFunction(sparse_graph_attention_fwd)


@functools.cache
def _interpreted() -> InterpretedFunction:
    return InterpretedFunction(sparse_graph_attention_fwd)


def sparse_graph_attention_v1(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rowptr: torch.Tensor,
    col: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """v1 on CSR: ``q, k, v [N, H, D]`` float32/float16 -> ``[N, H, D]`` (no validation beyond shapes)."""
    n, h, d = q.shape
    if q.dtype not in (torch.float32, torch.float16):
        raise spec.PluginSpecError(f"kernel v1 takes float32 or float16, got {q.dtype}")
    tau = spec.default_scale(d) if scale is None else scale
    block_d = max(16, spec.next_pow2(d))
    block_e = 32 if block_d <= 64 else 16
    out = torch.empty_like(q)
    if n == 0:
        return out
    kernel: Any = _interpreted() if q.device.type == "cpu" or triton.knobs.runtime.interpret else _jit()
    b = q.new_empty((0, h)) if bias is None else bias.contiguous()
    kernel[(max(1, -(-n // BLOCK_M)), h, 1)](
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        rowptr,
        col,
        b,
        n,
        h,
        out,
        HEAD_DIM=d,
        SCALE=float(tau),
        HAS_BIAS=bias is not None,
        BLOCK_M=BLOCK_M,
        BLOCK_E=block_e,
        BLOCK_D=block_d,
        num_warps=4,
        num_stages=1,
        enable_fp_fusion=spec.FP_FUSION,  # as v2 compiles, so the benchmark compares kernels, not roundings
    )
    return out
