"""``from_pyg`` reads which PyG pool function a model's forward calls (its code's names), so that a
``readout=`` that disagrees is refused rather than imported as a silently wrong model."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import Tensor

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.nn import global_add_pool  # noqa: E402
from torch_geometric.nn import global_max_pool as gmp  # noqa: E402
from torch_geometric.utils import scatter  # noqa: E402

from gtcompress.errors import UnsupportedModelError  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402
from gtcompress.models.from_pyg_readout import read_forward  # noqa: E402
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


class HelperPoolGPS(GinLapGPS):
    """Pools in a method of its own, through an alias of ``global_max_pool``: forward's names alone do not show it."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(self._pool(x, batch))

    def _pool(self, x: Tensor, batch: Tensor) -> Tensor:
        return gmp(x, batch)


class SuperGPS(ExampleGPS):
    """Calls the base class's forward, which pools with ``global_add_pool``; the text "global_max_pool" is data."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        assert "global_max_pool" not in type(self).__name__
        return super().forward(x, pe, edge_index, edge_attr, batch)


def _pooled(x: Tensor, batch: Tensor) -> Tensor:
    return pyg_nn.global_max_pool(x, batch)


class ModuleFunctionGPS(GinLapGPS):
    """Pools in a function of its module, reached as ``pyg_nn.global_max_pool``."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(_pooled(x, batch))


class HeldFunctionGPS(GinLapGPS):
    """Holds its pool function as an attribute, as configurable models do."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = pyg_nn.global_max_pool

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(self.pool(x, batch))


class EitherPoolGPS(GinLapGPS):
    """Pools with one of two functions by a flag: the code names both."""

    def __init__(self, use_max: bool) -> None:
        super().__init__()
        self.use_max = use_max

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(gmp(x, batch) if self.use_max else (lambda: global_add_pool(x, batch))())


class CountingGPS(GinLapGPS):
    """Calls ``global_add_pool`` to count nodes and pools with ``scatter``: the PyG function is not its readout."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        n = global_add_pool(torch.ones_like(x[:, :1]), batch)
        return self.head(scatter(x, batch, dim=0, reduce="sum") / n)


class CountMeanGPS(GinLapGPS):
    """A mean by hand: ``global_add_pool`` over a node count that ``global_add_pool`` also takes. Its code names one
    pool function, global_add_pool, yet it pools as ``global_mean_pool``."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(global_add_pool(x, batch) / global_add_pool(torch.ones_like(x[:, :1]), batch))


class BincountMeanGPS(GinLapGPS):
    """A mean by hand over ``batch.bincount()``, the usual way to count a graph's nodes."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(global_add_pool(x, batch) / batch.bincount().unsqueeze(1))


class PartialPoolGPS(GinLapGPS):
    """Holds ``functools.partial(global_max_pool, size=None)`` as its pool function."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = functools.partial(gmp, size=None)

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(self.pool(x, batch))


def test_the_pool_function_a_forward_calls_settles_the_readout() -> None:
    """PyG's examples/graph_gps.py (``global_add_pool``), a compiled model, a pooling in a method of the model, a
    function of its module, a base class's forward and a function the model holds: each imports with the readout
    its forward pools with, and gives the PyG model's outputs; without ``readout=``, each was refused."""
    b20, b5 = molecules(SIZES, seed=31), molecules(SIZES, seed=31, float_x=7, k=5)
    cases = [
        (ExampleGPS(), "sum", b20, "rwse", True),
        (torch.compile(SuperGPS()), "sum", b20, "rwse", True),
        (HelperPoolGPS(), "max", b5, "lap", False),
        (ModuleFunctionGPS(), "max", b5, "lap", False),
        (HeldFunctionGPS(), "max", b5, "lap", False),
        (PartialPoolGPS(), "max", b5, "lap", False),
    ]
    for i, (src, readout, b, kind, edges) in enumerate(cases):
        torch.manual_seed(30 + i)
        plain = getattr(src, "_orig_mod", src)
        warm_up(plain, pyg_run, **({} if kind == "rwse" else {"float_x": 7, "k": 5}))
        ours = from_pyg(src, pe_kind=kind)
        assert ours.config.readout == readout, type(plain).__name__
        with torch.no_grad():
            assert max_diff(pyg_run(plain, b), ours_run(ours, b, kind, edges=edges)) <= TOL


def test_a_readout_that_disagrees_with_the_forward_is_refused_naming_both() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(HelperPoolGPS(), pe_kind="lap", readout="mean")
    assert str(info.value) == (
        "readout='mean' (global_mean_pool) as passed, but HelperPoolGPS's forward calls global_max_pool "
        "(in HelperPoolGPS._pool), which is readout='max'; pass readout='max' or leave readout out, or pass "
        "example=(batch, output) as well to check readout='mean' on the model's own output"
    )
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(torch.compile(SuperGPS()), pe_kind="rwse", readout="max")
    assert str(info.value) == (
        "readout='max' (global_max_pool) as passed, but SuperGPS's forward calls global_add_pool "
        "(in ExampleGPS.forward), which is readout='sum'; pass readout='sum' or leave readout out, or pass "
        "example=(batch, output) as well to check readout='max' on the model's own output"
    )


def test_a_forward_calling_several_pool_functions_needs_one_of_them() -> None:
    src = EitherPoolGPS(use_max=True)
    torch.manual_seed(41)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=42, float_x=7, k=5)
    with torch.no_grad():
        want = pyg_run(src, b)
    with pytest.raises(ValueError) as info:
        from_pyg(src, pe_kind="lap")
    assert str(info.value) == (
        "readout is required for a graph-level model: EitherPoolGPS's forward calls global_add_pool "
        "(in EitherPoolGPS.forward.<locals>.<lambda>) and global_max_pool (in EitherPoolGPS.forward), so which "
        "one pools its output cannot be read; pass readout='sum' or readout='max', or example=(batch, output) to "
        "detect it"
    )
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, pe_kind="lap", readout="mean")
    assert str(info.value) == (
        "readout='mean' (global_mean_pool) as passed, but EitherPoolGPS's forward calls global_add_pool "
        "(in EitherPoolGPS.forward.<locals>.<lambda>) and global_max_pool (in EitherPoolGPS.forward) only; "
        "pass one of readout='sum', readout='max', or pass example=(batch, output) as well to check readout='mean' "
        "on the model's own output"
    )
    for ours in (from_pyg(src, pe_kind="lap", readout="max"), from_pyg(src, pe_kind="lap", example=(b, want))):
        assert ours.config.readout == "max"
        with torch.no_grad():
            assert max_diff(want, ours_run(ours, b, "lap", edges=False)) <= TOL


def test_a_pool_function_next_to_another_reducer_does_not_settle_the_readout() -> None:
    """``global_add_pool`` used to count nodes is not the readout of a forward that also scatters: trusted, it
    would import a mean pooling as a sum. ``readout=`` is taken as given there."""
    src = CountingGPS()
    with pytest.raises(ValueError) as info:
        from_pyg(src, pe_kind="lap")
    assert str(info.value) == (
        "readout is required for a graph-level model: CountingGPS's forward calls global_add_pool "
        "(in CountingGPS.forward) but also scatter (in CountingGPS.forward), so its pooling cannot be read; pass "
        "readout='sum' (global_add_pool), readout='mean' (global_mean_pool) or readout='max' (global_max_pool), or "
        "example=(batch, output) to detect it"
    )
    torch.manual_seed(43)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=44, float_x=7, k=5)
    ours = from_pyg(src, pe_kind="lap", readout="mean")
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b, "lap", edges=False)) <= TOL


def test_a_pooling_module_that_disagrees_with_the_forward_is_refused() -> None:
    from torch_geometric.nn import aggr

    class Both(PoolModuleGPS):
        def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
            return self.head(global_add_pool(x, batch))

    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(Both(aggr.MaxAggregation()), pe_kind="lap")
    assert str(info.value) == (
        "pool (MaxAggregation): the model holds this readout='max' pooling module, but its forward calls "
        "global_add_pool (in test_a_pooling_module_that_disagrees_with_the_forward_is_refused.<locals>.Both.forward) "
        "(readout='sum'); pass ignore=[...] naming the module if the forward does not use it, or "
        "example=(batch, output) to check the import on the model's own output"
    )
    assert from_pyg(Both(aggr.MaxAggregation()), pe_kind="lap", ignore=["pool"]).config.readout == "sum"


def test_only_code_counts_not_text() -> None:
    """The bytecode's names are read: a string or docstring naming a pool function is no call of it."""
    assert read_forward(SuperGPS()).found == {"sum": "ExampleGPS.forward"}
    assert read_forward(torch.nn.ModuleList()).found == {}


def test_a_node_count_next_to_the_pool_function_does_not_settle_the_readout() -> None:
    """``global_add_pool(x, batch) / batch.bincount()`` is a mean: taken as global_add_pool's sum, it imported
    without a word and differed from the PyG model, and readout='mean' was refused."""
    src = BincountMeanGPS()
    with pytest.raises(ValueError) as info:
        from_pyg(src, pe_kind="lap")
    assert str(info.value) == (
        "readout is required for a graph-level model: BincountMeanGPS's forward calls global_add_pool "
        "(in BincountMeanGPS.forward) but also bincount (in BincountMeanGPS.forward), so its pooling cannot be read; "
        "pass readout='sum' (global_add_pool), readout='mean' (global_mean_pool) or readout='max' (global_max_pool), "
        "or example=(batch, output) to detect it"
    )
    torch.manual_seed(45)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=46, float_x=7, k=5)
    ours = from_pyg(src, pe_kind="lap", readout="mean")
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b, "lap", edges=False)) <= TOL


def test_an_example_overrules_a_misread_forward() -> None:
    """A forward whose code names only global_add_pool but pools as a mean: readout='mean' alone is refused
    (the code says otherwise), but with example= the model's own output decides, with or without readout=."""
    src = CountMeanGPS()
    torch.manual_seed(47)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=48, float_x=7, k=5)
    with torch.no_grad():
        want = pyg_run(src, b)
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, pe_kind="lap", readout="mean")
    assert str(info.value) == (
        "readout='mean' (global_mean_pool) as passed, but CountMeanGPS's forward calls global_add_pool "
        "(in CountMeanGPS.forward), which is readout='sum'; pass readout='sum' or leave readout out, or pass "
        "example=(batch, output) as well to check readout='mean' on the model's own output"
    )
    for ours in (
        from_pyg(src, pe_kind="lap", readout="mean", example=(b, want)),
        from_pyg(src, pe_kind="lap", example=(b, want)),
    ):
        assert ours.config.readout == "mean"
        with torch.no_grad():
            assert max_diff(want, ours_run(ours, b, "lap", edges=False)) <= TOL


class ReluBetweenGPS(ExampleGPS):
    """An activation of its own between layers, which no module of the import holds."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(self.pe_norm(pe))), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = torch.nn.functional.relu(conv(x, edge_index, batch, edge_attr=edge_attr))
        return self.mlp(global_add_pool(x, batch))


class ReversedGPS(ExampleGPS):
    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(self.pe_norm(pe))), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in reversed(self.convs):
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return self.mlp(global_add_pool(x, batch))


class ActModuleGPS(ExampleGPS):
    """The activation as a module of the model's own: no weight, so the weight check never saw it."""

    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(0.1)

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = self.drop(torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(self.pe_norm(pe))), 1))
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = self.act(conv(x, edge_index, batch, edge_attr=edge_attr))
        return self.mlp(global_add_pool(x, batch))


def test_a_forward_beyond_the_supported_order_is_refused_without_an_example() -> None:
    """The import copies modules and does not run the forward: ``F.relu`` between layers imported with outputs
    off by 4.7, layers called in reverse off by 0.5, and an ``nn.ReLU`` held by the model (no weights, so no
    check saw it) the same as the first. Without ``example=`` each is refused; with it, the model's own
    output refuses them. Dropout, the identity in eval mode, imports."""
    fix = "pass example=(batch, output) to check the import on the model's own output"
    order = (
        "which the import cannot place: it copies the modules and does not run the forward, whose order it takes "
        "as encoders -> GPSConv layers -> pooling -> head with activations inside those modules; "
    )
    cases = [
        (ReluBetweenGPS, f"ReluBetweenGPS's forward calls relu (in ReluBetweenGPS.forward), {order}{fix}"),
        (ReversedGPS, f"ReversedGPS's forward calls reversed (in ReversedGPS.forward), {order}{fix}"),
        (
            ActModuleGPS,
            "act (ReLU): expected a module the import knows the place of (GPSConv layers, encoders, pooling, "
            "head): it holds no weights, so the forward may apply it anywhere; pass ignore=[...] naming it if the "
            f"forward does not use it, or {fix}",
        ),
    ]
    b = molecules(SIZES, seed=31)
    for cls, message in cases:
        torch.manual_seed(30)
        src = cls()
        warm_up(src, pyg_run)
        with pytest.raises(UnsupportedModelError) as info:
            from_pyg(src, readout="sum", pe_kind="rwse")
        assert str(info.value) == message
        with torch.no_grad():
            want = pyg_run(src, b)
        with pytest.raises(UnsupportedModelError, match=rf"^{cls.__name__}: the import differs from the PyG model"):
            from_pyg(src, readout="sum", pe_kind="lap", example=(b, want))
    torch.manual_seed(32)
    src = ExampleGPS()
    src.drop = torch.nn.Dropout(0.1)  # held, not even called: the identity in eval mode either way
    warm_up(src, pyg_run)
    ours = from_pyg(src, readout="sum", pe_kind="rwse")
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL


class PeFirstGPS(ExampleGPS):
    """The encoding concatenated before the node embedding: the same modules, another function."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.pe_lin(self.pe_norm(pe)), self.node_emb(x.squeeze(-1))), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return self.mlp(global_add_pool(x, batch))


class HeadBeforePoolGPS(ExampleGPS):
    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(self.pe_norm(pe))), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return global_add_pool(self.mlp(x), batch)


class ReorderedPeFirstGPS(PeFirstGPS):
    """The example's parameter names in another order: called by keyword, it is checked as well."""

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, edge_attr: Tensor, pe: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, pe, edge_index, edge_attr, batch)


class DataForwardGPS(PeFirstGPS):
    """The same function, its forward taking the batch object (PyG's other common style)."""

    def forward(self, data: object) -> Tensor:  # type: ignore[override]
        return super().forward(data.x, data.pe, data.edge_index, data.edge_attr, data.batch)  # type: ignore[attr-defined]


class DataForwardExampleGPS(ExampleGPS):
    """The example's function, its forward taking the batch and its encoding under AddRandomWalkPE's name."""

    def forward(self, data: object) -> Tensor:  # type: ignore[override]
        d: Any = data
        return super().forward(d.x, d.random_walk_pe, d.edge_index, d.edge_attr, d.batch)


class RenamedBatchGPS(ExampleGPS):
    """A parameter the example does not name: what to pass it cannot be known."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, graph_of: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, pe, edge_index, edge_attr, graph_of)


@pytest.mark.parametrize("cls", [PeFirstGPS, HeadBeforePoolGPS, ReorderedPeFirstGPS])
def test_a_forward_of_the_examples_signature_is_checked_on_made_up_graphs(cls: type) -> None:
    """A forward in another order than the modules say (the encoding before the node embedding: outputs off by
    2.6; the head before the pooling: 2.4) imported without a word when no example= was given. A forward with
    the signature of PyG's example is now run on made-up graphs and the import compared with it."""
    from gtcompress.models.from_pyg_selfcheck import made_up_example

    torch.manual_seed(40)
    src = cls()
    by_keyword = lambda m, b: m(x=b.x, pe=b.pe, edge_index=b.edge_index, edge_attr=b.edge_attr, batch=b.batch)  # noqa: E731
    warm_up(src, by_keyword)
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="rwse")
    assert str(info.value).startswith(
        f"{cls.__name__}: the import differs from the PyG model on graphs from_pyg made up and ran through "
        f"{cls.__name__}.forward (max |diff| "
    )
    assert "pass example=(batch, output) to check it on your own batch" in str(info.value)
    plain = ExampleGPS()
    plain.load_state_dict(src.state_dict())
    ours = from_pyg(plain.eval(), readout="sum", pe_kind="rwse")  # the example's order: checked, and imported
    made_up = made_up_example(plain, ours.config.node_features, ours.config.edge_features, ("rwse", 20), "graph", 1)
    assert made_up is not None  # the check ran (ExampleGPS hands edge_attr to an Embedding as [E])
    batch, want = made_up
    assert batch.num_graphs == 5 and want.shape == (5, 1)
    b = molecules(SIZES, seed=41)
    with torch.no_grad():
        assert max_diff(pyg_run(plain, b), ours_run(ours, b)) <= TOL


def test_a_forward_taking_the_batch_object_is_checked_on_made_up_graphs() -> None:
    """``forward(data)`` was not run (its arguments were taken for unknowable), so a PyG model in that style,
    its encoding concatenated before the node embedding, imported without a word. The made-up batch is now
    passed whole, its encoding under ``pe`` and under AddRandomWalkPE's name."""
    from gtcompress.models.from_pyg_selfcheck import made_up_example

    torch.manual_seed(40)
    src = DataForwardGPS()
    warm_up(src, lambda m, b: m(b))
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(src, readout="sum", pe_kind="rwse")
    assert str(info.value).startswith(
        "DataForwardGPS: the import differs from the PyG model on graphs from_pyg made up and ran through "
        "DataForwardGPS.forward (max |diff| "
    )
    good = DataForwardExampleGPS()
    good.load_state_dict(src.state_dict())
    ours = from_pyg(good.eval(), readout="sum", pe_kind="rwse")
    made_up = made_up_example(good, ours.config.node_features, ours.config.edge_features, ("rwse", 20), "graph", 1)
    assert made_up is not None and made_up[1].shape == (5, 1)  # the check ran, on random_walk_pe


def test_a_forward_of_another_signature_is_not_run() -> None:
    """Its arguments cannot be known: nothing made up is passed to it, and the import is as before."""
    from gtcompress.models.from_pyg_selfcheck import made_up_example

    src = RenamedBatchGPS()
    ours = from_pyg(src.eval(), readout="sum", pe_kind="rwse")
    assert made_up_example(src, ours.config.node_features, ours.config.edge_features, ("rwse", 20), "graph", 1) is None
