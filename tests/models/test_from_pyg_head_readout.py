"""``from_pyg`` on the heads and readouts PyG users write beyond examples/graph_gps.py: a head with
Dropout or widths that do not halve, and ``global_max_pool`` / ``MaxAggregation``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.nn import global_max_pool  # noqa: E402

from gtcompress.errors import UnsupportedModelError  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402
from tests.models.test_from_pyg import (  # noqa: E402
    SIZES,
    TOL,
    ExampleGPS,
    GinLapGPS,
    PoolModuleGPS,
    max_diff,
    molecules,
    ours_run,
    pyg_run,
    warm_up,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only contend on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "head",
    [
        lambda: nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 1)),
        lambda: nn.Sequential(
            nn.Dropout(0.2), nn.Linear(32, 20), nn.ReLU(), nn.Linear(20, 7), nn.ReLU(), nn.Linear(7, 3)
        ),
    ],
)
def test_a_head_with_dropout_and_its_own_widths_imports(tmp_path: Path, head: Callable[[], nn.Module]) -> None:
    """PyG's common ``Sequential(Linear, ReLU, Dropout, Linear)`` and widths that do not halve were refused;
    Dropout is the identity in eval mode, and the widths are carried by ``head_widths`` through a checkpoint."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(19)
    src = ExampleGPS()
    src.mlp = head()
    warm_up(src, pyg_run)
    ours = from_pyg(src, readout="sum", pe_kind="rwse")
    linears = [x for x in src.mlp if isinstance(x, nn.Linear)]
    assert ours.config.head_layers == len(linears)
    assert ours.config.head_widths == [x.out_features for x in linears[:-1]]
    b = molecules(SIZES, seed=20)
    with torch.no_grad():
        want = pyg_run(src, b)
        assert max_diff(want, ours_run(ours, b)) <= TOL
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", ours, {}))
    assert loaded.config.head_widths == ours.config.head_widths
    with torch.no_grad():
        assert max_diff(want, ours_run(loaded.eval(), b)) <= TOL


def test_a_halving_head_keeps_the_config_it_had() -> None:
    """The head gtcompress builds itself imports with ``head_widths`` empty, so its config.json has no new key."""
    ours = from_pyg(ExampleGPS(), readout="sum", pe_kind="rwse")
    assert (ours.config.head_layers, ours.config.head_widths) == (3, [])
    assert "head_widths" not in ours.config.to_dict()


class MaxPoolGPS(GinLapGPS):
    """``global_max_pool`` in forward, the other common readout of PyG's examples."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(global_max_pool(x, batch))


def test_a_max_pool_model_imports_by_its_code_module_argument_or_example() -> None:
    """Its forward's ``global_max_pool``, ``MaxAggregation`` held by the model, ``readout="max"`` and ``example=``
    each give ``readout="max"`` and the PyG model's outputs; ``readout="sum"`` for it is refused, with or without
    ``example=``: it imported without a word, a silently wrong model, when no example was given."""
    from torch_geometric.nn import aggr

    torch.manual_seed(17)
    src = MaxPoolGPS()
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=18, float_x=7, k=5)
    with torch.no_grad():
        want = pyg_run(src, b)
    by_module = PoolModuleGPS(aggr.MaxAggregation())
    by_module.load_state_dict(src.state_dict(), strict=False)
    by_module.eval()
    for ours in (
        from_pyg(src, pe_kind="lap"),
        from_pyg(src, pe_kind="lap", readout="max"),
        from_pyg(src, pe_kind="lap", example=(b, want)),
        from_pyg(by_module, pe_kind="lap"),
    ):
        assert ours.config.readout == "max"
        with torch.no_grad():
            assert max_diff(want, ours_run(ours, b, "lap", edges=False)) <= TOL
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, pe_kind="lap", readout="sum")
    assert str(info.value) == (
        "readout='sum' (global_add_pool) as passed, but MaxPoolGPS's forward calls global_max_pool "
        "(in MaxPoolGPS.forward), which is readout='max'; pass readout='max' or leave readout out, or pass "
        "example=(batch, output) as well to check readout='sum' on the model's own output"
    )
    # with example= the model's own output is what refuses it
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, pe_kind="lap", readout="sum", example=(b, want))
    assert str(info.value).startswith(
        "MaxPoolGPS: the import differs from the PyG model on example= (readout='sum': max |diff| "
    )
    assert "likely cause: the pooling" in str(info.value)
    with pytest.raises(ValueError, match=r"^readout must be 'sum', 'mean' or 'max', got 'min'$"):
        from_pyg(src, pe_kind="lap", readout="min")
