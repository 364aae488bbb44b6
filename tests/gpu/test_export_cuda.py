"""Exporting a model that lives on the GPU (``from_pyg`` keeps a PyG model's device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


@pytest.mark.parametrize("lowering", ["scatter", "plugin"])
def test_a_model_on_the_gpu_exports_and_stays_there(tmp_path: Path, lowering: str) -> None:
    """The export traces and verifies on CPU inputs: a CUDA model failed with a device mismatch."""
    from exporters.onnx import export_onnx
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model
    from runtime.session import GraphSession

    cfg = ModelConfig(
        arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1,
        pe={"rwse": 4}, task_level="graph",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).cuda().eval()
    res = export_onnx(model, tmp_path / "m.onnx", lowering, verify_batches=2)
    assert res.max_abs_err < 1e-4 and res.batches_checked == 2
    assert all(p.is_cuda for p in model.parameters())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3)).astype(np.float32)
    ei = rng.integers(0, 7, (2, 12))
    (got,) = GraphSession(res.path).run([{"x": x, "edge_index": ei}])
    assert got.shape == (2,)
