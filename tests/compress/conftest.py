"""Tiny datasets and models for the compression tests (seconds, one thread)."""

from __future__ import annotations

import pytest
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset
from gtcompress.graph import GraphBatch
from gtcompress.models import ModelConfig, build_model

NODE = FeatureSpec("float", 3)
EDGE = FeatureSpec("categorical", 1, [3])


def random_graphs(count: int, seed: int, level: str = "node", classes: int = 3) -> list[GraphBatch]:
    """Random undirected graphs with float node features (no exact ties in token scores)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = 4 + i % 6
        src = torch.randint(0, n, (2 * n,), generator=g)
        dst = torch.randint(0, n, (2 * n,), generator=g)
        keep = src != dst
        src, dst = src[keep], dst[keep]
        ei = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
        attr = torch.randint(0, 3, (src.shape[0], 1), generator=g)
        x = torch.randn(n, 3, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        if level == "graph":
            y = (x[:, 0].mean() > 0).long().view(1)
        out.append(GraphBatch(x=x, edge_index=ei, edge_attr=torch.cat([attr, attr]), y=y))
    return out


def tiny_dataset(level: str = "node", seed: int = 0) -> GraphDataset:
    classes = 3 if level == "node" else 2
    info = DatasetInfo("toy", level, "multiclass", classes, "accuracy", NODE, EDGE)
    return GraphDataset(
        info,
        {
            "train": random_graphs(24, seed, level),
            "val": random_graphs(10, seed + 1, level),
            "test": random_graphs(10, seed + 2, level),
        },
    )


def tiny_model(arch: str, info: DatasetInfo, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    opts = {"hidden": 16, "num_layers": 2, "heads": 4, **kw}
    return build_model(ModelConfig.for_dataset(arch, info, **opts)).eval()


@pytest.fixture()
def node_data() -> GraphDataset:
    return tiny_dataset("node")
