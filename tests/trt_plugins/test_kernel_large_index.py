"""The kernel on graphs past 2**30 nodes, which ``spec.MAX_INDEX`` admits: the row search's midpoint
``(lo + hi) // 2`` wrapped negative in int32 (a read at ``rowptr[-1e9]``: a crash, or a hang in the
galloping that followed). Galloping's doubling step, which wrapped after 2**30 rows without edges
past a row with edges, is bounded by the rows left; that case needs 6 GB of non-zero row pointers
(every row after the first holds its count), so it is argued in the kernel, not run here.

1.5e9 nodes fit in sparse files: every tensor is a memory-mapped file that was only truncated to
its size, so only the pages the kernel touches exist. Program (0, 0) of ``partials`` alone runs
under Triton's interpreter; the rows with edges lie wholly in chunk 0, which it writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trt_plugins import spec
from trt_plugins.kernels import interpreted_kernel

N = 1_500_000_000  # past 2**30, below spec.MAX_INDEX


def _mapped(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    numel = int(torch.tensor(shape).prod())
    with open(path, "wb") as f:
        f.truncate(numel * torch.empty(0, dtype=dtype).element_size())
    if os.stat(path).st_blocks > 64:  # the file system wrote the zeros out: gigabytes, not a sparse file
        pytest.skip(f"{path.parent} does not keep sparse files")
    return torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)


def test_a_row_past_two_to_the_thirty(tmp_path: Path) -> None:
    """The last of 1.5e9 rows holds the edges: its search starts at lo + hi = 2.25e9 > 2**31."""
    rows, deg = (N - 1,), 4
    rowptr = _mapped(tmp_path / "rowptr", (N + 1,), torch.int32)
    for i, r in enumerate(rows):  # rowptr = [0, ..]: row r gets edges [i*deg, (i+1)*deg)
        rowptr[r + 1 :] = (i + 1) * deg
    q, k, v, out = (_mapped(tmp_path / name, (N, 1, 1), torch.float32) for name in ("q", "k", "v", "out"))
    k[:4, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v[:4, 0, 0] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    col = torch.arange(4, dtype=torch.int32)
    for r in rows:
        q[r, 0, 0] = 1.0
        out[r, 0, 0] = -999.0  # partials must overwrite it
    attrs = spec.validate_attributes(1, 1, 1.0, False)
    spec.validate_inputs(
        [(N, 1, 1)] * 3 + [(N + 1,), (4,), (0, 1)], ["float32"] * 3 + ["int32"] * 2 + ["float32"], attrs
    )
    cfg = spec.select_config(1, 1, "float32")
    part = torch.empty(spec.part_shape(4, 1, 1, cfg), dtype=torch.float32)
    by_name = {"q": q, "k": k, "v": v, "rowptr": rowptr, "col": col, "bias": q.new_empty((0, 1)), "n_nodes": N,
               "n_edges": 4, "out": out, "out_in": out, "part": part}  # fmt: skip
    kernel = interpreted_kernel("partials")
    kernel[(1, 1, 1)](
        *[by_name[n] for n in spec.KERNEL_ARGS["partials"]], **spec.constexprs("partials", attrs, cfg), num_warps=1
    )
    for i, r in enumerate(rows):
        s = torch.tensor([1.0, 2.0, 3.0, 4.0])[i * deg : (i + 1) * deg]
        want = float((torch.softmax(s, 0) * torch.tensor([10.0, 20.0, 30.0, 40.0])[i * deg : (i + 1) * deg]).sum())
        assert float(out[r, 0, 0]) == pytest.approx(want, rel=1e-6)
