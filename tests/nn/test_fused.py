"""The fused op ``gtcompress::sparse_graph_attention`` on CPU (its reference fallback), its CUDA
kernel registration, the device-side CSR builder, and the GT model's fused layout."""

from __future__ import annotations

import pytest
import torch

from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig, build_model
from gtcompress.nn.fused import csr_from_edge_index
from gtcompress.preprocess.spec import Lowering
from tests.nn.test_attention import _case, brute_force
from trt_plugins.csr import edge_index_to_csr


@pytest.mark.parametrize(("n", "e", "h", "d"), [(1, 0, 1, 4), (5, 0, 2, 8), (1, 1, 2, 8), (30, 90, 4, 16)])
def test_cpu_fallback_equals_the_reference(n: int, e: int, h: int, d: int) -> None:
    q, k, v, ei, bias = _case(n, e, h, d, seed=n + e)
    rowptr, col, perm = csr_from_edge_index(ei, n)
    out = torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, bias[perm], d**-0.5)
    torch.testing.assert_close(out, brute_force(q, k, v, ei, bias))


def test_csr_builder_matches_the_plugin_csr() -> None:
    g = torch.Generator().manual_seed(0)
    ei = torch.randint(0, 50, (2, 400), generator=g)
    ei[1, :60] = 7  # a hub, and the last nodes without incoming edges
    ei[1] = torch.where(ei[1] >= 45, 3, ei[1])
    rowptr, col, perm = csr_from_edge_index(ei, 50)
    want = edge_index_to_csr(ei, 50, dtype=torch.int64)
    for got, ref in zip((rowptr, col, perm), want, strict=True):
        assert torch.equal(got, ref)


def test_the_cuda_kernel_launches_on_the_tensors_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton launches on the current device: ``model.to("cuda:1")`` with cuda:0 current, or a direct
    call of the public launcher with cuda:1 tensors, would give the kernels cuda:1 pointers on
    cuda:0. The launcher makes the tensors' device current around both launches."""
    import contextlib

    import trt_plugins.kernels as kernels
    from gtcompress.nn import fused

    current: list[object] = []

    @contextlib.contextmanager
    def device(d: object):  # stands in for torch.cuda.device on a machine without one
        current.append(d)
        yield
        current.pop()

    launched: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(kernels, "jit_kernel", lambda kernel: kernel)
    monkeypatch.setattr(kernels, "_launch", lambda kernel, *a, **k: launched.append((kernel, current[-1])))
    # the compiled path, as on a GPU, whatever TRITON_INTERPRET says (=1 sends CUDA tensors to the
    # interpreter, which needs no current device)
    monkeypatch.setattr(kernels.triton.knobs.runtime, "interpret", False)
    q = torch.zeros(2, 1, 4, device="meta")
    rowptr, col = torch.zeros(3, dtype=torch.long, device="meta"), torch.zeros(1, dtype=torch.long, device="meta")
    fused._cuda(q, q, q, rowptr, col, None, 0.5)
    assert launched == [(k, q.device) for k in kernels.spec.KERNELS] and not current


def test_the_op_has_a_cuda_kernel_and_no_separate_cpu_one() -> None:
    """CUDA dispatches to the Triton kernel (tests/gpu runs it); CPU uses the op's own definition."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert has("gtcompress::sparse_graph_attention", "CUDA")
    assert not has("gtcompress::sparse_graph_attention", "CPU")


def test_gt_fused_layout_equals_sparse_on_cpu() -> None:
    torch.manual_seed(0)
    kw = {"node_features": FeatureSpec("float", 6), "edge_features": FeatureSpec("float", 2), "out_dim": 3}
    sparse = build_model(ModelConfig(arch="gt", attention_layout="sparse", hidden=16, heads=2, **kw)).eval()
    fused = build_model(ModelConfig(arch="gt", attention_layout="fused", hidden=16, heads=2, **kw)).eval()
    fused.load_state_dict(sparse.state_dict())
    g = torch.Generator().manual_seed(1)
    x, ea = torch.randn(40, 6, generator=g), torch.randn(150, 2, generator=g)
    ei = torch.randint(0, 38, (2, 150), generator=g)  # nodes 38, 39 have no edges
    batch = torch.zeros(40, dtype=torch.long)
    with torch.no_grad():
        a = sparse.compute(x, ei, ea, batch, {}, 1)
        b = fused.compute(x, ei, ea, batch, {}, 1)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert fused.choose_lowering(ei, batch, 1) is Lowering.PLUGIN
    assert sparse.choose_lowering(ei, batch, 1) is Lowering.SCATTER
    auto = build_model(ModelConfig(arch="gt", hidden=16, heads=2, **kw))
    assert auto.choose_lowering(ei, batch, 1) is not Lowering.PLUGIN  # the fused layout: on a CUDA device only


@pytest.mark.parametrize(("n", "e", "with_bias"), [(30, 90, True), (6, 0, True), (12, 40, False)])
def test_the_op_has_the_gradient_of_the_reference(n: int, e: int, with_bias: bool) -> None:
    """A GT picks the op on every CUDA device, so training there differentiates through it: the op
    had no autograd formula, and backward raised "Trying to backward through
    gtcompress.sparse_graph_attention.default but no autograd formula was registered"."""
    q, k, v, ei, bias = _case(n, e, 2, 4, seed=n + e)  # float64; scale 0.5 is brute_force's 1/sqrt(4)
    rowptr, col, perm = csr_from_edge_index(ei, n)
    b = bias[perm].contiguous() if with_bias else None
    leaves = [t.requires_grad_() for t in (q, k, v, *([b] if b is not None else []))]

    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, rest[0] if rest else None, 0.5)

    assert torch.autograd.gradcheck(op, tuple(leaves))
    got = torch.autograd.grad(op(*leaves).square().sum(), leaves)
    ref = brute_force(q, k, v, ei[:, perm], b)  # the edges in CSR order, as b
    if e == 0:  # no edges: zeros, whatever the inputs
        assert not ref.requires_grad and all(torch.equal(g, torch.zeros_like(g)) for g in got)
        return
    want = torch.autograd.grad(ref.square().sum(), leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_a_gt_trains_through_the_fused_layout_as_through_the_sparse_one() -> None:
    torch.manual_seed(0)
    kw = {"node_features": FeatureSpec("float", 6), "edge_features": FeatureSpec("float", 2), "out_dim": 3}
    sparse = build_model(ModelConfig(arch="gt", attention_layout="sparse", hidden=16, heads=2, **kw)).train()
    fused = build_model(ModelConfig(arch="gt", attention_layout="fused", hidden=16, heads=2, **kw)).train()
    fused.load_state_dict(sparse.state_dict())
    g = torch.Generator().manual_seed(1)
    x, ea = torch.randn(40, 6, generator=g), torch.randn(150, 2, generator=g)
    ei = torch.randint(0, 38, (2, 150), generator=g)
    batch = torch.zeros(40, dtype=torch.long)
    for model in (sparse, fused):
        model.compute(x, ei, ea, batch, {}, 1).square().sum().backward()
    grads = {name: p.grad for name, p in sparse.named_parameters()}
    for name, p in fused.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-4, msg=name)


class _CudaLooking(torch.Tensor):
    """An edge_index that says it is on CUDA: what ``choose_lowering`` reads of it."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda")


def test_attention_dropout_in_training_keeps_a_gt_off_the_fused_op() -> None:
    """The fused op has no attention dropout: a GT trained on CUDA (layout "auto") with attn_dropout
    ran through it and trained without the dropout its config asked for, unlike the same model on CPU."""
    kw = {"node_features": FeatureSpec("float", 6), "out_dim": 3, "hidden": 16, "heads": 2}
    ei = torch.randint(0, 40, (2, 150), generator=torch.Generator().manual_seed(1))
    on_cuda, batch = ei.as_subclass(_CudaLooking), torch.zeros(40, dtype=torch.long)
    plain = build_model(ModelConfig(arch="gt", **kw))
    dropped = build_model(ModelConfig(arch="gt", attn_dropout=0.2, **kw))
    assert plain.train().choose_lowering(on_cuda, batch, 1) is Lowering.PLUGIN  # no dropout: the kernel
    assert dropped.eval().choose_lowering(on_cuda, batch, 1) is Lowering.PLUGIN  # inference: the kernel
    assert dropped.train().choose_lowering(on_cuda, batch, 1) is dropped.choose_lowering(ei, batch, 1)
    assert dropped.choose_lowering(ei, batch, 1) is not Lowering.PLUGIN
    named = build_model(ModelConfig(arch="gt", attn_dropout=0.2, attention_layout="fused", **kw)).train()
    with pytest.raises(ValueError, match=r"attention_layout 'fused' has no attention dropout, but attn_dropout=0\.2"):
        named.choose_lowering(ei, batch, 1)
    assert named.eval().choose_lowering(ei, batch, 1) is Lowering.PLUGIN


def test_a_plugin_lowering_passed_in_is_refused_while_attention_dropout_trains() -> None:
    """``model(batch, lowering="plugin")`` (or ``compute`` with a CSR layout) skipped choose_lowering's
    refusal: a GT with attn_dropout trained through the fused op without any attention dropout, every
    training forward identical, where the other lowerings drop attention weights."""
    kw = {"node_features": FeatureSpec("float", 6), "out_dim": 3, "hidden": 16, "heads": 2, "attn_dropout": 0.5}
    g = torch.Generator().manual_seed(1)
    x, ei = torch.randn(40, 6, generator=g), torch.randint(0, 40, (2, 150), generator=g)
    batch = torch.zeros(40, dtype=torch.long)
    model = build_model(ModelConfig(arch="gt", **kw)).train()
    torch.manual_seed(0)
    a, b = (model.compute(x, ei, None, batch, {}, 1, lowering="scatter") for _ in range(2))
    assert not torch.allclose(a, b)  # the scatter lowering applies attention dropout
    want = (
        r"^the plugin lowering \(the fused op\) has no attention dropout, but attn_dropout=0\.5 is active in "
        r"training; train on the scatter, padded or dense lowering \(or run plugin in eval mode\)$"
    )
    for lowering in ("plugin", Lowering.PLUGIN):
        with pytest.raises(ValueError, match=want):
            model.compute(x, ei, None, batch, {}, 1, lowering=lowering)
    csr = dict(zip(("rowptr", "col", "perm"), csr_from_edge_index(ei, 40), strict=True))
    with pytest.raises(ValueError, match=want):
        model.compute(x, ei, None, batch, {}, 1, layout=csr, lowering="plugin")
    model.eval()  # inference has no dropout: the fused op is the GT's own
    torch.testing.assert_close(
        model.compute(x, ei, None, batch, {}, 1, layout=csr, lowering="plugin"),
        model.compute(x, ei, None, batch, {}, 1, lowering="scatter"),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hub_with_many_incoming_edges(dtype: torch.dtype) -> None:
    """In float16 the CPU op summed a node's softmax weights in float16: over 65,505 or more incoming
    edges the denominator overflowed to inf and the hub's output was exactly 0 (the CUDA kernel
    accumulates in float32), and the backward, which recomputes the same reference, gave it zero
    gradients. Equal scores and v = 1 must give 1."""
    e = 70_000
    n = e + 1
    ei = torch.stack([torch.arange(1, n), torch.zeros(e, dtype=torch.long)])  # every node -> node 0
    rowptr, col, _ = csr_from_edge_index(ei, n)
    q = torch.zeros(n, 1, 4, dtype=dtype, requires_grad=True)
    v = torch.ones(n, 1, 4, dtype=dtype, requires_grad=True)
    out = torch.ops.gtcompress.sparse_graph_attention(q, q, v, rowptr, col, None, 0.5)
    assert out.dtype == dtype
    torch.testing.assert_close(out[0].float(), torch.ones(1, 4), atol=4e-3, rtol=0)  # float32 sums, half output
    assert torch.equal(out[1:], torch.zeros_like(out[1:]))  # no incoming edges
    out[0].sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad.float()).all()
    torch.testing.assert_close(v.grad[1:].float().sum(), torch.tensor(4.0), rtol=1e-2, atol=0)  # 4 dims x sum(alpha)=1


def test_the_op_trains_under_torch_compile_in_one_graph_whatever_the_graph_size() -> None:
    """The backward recomputes the reference from the CSR; it expanded ``rowptr`` to per-edge
    destinations with ``repeat_interleave`` and no ``output_size``, an op whose output size is read
    from device data. AOTAutograd could not trace that backward with dynamic sizes
    (DynamicOutputShapeException): ``torch.compile`` of a GT trained on the fused layout (every
    CUDA device's default) fell back with a graph break around each attention layer, and on a GPU
    each such backward synchronised with the host. The edge count is ``col``'s length."""
    from torch._dynamo.utils import counters

    def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ei: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        rowptr, col, perm = csr_from_edge_index(ei, q.shape[0])
        out = torch.ops.gtcompress.sparse_graph_attention(q, k, v, rowptr, col, bias.index_select(0, perm), 0.5)
        return out.square().sum()

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, dynamic=True, backend="aot_eager")
    for n, e in ((30, 90), (21, 50), (41, 130)):
        q, k, v, ei, bias = _case(n, e, 2, 4, seed=n)
        leaves = [t.requires_grad_() for t in (q, k, v, bias)]
        got = torch.autograd.grad(compiled(q, k, v, ei, bias), leaves)
        want = torch.autograd.grad(step(q, k, v, ei, bias), leaves)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every size, no fallback
    assert not counters["graph_break"]
    torch._dynamo.reset()


def test_the_op_backward_traces_with_fake_tensors() -> None:
    """What AOTAutograd does with the backward: no step of the reference may need a device value."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gtcompress.nn.fused import _reference

    q, k, v, ei, bias = _case(12, 30, 2, 4, seed=3)
    rowptr, col, perm = csr_from_edge_index(ei, 12)
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = _reference(q, k, v, rowptr, col, bias[perm], 0.5)
    assert out.shape == q.shape and out.dtype == q.dtype


@pytest.mark.parametrize(("dtype", "head_dim"), [(torch.float64, 8), (torch.float32, 300)])
def test_the_cuda_registration_runs_the_reference_where_the_kernel_cannot(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, head_dim: int
) -> None:
    """A GT takes the fused op on every CUDA device, but the Triton kernel takes float32/16/bf16 and
    ``head_dim <= 256``: a float64 model (``from_pyg`` keeps PyG's dtype) or one with wider heads
    raised ``PluginSpecError`` in its first forward on a GPU, where CPU ran it. Such inputs run the
    reference; the kernel itself is never handed them. (CPU tensors stand in for CUDA ones: the
    registration only reads dtypes and shapes.)"""
    import trt_plugins.kernels as kernels
    from gtcompress.nn import fused

    launched: list[int] = []
    monkeypatch.setattr(kernels, "sparse_graph_attention", lambda *a, **k: launched.append(1))
    q, k, v, ei, bias = _case(9, 20, 2, head_dim, seed=2)
    q, k, v, bias = (t.to(dtype) for t in (q, k, v, bias))
    rowptr, col, perm = csr_from_edge_index(ei, 9)
    out = fused._cuda(q, k, v, rowptr, col, bias[perm], head_dim**-0.5)
    assert not launched and out.dtype == dtype and out.shape == q.shape
    want = brute_force(q.double(), k.double(), v.double(), ei, bias.double())
    torch.testing.assert_close(out, want.to(dtype))
    fused._cuda(q.float(), k.float(), v.float(), rowptr, col, None, 0.5)  # what the kernel takes goes to it
    assert launched == ([1] if head_dim <= 256 else [])
