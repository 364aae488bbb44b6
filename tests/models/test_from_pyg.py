"""``from_pyg``: a PyG GPS model and its import compute the same function (eval mode), and every
pattern we cannot reproduce is refused with an error naming the module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.data import Batch, Data  # noqa: E402
from torch_geometric.nn import GINConv, GINEConv, GPSConv, global_add_pool, global_mean_pool  # noqa: E402
from torch_geometric.utils import scatter  # noqa: E402

from gtcompress.errors import UnsupportedModelError  # noqa: E402
from gtcompress.graph import GraphBatch  # noqa: E402
from gtcompress.models import GPS  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: intra-op threads only contend on a shared machine (100x slower measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gin_nn(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))


class ExampleGPS(nn.Module):
    """PyG's examples/graph_gps.py (ZINC), smaller."""

    def __init__(self, channels: int = 32, pe_dim: int = 8, num_layers: int = 2, **conv_kw: object) -> None:
        super().__init__()
        self.node_emb = nn.Embedding(28, channels - pe_dim)
        self.pe_lin = nn.Linear(20, pe_dim)
        self.pe_norm = nn.BatchNorm1d(20)
        self.edge_emb = nn.Embedding(4, channels)
        self.convs = nn.ModuleList(
            GPSConv(channels, GINEConv(gin_nn(channels)), heads=4, attn_kwargs={"dropout": 0.5}, **conv_kw)  # type: ignore[arg-type]
            for _ in range(num_layers)
        )
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels // 2),
            nn.ReLU(),
            nn.Linear(channels // 2, channels // 4),
            nn.ReLU(),
            nn.Linear(channels // 4, 1),
        )

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x_pe = self.pe_norm(pe)
        x = torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(x_pe)), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return self.mlp(global_add_pool(x, batch))


class GinLapGPS(nn.Module):
    """Variant: float x through a Linear, LapPE concatenated, GINConv (no edges), mean readout."""

    def __init__(self, channels: int = 24, pe_dim: int = 6, k: int = 5, train_eps: bool = False) -> None:
        super().__init__()
        self.node_lin = nn.Linear(7, channels - pe_dim)
        self.pe_lin = nn.Linear(k, pe_dim)
        self.pe_norm = nn.BatchNorm1d(k)
        self.convs = nn.ModuleList(
            GPSConv(channels, GINConv(gin_nn(channels), train_eps=train_eps), heads=3, dropout=0.1) for _ in range(2)
        )
        self.head = nn.Sequential(nn.Linear(channels, channels // 2), nn.ReLU(), nn.Linear(channels // 2, 3))

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(global_mean_pool(x, batch))


# ---------------------------------------------------------------- data
def molecules(sizes: list[int], seed: int = 0, float_x: int = 0, k: int = 20, edge_float: int = 0) -> Batch:
    """Molecule-like graphs (a random tree plus a ring closure), undirected, of the given sizes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        src = [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
        pairs = list(zip(src, range(1, n), strict=True))
        if n > 4:
            pairs.append((0, n - 1))
        ei = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T
        ei = torch.cat([ei, ei.flip(0)], 1)
        e = ei.shape[1]
        x = torch.randn(n, float_x, generator=g) if float_x else torch.randint(0, 28, (n, 1), generator=g)
        ea = torch.randn(e, edge_float, generator=g) if edge_float else torch.randint(0, 4, (e,), generator=g)
        out.append(Data(x=x, edge_index=ei, edge_attr=ea, pe=torch.randn(n, k, generator=g)))
    return Batch.from_data_list(out)


SIZES = [5, 1, 12, 3, 9, 2]


def warm_up(model: nn.Module, run: Callable[[nn.Module, Batch], Tensor], float_x: int = 0, k: int = 20) -> None:
    """A few train-mode passes so BatchNorm running stats are far from (0, 1)."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            run(model, molecules([6, 8, 10, 4], seed=100 + s, float_x=float_x, k=k))
    model.eval()


def pyg_run(model: nn.Module, b: Batch) -> Tensor:
    return model(b.x, b.pe, b.edge_index, b.edge_attr, b.batch)


def ours_run(model: GPS, b: Batch, pe_kind: str = "rwse", pe: bool = True, edges: bool = True) -> Tensor:
    return model.compute(
        b.x,
        b.edge_index,
        b.edge_attr if edges else None,
        b.batch,
        {pe_kind: b.pe} if pe else {},
        b.num_graphs,
    )


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# ---------------------------------------------------------------- parity
def test_example_model_matches() -> None:
    torch.manual_seed(0)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    ours = from_pyg(src, readout="sum", pe_kind="rwse")
    assert not ours.training
    cfg = ours.config
    assert (cfg.hidden, cfg.heads, cfg.pe, cfg.pe_dim) == (32, 4, {"rwse": 20}, 8)
    assert cfg.pe_norm and cfg.local_conv == "gine" and cfg.node_features.cardinalities == [28]
    assert (cfg.head_layers, cfg.out_dim, cfg.readout, cfg.attn_dropout) == (3, 1, "sum", 0.5)
    b = molecules(SIZES, seed=1)
    with torch.no_grad():
        want = pyg_run(src, b)
        got = ours_run(ours, b)
        # the public path, through our graph batch type
        gb = GraphBatch.from_pyg(b)
        gb.pe = {"rwse": b.pe}
        got2 = ours(gb)
    assert max_diff(want, got) <= TOL
    assert max_diff(want, got2) <= TOL
    assert float(want.std()) > 1e-3  # a non-degenerate comparison


def test_imported_model_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    """The import is described by its config alone (no module surgery for the example)."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(4)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    ours = from_pyg(src, readout="sum", pe_kind="rwse")
    save_checkpoint(tmp_path / "ckpt", ours)
    back, _ = load_checkpoint(tmp_path / "ckpt")
    back.eval()
    b = molecules(SIZES, seed=5)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(back, b)) <= TOL  # type: ignore[arg-type]


def test_gin_linear_lap_mean_variant_matches() -> None:
    torch.manual_seed(1)
    src = GinLapGPS(train_eps=True)
    with torch.no_grad():
        for conv in src.convs:
            conv.conv.eps.fill_(0.3)
    run = pyg_run
    warm_up(src, run, float_x=7, k=5)
    ours = from_pyg(src, readout="mean", pe_kind="lap")
    assert ours.config.local_conv == "gin" and ours.config.edge_features is None
    assert ours.config.node_features.kind == "float" and ours.config.pe == {"lap": 5}
    b = molecules(SIZES, seed=2, float_x=7, k=5)
    with torch.no_grad():
        assert max_diff(run(src, b), ours_run(ours, b, "lap", edges=False)) <= TOL


def test_bare_layer_list_with_explicit_parts_added_pe_no_norm() -> None:
    """ModuleList of GPSConv (norm=None) + modules passed in; PE added (projection as wide as channels)."""
    torch.manual_seed(2)
    c = 16
    convs = nn.ModuleList(GPSConv(c, GINEConv(gin_nn(c)), heads=2, norm=None) for _ in range(2))
    node, edge, pe_lin, head = nn.Embedding(28, c), nn.Embedding(4, c), nn.Linear(20, c), nn.Linear(c, 2)

    def run(_: nn.Module, b: Batch) -> Tensor:
        x = node(b.x.squeeze(-1)) + pe_lin(b.pe)
        e = edge(b.edge_attr)
        for conv in convs:
            x = conv(x, b.edge_index, b.batch, edge_attr=e)
        return head(x)  # node-level

    convs.eval()
    ours = from_pyg(
        convs, node_encoder=node, edge_encoder=edge, pe_encoder=pe_lin, head=head, task_level="node", pe_kind="rwse"
    )
    assert ours.config.pe_dim == 0 and ours.config.norm == "none" and not ours.config.pe_norm
    b = molecules(SIZES, seed=3)
    with torch.no_grad():
        assert max_diff(run(convs, b), ours_run(ours, b)) <= TOL


def test_gine_edge_dim_raw_edges_and_no_local_conv(tmp_path: Path) -> None:
    """GINEConv(edge_dim=...) on raw float edge features (no edge encoder); and GPSConv(conv=None)."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(3)
    c, fe = 16, 3
    convs = nn.ModuleList(GPSConv(c, GINEConv(gin_nn(c), edge_dim=fe, train_eps=True), heads=4) for _ in range(2))
    node = nn.Linear(5, c)

    def run(m: nn.Module, b: Batch, edges: bool = True) -> Tensor:
        x = node(b.x)
        for conv in m:
            x = conv(x, b.edge_index, b.batch, **({"edge_attr": b.edge_attr} if edges else {}))
        return global_add_pool(x, b.batch)

    convs.train()
    with torch.no_grad():
        for s in range(3):
            run(convs, molecules([6, 7, 9], seed=10 + s, float_x=5, edge_float=fe))
    convs.eval()
    ours = from_pyg(convs, node_encoder=node, edge_encoder=False, readout="sum")
    assert ours.config.edge_features is not None and ours.config.edge_features.dim == fe
    b = molecules(SIZES, seed=4, float_x=5, edge_float=fe)
    with torch.no_grad():
        assert max_diff(run(convs, b), ours_run(ours, b, pe=False)) <= TOL
    save_checkpoint(tmp_path / "ckpt", ours)  # the edge Linear is part of the config: it round-trips
    back, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert max_diff(run(convs, b), ours_run(back, b, pe=False)) <= TOL

    attn_only = nn.ModuleList(GPSConv(c, None, heads=2) for _ in range(2)).eval()
    ours2 = from_pyg(attn_only, node_encoder=node, readout="sum")
    assert ours2.config.local_conv == "none"
    with torch.no_grad():
        assert max_diff(run(attn_only, b, edges=False), ours_run(ours2, b, pe=False, edges=False)) <= TOL


# ---------------------------------------------------------------- the readout
class ScatterMeanGPS(GinLapGPS):
    """Pools with ``torch_geometric.utils.scatter``: a pooling whose kind its code does not say."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(scatter(x, batch, dim=0, reduce="mean"))


def test_graph_level_model_needs_a_readout() -> None:
    """A model pooling with global_mean_pool used to import as sum without a word (wrong by the graph size);
    one whose forward does not say how it pools still needs ``readout=``."""
    src = ScatterMeanGPS().eval()
    with pytest.raises(ValueError) as info:
        from_pyg(src, pe_kind="lap")
    assert str(info.value) == (
        "readout is required for a graph-level model: ScatterMeanGPS's forward calls none of PyG's global_add_pool, "
        "global_mean_pool and global_max_pool, so its pooling cannot be read; pass readout='sum' (global_add_pool), "
        "readout='mean' (global_mean_pool) or readout='max' (global_max_pool), or example=(batch, output) to "
        "detect it"
    )
    assert from_pyg(src, pe_kind="lap", task_level="node").config.task_level == "node"  # no pooling to know


def test_example_detects_mean_pooling_and_refuses_a_wrong_readout() -> None:
    torch.manual_seed(5)
    src = ScatterMeanGPS()
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=6, float_x=7, k=5)
    with torch.no_grad():
        want = pyg_run(src, b)
    ours = from_pyg(src, pe_kind="lap", example=(b, want))
    assert ours.config.readout == "mean"
    with torch.no_grad():
        assert max_diff(want, ours_run(ours, b, "lap", edges=False)) <= TOL
    with pytest.raises(
        UnsupportedModelError,
        match=r"ScatterMeanGPS: the import differs from the PyG model on example= "
        r"\(readout='sum': max \|diff\| [0-9.e+-]+, over max\(1, max \|output\|\); tolerance 0\.0001\); likely cause: "
        r"the pooling",
    ):
        from_pyg(src, pe_kind="lap", readout="sum", example=(b, want))


class PoolModuleGPS(GinLapGPS):
    """The pooling as a module: it can be read."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_lin(x), self.pe_lin(self.pe_norm(pe))), 1)
        for conv in self.convs:
            x = conv(x, edge_index, batch)
        return self.head(self.pool(x, batch))


def test_pooling_module_is_read() -> None:
    from torch_geometric.nn import aggr

    torch.manual_seed(7)
    src = PoolModuleGPS(aggr.MeanAggregation())
    warm_up(src, pyg_run, float_x=7, k=5)
    ours = from_pyg(src, pe_kind="lap")
    assert ours.config.readout == "mean"
    b = molecules(SIZES, seed=8, float_x=7, k=5)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b, "lap", edges=False)) <= TOL
    _raises(
        src,
        "pool",
        "MeanAggregation",
        "expected readout='mean' (the model pools so), not readout='sum' as passed",
        pe_kind="lap",
        readout="sum",
    )
    # any other aggregation held by the model is its readout whatever its attribute name, and refused
    other = PoolModuleGPS(aggr.MeanAggregation())
    del other.pool
    other.graph_pool = aggr.MinAggregation()
    _raises(
        other,
        "graph_pool (MinAggregation): expected a SumAggregation, MeanAggregation or MaxAggregation readout "
        "(global_add_pool / global_mean_pool / global_max_pool), or ignore=[...] if the forward does not use it",
        pe_kind="lap",
        readout="mean",
    )


# ---------------------------------------------------------------- refusals
def _raises(model: nn.Module, *names: str, **kw: object) -> None:
    """``from_pyg(model, **kw)`` is refused naming ``names``; the models' PE is RWSE unless ``kw`` says."""
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(model, **{"pe_kind": "rwse", **kw})  # type: ignore[arg-type]
    msg = str(info.value)
    for n in names:
        assert n in msg, msg


def test_parametrized_linear_is_imported_with_its_effective_weight() -> None:
    """torch.nn.utils.parametrize swaps in a generated subclass whose ``weight`` is the effective one:
    that is the class itself as far as the forward goes, and it imports exactly."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(9)
    src = ExampleGPS()
    src.pe_lin = weight_norm(src.pe_lin)
    src.mlp[0] = weight_norm(src.mlp[0])
    warm_up(src, pyg_run)
    ours = from_pyg(src, readout="sum", pe_kind="rwse")
    b = molecules(SIZES, seed=10)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL


def test_example_output_shape_is_a_shape_error_not_a_value_difference() -> None:
    """A forward ending in ``.view(-1)`` (common for one-target regression) gave 'max |diff| inf ...
    likely cause: a forward that does more than encoders -> GPSConv layers -> pooling -> head' for a
    model that imports exactly; it is compared as is now, and a real shape mismatch names both shapes."""
    torch.manual_seed(11)
    src = GinLapGPS()
    src.head[2] = nn.Linear(12, 1)
    warm_up(src, pyg_run, float_x=7, k=5)
    b = molecules(SIZES, seed=12, float_x=7, k=5)
    with torch.no_grad():
        want = pyg_run(src, b)
    ours = from_pyg(src, pe_kind="lap", example=(b, want.view(-1)))
    assert ours.config.readout == "mean"
    with torch.no_grad():
        assert max_diff(want, ours_run(ours, b, "lap", edges=False)) <= TOL
    with pytest.raises(
        UnsupportedModelError,
        match=r"^example=: the expected output has shape \[3, 1\], the import's output on the batch has shape "
        r"\[6, 1\] \(one row per graph, out_dim=1 columns\)",
    ):
        from_pyg(src, pe_kind="lap", example=(b, want[:3]))


class _PeNormUnused(ExampleGPS):
    """``pe_norm`` kept as a module (an old checkpoint's key) but no longer applied in forward."""

    def forward(self, x: Tensor, pe: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x = torch.cat((self.node_emb(x.squeeze(-1)), self.pe_lin(pe)), 1)
        edge_attr = self.edge_emb(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return self.mlp(global_add_pool(x, batch))


def test_ignored_modules_are_never_used_by_the_import() -> None:
    """``ignore=["pe_norm"]`` used to be contradicted without a word: the auto-detected pe_norm was
    still applied (0.18 off the PyG model). Ignored paths are now skipped by auto-detection, and a
    module the import runs (a layer, an explicitly named part) is refused when ignored."""
    torch.manual_seed(13)
    src = _PeNormUnused()
    warm_up(src, pyg_run)
    with torch.no_grad():
        src.pe_norm.running_mean.fill_(0.7)
        src.pe_norm.running_var.fill_(3.0)
    ours = from_pyg(src, readout="sum", pe_kind="rwse", ignore=["pe_norm"])
    assert not ours.config.pe_norm
    b = molecules(SIZES, seed=14)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL
    _raises(
        src,
        "ignore='convs.1': convs.1 (GPSConv) is a layer the import runs, so it cannot be ignored; "
        "pass convs=[...] naming only the layers the forward calls",
        readout="sum",
        ignore=["convs.1"],
    )
    _raises(
        src,
        "ignore='pe_norm': pe_norm (BatchNorm1d) is the pe_norm the import runs, so it cannot be ignored; "
        "pass pe_norm=False if the forward does not use it",
        readout="sum",
        pe_norm="pe_norm",
        ignore=["pe_norm"],
    )
    _raises(src, "ignore='convs.0.attn': convs.0 (GPSConv) is a layer", readout="sum", ignore=["convs.0.attn"])


def test_a_compiled_model_imports_as_the_module_it_wraps() -> None:
    """``torch.compile(model)`` holds the model under ``_orig_mod``, where no part was looked for:
    it was refused as "don't know the role of _orig_mod.node_emb (Embedding), ...\""""
    torch.manual_seed(15)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    ours = from_pyg(torch.compile(src), readout="sum", pe_kind="rwse")
    b = molecules(SIZES, seed=16)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL


def test_compiled_parts_import_as_the_modules_they_wrap() -> None:
    """A compiled layer, head or PE encoder inside the model was refused as "convs.0 (OptimizedModule):
    expected torch_geometric.nn.GPSConv": only a compiled whole model was unwrapped. The user's model
    keeps its compiled parts; a keyword naming a compiled part finds it."""
    import copy

    torch.manual_seed(17)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    parts = copy.deepcopy(src)
    parts.convs[0] = torch.compile(parts.convs[0])
    parts.mlp = torch.compile(parts.mlp)
    parts.pe_lin = torch.compile(parts.pe_lin)
    b = molecules(SIZES, seed=18)
    for ours in (
        from_pyg(parts, readout="sum", pe_kind="rwse"),
        from_pyg(torch.compile(parts), readout="sum", pe_kind="rwse", head=parts.mlp, pe_encoder=parts.pe_lin),
        from_pyg(parts, readout="sum", pe_kind="rwse", convs=[parts.convs[0], "convs.1"]),
    ):
        with torch.no_grad():
            assert max_diff(pyg_run(src, b), ours_run(ours, b)) <= TOL
    assert type(parts.convs[0]).__name__ == type(parts.mlp).__name__ == "OptimizedModule"


def test_a_model_that_is_not_a_module_is_refused_by_type() -> None:
    """torch.compile of a compiled module gives its compiled forward, a function: it failed with
    "'function' object has no attribute 'named_children'"."""
    compiled = torch.compile(ExampleGPS())
    with pytest.raises(TypeError) as info:
        from_pyg(torch.compile(compiled), readout="sum", pe_kind="rwse")  # type: ignore[arg-type]
    assert str(info.value) == (
        "model must be a torch.nn.Module (a PyG model, or torch.compile of one), got function (torch.compile of an "
        "already compiled module gives its compiled forward: pass the module)"
    )
