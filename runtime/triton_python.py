"""Our model inside NVIDIA Triton Inference Server's Python backend: raw graphs in, one disjoint union per batch.

A Triton user sends raw graphs, not the pre-processed tensors an exported model takes (attention
layouts, TEDDY-sparsified edges, positional encodings other than the graphs' own). The repository
``gtc export --triton-repo`` writes for such a model therefore holds a Python-backend ``model.py``
that re-exports :class:`TritonPythonModel` from here, next to the ONNX file or TensorRT plan it
runs with our torch-free runtime (:class:`runtime.session.GraphSession`).

**Requests.** Every input is declared with ``allow_ragged_batch`` and the model has
``max_batch_size > 0``, so Triton's dynamic batcher queues requests of *different* node and edge
counts together and hands them to one ``execute(requests)`` call. Each request carries a leading
batch dimension of 1 (Triton's rule for ``max_batch_size > 0``): ``x [1, N, F]``,
``edge_index [1, 2, E]``, optional ``edge_attr [1, E, Fe]``, and for a request that is itself a
union of graphs ``batch [1, N]`` and/or ``node_counts [1, G]``. The answer is ``[1, N, out]``
(node-level) or ``[1, G, out]`` (graph-level). :func:`runtime.client.infer_graphs` adds and strips
that dimension when the model's configuration asks for it, so the same client code runs against
``gtc serve``.

**The graphs' own positional encodings.** A request may carry ``pe_<kind> [1, N, k]`` for the
model's PE kinds (optional inputs, named and shaped as the model's own): a PyG ``Data``'s
``random_walk_pe``, or a LapPE whose eigenvector signs the client chose. The model answers with
them, as ``GraphSession.run`` and ``gtc serve`` (sent pre-processed) do, and computes only the
kinds a request lacks; computed again, an encoding may differ (LapPE's signs and the basis of a
repeated eigenvalue; PyG's RWSE counts duplicate edges otherwise), and so would the answer. They
are validated as ``gtc serve`` validates them (float32 ``[N, k]``, finite), and their work is
not charged to ``gtcompress_max_pe_work``, except where TEDDY computes them again.

**Batching.** ``execute`` validates every request exactly as ``gtc serve`` does
(:func:`runtime.served.request_graph`: dtypes, edge ids in range, finite features, categories,
batch vectors, per-request size limits), sparsifies it with TEDDY when the model was fine-tuned
that way, then packs the valid ones into disjoint unions within the soft limits
(:func:`runtime.packing.pack`), runs each union once and splits the output back per request. When
one ``execute`` runs several unions, each request is answered through its response sender as soon
as its union's call ends (a bad one before any call), not when the whole ``execute`` does: 32 LapPE
requests of 1,900 nodes make 8 calls, and returning the answers together made every client wait
7.7 s, where the first now hears after 1.0 s (``bench/results/triton_answer/answer_latency.json``); one union's
answers are returned together, which costs the server less. ``gtcompress_answer_each_call`` ``0``
(or ``false``) returns every answer at the end of ``execute`` instead, as before response senders
were used: the way back if a Triton deployment misbehaves with them, and where answers may not fit
the server's ``/dev/shm``. An answer that cannot fit in the stub's shared memory gets an ``INTERNAL``
error at once instead of leaving its client waiting (:mod:`runtime.triton_shm`). A bad
request gets an ``INVALID_ARG`` error (HTTP 400) naming its input, and the others in its batch are
answered; if a merged call fails, every request in it is retried alone, so one cannot fail the rest;
an error part-way answers every request not yet answered, so none is left waiting.

**Configuration** (``parameters`` in ``config.pbtxt``, all optional): ``gtcompress_model_file``
(file in the version directory), ``gtcompress_threads`` (ONNX Runtime intra-op threads per
instance; 0: its default), ``gtcompress_max_nodes``/``_edges``/``_graphs``/``_attention_mib`` and
``gtcompress_max_pe_work`` (hard per-request limits; ``max_pe_work`` a number such as ``1.5e11``),
``gtcompress_max_inflight_mib`` (a request's arrays plus the working memory of the positional
encodings computed for it, :func:`runtime.request_cost.pe_memory`, as ``gtc serve --max-inflight-mib``
charges them; 2048) and ``gtcompress_batch_nodes``/``_edges``/``_graphs``/``_attention_mib`` (soft limits of one
merged model call; ``attention_mib`` bounds dense attention scores per layer,
:class:`runtime.served.ServerLimits`) and ``gtcompress_answer_each_call`` (``1``/``true``, the default:
answer each request as its merged call ends; ``0``/``false``: all at the end of ``execute``).

:class:`GraphBatchModel` holds all of this without ``triton_python_backend_utils``, which exists
only inside Triton's Python stub, so it is tested directly as well as through a real server.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np

from gtcompress.errors import GTCompressError
from runtime.errors import InputError, ProtocolError, ShapeError
from runtime.heap import release_heap
from runtime.packing import BatchConfig, GraphRequest, pack, past_limits
from runtime.protocol import InferRequest
from runtime.request_cost import check_pe_memory, pe_memory
from runtime.served import (
    ServedModel,
    ServerLimits,
    finish_graph,
    mib_bytes,
    request_graph,
    run_items,
    teddy_runs,
)
from runtime.session import GraphSession
from runtime.spec import NUMPY_TO_KSERVE, plan_metadata_path
from runtime.triton_params import (
    answer_each_call,
    check_parameter_names,
    config_parameters,
    int_parameter,
    model_file,
    number_parameter,
)
from runtime.triton_shm import ShmRoom, StubShm, describe, shm_bytes

log = logging.getLogger("gtcompress.triton")


@functools.cache
def _kserve_type(dtype: np.dtype) -> str:
    return NUMPY_TO_KSERVE.get(str(dtype), str(dtype).upper())


@dataclass(frozen=True)
class Failure:
    """One request's error: ``invalid`` for a bad request (HTTP 400), else a failure of ours (500)."""

    message: str
    invalid: bool


class Answer(NamedTuple):
    """One request's answer as :meth:`GraphBatchModel.answers` yields it."""

    position: int  #: the request's position in the ``execute`` call
    output: np.ndarray | Failure
    calls_left: int  #: merged model calls of the same ``execute`` still to run after this answer


@dataclass(slots=True)
class _Item(GraphRequest):
    """A request of one ``execute`` call, by its position there (where its answer goes)."""

    index: int


class GraphBatchModel:
    """The model behind :class:`TritonPythonModel`, without Triton: requests as ``{name: array}``."""

    def __init__(
        self,
        model_dir: str | Path,
        version: str | int,
        config: Mapping[str, Any],
        instance: tuple[str, int] | None = None,
    ) -> None:
        """``instance``: Triton's ``(model_instance_kind, model_instance_device_id)`` for this
        instance. An ONNX model runs where the config's instance group puts it: on CPU for
        ``KIND_CPU`` (what the repository writer declares), on that GPU for ``KIND_GPU``, never on
        whatever ONNX Runtime finds first (N CPU instances all on GPU 0 otherwise). A TensorRT plan
        runs on the instance's GPU for ``KIND_GPU``, on GPU 0 otherwise."""
        self.name = str(config.get("name") or Path(model_dir).name)
        version_dir = Path(model_dir) / str(version)
        params = config_parameters(config)
        where = f"model '{self.name}'"
        check_parameter_names(params, where)

        def get(key: str) -> int:
            return int_parameter(params, key, where)

        threads = get("gtcompress_threads")
        #: answer through response senders as each merged call ends (TritonPythonModel.execute)
        self.answer_each_call = answer_each_call(params, where)
        inflight_mib = number_parameter(params, "gtcompress_max_inflight_mib", where)
        self.limits = ServerLimits(
            max_nodes=get("gtcompress_max_nodes"),
            max_edges=get("gtcompress_max_edges"),
            max_graphs=get("gtcompress_max_graphs"),
            max_attention_mib=number_parameter(params, "gtcompress_max_attention_mib", where),
            max_pe_work=number_parameter(params, "gtcompress_max_pe_work", where),
            max_inflight_mib=inflight_mib,
            # No HTTP body here (Triton receives it): the budget is the parameter itself, which
            # ServerLimits.inflight_bytes would otherwise raise to gtc serve's 512 MiB body limit.
            max_body_bytes=mib_bytes(inflight_mib),
        )
        batch = BatchConfig(
            max_nodes=get("gtcompress_batch_nodes"),
            max_edges=get("gtcompress_batch_edges"),
            max_graphs=get("gtcompress_batch_graphs"),
            max_attention_mib=number_parameter(params, "gtcompress_batch_attention_mib", where),
            max_requests=max(1, int(config.get("max_batch_size") or 1)),
        )
        path = model_file(version_dir, params)
        providers, gpu = None, None
        if instance is not None and path.suffix == ".onnx":
            kind, device = instance
            if kind == "CPU":
                providers = ["CPUExecutionProvider"]
            elif kind == "GPU":
                providers = [("CUDAExecutionProvider", {"device_id": int(device)}), "CPUExecutionProvider"]
        elif instance is not None and instance[0] == "GPU":  # a plan: on this instance's GPU, not GPU 0
            gpu = f"cuda:{int(instance[1])}"
        session = GraphSession(path, providers, threads=threads or None, spinning=False, device=gpu)
        if session.platform == "tensorrt_plan" and "model_config" not in session.metadata:
            # config.pbtxt's input spec alone (a repository written before the engine's metadata was
            # copied beside it), or a .json without the model's config: whether the engine predates the
            # float32 fixes cannot be told
            side = plan_metadata_path(path)
            lacks = (
                f"{side} has no model_config (the engine's metadata, which gtc build writes)"
                if side.is_file()
                else f"{path} has no {side.name} beside it (the engine's metadata, which gtc build writes)"
            )
            log.warning(
                "model '%s': %s: requests are not held to the feature range an engine built from an older export "
                "is trusted with, as gtc serve holds them; write the repository again from the engine and its .json",
                self.name,
                lacks,
            )
        self.served = ServedModel(self.name, session, batch=batch, version=str(version))
        self.served.hold_to(self.limits)
        self.batch = self.served.batch  # tightened by a TensorRT profile's maxima and the request limit
        self.output_name = session.output_name
        self.calls = 0  # merged model calls so far

    @property
    def session(self) -> GraphSession:
        return self.served.session

    def _item(self, index: int, inputs: Mapping[str, np.ndarray]) -> _Item:
        """One request (leading batch dimension 1) as validated, sparsified graphs, with the encodings
        it carries (``pe_<kind>``) checked as ``gtc serve`` checks them and kept, unless TEDDY computes
        them again on the sparsified graph (:func:`runtime.graphs.apply_teddy`), as ``GraphSession.run``
        does."""
        if "x" not in inputs:  # Triton enforces required inputs; a direct caller may not
            raise ShapeError("x", "required input is missing")
        unbatched: dict[str, np.ndarray] = {}
        datatypes: dict[str, str] = {}
        for name, arr in inputs.items():
            arr = np.asarray(arr)
            if arr.ndim == 0 or arr.shape[0] != 1:
                got = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]}"
                raise ShapeError(
                    name,
                    f"batch dimension is {got}; send one graph, or one union of graphs with 'batch', per request, "
                    f"with a leading dimension of 1 (shape {[1, *arr.shape[1:]]})",
                )
            unbatched[name] = arr[0]
            datatypes[name] = _kserve_type(arr.dtype)
        req = InferRequest(unbatched, datatypes)
        served = self.served
        g, num_graphs, _ = request_graph(req, served, self.limits, raw_only=True, teddy=False)
        # The encodings computed for a raw graph take far more memory than the request (a 1 MiB graph's
        # LapPE: 145 MiB measured), so their working memory and the request's arrays are held to the
        # budget gtc serve charges them to, before TEDDY or the encodings run (TEDDY may compute them).
        teddy = teddy_runs(served, False)  # a raw request always (raw_only)
        need = pe_memory(served, g, num_graphs, teddy=teddy)
        held = sum(a.nbytes for a in unbatched.values())
        check_pe_memory(served, self.limits, g, need, held, raw_only=True, teddy=teddy)
        g = finish_graph(g, served, self.limits, num_graphs, False)
        return _Item(g, num_graphs, index)  # PE: once for the whole union (build_inputs), not per request

    def answer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray | Failure]:
        """One output ``[1, rows, out]`` or :class:`Failure` per request, in order (all of
        :meth:`answers` at once, for callers that want the list)."""
        results: list[np.ndarray | Failure | None] = [None] * len(requests)
        for a in self.answers(requests):
            results[a.position] = a.output
        return [r if r is not None else Failure("request was not answered", invalid=False) for r in results]

    def answers(self, requests: Sequence[Mapping[str, np.ndarray]]) -> Iterator[Answer]:
        """Every request's :class:`Answer` as soon as it is known: the bad ones before any model call,
        the others as their merged call finishes. One ``execute`` may hold several merged calls (32
        LapPE requests of 1,900 nodes: 8 calls, 7.4 s in all); a request of the first call should not
        wait for the last, as ``gtc serve``'s answers do not."""
        items: list[_Item] = []
        failures: list[tuple[int, Failure]] = []
        for k, inputs in enumerate(requests):
            try:
                items.append(self._item(k, inputs))
            except (InputError, ProtocolError) as e:
                failures.append((k, Failure(str(e), invalid=True)))
            except Exception as e:  # a bug of ours: this request fails, the rest are answered
                log.exception("request validation failed")
                failures.append((k, Failure(f"{type(e).__name__}: {e}", invalid=False)))
        batches = pack(items, self.batch)
        for k, failure in failures:
            yield Answer(k, failure, len(batches))
        for i, batch in enumerate(batches):
            yield from self._run(batch, len(batches) - 1 - i)

    def _run(self, batch: list[_Item], after: int) -> Iterator[Answer]:
        """One merged call (``after``: merged calls still to run behind it); if it fails, every request
        alone, each answered as its own call ends, so one cannot fail the others."""
        try:
            self.calls += 1
            outs = run_items(self.served, batch)
            if past_limits(self.batch, batch):
                release_heap()
            answers: list[np.ndarray | Failure] = [
                Failure(str(o), invalid=True) if isinstance(o, Exception) else np.ascontiguousarray(o)[None]
                for o in outs
            ]
        except Exception as e:
            if len(batch) > 1:
                for j, it in enumerate(batch):
                    yield from self._run([it], after + len(batch) - 1 - j)
                return
            if isinstance(e, (InputError, ProtocolError)):
                failure = Failure(str(e), invalid=True)
            else:
                log.exception("inference failed")
                detail = str(e) if isinstance(e, GTCompressError) else f"{type(e).__name__}: {e}"
                failure = Failure(f"inference failed: {detail}", invalid=False)
            yield Answer(batch[0].index, failure, after)
            return
        for item, out in zip(batch, answers, strict=True):
            yield Answer(item.index, out, after)


def _shape_of(out: np.ndarray | Failure) -> str:
    """What a log line says of an answer: its shape and size, or that it was an error."""
    return "an error" if isinstance(out, Failure) else describe(out)


class TritonPythonModel:
    """The class Triton's Python backend instantiates (``model.py`` re-exports it)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's Python stub

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        kind = args.get("model_instance_kind")
        instance = (kind, int(args.get("model_instance_device_id") or 0)) if kind else None
        self.model = GraphBatchModel(args["model_repository"], args["model_version"], config, instance)
        self.input_names = [i["name"] for i in config.get("input", [])]
        # False once this Triton refused a response sender (before 23.10), or gtcompress_answer_each_call 0
        self._senders = self.model.answer_each_call
        # The stub's shared-memory region, to refuse an answer that cannot fit in it (None: not found, none refused)
        self._shm = StubShm.of_this_process()
        if self._shm is None:
            log.info(
                "model '%s': the stub's shared-memory region was not found; answers are not checked", self.model.name
            )

    def execute(self, requests: list[Any]) -> list[Any] | None:
        """The responses, in order, when this ``execute`` ran one merged call; with more, each request
        is answered through its response sender as soon as its call ends and ``None`` is returned
        (Triton's Python backend allows that for a model that is not decoupled since 23.10).

        Returning the list made every request wait for the execute's last call (8 calls of 4 LapPE
        graphs of 1,900 nodes: 7.4 s for all, where the first now hears after 1.0 s). A response sent
        alone costs an extra round trip to the server (0.1-0.25 ms of server CPU a request measured on
        small graphs), so the single call, the usual case, still returns the list; an older Triton,
        without senders for such a model, and a model with ``gtcompress_answer_each_call`` 0 get the
        list always. A request's answer goes one way or the
        other, never both, and an execute that sent any sends all.

        Every request gets exactly one final response, whatever happens: one left unanswered hangs its
        client until the client's timeout, and an exception out of ``execute`` after some were sent
        crashed Triton 2.51's server (``malloc_consolidate(): invalid chunk size``, SIGABRT: it frees
        the answered requests' response factories a second time). So an error part-way answers every
        request not yet answered with it, and nothing is raised once a response was sent."""
        pb = self._pb
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        outs: list[np.ndarray | Failure | None] = [None] * len(requests)  # the answers to return
        answered = [False] * len(requests)
        senders: list[Any] | None = None
        live = 0  # this execute's input bytes: in the stub's shared memory until it returns

        def checked(k: int, out: np.ndarray | Failure, room: ShmRoom | None, *, returned: bool) -> np.ndarray | Failure:
            """``out``, or the error its request gets when ``room`` certainly cannot take it: sent, such an
            answer fails in the stub after its sender closed (the client waits until its own timeout);
            returned, it fails every request of the execute."""
            if not isinstance(out, np.ndarray) or room is None:
                return out
            nbytes = shm_bytes(out, self.model.output_name)
            if room.take(nbytes):
                return out
            failure = Failure(room.refusal(self.model.name, k, out, nbytes, returned=returned), invalid=False)
            log.error("%s", failure.message)
            return failure

        def send(k: int, out: np.ndarray | Failure) -> None:
            assert senders is not None
            answered[k] = True
            out = checked(k, out, self._room(live), returned=False)
            try:
                senders[k].send(self._response(out), flags=final)
            except Exception as e:  # the answer could not be sent (an output too large for shared memory)
                failure = Failure(f"sending the answer failed: {type(e).__name__}: {e}", invalid=False)
                try:  # Triton 2.51 refuses it: its sender closes before the shared-memory step that failed
                    senders[k].send(self._response(failure), flags=final)
                except Exception:
                    # Nothing can complete the request now (sending the final flag apart from the answer
                    # would, but crashed Triton 2.51 when a gRPC client cancelled), so the log says what
                    # its user sees and what to change.
                    log.exception(
                        "model '%s': the answer to request %d (%s) could not be sent; its client waits until "
                        "its own timeout. Give the server more /dev/shm (docker run --shm-size) or set "
                        "gtcompress_answer_each_call 0, which fails such requests at once",
                        self.model.name,
                        k,
                        _shape_of(out),
                    )
                else:
                    log.exception("sending the answer to request %d failed; it got the error instead", k)

        def ask_senders() -> None:
            nonlocal senders
            try:
                senders = [r.get_response_sender() for r in requests]
            except Exception:  # before 23.10: "must be called only when the model is using the decoupled ..."
                self._senders = False

        def give(k: int, out: np.ndarray | Failure, calls_left: int) -> None:
            if senders is None and calls_left > 0 and self._senders and not any(answered):
                ask_senders()
            if senders is None:  # nothing is sent yet: an error here is answered with the others below
                outs[k] = out
                answered[k] = True
                return
            send(k, out)

        try:
            decoded = []
            for r in requests:
                inputs = {}
                for name in self.input_names:
                    t = pb.get_input_tensor_by_name(r, name)
                    if t is not None:
                        inputs[name] = t.as_numpy()
                        live += inputs[name].nbytes
                decoded.append(inputs)
            for a in self.model.answers(decoded):
                if not answered[a.position]:
                    give(a.position, a.output, a.calls_left)
        except Exception as e:
            log.exception("execute failed part-way")
            failure = Failure(f"{type(e).__name__}: {e}", invalid=False)
            for k in range(len(requests)):
                if not answered[k]:
                    give(k, failure, 0)
        for k in range(len(requests)):  # one the model never yielded (a bug of ours) still gets an answer
            if not answered[k]:
                give(k, Failure("request was not answered", invalid=False), 0)
        if senders is not None:
            return None
        answers = cast(list[np.ndarray | Failure], outs)  # every request was given its answer just above
        if self._senders and len(requests) > 1 and not self._fits_together(answers, live):
            # Returned, the answers must all fit in shared memory at once; sent, one at a time.
            ask_senders()
            if senders is not None:
                for k, out in enumerate(answers):
                    send(k, out)
                return None
        room = self._room(live)
        responses = []
        for k, out in enumerate(answers):  # the stub copies them into shared memory in this order
            try:
                responses.append(self._response(checked(k, out, room, returned=True)))
            except Exception as e:
                log.exception("model '%s': the answer to request %d could not be made", self.model.name, k)
                responses.append(self._response(Failure(f"{type(e).__name__}: {e}", invalid=False)))
        return responses

    def _room(self, used: int) -> ShmRoom | None:
        """What the stub's shared memory can take now, ``used`` bytes of it known to be in use."""
        return self._shm.room(used) if self._shm is not None else None

    def _fits_together(self, answers: Sequence[np.ndarray | Failure], live: int) -> bool:
        """Whether the answers can all be in shared memory at once (``True`` when that cannot be told)."""
        room = self._room(live)
        name = self.model.output_name
        return room is None or all(isinstance(out, Failure) or room.take(shm_bytes(out, name)) for out in answers)

    def _response(self, out: np.ndarray | Failure) -> Any:
        pb = self._pb
        if isinstance(out, Failure):
            code = pb.TritonError.INVALID_ARG if out.invalid else pb.TritonError.INTERNAL
            return pb.InferenceResponse(error=pb.TritonError(out.message, code))
        return pb.InferenceResponse([pb.Tensor(self.model.output_name, out)])

    def finalize(self) -> None:
        self.model = None  # type: ignore[assignment]
