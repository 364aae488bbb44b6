"""OGB's split files, as both OGB loaders read them (:mod:`gtcompress.data.ogb`, and ogbg-molhiv's
CSV in :mod:`gtcompress.data.molecules`): ``split/<name>/{train,valid,test}.csv.gz``, one 0-based id
a line, each id in one split only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gtcompress.data.tu import line_of, read_table
from gtcompress.errors import DataFormatError

#: (our split, OGB's file stem)
SPLIT_FILES = (("train", "train"), ("val", "valid"), ("test", "test"))


def split_paths(split_dir: Path) -> dict[str, Path]:
    """Our split name to its file in ``split_dir``."""
    return {ours: split_dir / f"{theirs}.csv.gz" for ours, theirs in SPLIT_FILES}


def read_split_ids(paths: Mapping[str, Path], count: int, noun: str, of: str = "") -> dict[str, np.ndarray]:
    """The ids each split file of ``paths`` (our split name to its file) lists, checked: no split empty
    (else training fails at its first evaluation, inside ``torch.cat()``, naming nothing), every id in
    ``0..count-1``, none listed twice, in one file or in two splits. ``noun`` names an id in errors
    (``"graph id"``); ``of`` follows an id out of range, saying what the ids index."""
    out: dict[str, np.ndarray] = {}
    seen = np.zeros(count, dtype=bool)
    for name, path in paths.items():
        idx = read_table(path, np.int64, ncols=1)[:, 0]
        if idx.size == 0:
            raise DataFormatError(f"{path}: no {noun}s, so the {name} split is empty; every split needs at least one")
        bad = np.flatnonzero((idx < 0) | (idx >= count))
        if bad.size:
            raise DataFormatError(
                f"{path}, line {line_of(path, bad[0])}: {noun} {idx[bad[0]]} outside 0..{count - 1}{of}"
            )
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise DataFormatError(f"{path}: lists {noun} {int(values[counts > 1][0])} more than once")
        if seen[idx].any():
            raise DataFormatError(f"{path}: {noun} {int(idx[seen[idx]][0])} is also in another split")
        seen[idx] = True
        out[name] = idx
    return out
