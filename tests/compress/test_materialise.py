import pytest
import torch

from gtcompress.checkpoint import load_checkpoint, save_checkpoint
from gtcompress.compress.gates import GateSet
from gtcompress.compress.masks import attach_gates
from gtcompress.compress.materialise import LayerPlan, Plan, full_plan, materialise, with_token_keep
from gtcompress.graph import collate

from .conftest import random_graphs, tiny_model

AXES = ("heads", "layers", "ffn")
CASES = [("gt", "sparse"), ("gt", "dense"), ("gps", "auto"), ("graphormer", "auto")]


def _plan(tk: float) -> Plan:
    return Plan(
        [
            LayerPlan(heads=[0, 2], ffn=[1, 3, 5, 7, 11, 30], token_keep=tk),
            LayerPlan(heads=[], ffn=list(range(0, 32, 2)), token_keep=tk),
            LayerPlan(heads=[1, 2, 3], ffn=[], token_keep=tk),
        ]
    )


def _gated_and_small(arch: str, layout: str, tk: float, node_data):
    model = tiny_model(arch, node_data.info, num_layers=3, attention_layout=layout, readout="sum")
    if tk < 1:
        model = with_token_keep(model, tk).eval()
    # make BatchNorm statistics non-trivial so that removed sublayers matter
    model.train()
    with torch.no_grad():
        model(collate(node_data["train"]))
    model.eval()
    plan = _plan(tk)
    return model, plan, materialise(model, plan).eval()


@pytest.mark.parametrize(("arch", "layout"), CASES)
@pytest.mark.parametrize("tk", [1.0, 0.6])
def test_materialised_reproduces_gated_eval_output(arch: str, layout: str, tk: float, node_data) -> None:
    model, plan, small = _gated_and_small(arch, layout, tk, node_data)
    batch = collate(node_data["val"])
    gates = GateSet.for_model(model, AXES)
    with attach_gates(model, gates, lambda: plan), torch.no_grad():
        gated = model(batch)
    with torch.no_grad():
        ref = small(batch)
        dense = model(batch)  # hooks removed: the plain model again
    assert (gated - ref).abs().max() <= 1e-5
    assert (gated - dense).abs().max() > 1e-3  # the plan really changed the function


@pytest.mark.parametrize(("arch", "layout"), CASES)
def test_parameter_tensors_really_shrink(arch: str, layout: str, node_data, tmp_path) -> None:
    model, _, small = _gated_and_small(arch, layout, 0.6, node_data)
    dh = model.config.head_dim
    l0, l1, l2 = small.layers
    assert l0.attn.heads == 2 and l0.attn.q.weight.shape == (2 * dh, 16) and l0.attn.o.weight.shape == (16, 2 * dh)
    assert l0.ffn.lin1.weight.shape == (6, 16) and l0.ffn.lin2.weight.shape == (16, 6)
    assert l1.attn is None and l1.tokens is None and l1.ffn.lin1.out_features == 16
    assert l2.ffn is None and l2.attn.k.weight.shape[0] == 3 * dh
    if l0.attn.edge_bias is not None:
        assert l0.attn.edge_bias.weight.shape[0] == 2
        torch.testing.assert_close(l0.attn.edge_bias.weight, model.layers[0].attn.edge_bias.weight[[0, 2]])
    if l0.attn.spd_bias is not None:
        assert l0.attn.spd_bias.weight.shape[1] == 2
    spec = [(s.heads, s.ffn_dim, s.token_keep) for s in small.config.layers]
    assert spec == [(2, 6, 0.6), (0, 16, 1.0), (3, 0, 0.6)]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert not any("gate" in k or "log_alpha" in k for k in small.state_dict())
    # an ordinary checkpoint: same class, smaller config, loads strictly and computes the same
    save_checkpoint(tmp_path / "ck", small)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is type(model)
    batch = collate(node_data["test"])
    with torch.no_grad():
        assert torch.equal(loaded(batch), small(batch))


def _unread_parameters(model: torch.nn.Module, batch) -> list[str]:
    """Parameters the forward does not touch: no gradient reaches them."""
    model.zero_grad(set_to_none=True)
    model(batch).square().sum().backward()
    return [name for name, p in model.named_parameters() if p.grad is None]


_NO_HEADS = Plan([LayerPlan([], list(range(32))), LayerPlan([], [1, 2]), LayerPlan([], [])])


@pytest.mark.parametrize(
    ("arch", "local_conv"), [("gt", "gine"), ("gps", "gine"), ("gps", "gin"), ("graphormer", "gine")]
)
@pytest.mark.parametrize("plan", [_plan(1.0), _NO_HEADS], ids=["sublayers", "no-heads"])
def test_materialised_models_hold_only_parameters_their_forward_reads(arch, local_conv, plan, node_data) -> None:
    """A Graphormer layer (pre-LN) whose attention or FFN was removed kept that sublayer's LayerNorm,
    and a model left with no head (GT, Graphormer) or whose GPS layers have GIN (no edges) kept its
    edge encoder: weights nothing read, in the checkpoint and the parameter count. The materialised
    model computes what the gated one does, with every parameter read."""
    model = tiny_model(arch, node_data.info, num_layers=3, local_conv=local_conv, readout="sum")
    model.train()
    with torch.no_grad():
        model(collate(node_data["train"]))  # BatchNorm statistics that make a removed sublayer matter
    model.eval()
    small = materialise(model, plan).eval()
    batch = collate(node_data["val"])
    with attach_gates(model, GateSet.for_model(model, AXES), lambda: plan), torch.no_grad():
        gated = model(batch)
    with torch.no_grad():
        assert (gated - small(batch)).abs().max() <= 1e-5
    assert _unread_parameters(small, batch) == []
    names = set(small.state_dict())
    reads_edges = local_conv == "gine" if arch == "gps" else plan is not _NO_HEADS  # GINE, or a head's edge bias
    assert ("edge_encoder.embeddings.0.weight" in names) is reads_edges
    if arch == "graphormer" and plan is not _NO_HEADS:  # layers 1 (no attention) and 2 (no FFN)
        norms = sorted(k for k in names if k.startswith("layers.") and ".norm_" in k)
        assert norms == [f"layers.{i}.norm_{w}.{p}" for i, w in ((0, "attn"), (0, "ffn"), (1, "ffn"), (2, "attn"))
                         for p in ("bias", "weight")]  # fmt: skip


def test_a_checkpoint_saved_with_unread_weights_still_loads(node_data, tmp_path) -> None:
    """Checkpoints materialised before those modules were left out hold their weights: they load (the
    unread tensors dropped), while any other unexpected tensor is still refused."""
    import json

    from safetensors.torch import load_file, save_file

    from gtcompress.checkpoint import CheckpointError, _sha256

    model = tiny_model("graphormer", node_data.info, num_layers=3).eval()
    small = materialise(model, _NO_HEADS).eval()
    root = save_checkpoint(tmp_path / "ck", small)
    state = load_file(str(root / "model.safetensors"))
    old = {**state, "edge_encoder.embeddings.0.weight": torch.randn(3, 16)}
    old |= {f"layers.{i}.norm_attn.{p}": torch.randn(16) for i in range(2) for p in ("weight", "bias")}

    def write(weights: dict[str, torch.Tensor]) -> None:
        save_file(weights, str(root / "model.safetensors"))
        doc = json.loads((root / "config.json").read_text())
        doc["weights_sha256"] = _sha256(root / "model.safetensors")
        (root / "config.json").write_text(json.dumps(doc))

    write(old)
    loaded, _ = load_checkpoint(root)
    assert set(loaded.state_dict()) == set(state)
    batch = collate(node_data["test"])
    with torch.no_grad():
        assert torch.equal(loaded(batch), small(batch))
    write({**old, "layers.0.attn.q.weight": torch.randn(16, 16)})  # layer 0 has no attention: not a norm of it
    with pytest.raises(CheckpointError, match=r"unexpected 1: layers\.0\.attn\.q\.weight$"):
        load_checkpoint(root)


def test_dense_checkpoints_have_no_token_scorer_and_full_plan_is_identity(node_data) -> None:
    model = tiny_model("gps", node_data.info)
    assert all(layer.tokens is None for layer in model.layers)
    assert not any(".tokens." in k for k in model.state_dict())
    same = materialise(model, full_plan(model)).eval()
    batch = collate(node_data["val"])
    with torch.no_grad():
        assert torch.equal(same(batch), model(batch))


def test_graphormer_drops_identity_layers(node_data) -> None:
    model = tiny_model("graphormer", node_data.info, num_layers=3)
    plan = full_plan(model)
    plan.layers[1] = LayerPlan([], [], 1.0)
    small = materialise(model, plan).eval()
    assert small.config.num_layers == 2
    gates = GateSet.for_model(model, AXES)
    batch = collate(node_data["val"])
    with attach_gates(model, gates, lambda: plan), torch.no_grad():
        gated = model(batch)
    with torch.no_grad():
        assert (gated - small(batch)).abs().max() <= 1e-5


def test_graph_level_tokens(node_data) -> None:
    from .conftest import tiny_dataset

    ds = tiny_dataset("graph")
    model = with_token_keep(tiny_model("gps", ds.info), 0.5).eval()
    plan = full_plan(model)
    plan.layers[0].heads = [3]
    small = materialise(model, plan).eval()
    batch = collate(random_graphs(6, 9, "graph"))
    with attach_gates(model, GateSet.for_model(model, AXES), lambda: plan), torch.no_grad():
        assert (model(batch) - small(batch)).abs().max() <= 1e-5


def test_a_plan_that_keeps_tokens_needs_a_trained_scorer(node_data) -> None:
    """Without a token scorer in the model, materialise would have made a random one (another per
    call): the kept tokens would be noise, unlike the gated model it materialises."""
    model = tiny_model("gt", node_data.info, num_layers=3).eval()
    with pytest.raises(ValueError) as info:
        materialise(model, _plan(0.5))
    assert str(info.value) == (
        "plan layer 0 keeps 0.5 of the tokens but the model's layer 0 has no token scorer: attach one with "
        "with_token_keep(model, ratio, seed) and train it before materialising"
    )


def test_gates_refuse_the_padded_lowering(node_data) -> None:
    """The padded lowering folds attn.o into its own matmuls, so the head and attention-sublayer
    gates (hooks on attn.o) did nothing there: the gated model was the ungated one."""
    from gtcompress.errors import UnsupportedModelError
    from gtcompress.preprocess.layouts import bucketed_layout
    from gtcompress.preprocess.spec import Lowering

    model = tiny_model("gt", node_data.info, num_layers=2).eval()
    batch = collate(node_data["val"])
    lay = {k: torch.from_numpy(v) for k, v in bucketed_layout(batch.edge_index.numpy(), batch.num_nodes).items()}
    plan = full_plan(model)
    plan.layers[1].heads = []
    with attach_gates(model, GateSet.for_model(model, ("heads", "layers", "ffn")), lambda: plan), torch.no_grad():
        model(batch, lowering=Lowering.SCATTER)  # the gates' lowerings still run
        with pytest.raises(UnsupportedModelError, match="the padded one folds the output projection"):
            model(batch, layout=lay, lowering=Lowering.PADDED)
    with torch.no_grad():
        model(batch, layout=lay, lowering=Lowering.PADDED)  # detached: the hook is gone
