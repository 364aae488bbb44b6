"""Graph readouts against PyG's pooling functions, values and gradients."""

import pytest
import torch
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from gtcompress.nn.blocks import readout

POOLS = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_readout_is_pygs_pooling_with_its_gradient(kind: str) -> None:
    """Graph 1 has no nodes (PyG pools it to 0, for max too) and every value of graph 2 is negative (a max
    seeded with 0 would answer 0 there); graph 0 holds a tie, whose gradient PyG splits between the rows."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, generator=g, dtype=torch.float64)
    h[3:] = -h[3:].abs() - 1.0
    h[1, 2] = h[0, 2] = h[:3, 2].max() + 1.0
    batch = torch.tensor([0, 0, 0, 2, 2, 2, 3])
    ours_in, pyg_in = h.clone().requires_grad_(), h.clone().requires_grad_()
    ours, pyg = readout(ours_in, batch, 4, kind), POOLS[kind](pyg_in, batch, size=4)
    torch.testing.assert_close(ours, pyg, rtol=0, atol=0)
    assert ours[1].abs().sum() == 0 and (kind != "max" or bool((ours[2] < -1.0).all()))
    weights = torch.randn(4, 5, generator=g, dtype=torch.float64)
    (ours * weights).sum().backward()
    (pyg * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, pyg_in.grad, rtol=0, atol=0)


def test_an_unknown_readout_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^unknown readout 'min'; expected 'mean', 'sum' or 'max'$"):
        readout(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1, "min")
