"""``gtc profile --cuda-graphs`` names the rows that ran eagerly, past the capture caps.

CUDA graphs are replayed for calls up to CAPTURE_MAX_NODES nodes and CAPTURE_MAX_EDGES edges; a larger
call runs eagerly, and its row said only ``cuda_graphs_captured: 0`` (read as a capture that failed, or
as replays timed). The replay runs on a GPU only: here the backend's replay is stubbed by the eager call
on the CPU (as test_torch_backend's replay tests do) and its caps lowered, so that the rows' data and the
note, which quotes the caps the backend held the rows to, are what is tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtime.session
from runtime.profile_torch import CPU_NOTE, CheckpointProfiler, eager_note
from tests.runtime.conftest import tiny_gt_checkpoint


def note_tail(caps: str = "8,192 nodes and 65,536 edges") -> str:
    return (
        f"A call is captured and replayed up to {caps} (runtime.torch_backend's CAPTURE_MAX_NODES, CAPTURE_MAX_EDGES "
        "by default): a larger one is not bound by kernel launches, and a captured bucket holds its memory while "
        "kept, so these rows time torch's eager path (cuda_graphs_captured 0), not a replay"
    )


NOTE_TAIL = note_tail()
LOWERED = note_tail("40 nodes and 65,536 edges")  # the caps the fixture below sets on the backend


def _row(
    nodes: int,
    batch: int,
    replayed: bool | None,
    nodes_called: int | None,
    edges_called: int | None,
    caps: tuple[int, int] = (8192, 65536),
) -> dict:
    return {"threads": None, "graph_nodes": nodes, "batch_size": batch, "cuda_graphs_captured": 0,
            "cuda_graphs_replayed": replayed, "nodes": nodes_called, "edges": edges_called,
            "cuda_graphs_caps": None if replayed is None else {"nodes": caps[0], "edges": caps[1]}}  # fmt: skip


def test_the_note_names_the_rows_past_the_caps() -> None:
    gt = {"name": "gt", "results": [_row(512, 1, True, 512, 2048), _row(512, 32, False, 16384, 65536),
                                    _row(4096, 4, False, 16384, 81920)]}  # fmt: skip
    plain = {"name": "eager", "results": [_row(512, 32, None, None, None)]}  # no --cuda-graphs: nothing to say
    onnx = {"name": "onnx", "results": [{"threads": 1, "graph_nodes": 512, "batch_size": 32}]}
    assert eager_note([gt, plain, onnx]) == (
        "--cuda-graphs rows that ran eagerly, not replayed: gt · 512×32 (16,384 nodes, 65,536 edges); gt · 4096×4 "
        f"(16,384 nodes, 81,920 edges). {NOTE_TAIL}"
    )
    assert eager_note([plain, onnx]) is None and eager_note([{"name": "gt", "results": gt["results"][:1]}]) is None
    # backends held to other caps: each row names its own
    other = {"name": "small", "results": [_row(64, 4, False, 256, 1024, (128, 512))]}
    assert eager_note([gt, other]) == (
        "--cuda-graphs rows that ran eagerly, not replayed: gt · 512×32 (16,384 nodes, 65,536 edges; caps 8,192, "
        "65,536); gt · 4096×4 (16,384 nodes, 81,920 edges; caps 8,192, 65,536); small · 64×4 (256 nodes, 1,024 "
        f"edges; caps 128, 512). {note_tail('the caps named with each row')}"
    )


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    return tiny_gt_checkpoint(tmp_path)


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sessions whose backend 'replays' (the eager call, on the CPU) calls of up to 40 nodes; the nodes of
    every replayed call."""
    real, replayed = runtime.session.GraphSession, []

    def session(path: Any, *args: Any, cuda_graphs: bool = False, **kwargs: Any) -> Any:
        sess, eager = real(path, *args, **kwargs), real(path, *args, **kwargs).backend

        def replay(inputs: dict[str, np.ndarray]) -> np.ndarray:
            replayed.append(inputs["x"].shape[0])
            return eager.run(inputs)[eager.outputs[0].name]

        monkeypatch.setattr(sess.backend, "_replay", replay)
        sess.backend.cuda_graphs, sess.backend.capture_max_nodes = True, 40
        return sess

    monkeypatch.setattr(runtime.session, "GraphSession", session)
    return replayed


def _rows(tp: CheckpointProfiler, ckpt: str, configs: list[tuple[int, int]], iterations: int) -> list[dict[str, Any]]:
    """One pass's rows, at 1 thread."""
    events: list[dict[str, Any]] = []
    tp.run_pass(ckpt, 1, configs, iterations, events.append)
    return [e for e in events if e["kind"] == "result"]


def test_a_profile_names_the_rows_that_ran_eagerly(ckpt: str, replays: list[int]) -> None:
    tp = CheckpointProfiler("cpu", False, [1], 1, 2.0, 0)
    entry = {**tp.entry("gt", ckpt), "results": _rows(tp, ckpt, [(8, 2), (16, 4)], 2)}
    small, large = entry["results"]
    assert (small["cuda_graphs_replayed"], small["nodes"]) == (True, 16)
    assert (large["cuda_graphs_replayed"], large["nodes"]) == (False, 64)
    assert set(replays) == {16}  # every call of the small row replayed, none of the large one
    assert small["cuda_graphs_caps"] == large["cuda_graphs_caps"] == {"nodes": 40, "edges": 65536}  # the backend's
    edges = large["edges"]
    assert edges > 0
    assert tp.notes([entry]) == [
        CPU_NOTE,
        f"--cuda-graphs rows that ran eagerly, not replayed: gt · 16×4 (64 nodes, {edges:,} edges). {LOWERED}",
    ]


def test_the_note_reaches_the_report(ckpt: str, replays: list[int]) -> None:
    from runtime.profile import profile_models

    rep = profile_models([ckpt], graph_sizes=(8, 16), batch_sizes=(4,), threads=(1,), iterations=2, warmup=1,
                         op_profile=False, device="cpu")  # fmt: skip
    assert [r["cuda_graphs_replayed"] for r in rep["models"][0]["results"]] == [True, False]
    assert [n for n in rep["settings"]["notes"] if n.startswith("--cuda-graphs rows that ran eagerly")] == [
        f"--cuda-graphs rows that ran eagerly, not replayed: gt-ckpt · 16×4 (64 nodes, "
        f"{rep['models'][0]['results'][1]['edges']:,} edges). {LOWERED}"
    ]


def test_a_row_prepares_its_graphs_once_a_call(ckpt: str, replays: list[int], monkeypatch) -> None:
    """The call's nodes and edges, which say whether it replays, are the timing loop's: no extra prepare."""
    prepared: list[int] = []
    real = runtime.session.GraphSession

    def session(*args: Any, **kwargs: Any) -> Any:
        sess = real(*args, **kwargs)
        prepare = sess.prepare
        monkeypatch.setattr(sess, "prepare", lambda graphs: prepared.append(len(graphs)) or prepare(graphs))
        return sess

    monkeypatch.setattr(runtime.session, "GraphSession", session)
    tp = CheckpointProfiler("cpu", False, [1], 2, 2.0, 0)
    small, large = _rows(tp, ckpt, [(8, 2), (16, 4)], 3)
    assert prepared == [2] * 5 + [4] * 5  # warm-up 2 and 3 timed calls a row, nothing more
    assert [(r["cuda_graphs_replayed"], r["nodes"]) for r in (small, large)] == [(True, 16), (False, 64)]
