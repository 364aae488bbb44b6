"""The dataset cache: one weights-only file per (name, params), rebuilt when unreadable."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import gtcompress.data as data
from gtcompress.data import csl as csl_module
from gtcompress.data import load_dataset, sbm
from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset
from gtcompress.data.cache import cache_path, cached, default_cache_dir, load_packed
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch


def _toy() -> GraphDataset:
    """Graph-level targets, float edge features, a PE and an empty split: every optional field."""
    g = torch.Generator().manual_seed(0)

    def graph(n: int, label: int) -> GraphBatch:
        ei = torch.randint(0, n, (2, 3 * n), generator=g)
        return GraphBatch(
            x=torch.randn(n, 4, generator=g),
            edge_index=ei,
            edge_attr=torch.randn(3 * n, 2, generator=g),
            y=torch.tensor([label]),
            pe={"rwse": torch.rand(n, 3, generator=g)},
        )

    info = DatasetInfo(
        name="toy",
        task_level="graph",
        task="multiclass",
        out_dim=3,
        metric="accuracy",
        node_features=FeatureSpec("float", 4),
        edge_features=FeatureSpec("float", 2),
    )
    return GraphDataset(info, {"train": [graph(5, 0), graph(300, 2)], "val": [graph(1, 1)], "test": []})


def _fail() -> GraphDataset:
    raise AssertionError("the builder must not run: the dataset should come from the cache")


def _assert_same(a: GraphDataset, b: GraphDataset) -> None:
    assert a.info == b.info
    assert a.splits.keys() == b.splits.keys()
    for split in a.splits:
        assert len(a[split]) == len(b[split])
        for g, h in zip(a[split], b[split], strict=True):
            assert h.edge_index.dtype == torch.int64 and h.edge_index.is_contiguous()
            for key in ("x", "edge_index", "edge_attr", "y"):
                u, v = getattr(g, key), getattr(h, key)
                assert (u is None and v is None) or (u.dtype == v.dtype and torch.equal(u, v)), key
            assert g.pe.keys() == h.pe.keys()
            assert all(torch.equal(g.pe[k], h.pe[k]) for k in g.pe)


PARAMS: dict[str, Any] = {"seed": 0, "version": 1}


def test_second_load_reads_the_file(tmp_path: Path) -> None:
    built = cached("toy", PARAMS, _toy, tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("toy-") and files[0].suffix == ".pt"
    _assert_same(built, cached("toy", PARAMS, _fail, tmp_path))
    # The file is plain tensors and containers: the weights-only unpickler accepts it.
    assert isinstance(torch.load(files[0], weights_only=True), dict)


def test_key_depends_on_params_not_their_order(tmp_path: Path) -> None:
    assert cache_path("a", {"x": 1, "y": 2}, tmp_path) == cache_path("a", {"y": 2, "x": 1}, tmp_path)
    assert cache_path("a", {"x": 1}, tmp_path) != cache_path("a", {"x": 2}, tmp_path)
    assert cache_path("a", {"x": 1}, tmp_path) != cache_path("b", {"x": 1}, tmp_path)
    assert "/" not in cache_path("tu:A/B", {}, tmp_path).name


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_file_is_regenerated_with_a_warning(tmp_path: Path, damage: str) -> None:
    cached("toy", PARAMS, _toy, tmp_path)
    path = cache_path("toy", PARAMS, tmp_path)
    blob = path.read_bytes()
    damaged = {"garbage": b"not a torch file", "truncate": blob[: len(blob) // 2], "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.warns(RuntimeWarning, match="regenerating"):
        rebuilt = cached("toy", PARAMS, _toy, tmp_path)
    _assert_same(_toy(), rebuilt)
    _assert_same(_toy(), cached("toy", PARAMS, _fail, tmp_path))  # the file was rewritten


def test_file_for_other_params_is_not_trusted(tmp_path: Path) -> None:
    cached("toy", PARAMS, _toy, tmp_path)
    wrong = cache_path("toy", PARAMS, tmp_path)
    other = cache_path("toy", {"seed": 9}, tmp_path)
    wrong.rename(other)  # e.g. a hash collision or a file copied by hand
    with pytest.raises(ValueError, match="different parameters"):
        load_packed(other, expect_name="toy", expect_params={"seed": 9})
    with pytest.warns(RuntimeWarning):
        cached("toy", {"seed": 9}, _toy, tmp_path)


def test_unwritable_cache_dir_only_warns(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="could not write"):
        ds = cached("toy", PARAMS, _toy, blocker / "cache")
    _assert_same(_toy(), ds)


def test_a_full_disk_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports ENOSPC/EFBIG as a RuntimeError ("unexpected pos"): the built dataset was
    lost with a traceback. It is returned, with a warning, and no temp stays behind."""
    import torch

    def full(obj: object, f: object) -> None:
        Path(f).write_bytes(b"partial")  # type: ignore[arg-type]
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8128 vs 8019")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(RuntimeWarning, match="could not write dataset cache .*unexpected pos"):
        ds = cached("toy", PARAMS, _toy, tmp_path)
    _assert_same(_toy(), ds)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GTCOMPRESS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "gtcompress"


# ------------------------------------------------------------------------------- load_dataset
def test_load_dataset_generated_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("cluster", size="6,2,2", seed=5, cache_dir=tmp_path)
    assert [len(first[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    monkeypatch.setattr(sbm, "generate_cluster", lambda *a, **k: _fail())
    second = load_dataset("CLUSTER", size=" 6, 2, 2 ", seed=5, cache_dir=tmp_path)
    for g, h in zip(first["train"], second["train"], strict=True):
        assert torch.equal(g.edge_index, h.edge_index) and torch.equal(g.y, h.y)
    with pytest.raises(AssertionError):  # another seed is another file: the (failing) builder runs
        load_dataset("cluster", size="6,2,2", seed=6, cache_dir=tmp_path)

    pattern = load_dataset("pattern", size="4,1,1", cache_dir=tmp_path)
    assert pattern.info.name == "PATTERN" and len(pattern["train"]) == 4
    csl_ds = load_dataset("csl", cache_dir=tmp_path)
    monkeypatch.setattr(csl_module, "generate_csl", lambda *a, **k: _fail())
    assert len(load_dataset("csl", size="full", cache_dir=tmp_path)["train"]) == len(csl_ds["train"]) == 90


def test_load_dataset_small_preset_uses_sbm_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(sizes: tuple[int, int, int], seed: int) -> GraphDataset:
        seen["sizes"], seen["seed"] = tuple(sizes), seed
        return _toy()

    monkeypatch.setattr(sbm, "generate_pattern", fake)
    load_dataset("pattern", cache_dir=tmp_path, seed=3)
    assert seen == {"sizes": sbm.SBM_PRESETS["small"]["pattern"], "seed": 3}


def test_load_dataset_bad_names_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(GTCompressError, match="pattern, cluster, csl"):
        load_dataset("zinc", cache_dir=tmp_path)
    for size in ("medium", "1,2", "1,-2,3", "a,b,c"):
        with pytest.raises(GTCompressError, match="size"):
            load_dataset("cluster", size=size, cache_dir=tmp_path)
    with pytest.raises(GTCompressError):
        load_dataset("csl", size="10,2,2", cache_dir=tmp_path)
    with pytest.raises(GTCompressError):
        load_dataset("tu:", root=tmp_path)


def test_file_based_datasets_dispatch_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fakes = {
        "gtcompress.data.tu": (
            "load_tu",
            lambda root, name, seed, model_features=None: calls.append(("tu", root, name, seed, model_features)),
        ),
        "gtcompress.data.ogb": ("load_ogb", lambda root, name: calls.append(("ogb", root, name))),
        "gtcompress.data.molecules": (
            "load_molhiv",
            lambda root, limit, cache_dir=None: calls.append(("hiv", root, limit, cache_dir)),
        ),
    }
    for module_name, (attr, fn) in fakes.items():
        module = types.ModuleType(module_name)
        setattr(module, attr, fn)
        monkeypatch.setitem(sys.modules, module_name, module)
    load_dataset("tu:PROTEINS", root=tmp_path, seed=7)
    one_hot = (FeatureSpec("float", 3), None)  # a model of PyG's TUDataset one-hots: the TU loader lays them out
    load_dataset("tu:PROTEINS", root=tmp_path, seed=7, model_features=one_hot)
    load_dataset("ogb:ogbg-molpcba", root=tmp_path)
    load_dataset("molhiv", root=tmp_path, size="full")
    load_dataset("molhiv", root=tmp_path)
    load_dataset("molhiv", root=tmp_path, size="10,5,5", cache_dir=tmp_path / "c")  # was dropped: ~/.cache
    assert calls == [
        ("tu", tmp_path, "PROTEINS", 7, None),
        ("tu", tmp_path, "PROTEINS", 7, one_hot),
        ("ogb", tmp_path, "ogbg-molpcba"),
        ("hiv", tmp_path, None, None),
        ("hiv", tmp_path, data.MOLHIV_SMALL_LIMIT, None),
        ("hiv", tmp_path, (10, 5, 5), tmp_path / "c"),
    ]


def test_a_damaged_byte_inside_a_tensor_is_caught_not_loaded(tmp_path: Path) -> None:
    """torch.load does not check the zip CRCs: one flipped byte in the stored node features loaded as
    different features without a warning. The recorded SHA-256 catches it and the file is rebuilt."""
    cached("toy", PARAMS, _toy, tmp_path)
    path = cache_path("toy", PARAMS, tmp_path)
    blob = bytearray(path.read_bytes())
    x = torch.cat([g.x for g in _toy()["train"]]).numpy().tobytes()
    at = bytes(blob).find(x[:64])
    assert at > 0  # the float features are stored as they are
    blob[at + 10] ^= 0x5A
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="do not match the SHA-256 recorded when the file was written"):
        load_packed(path, expect_name="toy", expect_params=PARAMS)
    with pytest.warns(RuntimeWarning, match="regenerating"):
        _assert_same(_toy(), cached("toy", PARAMS, _toy, tmp_path))
    _assert_same(_toy(), cached("toy", PARAMS, _fail, tmp_path))  # the file was rewritten
