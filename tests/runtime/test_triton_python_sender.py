"""The Python-backend model's ``execute`` answering each request through its response sender as its
merged call ends, with a stand-in for ``triton_python_backend_utils`` (which exists only inside Triton's
stub); the same through a real server is in test_tritonserver.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import runtime.triton_python as tp
import runtime.triton_shm as triton_shm
from runtime.errors import SessionError
from runtime.session import GraphSession
from runtime.triton_python import GraphBatchModel
from tests.runtime.conftest import python_request as _request


class _FakePb:
    """What ``execute`` uses of ``triton_python_backend_utils`` (which exists only inside Triton's stub),
    recording every response sent: ``(request id, response, flags, merged calls run by then)``."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

    class TritonError:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message: str, code: str = "INTERNAL") -> None:
            self.message, self.code = message, code

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

    class InferenceResponse:
        def __init__(self, output_tensors: list | None = None, error=None) -> None:
            self.output_tensors, self.error = output_tensors or [], error

    def __init__(self) -> None:
        self.sent: list[tuple[int, object, int, int]] = []
        self.model: GraphBatchModel | None = None

    @staticmethod
    def get_input_tensor_by_name(request, name: str):
        arr = request.inputs.get(name)
        return None if arr is None else type("T", (), {"as_numpy": lambda self: arr})()


class _FakeRequest:
    """A request that is its own response sender, checking what Triton 2.51's ``ResponseSender.send``
    checks, in its order: a model that is not decoupled sends one response; the sender closes on the
    final flag and counts the response *before* the response is put in shared memory, where the send
    may still fail (``fail_sends``) with nothing reaching the server."""

    def __init__(self, pb: _FakePb, rid: int, inputs: dict[str, np.ndarray], fail_sends: int = 0) -> None:
        self.pb, self.rid, self.inputs, self.fail_sends = pb, rid, inputs, fail_sends
        self.responses, self.closed = 0, False

    def get_response_sender(self):
        return self

    def send(self, response=None, flags: int = 0) -> None:
        if response is not None and self.responses > 0:
            raise RuntimeError("Unable to send response. Non-decoupled model cannot send more than one response.")
        if self.closed:
            raise RuntimeError("Unable to send response. Response sender has been closed.")
        self.closed = flags == _FakePb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        self.responses += 1
        if self.fail_sends:
            self.fail_sends -= 1
            raise RuntimeError("Failed to increase the shared memory pool size")
        assert self.pb.model is not None
        self.pb.sent.append((self.rid, response, flags, self.pb.model.calls))


def _triton_model(config, root, monkeypatch, **params: str) -> tuple[tp.TritonPythonModel, _FakePb]:
    """``TritonPythonModel`` initialised as Triton's stub does, against :class:`_FakePb`."""
    import sys

    pb = _FakePb()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    model = tp.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config(root, **params)),
            "model_repository": str(root),
            "model_version": "1",
            "model_instance_kind": "CPU",
        }
    )
    pb.model = model.model
    return model, pb


def _sent_once_each(pb: _FakePb, count: int) -> dict[int, tuple[object, int]]:
    """Every request answered exactly once, with the final flag: ``{id: (response, calls by then)}``."""
    assert sorted(rid for rid, *_ in pb.sent) == list(range(count)), pb.sent
    assert all(flags == _FakePb.TRITONSERVER_RESPONSE_COMPLETE_FINAL for _, _, flags, _ in pb.sent)
    return {rid: (response, calls) for rid, response, _, calls in pb.sent}


def test_execute_answers_each_request_as_soon_as_its_merged_call_finishes(
    config, node_repo, exported, monkeypatch
) -> None:
    """``execute`` built the list of responses after the last merged call and returned it: with 32
    LapPE requests of 1,900 nodes (8 calls) every client waited 7.6 s. Each request is now sent
    through its response sender as soon as its call ends; a bad one before any call."""
    model, pb = _triton_model(config, node_repo, monkeypatch, gtcompress_batch_nodes="20")
    graphs = exported["teddy"].graphs(6, seed=4, lo=6, hi=12)
    bad = _request(graphs[0])
    bad["edge_index"] = np.full_like(bad["edge_index"], graphs[0].num_nodes)
    requests = [_FakeRequest(pb, k, _request(g)) for k, g in enumerate(graphs)] + [_FakeRequest(pb, 6, bad)]
    assert model.execute(requests) is None  # answered through the senders, not returned
    total = model.model.calls
    assert total >= 3
    sent = _sent_once_each(pb, 7)
    error, calls = sent[6]
    assert calls == 0 and error.error.code == "INVALID_ARG" and error.error.message.startswith("input 'edge_index'")
    order = [calls for rid, _, _, calls in pb.sent if rid != 6]
    assert order == sorted(order) and order[0] == 1 and order[-1] == total  # each sent when its call ended
    assert len(set(order)) == total  # one group of answers per call, none held for the last
    want = GraphSession(exported["teddy"].path).run(graphs)
    for k in range(6):
        response, _ = sent[k]
        assert response.error is None and response.output_tensors[0].name == model.model.output_name
        np.testing.assert_allclose(response.output_tensors[0].array[0], want[k], atol=1e-6)


def test_execute_answers_every_request_when_a_merged_call_fails_or_an_error_stops_it(
    config, node_repo, exported, monkeypatch
) -> None:
    """A failing merged call is retried request by request, each answered as its own call ends, one
    that fails alone with INTERNAL; an exception part-way answers every request not yet answered with
    it, and ``execute`` raises nothing (an exception out of it after some responses were sent crashed
    Triton 2.51's server)."""
    model, pb = _triton_model(config, node_repo, monkeypatch, gtcompress_batch_nodes="20")
    graphs = exported["teddy"].graphs(6, seed=4, lo=6, hi=12)
    real_run = tp.run_items

    def flaky(served, items):  # a merged call fails; alone, graph 2 still fails, the others succeed
        if len(items) > 1 or items[0].index == 2:
            raise RuntimeError("out of memory")
        return real_run(served, items)

    monkeypatch.setattr(tp, "run_items", flaky)
    assert model.execute([_FakeRequest(pb, k, _request(g)) for k, g in enumerate(graphs)]) is None
    sent = _sent_once_each(pb, 6)
    want = GraphSession(exported["teddy"].path).run(graphs)
    for k in range(6):
        response, _ = sent[k]
        if k == 2:
            assert response.error.code == "INTERNAL"
            assert response.error.message == "inference failed: RuntimeError: out of memory"
        else:
            np.testing.assert_allclose(response.output_tensors[0].array[0], want[k], atol=1e-6)
    solo = [calls for rid, _, _, calls in pb.sent]
    assert solo == sorted(solo) and len(set(solo)) == 6  # each answered as its call alone ended

    monkeypatch.setattr(tp, "run_items", real_run)
    real_answers = model.model.answers

    def then_fail(requests):  # the first call's answers, then a bug of ours
        it = real_answers(requests)
        first = next(it)
        yield first
        for a in it:
            if a.calls_left < first.calls_left:
                raise ValueError("bookkeeping broke")
            yield a

    monkeypatch.setattr(model.model, "answers", then_fail)
    pb.sent.clear()
    calls_before = model.model.calls
    assert model.execute([_FakeRequest(pb, k, _request(g)) for k, g in enumerate(graphs)]) is None
    sent = _sent_once_each(pb, 6)
    answered = {k for k, (r, _) in sent.items() if r.error is None}
    assert answered and len(answered) < 6 and model.model.calls == calls_before + 2
    for k, (response, _) in sent.items():
        if k in answered:
            np.testing.assert_allclose(response.output_tensors[0].array[0], want[k], atol=1e-6)
        else:
            assert (response.error.code, response.error.message) == ("INTERNAL", "ValueError: bookkeeping broke")


def test_an_execute_of_one_merged_call_returns_its_responses(config, node_repo, exported, monkeypatch) -> None:
    """Sent alone, a response costs the server another round trip (0.1-0.25 ms of its CPU a request on
    small graphs): an execute whose requests all ran in one call, the usual case, gains nothing by it
    and returns the responses in order, as before."""
    model, pb = _triton_model(config, node_repo, monkeypatch)
    graphs = exported["teddy"].graphs(3, seed=6)
    out = model.execute([_FakeRequest(pb, k, _request(g)) for k, g in enumerate(graphs)])
    assert model.model.calls == 1 and pb.sent == [] and isinstance(out, list) and len(out) == 3
    for response, w in zip(out, GraphSession(exported["teddy"].path).run(graphs), strict=True):
        assert response.error is None
        np.testing.assert_allclose(response.output_tensors[0].array[0], w, atol=1e-6)


def _three_calls(exported) -> list:
    """Three graphs of 8-11 nodes: more than one merged call under ``gtcompress_batch_nodes`` 20."""
    return [_request(g) for g in exported["teddy"].graphs(3, seed=6, lo=8, hi=12)]


def test_an_answer_that_cannot_be_sent_is_logged_with_what_its_client_sees(
    config, node_repo, exported, monkeypatch, caplog
) -> None:
    """A send that fails in the stub (an output larger than its shared memory can grow to: 4 answers of
    30,000 nodes x 64 floats in a 14 MiB /dev/shm) has already closed the sender and counted the
    response in Triton 2.51, so the error response sent after it was refused in silence and the log
    said only "sending the answer failed", while the client waited for its timeout (100 s) and
    Triton counted a success. Nothing can complete the request then; the log names the model, the
    request, the answer's size, what its client sees and what to change. The others are answered."""
    model, pb = _triton_model(config, node_repo, monkeypatch, gtcompress_batch_nodes="20")
    inputs = _three_calls(exported)
    requests = [_FakeRequest(pb, k, r, fail_sends=int(k == 0)) for k, r in enumerate(inputs)]
    with caplog.at_level("ERROR", logger="gtcompress.triton"):
        assert model.execute(requests) is None and model.model.calls >= 2
    assert sorted(rid for rid, *_ in pb.sent) == [1, 2] and requests[0].closed
    rows = inputs[0]["x"].shape[1]
    assert (
        f"model 'gt_node': the answer to request 0 (float32 [1, {rows}, 3], 0.0 MiB) could not be sent; its client "
        "waits until its own timeout. Give the server more /dev/shm (docker run --shm-size) or set "
        "gtcompress_answer_each_call 0, which fails such requests at once"
    ) in caplog.text
    assert "Failed to increase the shared memory pool size" in caplog.text
    graphs = exported["teddy"].graphs(3, seed=6, lo=8, hi=12)
    want = GraphSession(exported["teddy"].path).run(graphs)
    sent = {rid: response for rid, response, *_ in pb.sent}
    for k in (1, 2):
        np.testing.assert_allclose(sent[k].output_tensors[0].array[0], want[k], atol=1e-6)

    pb.sent.clear()  # a send refused before the sender closes (its arguments) is answered with the error

    class Refuses(_FakeRequest):
        def send(self, response=None, flags: int = 0) -> None:
            if response is not None and response.error is None:
                raise TypeError("output tensor of the wrong type")
            super().send(response, flags)

    requests = [Refuses(pb, 0, inputs[0]), *(_FakeRequest(pb, k, r) for k, r in enumerate(inputs) if k)]
    assert model.execute(requests) is None
    sent = {rid: response for rid, response, *_ in pb.sent}
    assert sent[0].error.code == "INTERNAL"
    assert sent[0].error.message == "sending the answer failed: TypeError: output tensor of the wrong type"


def test_a_triton_without_response_senders_gets_the_answers_returned(config, node_repo, exported, monkeypatch) -> None:
    """Before 23.10 Triton's Python backend gives a model that is not decoupled no response sender
    ("'get_response_sender' function must be called only when the model is using the decoupled
    transaction policy"); there ``execute`` returns one response per request, in order, as before,
    and does not ask again."""
    model, pb = _triton_model(config, node_repo, monkeypatch, gtcompress_batch_nodes="20")
    asked: list[int] = []

    class OldRequest(_FakeRequest):
        def get_response_sender(self):
            asked.append(self.rid)
            raise RuntimeError("'get_response_sender' function must be called only when the model is decoupled")

    inputs = _three_calls(exported)
    inputs[1] = {k: np.concatenate([v, v]) for k, v in inputs[1].items()}
    want = GraphSession(exported["teddy"].path).run(exported["teddy"].graphs(3, seed=6, lo=8, hi=12))
    for _ in range(2):
        out = model.execute([OldRequest(pb, k, r) for k, r in enumerate(inputs)])
        assert pb.sent == [] and isinstance(out, list) and len(out) == 3
        for k in (0, 2):
            np.testing.assert_allclose(out[k].output_tensors[0].array[0], want[k], atol=1e-6)
        assert out[1].error.code == "INVALID_ARG" and "batch dimension is 2" in out[1].error.message
    assert asked == [0]  # refused once: not asked again


def test_answer_each_call_off_returns_every_answer_at_the_end(config, node_repo, exported, monkeypatch) -> None:
    """``gtcompress_answer_each_call`` 0 (or false, any case) is the way back to the behaviour before
    response senders, for a Triton deployment that misbehaves with them: an execute of several merged
    calls asks for no sender, sends nothing and returns every response, in order."""
    graphs = exported["teddy"].graphs(3, seed=6, lo=8, hi=12)
    want = GraphSession(exported["teddy"].path).run(graphs)
    asked: list[int] = []

    class Counted(_FakeRequest):
        def get_response_sender(self):
            asked.append(self.rid)
            return self

    for off in ("0", "false", "FALSE", " False "):
        model, pb = _triton_model(
            config, node_repo, monkeypatch, gtcompress_batch_nodes="20", gtcompress_answer_each_call=off
        )
        out = model.execute([Counted(pb, k, r) for k, r in enumerate(_three_calls(exported))])
        assert model.model.calls >= 2 and asked == [] and pb.sent == []
        assert isinstance(out, list) and len(out) == 3
        for response, w in zip(out, want, strict=True):
            assert response.error is None
            np.testing.assert_allclose(response.output_tensors[0].array[0], w, atol=1e-6)
    for on in ("1", "true", "True", ""):  # the default, written out (or left empty) is the same
        model, pb = _triton_model(
            config, node_repo, monkeypatch, gtcompress_batch_nodes="20", gtcompress_answer_each_call=on
        )
        assert model.execute([_FakeRequest(pb, k, r) for k, r in enumerate(_three_calls(exported))]) is None
        assert len(_sent_once_each(pb, 3)) == 3


def test_a_bad_answer_each_call_value_is_refused_at_load(config, node_repo) -> None:
    """Only a yes/no is taken: ``off`` or ``no`` read as "on" by a looser test would leave the escape
    hatch shut without a word, so the load fails naming the model, the parameter and what it takes."""
    for bad in ("off", "no", "2", "yes please"):
        with pytest.raises(SessionError) as err:
            GraphBatchModel(node_repo, 1, config(node_repo, gtcompress_answer_each_call=bad))
        assert str(err.value) == (
            f"model 'gt_node': parameter gtcompress_answer_each_call is {bad!r}; expected 1 or true (answer each "
            "request as its merged call ends), 0 or false (all at the end of execute)"
        )


def _stub_shm(tmp_path, monkeypatch, region: int, free: int, growth: int = 4096) -> triton_shm.StubShm:
    """The stub's region as a file of ``region`` bytes, ``free`` bytes left in its /dev/shm."""
    path = tmp_path / "triton_python_backend_shm_region_test"
    path.write_bytes(b"")
    os.truncate(path, region)
    real = os.statvfs

    def statvfs(where):
        if Path(where) == tmp_path:
            return SimpleNamespace(f_bavail=free // 512, f_frsize=512)
        return real(where)

    monkeypatch.setattr(triton_shm.os, "statvfs", statvfs)
    return triton_shm.StubShm(path, growth)


def _input_bytes(inputs: list[dict[str, np.ndarray]]) -> int:
    return sum(a.nbytes for r in inputs for a in r.values())


def _answer_bytes(model: tp.TritonPythonModel, exported, k: int) -> int:
    graphs = exported["teddy"].graphs(3, seed=6, lo=8, hi=12)
    out = GraphSession(exported["teddy"].path).run(graphs)[k][None].astype(np.float32)
    return triton_shm.shm_bytes(out, model.model.output_name)


def test_an_answer_that_cannot_fit_in_shared_memory_gets_an_error_instead_of_hanging(
    config, node_repo, exported, monkeypatch, tmp_path
) -> None:
    """Sent through its response sender, an answer the stub cannot copy into its shared memory fails
    after Triton 2.51 closed the sender: its client waited until its own timeout (4 answers of 30,000
    nodes x 64 floats, a 14 MiB /dev/shm: 100 s). An answer that certainly cannot fit (more than the
    region has spare, and /dev/shm cannot grow it by the whole ``shm-growth-byte-size`` units it
    would take) now gets an INTERNAL error naming its size, the room and the remedies; the others
    are answered; with room to grow, nothing changes."""
    inputs = _three_calls(exported)
    model, pb = _triton_model(config, node_repo, monkeypatch, gtcompress_batch_nodes="20")
    sizes = [_answer_bytes(model, exported, k) for k in range(3)]
    small = min(range(3), key=sizes.__getitem__)
    spare = sizes[small]  # the smallest answer fits in the region as it is; the others would need it to grow
    model._shm = _stub_shm(tmp_path, monkeypatch, _input_bytes(inputs) + spare, free=4095)
    assert model.execute([_FakeRequest(pb, k, r) for k, r in enumerate(inputs)]) is None
    sent = _sent_once_each(pb, 3)
    want = GraphSession(exported["teddy"].path).run(exported["teddy"].graphs(3, seed=6, lo=8, hi=12))
    for k in range(3):
        response, _ = sent[k]
        if sizes[k] <= spare:
            np.testing.assert_allclose(response.output_tensors[0].array[0], want[k], atol=1e-6)
            continue
        rows = inputs[k]["x"].shape[1]
        assert response.error.code == "INTERNAL"
        assert response.error.message == (
            f"model 'gt_node': the answer to request {k} (float32 [1, {rows}, 3], 0.0 MiB) does not fit in the "
            f"Python backend's shared memory: its region has {spare / 2**20:.1f} MiB spare and would have to grow "
            "by 0.0 MiB, but /dev/shm has 0.0 MiB free. Give the server more /dev/shm (docker run --shm-size), "
            "send smaller requests, or send fewer graphs per execute (max_batch_size, gtcompress_batch_nodes)"
        )
    assert sum(response.error is None for response, _ in sent.values()) == sum(s <= spare for s in sizes) < 3

    pb.sent.clear()  # one growth unit free: every answer fits
    model._shm = _stub_shm(tmp_path, monkeypatch, _input_bytes(inputs) + spare, free=4096)
    assert model.execute([_FakeRequest(pb, k, r) for k, r in enumerate(inputs)]) is None
    assert all(response.error is None for response, _ in _sent_once_each(pb, 3).values())


def test_returned_answers_are_checked_together_and_sent_alone_when_only_that_fits(
    config, node_repo, exported, monkeypatch, tmp_path
) -> None:
    """Returned from ``execute``, every answer is in shared memory at once, and one that did not fit
    failed every request of the execute with HTTP 500. With ``gtcompress_answer_each_call`` 0 the
    answers are taken in order and only those that cannot fit after the ones before them get the
    error; by default, an execute of one merged call whose answers fit only one at a time sends them
    through the response senders instead, and all are answered."""
    inputs = _three_calls(exported)
    model, pb = _triton_model(
        config, node_repo, monkeypatch, gtcompress_batch_nodes="20", gtcompress_answer_each_call="0"
    )
    sizes = [_answer_bytes(model, exported, k) for k in range(3)]
    model._shm = _stub_shm(tmp_path, monkeypatch, _input_bytes(inputs) + sizes[0] + sizes[1], free=0)
    out = model.execute([_FakeRequest(pb, k, r) for k, r in enumerate(inputs)])
    assert pb.sent == [] and isinstance(out, list) and len(out) == 3 and model.model.calls >= 2
    assert [o.error is None for o in out] == [True, True, False]  # the third no longer fits beside the two
    want = GraphSession(exported["teddy"].path).run(exported["teddy"].graphs(3, seed=6, lo=8, hi=12))
    for k in (0, 1):
        np.testing.assert_allclose(out[k].output_tensors[0].array[0], want[k], atol=1e-6)
    assert out[2].error.code == "INTERNAL" and out[2].error.message.startswith(
        "model 'gt_node': the answer to request 2 (float32 [1, 8, 3], 0.0 MiB) does not fit"
    )
    assert out[2].error.message.endswith(
        "or set gtcompress_answer_each_call 1 (the default: each answer is sent, and freed, on its own)"
    )

    inputs = [_request(g) for g in exported["teddy"].graphs(3, seed=6)]  # one merged call
    model, pb = _triton_model(config, node_repo, monkeypatch)
    one_at_a_time = max(a.nbytes + 8 * a.ndim + 6 + 64 for a in model.model.answer(inputs))
    model._shm = _stub_shm(tmp_path, monkeypatch, _input_bytes(inputs) + one_at_a_time, free=0)
    assert model.execute([_FakeRequest(pb, k, r) for k, r in enumerate(inputs)]) is None and model.model.calls == 2
    want = GraphSession(exported["teddy"].path).run(exported["teddy"].graphs(3, seed=6))
    for k, (response, _) in _sent_once_each(pb, 3).items():
        np.testing.assert_allclose(response.output_tensors[0].array[0], want[k], atol=1e-6)


def test_the_room_follows_how_triton_grows_the_stubs_region(tmp_path, monkeypatch) -> None:
    """Triton 2.51's Python backend grows the region by ``growth * (bytes // growth + 1)`` when an
    allocation does not fit its free space, and only if /dev/shm can give that; the numbers are the
    ones measured in a 14 MiB /dev/shm (region 5 MiB, 3.6 MB of inputs, 4 MiB free, an answer of
    30,000 nodes x 64 floats). The region is found from the stub's command line."""
    room = triton_shm.ShmRoom(region=5 * 2**20, used=3_600_000, free=4 * 2**20, growth=2**20)
    assert room.grow_by(1_000_000) == 0 and room.grow_by(7_680_000) == 8 * 2**20
    assert not room.take(7_680_000) and (room.used, room.region) == (3_600_000, 5 * 2**20)
    assert room.take(3 * 2**20) and (room.region, room.free, room.used) == (9 * 2**20, 0, 3_600_000 + 3 * 2**20)
    assert room.take(2**20 - 1)  # what growth left spare

    monkeypatch.setattr(triton_shm, "SHM_DIR", tmp_path)
    (tmp_path / "triton_python_backend_shm_region_1").write_bytes(b"")
    stub = "/opt/tritonserver/backends/python/triton_python_backend_stub"
    argv = [stub, "/models/m/1/model.py", "triton_python_backend_shm_region_1", "1048576", "2097152", "7"]
    assert triton_shm.StubShm.from_cmdline(argv) == triton_shm.StubShm(
        tmp_path / "triton_python_backend_shm_region_1", 2097152
    )
    assert triton_shm.StubShm.from_cmdline(["python", *argv[1:]]) is None
    assert triton_shm.StubShm.from_cmdline([*argv[:2], "triton_python_backend_shm_region_2", *argv[3:]]) is None
    assert triton_shm.StubShm.from_cmdline([*argv[:4], "lots"]) is None
