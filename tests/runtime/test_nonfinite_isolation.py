"""One graph whose (finite, valid) features overflow the model must not poison the graphs it is merged with.

GT's ``dense`` lowering packs small graphs into shared padded rows. A graph whose features are large
enough that the model overflows on it (1e30: its scores reach inf, its softmax NaN) had NaN keys and
values in those rows; ``0 * NaN`` is NaN, so every graph packed beside it came back NaN too. In
``gtc serve`` and the Triton python variant those are other clients' requests merged into the same
call; in ``GraphSession.run`` the other graphs of the list.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from exporters.onnx import export_onnx
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from runtime.served import ServedModel, run_items
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model


def _ring(x: np.ndarray) -> NumpyGraph:
    n = x.shape[0]
    ei = np.array([np.arange(n), (np.arange(n) + 1) % n], dtype=np.int64)
    return NumpyGraph(x.astype(np.float32), ei, None, None, {})


@pytest.fixture(scope="module")
def packed_gt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=2,
        task_level="node",
    )
    res = export_onnx(seeded_model(cfg), tmp_path_factory.mktemp("packed") / "gt.onnx", "dense", verify_batches=1)
    assert res.spec.packed  # small graphs share padded rows: the case this file is about
    return res.path


def _graphs() -> tuple[list[NumpyGraph], list[int]]:
    """A large graph (sets the row width), the overflowing one and two clean small ones packed beside it."""
    rng = np.random.default_rng(0)
    big = _ring(rng.normal(size=(8, 3)))
    bad = _ring(np.full((2, 3), 1e30))
    small = _ring(rng.normal(size=(2, 3)))
    mid = _ring(rng.normal(size=(4, 3)))
    return [big, bad, small, mid], [0, 2, 3]


def test_session_run_keeps_clean_graphs_clean(packed_gt: Path) -> None:
    sess = GraphSession(packed_gt)
    graphs, clean = _graphs()
    together = sess.run(graphs)
    assert not np.isfinite(together[1]).all()  # the model overflows on the 1e30 graph itself
    for k in clean:
        alone = sess.run([graphs[k]])[0]
        assert np.isfinite(alone).all()
        np.testing.assert_array_equal(together[k], alone)


def test_run_items_keeps_other_requests_clean(packed_gt: Path) -> None:
    """The model call of ``gtc serve``'s batcher and of the Triton python variant."""
    model = ServedModel("m", GraphSession(packed_gt))
    graphs, clean = _graphs()
    items = [SimpleNamespace(graph=g, num_graphs=1) for g in graphs]
    outs = run_items(model, items)
    assert not np.isfinite(outs[1]).all()
    for k in clean:
        alone = run_items(model, [items[k]])[0]
        assert np.isfinite(alone).all()
        np.testing.assert_array_equal(outs[k], alone)
