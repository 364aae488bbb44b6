"""A GPS trained in PyG on PyG's own ``TUDataset`` MUTAG, through ``from_pyg``, ``gtc eval``, ``gtc prune`` and
``gtc export``: the configuration PyG users have (one-hot float features, ``global_max_pool``, a head with
Dropout whose widths do not halve), on the real MUTAG files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

pyg_nn = pytest.importorskip("torch_geometric.nn")
from torch_geometric.datasets import TUDataset  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402

from cli.main import app  # noqa: E402


def _tu_root() -> Path:
    """``$GTCOMPRESS_DATA/TU`` or ``<repo>/../shared/data/TU``, as tests/data/test_tu.py reads it."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return (Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data") / "TU"


class MaxPoolGPS(nn.Module):
    """PyG's examples/graph_gps.py on TU data, as its users adapt it: Linear encoders of the one-hot
    features, GINE layers, ``global_max_pool`` and ``Linear, ReLU, Dropout, Linear``."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.node_emb = nn.Linear(7, c)
        self.edge_emb = nn.Linear(4, c)
        self.convs = nn.ModuleList(
            pyg_nn.GPSConv(c, pyg_nn.GINEConv(nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))), heads=2)
            for _ in range(2)
        )
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Dropout(0.3), nn.Linear(c, 2))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        x, e = self.node_emb(x), self.edge_emb(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=e)
        return self.mlp(pyg_nn.global_max_pool(x, batch))


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_pyg_model_of_tudataset_features_is_evaluated_pruned_and_exported(tmp_path: Path, monkeypatch) -> None:
    """``--data tu:MUTAG`` was refused for such a model ("node features: the model takes float, 7 columns, MUTAG
    has categorical, cardinalities [7]"): the data is now laid out as PyG's TUDataset lays it out for a model that
    reads it so, and the import gives the PyG model's outputs on every MUTAG graph. Its pruned export answers a
    request of the same raw one-hot columns as the pruned checkpoint does."""
    from gtcompress.checkpoint import load_checkpoint, save_checkpoint
    from gtcompress.data.tu import random_split_indices
    from gtcompress.graph import GraphBatch, collate
    from gtcompress.models.from_pyg import from_pyg
    from gtcompress.preprocess import NumpyGraph
    from gtcompress.train.recipe import DataSpec
    from runtime.session import GraphSession

    tu = _tu_root()
    if not (tu / "MUTAG").is_dir():
        pytest.skip(f"real TU data not found at {tu} (set GTCOMPRESS_DATA)")
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tu / "MUTAG", tmp_path / "pyg" / "MUTAG" / "raw")  # TUDataset writes its processed copy there
    pyg_data = TUDataset(str(tmp_path / "pyg"), "MUTAG")
    torch.manual_seed(0)
    src = MaxPoolGPS()
    opt = torch.optim.Adam(src.parameters(), lr=1e-2)
    for b in DataLoader(pyg_data, batch_size=32, shuffle=True):  # one epoch: weights away from their init
        loss = nn.functional.cross_entropy(src(b.x, b.edge_index, b.edge_attr, b.batch), b.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    src.eval()
    everything = next(iter(DataLoader(pyg_data, batch_size=len(pyg_data))))
    with torch.no_grad():
        want = src(everything.x, everything.edge_index, everything.edge_attr, everything.batch)
    ours = from_pyg(src, readout="max")
    assert (ours.config.node_features.kind, ours.config.node_features.dim, ours.config.edge_features.dim) == (
        "float",
        7,
        4,
    )
    ckpt = tmp_path / "imported"
    save_checkpoint(ckpt, ours, {})

    # our MUTAG, laid out for this model, is PyG's TUDataset: the same outputs on every graph
    ds = DataSpec("tu:MUTAG", root=str(tu)).load_for(ours.config)
    for split, idx in random_split_indices(len(pyg_data), seed=0).items():
        with torch.no_grad():
            got = ours(collate(ds[split]))
        torch.testing.assert_close(got, want[torch.from_numpy(idx)], rtol=0, atol=1e-5)

    data = ("--data", "tu:MUTAG", "--data-root", str(tu))
    res = _run("eval", str(ckpt), *data)
    assert res.exit_code == 0, res.output
    pruned, onnx_file = tmp_path / "pruned", tmp_path / "pruned.onnx"
    res = _run(
        "prune",
        str(ckpt),
        *data,
        "--target-flops",
        "0.6",
        "--epochs",
        "1",
        "--finetune-epochs",
        "0",
        "--out",
        str(pruned),
    )
    assert res.exit_code == 0, res.output
    res = _run("eval", str(pruned))  # the dataset it records, laid out for it again
    assert res.exit_code == 0, res.output
    res = _run("export", str(pruned), "--out", str(onnx_file))
    assert res.exit_code == 0, res.output

    model, _ = load_checkpoint(pruned)
    assert (model.config.readout, model.config.head_widths) == ("max", [16])
    graphs = [pyg_data[i] for i in (0, 5, 17)]
    request = [
        NumpyGraph(x=g.x.numpy(), edge_index=g.edge_index.numpy(), edge_attr=g.edge_attr.numpy()) for g in graphs
    ]
    answers = GraphSession(onnx_file, ["CPUExecutionProvider"]).run(request)
    with torch.no_grad():
        ref = model.eval()(collate([GraphBatch.from_pyg(g) for g in graphs])).numpy()
    np.testing.assert_allclose(np.stack(answers), ref, atol=1e-5)
