"""The work partition of kernel v2 as plain numpy: what each program of each kernel does.

The kernels (:mod:`trt_plugins._kernel`) compute this partition on the fly from ``rowptr``; this
module states it outside Triton so that it can be tested and reasoned about: which edges each
``partials`` program owns, which rows are cut by chunk borders and which partial records
(``2c``: the row that began before chunk ``c``; ``2c + 1``: the row that goes on past it) hold them,
and how much each ``combine`` program merges. :func:`work_balance` is the figure that says why
power-law graphs no longer collapse: every ``partials`` program handles at most ``chunk`` edges
whatever the in-degrees, and only a row cut by chunk borders costs ``combine`` one record per
chunk it spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CutRow:
    """A row whose edges span chunks ``first_chunk .. last_chunk`` (more than one)."""

    row: int
    first_chunk: int
    last_chunk: int

    @property
    def records(self) -> list[int]:
        """Partial records ``combine`` merges for the row: ``2*first + 1``, then ``2*c`` for the rest."""
        return [2 * self.first_chunk + 1, *(2 * c for c in range(self.first_chunk + 1, self.last_chunk + 1))]


@dataclass(frozen=True)
class Partition:
    chunk: int
    n_nodes: int
    n_edges: int
    edge_ranges: np.ndarray  # [n_chunks, 2] CSR edge range [start, end) of each partials program
    cut_rows: list[CutRow]  # merged by combine program ``last_chunk`` of each

    @property
    def n_chunks(self) -> int:
        return int(self.edge_ranges.shape[0])

    def partials_work(self) -> np.ndarray:
        """Edges handled by each ``partials`` program."""
        return self.edge_ranges[:, 1] - self.edge_ranges[:, 0]

    def combine_records(self) -> np.ndarray:
        """Partial records merged by each ``combine`` program (its zero-row pass is ``block_r`` rows)."""
        work = np.zeros(self.n_chunks, dtype=np.int64)
        for cut in self.cut_rows:
            work[cut.last_chunk] += len(cut.records)
        return work

    def written_records(self) -> set[int]:
        """Partial records the ``partials`` kernel writes (every one a ``combine`` program reads)."""
        return {r for cut in self.cut_rows for r in cut.records}


def partition(rowptr: np.ndarray, chunk: int) -> Partition:
    """The partition of the CSR with row pointer ``rowptr [N+1]`` into chunks of ``chunk`` edges."""
    rowptr = np.asarray(rowptr, dtype=np.int64)
    if rowptr.ndim != 1 or rowptr.size < 1 or rowptr[0] != 0 or np.any(np.diff(rowptr) < 0):
        raise ValueError("rowptr must be a non-decreasing 1-D array starting at 0")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n, e = rowptr.size - 1, int(rowptr[-1])
    n_chunks = max(1, -(-e // chunk))
    starts = np.arange(n_chunks, dtype=np.int64) * chunk
    ranges = np.stack([np.minimum(starts, e), np.minimum(starts + chunk, e)], axis=1)
    deg = np.diff(rowptr)
    rows = np.flatnonzero(deg)
    first = rowptr[rows] // chunk
    last = (rowptr[rows + 1] - 1) // chunk
    cut = [CutRow(int(r), int(a), int(b)) for r, a, b in zip(rows, first, last, strict=True) if b > a]
    return Partition(chunk, n, e, ranges, cut)


def work_balance(p: Partition) -> float:
    """max / mean edges per ``partials`` program (1.0 is perfect; 0 edges counts as balanced)."""
    work = p.partials_work()
    mean = float(work.mean()) if work.size else 0.0
    return float(work.max()) / mean if mean > 0 else 1.0
