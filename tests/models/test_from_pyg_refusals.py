"""What from_pyg refuses to import, each with an error naming the module and why: a model it cannot
read exactly is never half-imported. And what it once refused, or checked, wrongly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.nn import GATConv, GINEConv, GPSConv  # noqa: E402

from gtcompress.errors import UnsupportedModelError  # noqa: E402
from gtcompress.models import GPS  # noqa: E402
from gtcompress.models.from_pyg import from_pyg  # noqa: E402
from tests.models.test_from_pyg import ExampleGPS, _raises, gin_nn  # noqa: E402


def test_refuses_performer_attention() -> None:
    _raises(ExampleGPS(attn_type="performer"), "convs.0.attn", "PerformerAttention", "MultiheadAttention")


def test_refuses_other_local_conv() -> None:
    m = ExampleGPS()
    m.convs[1].conv = GATConv(32, 32)
    _raises(m, "convs.1.conv", "GATConv", "GINEConv")


def test_refuses_gine_nn_pattern() -> None:
    m = ExampleGPS()
    m.convs[0].conv = GINEConv(nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32)))
    _raises(m, "convs.0.conv.nn", "Sequential", "BatchNorm1d")
    m.convs[0].conv = GINEConv(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32)))
    _raises(m, "convs.0.conv.nn.0", "Linear(32, 32)")


def test_refuses_norm_and_act() -> None:
    _raises(ExampleGPS(norm="layer_norm"), "convs.0.norm1", "LayerNorm", "batch_norm")
    _raises(ExampleGPS(act="gelu"), "convs.0.mlp.1", "GELU", "ReLU")
    _raises(ExampleGPS(norm_kwargs={"eps": 1e-3}), "convs.0.norm1", "BatchNorm", "eps=1e-05")


def test_refuses_head_pattern_and_widths() -> None:
    m = ExampleGPS()
    m.mlp = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 1))
    _raises(
        m,
        "mlp (Sequential): expected a head of Linear, ReLU, Linear, ..., Linear, with Dropout anywhere "
        "(got Linear, Tanh, Linear)",
        readout="sum",
    )
    m.mlp = nn.Sequential(nn.Linear(32, 20), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))  # widths that do not chain
    _raises(m, "mlp.3 (Linear): expected Linear(20, *), got Linear(16, 1)", readout="sum")
    m.mlp = nn.Sequential(nn.Dropout(0.1))
    _raises(m, "mlp (Sequential): expected a head of Linear, ReLU", "(got Dropout)", readout="sum")


def test_refuses_heads_not_dividing_and_mixed_layers() -> None:
    m = ExampleGPS()
    m.convs[0].attn.num_heads = 3
    _raises(m, "convs.0.attn", "MultiheadAttention", "heads=3")
    m = ExampleGPS()
    m.convs[1].attn = nn.MultiheadAttention(32, 8, batch_first=True)
    _raises(m, "convs.1", "GPSConv", "heads")
    m = ExampleGPS()
    m.convs[1].conv = None
    _raises(m, "convs.1", "local conv kind")


def test_refuses_layers_whose_call_order_or_widths_it_cannot_know() -> None:
    """GPSConv layers registered in a module of its own may be called in any order (its forward
    decides), and a per-layer MLP width is not one model config: both are refused by name, not
    converted into a model that answers differently (a reversed pair gave 0.59 off PyG)."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = GPSConv(32, GINEConv(gin_nn(32)), heads=4)
            self.b = GPSConv(32, GINEConv(gin_nn(32)), heads=4)

    m = ExampleGPS()
    del m.convs
    m.block = Block()
    _raises(m, "block (Block): its GPSConv layers a, b are not in a ModuleList/Sequential", "pass convs=[...]")
    m = ExampleGPS()
    m.convs[1].mlp[0], m.convs[1].mlp[3] = nn.Linear(32, 96), nn.Linear(96, 32)
    _raises(m, "convs.1", "the same MLP width in every layer (64 in convs.0), got 96")


def test_refuses_unknown_modules_and_bad_widths() -> None:
    m = ExampleGPS()
    m.extra = nn.Linear(3, 3)
    _raises(m, "extra", "Linear", "ignore=")
    torch.manual_seed(0)
    src = ExampleGPS().eval()
    src.extra = nn.Linear(3, 3)
    assert isinstance(from_pyg(src, ignore=["extra"], readout="sum", pe_kind="rwse"), GPS)
    m = ExampleGPS()
    m.node_emb = nn.Embedding(28, 30)
    _raises(m, "node_emb", "Embedding", "width 24")
    _raises(ExampleGPS(), "nope", convs="nope")


class _ScaledGPS(GPSConv):
    """A GPSConv with a learned output scale (a 'layer scale'): an extra parameter and a new forward."""

    def __init__(self, c: int) -> None:
        super().__init__(c, GINEConv(gin_nn(c)), heads=4, attn_kwargs={"dropout": 0.5})
        self.scale = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **kw: object) -> Tensor:
        return super().forward(x, edge_index, batch, **kw) * self.scale


class _GatedGINE(GINEConv):
    """A GINEConv whose message gates the edge features: an extra Linear the weight copy cannot see."""

    def __init__(self, c: int) -> None:
        super().__init__(gin_nn(c))
        self.gate = nn.Linear(c, c)

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return (x_j + torch.sigmoid(self.gate(edge_attr)) * edge_attr).relu()


class _LoraLinear(nn.Linear):
    """A LoRA-style Linear (as loralib's): ``W x + B A x``; the low-rank update lives in extra parameters."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(i, o)
        self.lora_a = nn.Parameter(torch.randn(2, i))
        self.lora_b = nn.Parameter(torch.randn(o, 2))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + x @ self.lora_a.T @ self.lora_b.T


def test_refuses_subclasses_whose_extra_parameters_or_forward_it_cannot_see() -> None:
    """A subclass of a supported class used to pass the isinstance checks and import silently, its
    extra parameters dropped (outputs off by 5.7 for the scaled layer, 0.64 for the gated GINE)."""
    sub = "itself, not a subclass (a subclass may add parameters or change forward"
    m = ExampleGPS()
    m.convs[1] = _ScaledGPS(32)
    _raises(m, "convs.1 (_ScaledGPS): expected torch_geometric.nn.GPSConv " + sub, readout="sum")
    m = ExampleGPS()
    m.convs[0].conv = _GatedGINE(32)
    _raises(m, "convs.0.conv (_GatedGINE): expected GINEConv " + sub, readout="sum")
    m = ExampleGPS()
    m.mlp[4] = _LoraLinear(8, 1)
    _raises(
        m,
        "mlp (Sequential): expected a head of Linear, ReLU, Linear, ..., Linear, with Dropout anywhere (got",
        "_LoraLinear",
        readout="sum",
    )
    m = ExampleGPS()
    m.pe_lin = _LoraLinear(20, 8)
    _raises(m, "pe_lin (_LoraLinear): expected torch.nn.Linear or torch_geometric.nn.Linear " + sub, readout="sum")
    m = ExampleGPS()
    m.convs[0].attn = type("MyAttention", (nn.MultiheadAttention,), {})(32, 4, batch_first=True)
    _raises(m, "convs.0.attn (MyAttention): expected torch.nn.MultiheadAttention", sub, readout="sum")


def test_refuses_forward_hooks_and_imports_once_they_are_removed() -> None:
    """``torch.nn.utils.prune`` keeps the weight forward uses in a pre-hook, recomputed at the next forward:
    a pruned model filled by ``load_state_dict`` imported its stale ``.weight`` without a word (outputs off
    by 2.3); so did any hook that changes an output. Once ``prune.remove`` makes the weight plain, it imports."""
    import torch.nn.utils.prune as prune

    from tests.models.test_from_pyg import SIZES, max_diff, molecules, ours_run, pyg_run, warm_up

    torch.manual_seed(3)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    prune.l1_unstructured(src.mlp[0], "weight", amount=0.3)
    dst = ExampleGPS()
    prune.l1_unstructured(dst.mlp[0], "weight", amount=0.3)
    dst.load_state_dict(src.state_dict())
    dst.eval()
    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(dst, readout="sum", pe_kind="rwse")
    assert str(info.value) == (
        "mlp.0 (Linear): expected no forward hooks, got 1 (L1Unstructured): the import copies parameters and runs "
        "no hook; remove them first (torch.nn.utils.prune.remove(module, 'weight'), "
        "torch.nn.utils.remove_weight_norm(module), or the handle's remove())"
    )
    prune.remove(dst.mlp[0], "weight")
    ours = from_pyg(dst, readout="sum", pe_kind="rwse")
    b = molecules(SIZES, seed=4)
    with torch.no_grad():
        assert max_diff(pyg_run(dst, b), ours_run(ours, b)) <= 1e-5
    handle = dst.convs[1].conv.nn[0].register_forward_hook(lambda mod, inp, out: out * 2)
    _raises(dst, "convs.1.conv.nn.0 (Linear): expected no forward hooks, got 1 (<lambda>)", readout="sum")
    handle.remove()
    dst.register_forward_pre_hook(lambda mod, args: None)
    _raises(dst, "<model> (ExampleGPS): expected no forward hooks", readout="sum")


def test_example_accepts_an_exact_import_of_large_outputs_and_of_half_precision() -> None:
    """``example=``'s tolerance was 1e-4 absolute: an exact import of a model whose outputs reach 500 (float32
    noise 1.4e-4) was refused, blaming the pooling; and every float16 import, whose own rounding (and its
    encoding's, against the runtime's float32 RWSE) is coarser. Relative above 1 now, and by the dtype."""
    from gtcompress.preprocess.pe import rwse
    from tests.models.test_from_pyg import SIZES, molecules, pyg_run, warm_up

    torch.manual_seed(5)
    src = ExampleGPS()
    warm_up(src, pyg_run)
    with torch.no_grad():
        src.mlp[4].weight.mul_(3000.0)
        src.mlp[4].bias.mul_(3000.0)
    b = molecules(SIZES, seed=6)
    b.pe = torch.from_numpy(rwse(b.edge_index.numpy(), b.ptr.numpy(), 20))  # what example= checks pe_kind by
    with torch.no_grad():
        want = pyg_run(src, b)
    assert float(want.abs().max()) > 500
    from_pyg(src, readout="sum", pe_kind="rwse", example=(b, want))
    with torch.no_grad():
        bad = want + 1e-3 * want.abs().max()  # off by 1e-3 of the output's scale: still refused
    with pytest.raises(UnsupportedModelError, match=r"over max\(1, max \|output\|\); tolerance 0\.0001\)"):
        from_pyg(src, readout="sum", pe_kind="rwse", example=(b, bad))

    torch.manual_seed(7)
    half = ExampleGPS()
    warm_up(half, pyg_run)
    half = half.half()
    b = molecules(SIZES, seed=8)
    b.pe = torch.from_numpy(rwse(b.edge_index.numpy(), b.ptr.numpy(), 20)).half()  # the runtime's, in half
    with torch.no_grad():
        want = pyg_run(half, b)
    ours = from_pyg(half, readout="sum", example=(b, want))
    assert ours.config.pe == {"rwse": 20} and next(ours.parameters()).dtype == torch.float16


def test_a_transformerconv_gt_is_named_in_its_refusal() -> None:
    """The likeliest other PyG graph transformer: the refusal said only "expected a model containing
    GPSConv layers", leaving a user to wonder whether theirs was misread."""
    from torch_geometric.nn import TransformerConv

    class PygGT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(TransformerConv(16, 4, heads=4) for _ in range(2))

    with pytest.raises(UnsupportedModelError) as info:
        from_pyg(PygGT(), readout="sum")
    assert str(info.value) == (
        "<model> (PygGT): expected a model containing torch_geometric.nn.GPSConv layers; it holds TransformerConv "
        "layers, and a TransformerConv GT is not importable"
    )


def test_an_identity_node_encoder_is_no_encoder() -> None:
    """``nn.Identity`` where the example has its node embedding (float features already as wide as the
    layers take) was refused as an unknown encoder; ``node_encoder=False`` said the same thing."""
    from tests.models.test_from_pyg import SIZES, GinLapGPS, max_diff, molecules, ours_run, pyg_run, warm_up

    torch.manual_seed(12)
    src = GinLapGPS()
    src.node_lin = nn.Identity()
    warm_up(src, pyg_run, float_x=18, k=5)
    ours = from_pyg(src, readout="mean", pe_kind="lap")
    assert ours.config.node_features.kind == "float" and ours.config.node_features.dim == 18
    b = molecules(SIZES, seed=13, float_x=18, k=5)
    with torch.no_grad():
        assert max_diff(pyg_run(src, b), ours_run(ours, b, "lap", edges=False)) <= 1e-5


def test_a_lazy_linear_is_told_to_run_a_forward_first() -> None:
    """PyG's lazy ``Linear(-1, ...)`` initialises itself in a forward pre-hook: the hook check must leave its
    refusal to the part's converter, which says what to do, not "remove the hooks"."""
    from tests.models.test_from_pyg import GinLapGPS

    src = GinLapGPS()
    src.node_lin = pyg_nn.Linear(-1, 18)
    expected = "node_lin (Linear): expected an initialised (non-lazy) Linear; run one forward pass first"
    _raises(src, expected, readout="mean", pe_kind="lap")
