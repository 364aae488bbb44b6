import numpy as np
import pytest
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import LayerSpec, ModelConfig, build_model
from gtcompress.models.model import shortest_path_bins
from gtcompress.nn.layout import DenseLayout
from gtcompress.train.metrics import task_loss

NODE = FeatureSpec("categorical", 1, [4])
EDGE = FeatureSpec("categorical", 1, [3])


def _graphs(count: int, seed: int, node_level: bool = True) -> list[GraphBatch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = 3 + i % 7
        ei = torch.randint(0, n, (2, 3 * n), generator=g)
        x = torch.randint(0, 4, (n, 1), generator=g)
        # a learnable target: node label = its own token parity; graph label = majority parity
        y = (x[:, 0] % 2) if node_level else (x[:, 0] % 2).float().mean().round().long().view(1)
        out.append(GraphBatch(x=x, edge_index=ei, edge_attr=torch.randint(0, 3, (3 * n, 1), generator=g), y=y))
    return out


@pytest.mark.parametrize("arch", ["gt", "gps", "graphormer"])
@pytest.mark.parametrize("level", ["node", "graph"])
def test_every_model_trains_and_loss_falls(arch: str, level: str) -> None:
    torch.manual_seed(0)
    info = DatasetInfo("toy", level, "multiclass", 2, "accuracy", NODE, EDGE)
    cfg = ModelConfig.for_dataset(arch, info, hidden=32, num_layers=2, heads=4, readout="sum")
    model = build_model(cfg)
    batch = collate(_graphs(24, 0, node_level=level == "node"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = task_loss(model(batch), batch.y, info)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_max_readout_model_trains_and_its_loss_falls() -> None:
    """``readout="max"`` (PyG's ``global_max_pool``) end to end in training: the gradient reaches the
    layers through the pooled maxima. At node level the readout is not run, as for mean and sum."""
    torch.manual_seed(0)
    info = DatasetInfo("toy", "graph", "multiclass", 2, "accuracy", NODE, EDGE)
    model = build_model(ModelConfig.for_dataset("gps", info, hidden=32, num_layers=2, heads=4, readout="max"))
    batch = collate(_graphs(24, 0, node_level=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = task_loss(model(batch), batch.y, info)
        opt.zero_grad()
        loss.backward()
        assert model.layers[0].ffn.lin1.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    node_info = DatasetInfo("toy", "node", "multiclass", 2, "accuracy", NODE, EDGE)
    torch.manual_seed(1)
    by_max = build_model(ModelConfig.for_dataset("gt", node_info, hidden=16, num_layers=1, heads=2, readout="max"))
    torch.manual_seed(1)
    by_sum = build_model(ModelConfig.for_dataset("gt", node_info, hidden=16, num_layers=1, heads=2, readout="sum"))
    nodes = collate(_graphs(3, 1))
    torch.testing.assert_close(by_max.eval()(nodes), by_sum.eval()(nodes), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["gt", "gps", "graphormer"])
def test_outputs_are_permutation_equivariant(arch: str) -> None:
    torch.manual_seed(1)
    cfg = ModelConfig(
        arch=arch,
        node_features=NODE,
        edge_features=EDGE,
        out_dim=3,
        hidden=16,
        num_layers=2,
        heads=2,
        pe={"rwse": 4},
    )
    model = build_model(cfg).eval()
    g = _graphs(1, 3)[0]
    g.pe["rwse"] = torch.rand(g.num_nodes, 4)
    perm = torch.randperm(g.num_nodes)
    inv = torch.argsort(perm)
    h = GraphBatch(x=g.x[perm], edge_index=inv[g.edge_index], edge_attr=g.edge_attr, pe={"rwse": g.pe["rwse"][perm]})
    with torch.no_grad():
        assert torch.allclose(model(g)[perm], model(h), atol=1e-5)


def test_batched_output_equals_per_graph_output() -> None:
    torch.manual_seed(2)
    for arch in ("gt", "gps", "graphormer"):
        cfg = ModelConfig(
            arch=arch,
            node_features=NODE,
            edge_features=EDGE,
            out_dim=2,
            hidden=16,
            num_layers=2,
            heads=2,
            task_level="graph",
        )
        model = build_model(cfg).eval()
        gs = _graphs(5, 4, node_level=False)
        with torch.no_grad():
            together = model(collate(gs))
            alone = torch.cat([model(g) for g in gs])
        assert torch.allclose(together, alone, atol=1e-5), arch


def test_per_layer_specs_build_smaller_layers() -> None:
    layers = [LayerSpec(heads=2, ffn_dim=8), LayerSpec(heads=0, ffn_dim=16), LayerSpec(heads=4, ffn_dim=0)]
    cfg = ModelConfig(arch="gps", node_features=NODE, edge_features=EDGE, out_dim=2, hidden=16, heads=4, layers=layers)
    model = build_model(cfg).eval()
    assert cfg.num_layers == 3
    assert model.layers[0].attn.q.out_features == 2 * 4 and model.layers[0].ffn.lin1.out_features == 8
    assert model.layers[1].attn is None and model.layers[2].ffn is None
    assert model(_graphs(2, 0)[0]).shape == (3, 2)


def test_config_errors_are_specific() -> None:
    with pytest.raises(ValueError, match="unknown arch 'bert'"):
        ModelConfig(arch="bert", node_features=NODE, out_dim=2)
    with pytest.raises(ValueError, match="not divisible by heads=3"):
        ModelConfig(arch="gt", node_features=NODE, out_dim=2, hidden=32, heads=3)
    cfg = ModelConfig(arch="gt", node_features=NODE, out_dim=2, pe={"lap": 4})
    with pytest.raises(ValueError, match="expects positional encoding 'lap'"):
        build_model(cfg)(_graphs(1, 0)[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 0}, "heads must be a positive integer, got 0"),  # before: ZeroDivisionError
        ({"heads": 0, "head_dim": 8}, "heads must be a positive integer, got 0"),  # before: silently no attention
        ({"hidden": 0}, "hidden must be a positive integer, got 0"),
        ({"out_dim": -1}, "out_dim must be a positive integer, got -1"),
        ({"head_layers": 0}, "head_layers must be a positive integer, got 0"),
        ({"num_layers": 0}, "num_layers must be a positive integer, got 0"),  # before: a model without layers
        ({"num_layers": 2.5}, "num_layers must be a positive integer, got 2.5"),
        ({"num_layers": 10**6}, "num_layers must be at most 1024, got 1000000"),  # before: 20 min of building
        ({"head_layers": 10**7}, "head_layers must be at most 64, got 10000000"),
        ({"layers": [{"heads": 1, "ffn_dim": 1}] * 1025}, "layers lists 1025 layers; at most 1024 are allowed"),
        ({"head_dim": -4}, "head_dim must be an integer >= 0, got -4"),
        ({"ffn_dim": -1}, "ffn_dim must be an integer >= 0, got -1"),
        ({"max_spd": -2}, "max_spd must be an integer >= 0, got -2"),
        ({"max_degree": -1}, "max_degree must be an integer >= 0, got -1"),
        ({"hidden": True}, "hidden must be a positive integer, got True"),
        ({"attn_dropout": -0.1}, "attn_dropout must be a probability in [0, 1], got -0.1"),
        ({"pe": {"lap": 0}}, "pe['lap'] must be a positive integer, got 0"),
        ({"node_features": FeatureSpec("float", 0)}, "node_features.dim must be a positive integer, got 0"),
        (
            {"node_features": {"kind": "float", "dim": 1, "cardinalities": 5}},
            "node_features.cardinalities must be a list, got 5",
        ),
        (
            {"edge_features": {"kind": "categorical", "dim": 1, "cardinalities": [0]}},
            "edge_features.cardinalities must be a positive integer, got 0",
        ),
        ({"layers": [{"heads": -1, "ffn_dim": 8}]}, "layers[0].heads must be an integer >= 0, got -1"),
        (
            {"layers": [{"heads": 1, "ffn_dim": 8, "token_keep": 0.0}]},
            "layers[0].token_keep must lie in (0, 1], got 0.0",
        ),
        ({"layers": [{"heads": 1}]}, "layers[0]: {'heads': 1} is not a valid LayerSpec ("),
        # before: a ValueError from build_model (norm) or from the first forward / ONNX tracing (readout)
        ({"norm": "group"}, "norm must be 'batch', 'layer', 'none' (or '' for the default), got 'group'"),
        ({"readout": "min"}, "readout must be 'mean', 'sum', 'max', got 'min'"),
        (
            {"head_widths": [16, 8]},
            "head_widths [16, 8] lists 2 width(s); a head of head_layers=2 has 1 hidden width(s) "
            "(or leave head_widths empty to halve)",
        ),
        ({"head_widths": [0]}, "head_widths must be a positive integer, got 0"),
        ({"head_widths": 8}, "head_widths must be a list of the head's hidden widths (or [] to halve), got 8"),
        # before: a shape error in torch.export ("a and b must have same reduction dim, [s, 16] X [2, 16]")
        (
            {"arch": "gps", "gine_edge_dim": 2, "edge_features": FeatureSpec("float", 2)},
            "gine_edge_dim=2: 0 (GINE adds the edge encoding as it is) or hidden=16 (GINE's own Linear over the "
            "edge encoding, which is hidden wide)",
        ),
        # before: a shape error in the first forward (the node encoding was pe_dim columns short)
        (
            {"pe_dim": 8},
            "pe_dim=8 concatenates a positional encoding, but pe names none; set pe (e.g. {'rwse': 20}) or pe_dim=0",
        ),
    ],
)
def test_sizes_out_of_range_are_config_errors(overrides: dict, message: str) -> None:
    kw = {"arch": "gt", "node_features": NODE, "out_dim": 2, "hidden": 16, "heads": 2, **overrides}
    with pytest.raises(ConfigError) as e:
        ModelConfig(**kw)
    assert str(e.value).startswith(message) and (message.endswith("(") or str(e.value) == message)


@pytest.mark.parametrize(("field", "value"), [("readout", "min"), ("norm", "group")])
def test_an_edited_checkpoint_config_is_a_checkpoint_error(tmp_path, field: str, value: str) -> None:
    """``gtc export``/``eval`` of a checkpoint whose config.json names an unknown readout or norm: one
    CheckpointError naming the file and the field (the CLI's ``error:`` line), not a traceback."""
    import json

    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.errors import CheckpointError

    cfg = ModelConfig(arch="gt", node_features=NODE, out_dim=2, hidden=16, heads=2, task_level="graph")
    path = save_checkpoint(tmp_path / "ckpt", build_model(cfg))
    doc = json.loads((path / "config.json").read_text())
    doc["model"][field] = value
    (path / "config.json").write_text(json.dumps(doc))
    want = rf"config.json: invalid model config \({field} must be .*got '{value}'\)"
    with pytest.raises(CheckpointError, match=want):
        load_checkpoint(path)


def test_a_saved_config_still_validates() -> None:
    layers = [LayerSpec(heads=2, ffn_dim=8), LayerSpec(heads=0, ffn_dim=0, token_keep=1.0)]
    cfg = ModelConfig(arch="gps", node_features=NODE, edge_features=EDGE, out_dim=2, hidden=16, heads=4, layers=layers)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.num_layers == 2


def test_head_widths_shape_the_head_and_default_to_halving() -> None:
    """An imported head's own widths are built as given; a config without the field (every config.json
    written before it) builds the halving head, and a halving config writes no such key."""
    cfg = ModelConfig(arch="gt", node_features=NODE, out_dim=3, hidden=16, heads=2, head_layers=3, head_widths=[16, 5])
    shapes = [tuple(m.weight.shape) for m in build_model(cfg).head if isinstance(m, torch.nn.Linear)]
    assert shapes == [(16, 16), (5, 16), (3, 5)]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = ModelConfig(arch="gt", node_features=NODE, out_dim=3, hidden=16, heads=2, head_layers=3).to_dict()
    assert "head_widths" not in old
    shapes = [
        tuple(m.weight.shape) for m in build_model(ModelConfig.from_dict(old)).head if isinstance(m, torch.nn.Linear)
    ]
    assert shapes == [(8, 16), (4, 8), (3, 4)]


def test_shortest_path_bins_on_a_path() -> None:
    # path 0-1-2-3-4 (one direction only: distances are undirected)
    adj = torch.zeros(1, 5, 5, dtype=torch.bool)
    for i in range(4):
        adj[0, i + 1, i] = True
    d = shortest_path_bins(adj, max_spd=3)
    assert d[0, 0].tolist() == [0, 1, 2, 3, 4]  # 4 hops > max_spd → bin max_spd + 1
    assert d[0, 4].tolist() == [4, 3, 2, 1, 0]


def test_shortest_path_bins_are_the_clipped_hop_distances() -> None:
    """The bins count the hop counts within which a pair is not yet reached (one float Add a hop, no
    per-hop Where on int64): scipy's unweighted shortest paths, clipped at ``max_spd + 1``, on random
    graphs padded in a batch, and ``max_spd + 2`` in padding's columns (its diagonal included)."""
    from scipy.sparse.csgraph import shortest_path

    gen = torch.Generator().manual_seed(0)
    sizes, length = [7, 1, 12, 4], 12
    valid = torch.arange(length).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    adj = (torch.rand(len(sizes), length, length, generator=gen) < 0.15) & valid[:, None, :] & valid[:, :, None]
    for max_spd in (0, 1, 3, 8):
        bins = shortest_path_bins(adj, max_spd, valid)
        assert bins.dtype == torch.int32 and bins.shape == adj.shape
        for b, n in enumerate(sizes):
            ref = shortest_path(adj[b, :n, :n].numpy(), unweighted=True, directed=False)
            ref = np.where(ref > max_spd, max_spd + 1, ref)  # unreachable (inf) too
            assert bins[b, :n, :n].tolist() == ref.astype(int).tolist(), (b, max_spd)
            assert (bins[b, :, n:] == max_spd + 2).all()
        assert torch.equal(
            shortest_path_bins(adj, max_spd)[valid[:, None, :].expand_as(adj)], bins[valid[:, None, :].expand_as(adj)]
        )


def test_graphormer_without_attention_computes_no_shortest_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Graphormer whose attention was pruned away reads no spatial bias; eager torch still ran
    ``max_spd`` [B,L,L] MatMuls for it (15 s and 680 MiB for one 4000-node graph on the torch backend,
    with the server's dense-attention limit off for 0 heads). The output is unchanged: only the
    degree encoding, which is per node, enters."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=0, ffn_dim=8), LayerSpec(heads=0, ffn_dim=8)]
    cfg = ModelConfig(arch="graphormer", node_features=NODE, edge_features=EDGE, out_dim=2, hidden=16, layers=layers)
    model = build_model(cfg).eval()
    batch = collate(_graphs(4, 2))
    with torch.no_grad():
        before = model(batch)

    def refuse(adj: torch.Tensor, max_spd: int) -> torch.Tensor:
        raise AssertionError("shortest paths computed for a model without attention")

    monkeypatch.setattr("gtcompress.models.model.shortest_path_bins", refuse)
    with torch.no_grad():
        after = model(batch)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    ctx = model.context(torch.zeros(batch.num_nodes, 16), batch.edge_index, batch.edge_attr, batch.batch, 4)
    assert ctx.spd is None and ctx.pair_index is None


@pytest.mark.parametrize("edge_features", [True, False])
def test_gt_dense_and_sparse_layouts_agree(edge_features: bool) -> None:
    torch.manual_seed(3)
    gs = _graphs(6, 7)
    for g in gs:  # duplicates and a self-loop in every graph
        g.edge_index = torch.cat([g.edge_index, g.edge_index[:, :3], torch.zeros(2, 1, dtype=torch.long)], dim=1)
        g.edge_attr = torch.cat([g.edge_attr, torch.tensor([[2], [0], [1], [1]])])
        if not edge_features:
            g.edge_attr = None
    batch = collate(gs)
    outs = []
    for layout in ("sparse", "dense"):
        torch.manual_seed(4)
        cfg = ModelConfig(
            arch="gt",
            node_features=NODE,
            edge_features=EDGE if edge_features else None,
            out_dim=2,
            hidden=16,
            num_layers=2,
            heads=2,
            attention_layout=layout,
        )
        with torch.no_grad():
            outs.append(build_model(cfg).eval()(batch))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_gps_gin_dense_aggregation_equals_scatter() -> None:
    torch.manual_seed(5)
    cfg = ModelConfig(arch="gps", node_features=NODE, out_dim=2, hidden=16, num_layers=2, heads=2)
    assert cfg.local_conv == "gin"
    model = build_model(cfg).eval()
    gs = _graphs(5, 9)
    for g in gs:
        g.edge_attr = None
        g.edge_index = torch.cat([g.edge_index, g.edge_index[:, :2]], dim=1)  # duplicates count twice
    batch = collate(gs)
    layer = model.layers[0]
    h = torch.randn(batch.num_nodes, 16)
    ctx = model.context(h, batch.edge_index, None, batch.batch, batch.num_graphs)
    assert ctx.adj_counts is not None
    with torch.no_grad():
        dense = layer.local(h, batch.edge_index, None, (ctx.layout, ctx.adj_counts))
        scatter = layer.local(h, batch.edge_index, None)
    assert torch.allclose(dense, scatter, atol=1e-5)


@pytest.mark.parametrize("arch", ["gt", "gps", "graphormer"])
def test_a_training_batch_of_one_single_node_graph_uses_the_running_statistics(arch: str) -> None:
    """BatchNorm1d refuses one row in training mode ("Expected more than 1 value per channel"): a last
    batch holding one one-atom molecule (ogbg-molfreesolv) stopped ``gtc train`` with that traceback.
    Such a batch is normalised as in eval mode, with the running statistics, which it leaves alone."""
    torch.manual_seed(0)
    info = DatasetInfo("toy", "graph", "regression", 1, "mae", NODE, EDGE)
    cfg = ModelConfig.for_dataset(
        arch, info, hidden=16, num_layers=2, heads=2, norm="batch", pe={"rwse": 3}, pe_norm=True
    )
    model = build_model(cfg)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) >= 3  # the layers' and the PE encoder's
    with torch.no_grad():
        for m in norms:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = collate(
        [
            GraphBatch(
                x=torch.tensor([[2]]),
                edge_index=torch.zeros(2, 0, dtype=torch.long),
                edge_attr=torch.zeros(0, 1, dtype=torch.long),
                pe={"rwse": torch.tensor([[1.0, 0.0, 1.0]])},
            )
        ]
    )
    model.train()
    out = model(one)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics (and their counter) unchanged
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(out.detach(), model(one))
    # two nodes in training mode: still BatchNorm1d's batch statistics, which move the running ones
    model.train()
    model(collate([_two_nodes()]))
    assert not torch.equal(norms[0].running_mean, before[_key(model, norms[0]) + ".running_mean"])


def _two_nodes() -> GraphBatch:
    return GraphBatch(
        x=torch.tensor([[1], [3]]),
        edge_index=torch.tensor([[0], [1]]),
        edge_attr=torch.tensor([[2]]),
        pe={"rwse": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.5, 0.0]])},
    )


def _key(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


#: (arch, attention_layout, attention_topk, token-pruned first layer, heads, reads the key padding bias)
PAD_BIAS_CASES = [
    ("gt", "sparse", 0, False, 2, False),
    ("gt", "dense", 0, False, 2, False),
    ("gt", "dense", 0, True, 2, False),
    ("gps", "auto", 0, False, 2, True),
    ("gps", "auto", 0, True, 2, True),  # the kept layer attends over the complete graph
    ("gps", "sparse", 0, False, 2, True),
    ("gps", "auto", 3, False, 2, False),
    ("gps", "auto", 3, True, 2, False),
    ("gps", "auto", 0, False, 0, False),  # every attention sublayer pruned
    ("graphormer", "auto", 0, False, 2, False),
    ("graphormer", "auto", 0, True, 2, False),
]


@pytest.mark.parametrize(("arch", "layout", "topk", "tokens", "heads", "reads"), PAD_BIAS_CASES)
def test_key_padding_bias_is_built_only_where_a_layer_reads_it(
    arch: str, layout: str, topk: int, tokens: bool, heads: int, reads: bool
) -> None:
    """Only GPS's complete-graph attention reads ``ctx.pad_bias``; GT masks with its edges, Graphormer
    with the padding bin of its shortest-path bins, a sparsified GPS with its graph's bias. Built for
    every model with a padded layout, it was a dead ``[B, 1, 1, L]`` Where per forward in eager torch."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=heads, ffn_dim=8, token_keep=0.5 if tokens else 1.0), LayerSpec(heads=heads, ffn_dim=8)]
    cfg = ModelConfig(arch=arch, node_features=NODE, edge_features=EDGE, out_dim=2, hidden=16, layers=layers,
                      attention_layout=layout, attention_topk=topk)  # fmt: skip
    model = build_model(cfg).double().eval()
    batch = collate(_graphs(4, 2))
    h = torch.zeros(batch.num_nodes, 16, dtype=torch.float64)
    ctx = model.context(h, batch.edge_index, batch.edge_attr, batch.batch, 4)
    if not reads:
        assert ctx.pad_bias is None
        return
    assert ctx.layout is not None and ctx.pad_bias is not None
    assert ctx.pad_bias.dtype == torch.float64 and ctx.pad_bias.shape == (4, 1, 1, ctx.layout.max_nodes)
    torch.testing.assert_close(ctx.pad_bias, ctx.layout.key_padding_bias(torch.float64), rtol=0, atol=0)
    assert bool((ctx.pad_bias[:, 0, 0] == 0).eq(ctx.layout.valid).all())


@pytest.mark.parametrize("edge_features", [True, False])
def test_a_dense_gt_takes_its_edges_pairs_once_per_forward(
    edge_features: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each edge's (dst, src) pair and the first edge of its pair depend on the graph only: the context takes
    them once per forward for every GT layer, dense or token-pruned, and the count bias (each layer and the
    count bias took the pairs anew), and the first edges only where a layer reads edge features."""
    torch.manual_seed(0)
    layers = [
        LayerSpec(heads=2, ffn_dim=8),
        LayerSpec(heads=2, ffn_dim=8, token_keep=0.5),
        LayerSpec(heads=2, ffn_dim=8),
    ]
    cfg = ModelConfig(arch="gt", node_features=NODE, edge_features=EDGE if edge_features else None, out_dim=2,
                      hidden=16, layers=layers, attention_layout="dense")  # fmt: skip
    model = build_model(cfg).eval()
    batch = collate(_graphs(4, 2))
    if not edge_features:
        batch.edge_attr = None
    with torch.no_grad():
        ref = model(batch)
    pairs, firsts = [], []
    pair_index, first_of_pair = DenseLayout.pair_index, DenseLayout.first_of_pair
    monkeypatch.setattr(DenseLayout, "pair_index", lambda lay, *a: pairs.append(1) or pair_index(lay, *a))
    monkeypatch.setattr(DenseLayout, "first_of_pair", staticmethod(lambda *a: firsts.append(1) or first_of_pair(*a)))
    with torch.no_grad():
        out = model(batch)
    assert (len(pairs), len(firsts)) == (1, 1 if edge_features else 0)
    assert torch.equal(out, ref)
