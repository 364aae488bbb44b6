"""OGB's split files, read by one reader for both OGB loaders (ogbg-* and ogbg-molhiv)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from gtcompress.data.split_files import read_split_ids, split_paths
from gtcompress.errors import DataFormatError


def _write(split_dir: Path, **ids: str) -> dict[str, Path]:
    paths = split_paths(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for ours, text in ids.items():
        with gzip.open(paths[ours], "wt") as f:
            f.write(text)
    return paths


def test_split_ids_are_read_in_file_order_per_split(tmp_path: Path) -> None:
    paths = _write(tmp_path, train="3\n0\n\n4\n", val="1\n", test="2\n")
    assert [p.name for p in paths.values()] == ["train.csv.gz", "valid.csv.gz", "test.csv.gz"]
    ids = read_split_ids(paths, 6, "graph id")
    assert list(ids) == ["train", "val", "test"]
    assert [a.tolist() for a in ids.values()] == [[3, 0, 4], [1], [2]]
    assert all(a.dtype == np.int64 for a in ids.values())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"val": ""}, "{val}: no row ids, so the val split is empty; every split needs at least one"),
        ({"val": "\n\n7\n"}, "{val}, line 3: row id 7 outside 0..4 (HIV.csv.gz has 5 rows)"),
        ({"val": "-1\n"}, "{val}, line 1: row id -1 outside 0..4 (HIV.csv.gz has 5 rows)"),
        ({"test": "2\n3\n3\n"}, "{test}: lists row id 3 more than once"),
        ({"test": "4\n1\n"}, "{test}: row id 1 is also in another split"),
    ],
)
def test_a_bad_split_file_is_refused_by_name(tmp_path: Path, files: dict[str, str], message: str) -> None:
    paths = _write(tmp_path, **{"train": "0\n", "val": "1\n", "test": "2\n", **files})
    with pytest.raises(DataFormatError) as err:
        read_split_ids(paths, 5, "row id", " (HIV.csv.gz has 5 rows)")
    assert str(err.value) == message.format(**{k: str(p) for k, p in paths.items()})
