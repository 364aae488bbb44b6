"""COO -> CSR by destination, torch and numpy versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_plugins.csr import edge_index_to_csr, edge_index_to_csr_numpy
from trt_plugins.spec import PluginSpecError


def _random_edges(n: int, e: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, max(n, 1), (2, e), generator=g)
    if e:
        ei = torch.cat([ei, ei[:, :2], torch.tensor([[0], [0]])], dim=1)  # duplicates + a self-loop
    return ei


@pytest.mark.parametrize(("n", "e"), [(0, 0), (1, 0), (1, 1), (5, 0), (6, 20), (50, 300)])
def test_torch_and_numpy_agree_and_are_valid_csr(n: int, e: int) -> None:
    ei = _random_edges(n, e, seed=n + e) if n else torch.zeros(2, 0, dtype=torch.long)
    rowptr, col, perm = edge_index_to_csr(ei, n)
    rowptr_np, col_np, perm_np = edge_index_to_csr_numpy(ei.numpy(), n)
    assert rowptr.dtype == col.dtype == torch.int32 and perm.dtype == torch.int64
    assert rowptr_np.dtype == col_np.dtype == np.int32 and perm_np.dtype == np.int64
    np.testing.assert_array_equal(rowptr.numpy(), rowptr_np)
    np.testing.assert_array_equal(col.numpy(), col_np)
    np.testing.assert_array_equal(perm.numpy(), perm_np)

    assert rowptr.shape == (n + 1,) and int(rowptr[0]) == 0 and int(rowptr[-1]) == ei.shape[1]
    assert torch.all(rowptr[1:] >= rowptr[:-1])
    assert sorted(perm.tolist()) == list(range(ei.shape[1]))  # a permutation: every edge instance kept
    assert torch.equal(col.long(), ei[0, perm])
    dst_sorted = ei[1, perm]
    for i in range(n):
        assert torch.all(dst_sorted[rowptr[i] : rowptr[i + 1]] == i)
    assert torch.equal(torch.bincount(ei[1], minlength=n), (rowptr[1:] - rowptr[:-1]).long())


def test_sort_is_stable_and_bias_follows_perm() -> None:
    ei = torch.tensor([[3, 0, 1, 2, 0, 0], [1, 0, 1, 0, 1, 1]])
    rowptr, col, perm = edge_index_to_csr(ei, 4)
    assert perm.tolist() == [1, 3, 0, 2, 4, 5]  # within a destination, original edge order
    assert rowptr.tolist() == [0, 2, 6, 6, 6]  # nodes 2 and 3 have no incoming edge
    assert col.tolist() == [0, 2, 3, 1, 0, 0]  # duplicate (0 -> 1) kept twice
    bias = torch.arange(6.0)[:, None].expand(-1, 2)
    assert bias[perm][:, 0].tolist() == [1.0, 3.0, 0.0, 2.0, 4.0, 5.0]


def test_int64_output() -> None:
    ei = torch.tensor([[0, 1], [1, 0]])
    rowptr, col, _ = edge_index_to_csr(ei, 2, dtype=torch.int64)
    assert rowptr.dtype == col.dtype == torch.int64
    rowptr_np, col_np, _ = edge_index_to_csr_numpy(ei.numpy(), 2, dtype=np.int64)
    assert rowptr_np.dtype == col_np.dtype == np.int64


@pytest.mark.parametrize(
    ("ei", "n", "match"),
    [
        (torch.zeros(3, 2, dtype=torch.long), 2, r"shape \[2, E\]"),
        (torch.tensor([[0, 2], [1, 0]]), 2, r"outside \[0, 1\]"),
        (torch.tensor([[0, -1], [1, 0]]), 2, r"outside"),
        (torch.zeros(2, 2), 2, "integer"),
        (torch.tensor([[0], [0]]), -1, "num_nodes"),
    ],
)
def test_bad_edge_index_is_rejected(ei: torch.Tensor, n: int, match: str) -> None:
    with pytest.raises(PluginSpecError, match=match):
        edge_index_to_csr(ei, n)
    with pytest.raises(PluginSpecError, match=match):
        edge_index_to_csr_numpy(ei.numpy(), n)


def test_bad_index_dtype_is_rejected() -> None:
    ei = torch.tensor([[0], [0]])
    with pytest.raises(PluginSpecError, match="dtype"):
        edge_index_to_csr(ei, 1, dtype=torch.float32)
    with pytest.raises(PluginSpecError, match="dtype"):
        edge_index_to_csr_numpy(ei.numpy(), 1, dtype=np.int16)
