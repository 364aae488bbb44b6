"""Token-pruned attention on node rows (``TokenSelector.attend_nodes``) against the padded path."""

import pytest
import torch

from gtcompress.nn.attention import MASK
from gtcompress.nn.layout import DenseLayout
from gtcompress.nn.mha import MultiHeadAttention
from gtcompress.nn.tokens import TokenSelector

#: graphs per batch: a lone node, graphs keeping one token at every ratio, and larger ones of mixed sizes
SIZES = [(1,), (2, 1, 3), (9,), (7, 5, 9, 2), (1, 40, 17, 1, 33)]


def _bias(kind: str, lay: DenseLayout, heads: int, gen: torch.Generator) -> torch.Tensor:
    """The three biases a token-pruned layer gets: GPS's key padding ``[B,1,1,L]``, GT's edge mask
    ``[B,1,L,L]`` (MASK off the edges, rows without an edge included) and Graphormer's ``[B,H,L,L]``."""
    b, length = lay.valid.shape
    pad = torch.where(lay.valid, 0.0, MASK)[:, None, None, :]
    if kind == "key":
        return pad
    if kind == "edges":
        edges = torch.rand(b, 1, length, length, generator=gen) < 0.3
        return torch.where(edges, torch.log1p(torch.rand(b, 1, length, length, generator=gen)), MASK) + pad
    return torch.randn(b, heads, length, length, generator=gen) + pad


@pytest.mark.parametrize("kind", ["key", "edges", "heads"])
@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.1])
def test_attention_on_node_rows_answers_as_the_padded_path_bit_for_bit(kind: str, ratio: float) -> None:
    """The node-row path moves kept tokens to heads and back by Gathers instead of the padded path's
    GatherElements, ScatterElements and Transposes (faster on ONNX Runtime): the same selection and the
    same numbers, dropped nodes exactly 0."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn, sel = MultiHeadAttention(16, 4, 4).eval(), TokenSelector(16, ratio).eval()
    for sizes in SIZES:
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        lay = DenseLayout.from_batch(batch, len(sizes))
        h = torch.randn(batch.shape[0], 16, generator=gen)
        bias = _bias(kind, lay, 4, gen)
        with torch.no_grad():
            ref = lay.unpad(sel.attend_dense(attn, lay.pad(h), bias, lay.valid))
            out = sel.attend_nodes(attn, h, lay, bias)
            kept = lay.unpad(sel.select(lay.pad(h), lay.valid)[0].keep.unsqueeze(-1)).squeeze(-1)
        if ratio >= 0.5:  # the same matrix products as the padded path: bit for bit
            assert torch.equal(out, ref), sizes
        else:  # the padded path projects a lone kept row of 9 as a matrix-vector product, rounded otherwise
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6, msg=str(sizes))
        assert (out[~kept] == 0).all() and (out[kept] != 0).any(), sizes


def test_attention_on_node_rows_trains_as_the_padded_path() -> None:
    """In training the node-row path is the padded one (complete queries, straight-through mask)."""
    torch.manual_seed(0)
    attn, sel = MultiHeadAttention(8, 2, 4), TokenSelector(8, 0.6)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    lay = DenseLayout.from_batch(batch, 2)
    h = torch.randn(8, 8)
    bias = torch.where(lay.valid, 0.0, MASK)[:, None, None, :]
    out = sel.attend_nodes(attn, h, lay, bias)
    assert torch.equal(out, lay.unpad(sel.attend_dense(attn, lay.pad(h), bias, lay.valid)))
    out.pow(2).sum().backward()
    assert sel.score.weight.grad is not None and sel.score.weight.grad.abs().sum() > 0
