"""TU loader: exact parsing on tiny synthetic files, statistics and PyG parity on the real ones."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gtcompress.checkpoint_data import load_for_model
from gtcompress.data.base import FeatureSpec
from gtcompress.data.tu import MAX_DEGREE, load_tu, random_split_indices, read_table
from gtcompress.errors import ConfigError, DataFormatError
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import ModelConfig
from gtcompress.train.recipe import DataSpec


def _data_root() -> Path:
    """``$GTCOMPRESS_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("GTCOMPRESS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def tu_root() -> Path:
    root = _data_root() / "TU"
    if not root.is_dir():
        pytest.skip(f"real TU data not found at {root} (set GTCOMPRESS_DATA)")
    return root


def _all(ds_splits: dict[str, list[GraphBatch]]) -> list[GraphBatch]:
    return [g for graphs in ds_splits.values() for g in graphs]


# ------------------------------------------------------------------------------ synthetic files
def _write(folder: Path, name: str, part: str, lines: list[str], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if gz:
        path = folder / f"{name}_{part}.txt.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path = folder / f"{name}_{part}.txt"
        path.write_text(text)
    return path


def _toy(root: Path, gz_a: bool = False) -> Path:
    """Two graphs: nodes 1-3 (graph 1, label 5) and 4-5 (graph 2, label -3); A has a self loop,
    a duplicate edge with a different label, and comma spacing as in the real files."""
    folder = root / "TOY"
    _write(
        folder,
        "TOY",
        "A",
        ["1, 2", "2, 1", "1, 1", "1,2", "2, 3", "3, 2", "4, 5", "5, 4"],
        gz=gz_a,
    )
    _write(folder, "TOY", "edge_labels", ["7", "7", "9", "8", "8", "8", "9", "9"])
    _write(folder, "TOY", "graph_indicator", ["1", "1", "1", "2", "2"])
    _write(folder, "TOY", "graph_labels", ["5", "-3"])
    _write(folder, "TOY", "node_labels", ["3", "4", "3", "6", "3"])
    return folder


def test_synthetic_exact_parse(tmp_path: Path) -> None:
    _toy(tmp_path)
    ds = load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0))
    g0, g1 = ds["train"]
    # 1-based ids -> 0-based local ids; self loop (1,1) and duplicate (1,2) gone; sorted (src, dst).
    assert g0.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g1.edge_index.tolist() == [[0, 1], [1, 0]]
    # Edge labels shifted to start at 0 (7 -> 0); the duplicate keeps its first label.
    assert g0.edge_attr.tolist() == [[0], [0], [1], [1]]
    assert g1.edge_attr.tolist() == [[2], [2]]
    # Node labels shifted by the minimum (3): 0, 1, 0 | 3, 0 (cardinality max + 1 = 4).
    assert g0.x.tolist() == [[0], [1], [0]] and g1.x.tolist() == [[3], [0]]
    assert g0.x.dtype == torch.int64 and g0.edge_index.dtype == torch.int64
    # Graph labels remapped in sorted order: -3 -> 0, 5 -> 1.
    assert g0.y.tolist() == [1] and g1.y.tolist() == [0]
    info = ds.info
    assert (info.task_level, info.task, info.out_dim, info.metric) == ("graph", "multiclass", 2, "accuracy")
    assert info.node_features.kind == "categorical" and info.node_features.cardinalities == [4]
    assert info.edge_features is not None and info.edge_features.cardinalities == [3]
    for g in ds["train"]:
        g.validate()


def test_files_saved_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    """A UTF-8 BOM (Windows tools) made the first value '\\ufeff1', "not an integer"."""
    folder = _toy(tmp_path / "plain")
    _toy(tmp_path / "bom")
    for path in (tmp_path / "bom" / "TOY").iterdir():
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    a = collate(load_tu(folder.parent, "TOY", split=(1.0, 0.0, 0.0))["train"])
    b = collate(load_tu(tmp_path / "bom", "TOY", split=(1.0, 0.0, 0.0))["train"])
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.edge_attr, b.edge_attr)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_synthetic_gzipped_a_equals_plain(tmp_path: Path) -> None:
    _toy(tmp_path / "plain")
    _toy(tmp_path / "gz", gz_a=True)
    assert not (tmp_path / "gz" / "TOY" / "TOY_A.txt").exists()
    a = collate(load_tu(tmp_path / "plain", "TOY", split=(1.0, 0.0, 0.0))["train"])
    b = collate(load_tu(tmp_path / "gz", "TOY", split=(1.0, 0.0, 0.0))["train"])
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.edge_attr, b.edge_attr)


def test_node_attributes_give_float_features_in_pyg_order(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    _write(folder, "TOY", "node_attributes", ["0.5, 1", "1.5, 2", "2.5, 3", "-1, 4", "0, 5"])
    ds = load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0))
    assert ds.info.node_features.kind == "float" and ds.info.node_features.dim == 2 + 4
    x = torch.cat([g.x for g in ds["train"]])
    assert x.dtype == torch.float32
    assert x[:, :2].tolist() == [[0.5, 1], [1.5, 2], [2.5, 3], [-1, 4], [0, 5]]  # attributes first
    assert x[:, 2:].argmax(1).tolist() == [0, 1, 0, 3, 0] and bool((x[:, 2:].sum(1) == 1).all())


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_node_attribute_is_refused(tmp_path: Path, value: str) -> None:
    """numpy parses "nan" and "inf": they were loaded as features, and training failed later on a
    non-finite loss that named no file."""
    folder = _toy(tmp_path)
    path = _write(folder, "TOY", "node_attributes", ["0.5, 1", "1.5, 2", f"2.5, {value}", "-1, 4", "0, 5"])
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0))
    assert str(err.value) == f"{path}, line 3: node attributes must be finite numbers, got [2.5, {float(value)}]"


def test_no_node_labels_gives_clipped_degree(tmp_path: Path) -> None:
    folder = tmp_path / "STAR"
    hub = 70  # one hub with 70 leaves: degree above the clip
    lines = [f"1, {i}" for i in range(2, hub + 2)] + [f"{i}, 1" for i in range(2, hub + 2)]
    _write(folder, "STAR", "A", lines)
    _write(folder, "STAR", "graph_indicator", ["1"] * (hub + 1))
    _write(folder, "STAR", "graph_labels", ["0"])
    ds = load_tu(tmp_path, "STAR", split=(1.0, 0.0, 0.0))
    (g,) = ds["train"]
    assert ds.info.node_features.cardinalities == [MAX_DEGREE + 1] == [65]
    assert g.x[0, 0].item() == MAX_DEGREE and bool((g.x[1:, 0] == 1).all())


def test_unsorted_graph_indicator_is_reordered(tmp_path: Path) -> None:
    folder = tmp_path / "MIX"
    _write(folder, "MIX", "A", ["1, 3", "3, 1", "2, 4", "4, 2"])
    _write(folder, "MIX", "graph_indicator", ["1", "2", "1", "2"])
    _write(folder, "MIX", "graph_labels", ["0", "1"])
    _write(folder, "MIX", "node_labels", ["0", "1", "2", "3"])
    g0, g1 = load_tu(tmp_path, "MIX", split=(1.0, 0.0, 0.0))["train"]
    assert g0.x.tolist() == [[0], [2]] and g1.x.tolist() == [[1], [3]]
    assert g0.edge_index.tolist() == [[0, 1], [1, 0]] == g1.edge_index.tolist()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    (folder / "TOY_graph_labels.txt").unlink()
    with pytest.raises(DataFormatError, match=r"TOY_graph_labels\.txt") as err:
        load_tu(tmp_path, "TOY")
    assert str(folder) in str(err.value)
    with pytest.raises(DataFormatError, match="folder not found"):
        load_tu(tmp_path, "NOPE")


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["1, 2", "2, 1", "2, x"], r"TOY_A\.txt, line 3: 'x' is not an integer"),
        (["1, 2", "", "2, 1, 3"], r"TOY_A\.txt, line 3: expected 2 comma-separated"),
        (["1, 2", "2, 9"], r"TOY_A\.txt, line 2: node id \[2, 9\] outside 1\.\.5"),
        (["1, 2", "3, 4"], r"TOY_A\.txt, line 2: edge \[3, 4\] joins two different graphs"),
    ],
)
def test_malformed_a_names_file_and_line(tmp_path: Path, lines: list[str], match: str) -> None:
    folder = _toy(tmp_path)
    _write(folder, "TOY", "A", lines)
    (folder / "TOY_edge_labels.txt").unlink()
    with pytest.raises(DataFormatError, match=match):
        load_tu(tmp_path, "TOY")


def test_errors_name_the_line_even_after_blank_lines(tmp_path: Path) -> None:
    """Empty lines are skipped when parsing, so a row index is not a line number: the bad edge on
    line 5 was reported on line 3, and the bad graph id on line 4 on line 3."""
    folder = _toy(tmp_path)
    (folder / "TOY_edge_labels.txt").unlink()
    path = folder / "TOY_A.txt"
    path.write_text("1, 2\n\n2, 1\n\n2, 9\n")
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == f"{path}, line 5: node id [2, 9] outside 1..5 (TOY_graph_indicator.txt has 5 lines)"
    path.write_text("\n1, 2\n\n3, 4\n")
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == f"{path}, line 4: edge [3, 4] joins two different graphs"
    _write(folder, "TOY", "A", ["1, 2", "2, 1"])
    indicator = _write(folder, "TOY", "graph_indicator", ["1", "", "1", "", "1", "3", "2"])
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == f"{indicator}, line 6: graph id 3 outside 1..2 (TOY_graph_labels.txt has 2 lines)"
    # a line of spaces is not skipped by the parser: it is named, not "malformed" without a line
    indicator.write_text("1\n1\n  \n1\n2\n2\n")
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == f"{indicator}, line 3: '' is not an integer"
    wide = _write(folder, "TOY", "graph_labels", ["", "", "5, 1", "-3, 1"])
    with pytest.raises(DataFormatError) as err:
        read_table(wide, np.int64, ncols=1)
    assert str(err.value) == f"{wide}, line 3: expected 1 comma-separated value(s) per line, got 2"


def test_inconsistent_files_are_reported(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    _write(folder, "TOY", "node_labels", ["1", "2"])
    with pytest.raises(DataFormatError, match=r"TOY_node_labels\.txt: 2 lines, expected one per node \(5"):
        load_tu(tmp_path, "TOY")
    _toy(tmp_path)
    _write(folder, "TOY", "graph_indicator", ["1", "1", "1", "3", "3"])
    with pytest.raises(DataFormatError, match=r"TOY_graph_indicator\.txt, line 4: graph id 3 outside 1\.\.2"):
        load_tu(tmp_path, "TOY")


def test_read_table_float_error_and_empty(tmp_path: Path) -> None:
    bad = tmp_path / "f.txt"
    bad.write_text("1.0, 2.0\n3.0, abc\n")
    with pytest.raises(DataFormatError, match=r"f\.txt, line 2: 'abc' is not a"):
        read_table(bad, np.float64)
    empty = tmp_path / "e.txt"
    empty.write_text("")
    assert read_table(empty, np.int64, ncols=2).shape == (0, 2)


@pytest.mark.parametrize("value", ["1.9", "nan", "inf", "1e30", "0x10"])
def test_an_integer_file_with_a_non_integer_is_refused_not_truncated(tmp_path: Path, value: str) -> None:
    """numpy parses an integer column through a float (with a DeprecationWarning nobody sees): a graph
    label 1.9 became class 1 and ``nan`` became -9223372036854775808, a class of its own, and training
    went on with a dataset the files do not hold."""
    folder = _toy(tmp_path)
    labels = _write(folder, "TOY", "graph_labels", ["5", value])
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == f"{labels}, line 2: {value!r} is not an integer"


@pytest.mark.parametrize(("value", "integer"), [("2.0", 2), ("2.", 2), ("-2e0", -2), ("1e3", 1000), ("1_000", 1000)])
def test_an_integral_float_in_an_integer_file_is_refused_saying_what_to_write(
    tmp_path: Path, value: str, integer: int
) -> None:
    """PyG's TUDataset refuses "2.0" in these files too (it reads them with ``int``), so the files
    stay the same dataset in both; the message says what the value should read."""
    folder = _toy(tmp_path)
    labels = _write(folder, "TOY", "graph_labels", ["5", value])
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == (
        f"{labels}, line 2: {value!r} is not an integer (write it as {integer}: integer columns take digits only)"
    )


@pytest.mark.parametrize("value", ["9223372036854775808", "-9223372036854775809", "1" * 30])
def test_an_integer_past_int64_names_its_line_and_the_range(tmp_path: Path, value: str) -> None:
    """Python's ``int`` takes any size, so the slow path found no bad value and the message was
    numpy's, counting rows from 0 and naming no line: "malformed (could not convert ... at row 1)"."""
    path = tmp_path / "edges.txt"
    path.write_text(f"1, 2\n\n2, {value}\n")
    with pytest.raises(DataFormatError) as err:
        read_table(path, np.int64, ncols=2)
    assert str(err.value) == (
        f"{path}, line 3: {value!r} is outside the int64 range [-9223372036854775808, 9223372036854775807]"
    )
    path.write_text("1, 2\n2, 9223372036854775807\n-9223372036854775808, +4\n")
    assert read_table(path, np.int64, ncols=2).tolist() == [[1, 2], [2, 2**63 - 1], [-(2**63), 4]]


@pytest.mark.parametrize("value", ["1_000", "\u0661"])
def test_a_float_numpy_refuses_but_python_takes_is_named(tmp_path: Path, value: str) -> None:
    path = tmp_path / "f.txt"
    path.write_text(f"1.0, 2.0\n3.0, {value}\n")
    with pytest.raises(DataFormatError) as err:
        read_table(path, np.float64)
    assert str(err.value) == f"{path}, line 2: {value!r} is not a number"


def _damaged_gzip(text: str) -> bytes:
    """A gzip file whose deflate stream is broken (a stored block's length and its complement
    disagree): reading it raises ``zlib.error``, which is not an ``OSError``."""
    data = bytearray(gzip.compress(text.encode(), compresslevel=0))
    data[11] ^= 0xFF  # LEN of the first stored block, right after the 10-byte gzip header
    return bytes(data)


def test_a_damaged_gzip_names_the_file_instead_of_a_zlib_traceback(tmp_path: Path) -> None:
    folder = _toy(tmp_path)
    (folder / "TOY_A.txt").unlink()
    path = folder / "TOY_A.txt.gz"
    path.write_bytes(_damaged_gzip("1, 2\n2, 1\n"))
    with pytest.raises(DataFormatError) as err:
        read_table(path, np.int64, ncols=2)
    assert str(err.value) == f"{path}: unreadable (Error -3 while decompressing data: invalid stored block lengths)"
    with pytest.raises(DataFormatError, match=r"TOY_A\.txt\.gz: unreadable"):
        load_tu(tmp_path, "TOY")


def test_random_split_indices() -> None:
    parts = random_split_indices(188, seed=3)
    assert [len(v) for v in parts.values()] == [150, 19, 19]
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(188))
    again = random_split_indices(188, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = random_split_indices(188, seed=4)
    assert not np.array_equal(parts["test"], other["test"])
    with pytest.raises(ValueError, match="fractions"):
        random_split_indices(10, split=(0.5, 0.6, 0.1))


# ------------------------------------------------------------------------------ real datasets
def test_mutag_statistics(tu_root: Path) -> None:
    ds = load_tu(tu_root, "MUTAG", seed=0)
    graphs = _all(ds.splits)
    assert len(graphs) == 188
    assert sum(g.num_nodes for g in graphs) == 3371
    assert sum(g.num_edges for g in graphs) == 7442  # no self loops or duplicates in MUTAG
    labels = torch.cat([g.y for g in graphs])
    assert torch.bincount(labels).tolist() == [63, 125]  # -1 -> 0, 1 -> 1
    assert ds.info.node_features.cardinalities == [7]
    assert ds.info.edge_features is not None and ds.info.edge_features.cardinalities == [4]
    assert [len(ds[k]) for k in ("train", "val", "test")] == [150, 19, 19]
    ids = {k: {id(g) for g in v} for k, v in ds.splits.items()}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    for g in graphs:
        g.validate()


def test_same_seed_same_split(tu_root: Path) -> None:
    def signature(seed: int) -> dict[str, list[tuple[int, int, int]]]:
        ds = load_tu(tu_root, "MUTAG", seed=seed)
        return {k: [(g.num_nodes, g.num_edges, int(g.y)) for g in v] for k, v in ds.splits.items()}

    assert signature(7) == signature(7)
    assert signature(7) != signature(8)


def test_mutag_matches_pyg(tu_root: Path) -> None:
    """Same edges, node labels, edge labels and classes as PyG's own TU reader."""
    tu = pytest.importorskip("torch_geometric.io.tu")
    data, slices, _ = tu.read_tu_data(str(tu_root / "MUTAG"), "MUTAG")
    ours = collate(load_tu(tu_root, "MUTAG", split=(1.0, 0.0, 0.0))["train"])
    node_off = slices["x"][:-1]
    edge_graph = torch.repeat_interleave(torch.arange(188), slices["edge_index"].diff())
    assert torch.equal(data.edge_index + node_off[edge_graph], ours.edge_index)
    assert torch.equal(data.x.argmax(1), ours.x[:, 0])
    assert torch.equal(data.edge_attr.argmax(1), ours.edge_attr[:, 0])
    assert torch.equal(data.y, ours.y)


@pytest.mark.parametrize("name", ["MUTAG", "PTC_MR", "PROTEINS", "ENZYMES"])
def test_a_model_of_pygs_one_hots_reads_pygs_tudataset(tu_root: Path, name: str) -> None:
    """A model trained on PyG's TUDataset takes float one-hots (``Linear(7, c)`` for MUTAG's node labels); for
    it the files are laid out as PyG lays them out: one-hot labels only (``use_node_attr=False``, PyG's default)
    or attributes then one-hots (``use_node_attr=True``), told apart by the model's width, and one-hot edge
    labels. Each is PyG's tensor exactly; a model of neither width is refused, naming both."""
    tu = pytest.importorskip("torch_geometric.io.tu")
    data, _, sizes = tu.read_tu_data(str(tu_root / name), name)
    attrs = sizes["num_node_attributes"]
    layouts = [(data.x[:, attrs:], "one-hot labels")] + ([(data.x, "attributes, one-hot labels")] if attrs else [])
    edge = FeatureSpec("float", data.edge_attr.shape[1]) if data.edge_attr is not None else None
    for want, what in layouts:
        ds = load_tu(tu_root, name, split=(1.0, 0.0, 0.0), model_features=(FeatureSpec("float", want.shape[1]), edge))
        ours = collate(ds["train"])
        assert ds.info.node_features == FeatureSpec("float", want.shape[1]), what
        assert ours.x.dtype == torch.float32 and torch.equal(ours.x, want.float()), what
        if edge is not None:
            assert ds.info.edge_features == edge and torch.equal(ours.edge_attr, data.edge_attr.float()), what
    with pytest.raises(ConfigError, match=rf"^tu:{name} node features: the model takes float, {data.x.shape[1] + 1} "):
        load_tu(tu_root, name, model_features=(FeatureSpec("float", data.x.shape[1] + 1), edge))


def test_a_model_of_neither_layouts_width_is_refused_naming_both(tmp_path: Path) -> None:
    """A model of float features that fit neither our layout nor PyG's one-hots was refused by the caller's
    check, naming our layout only ("the model takes float, 9 columns, MUTAG has categorical, cardinalities
    [7]"): the width PyG's TUDataset gives, which a PyG model's user compares with, was not said."""
    _toy(tmp_path)  # node labels 3..6 (4 one-hot columns), edge labels 7..9 (3)
    cases = [
        (
            (FeatureSpec("float", 5), None),
            "tu:TOY node features: the model takes float, 5 columns; TOY gives categorical, cardinalities [4] "
            "(our layout) or float, 4 columns (PyG's TUDataset: one-hot labels, cardinalities [4])",
        ),
        (
            (FeatureSpec("float", 4), FeatureSpec("float", 2)),
            "tu:TOY edge features: the model takes float, 2 columns; TOY gives categorical, cardinalities [3] "
            "(our layout) or float, 3 columns (PyG's TUDataset: one-hot labels, cardinalities [3])",
        ),
    ]
    for features, message in cases:
        with pytest.raises(ConfigError) as info:
            load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0), model_features=features)
        assert str(info.value) == message
    _write(tmp_path / "TOY", "TOY", "node_attributes", ["0.5, 1", "1.5, 2", "2.5, 3", "-1, 4", "0, 5"])
    with pytest.raises(ConfigError) as info:
        load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0), model_features=(FeatureSpec("float", 5), None))
    assert str(info.value) == (
        "tu:TOY node features: the model takes float, 5 columns; TOY gives float, 6 columns (our layout: attributes, "
        "then one-hot labels, PyG's use_node_attr=True) or float, 4 columns (PyG's TUDataset: one-hot labels, "
        "cardinalities [4])"
    )
    for width in (4, 6):  # each layout's width loads
        assert (
            load_tu(
                tmp_path, "TOY", split=(1.0, 0.0, 0.0), model_features=(FeatureSpec("float", width), None)
            ).info.node_features.dim
            == width
        )


def test_a_command_names_the_checkpoint_a_dataset_of_neither_layout_does_not_fit(tmp_path: Path) -> None:
    """The loader names the widths; ``gtc eval`` / ``prune`` / ``sparsify`` name the checkpoint too, as
    their own input check does, so the user knows which model the widths are of."""
    _toy(tmp_path)
    config = ModelConfig(arch="gt", node_features=FeatureSpec("float", 5), out_dim=2, hidden=8, heads=1, num_layers=1)
    with pytest.raises(ConfigError) as info:
        load_for_model(DataSpec("tu:TOY", root=str(tmp_path)), config, "--data tu:TOY", Path("runs/pyg"))
    assert str(info.value) == (
        "--data tu:TOY does not fit the model of runs/pyg: tu:TOY node features: the model takes float, 5 columns; "
        "TOY gives categorical, cardinalities [4] (our layout) or float, 4 columns (PyG's TUDataset: one-hot "
        "labels, cardinalities [4])"
    )


def test_pygs_layout_sums_the_one_hots_of_duplicate_edges(tmp_path: Path) -> None:
    """PyG's coalesce sums the edge attributes of a duplicate edge (TOY's 1 -> 2 carries labels 7 and 8):
    laid out for a model of PyG's one-hots, that edge has both ones, as PyG's TUDataset gives it."""
    tu = pytest.importorskip("torch_geometric.io.tu")
    folder = _toy(tmp_path)
    data, _, _ = tu.read_tu_data(str(folder), "TOY")
    features = (FeatureSpec("float", 4), FeatureSpec("float", 3))  # labels 3..6 and 7..9
    ours = collate(load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0), model_features=features)["train"])
    assert torch.equal(ours.x, data.x.float())
    assert torch.equal(ours.edge_attr, data.edge_attr.float())
    assert ours.edge_attr[0].tolist() == [1.0, 1.0, 0.0]  # 1 -> 2: its labels 7 and 8 summed


def test_ptc_mr(tu_root: Path) -> None:
    ds = load_tu(tu_root, "PTC_MR")
    graphs = _all(ds.splits)
    assert len(graphs) == 344 and sum(g.num_nodes for g in graphs) == 4915
    assert ds.info.node_features.cardinalities == [18]
    assert torch.bincount(torch.cat([g.y for g in graphs])).tolist() == [192, 152]


def test_enzymes_float_features(tu_root: Path) -> None:
    ds = load_tu(tu_root, "ENZYMES")
    graphs = _all(ds.splits)
    assert len(graphs) == 600 and ds.info.out_dim == 6
    assert torch.bincount(torch.cat([g.y for g in graphs])).tolist() == [100] * 6
    assert ds.info.node_features.kind == "float" and ds.info.node_features.dim == 18 + 3
    x = torch.cat([g.x for g in graphs])
    assert x.shape == (19580, 21) and x.dtype == torch.float32
    assert bool((x[:, 18:].sum(1) == 1).all())  # one-hot node labels after the attributes
    assert [len(ds[k]) for k in ("train", "val", "test")] == [480, 60, 60]


def test_proteins_one_attribute(tu_root: Path) -> None:
    ds = load_tu(tu_root, "PROTEINS")
    assert len(_all(ds.splits)) == 1113
    assert ds.info.node_features.kind == "float" and ds.info.node_features.dim == 1 + 3


def test_imdb_binary_degree_features(tu_root: Path) -> None:
    ds = load_tu(tu_root, "IMDB-BINARY")
    graphs = _all(ds.splits)
    assert len(graphs) == 1000 and sum(g.num_nodes for g in graphs) == 19773
    # The file lists every undirected edge twice in each direction; coalesce halves 386,124 lines.
    assert sum(g.num_edges for g in graphs) == 193062
    assert ds.info.node_features.cardinalities == [65]
    g = graphs[0]
    degree = torch.bincount(g.edge_index[1], minlength=g.num_nodes).clamp(max=MAX_DEGREE)
    assert torch.equal(g.x[:, 0], degree)


def test_dd_loads(tu_root: Path) -> None:
    """The largest TU set (gzipped, reconstructed A); it loads in about a second, so it runs by default."""
    ds = load_tu(tu_root, "DD")
    graphs = _all(ds.splits)
    assert len(graphs) == 1178
    assert sum(g.num_nodes for g in graphs) == 334925
    assert sum(g.num_edges for g in graphs) == 1686092
    assert torch.bincount(torch.cat([g.y for g in graphs])).tolist() == [691, 487]


def test_data_root_with_tu_subfolder(tu_root: Path) -> None:
    """``load_dataset`` passes the data root; the TU/ subfolder is found from there."""
    ds = load_tu(tu_root.parent, "MUTAG")
    assert len(_all(ds.splits)) == 188


def test_a_split_left_empty_by_too_few_graphs_is_an_error(tmp_path: Path) -> None:
    """Two graphs at 80/10/10 leave val and test empty: refused at load, naming the folder and the
    splits, instead of ``torch.cat(): expected a non-empty list of Tensors`` at the first evaluation."""
    from gtcompress.data import load_dataset

    folder = _toy(tmp_path)
    expected = (
        f"{folder}: 2 graph(s) leave the val and test split(s) empty under the seeded 80/10/10 random split; "
        "every split needs at least one graph"
    )
    with pytest.raises(DataFormatError) as err:
        load_tu(tmp_path, "TOY")
    assert str(err.value) == expected
    with pytest.raises(DataFormatError) as err:
        load_dataset("tu:TOY", tmp_path)
    assert str(err.value) == expected
    assert len(load_tu(tmp_path, "TOY", split=(1.0, 0.0, 0.0))["train"]) == 2  # asked-for empty splits stay allowed


def test_split_counts_for_a_tu_dataset_name_the_datasets_that_take_them(tmp_path: Path) -> None:
    """``gtc train --size`` says "(generated datasets, molhiv)"; ``--size 20,5,5 --data tu:MUTAG`` was
    refused as "only supported for generated datasets", as if molhiv's counts were refused too."""
    from gtcompress.data import load_dataset
    from gtcompress.errors import GTCompressError

    want = (
        "tu:MUTAG: explicit split sizes are only supported for generated datasets and molhiv; "
        "TU datasets keep their own split (leave the size out)"
    )
    with pytest.raises(GTCompressError) as err:
        load_dataset("tu:MUTAG", size="20,5,5", root=tmp_path, cache_dir=tmp_path)
    assert str(err.value) == want


@pytest.mark.parametrize(
    ("dtype", "spaced"), [(np.float64, "\u00a01.5"), (np.float64, "2.5\u3000"), (np.int64, "\u00a01")]
)
def test_a_number_numpy_takes_with_unicode_spaces_is_not_named_instead_of_the_bad_one(
    tmp_path: Path, dtype: type, spaced: str
) -> None:
    """numpy strips the same whitespace as Python's ``str.strip`` (a no-break space included), so such a
    field is a number; the scan for the bad line named it ("'1.5' is not a number", line 2) rather than
    the value numpy refused two lines below."""
    path = tmp_path / "f.txt"
    path.write_text(f"1, 2\n3, {spaced}\n")
    assert read_table(path, dtype).shape == (2, 2)
    path.write_text(f"1, 2\n3, {spaced}\n4, 5\n6, abc\n")
    with pytest.raises(DataFormatError) as err:
        read_table(path, dtype)
    kind = "an integer" if dtype is np.int64 else "a number"
    assert str(err.value) == f"{path}, line 4: 'abc' is not {kind}"
