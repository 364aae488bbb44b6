"""Prometheus metrics of the server (``gtc serve --metrics``): requests, batches, latencies per model.

``prometheus_client`` is imported when metrics are enabled, not before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Latency buckets (seconds) of the request and model-call histograms: requests and model calls of
#: small graphs take a few milliseconds, so the buckets start at 0.5 ms (Prometheus's start at 5 ms).
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)

#: ``outcome`` of ``gtc_inference_requests_total``: answered (``success``), refused for the request's own
#: fault (``invalid``: any 4xx, a bad tensor, a body too large or too slow), refused for the server's load
#: or shutdown (``unavailable``: 503), failed inside the server (``error``: 500, the only outcome to page
#: someone about), or left by its client before an answer (``disconnected``). One ``error`` outcome for all
#: of these made a client's bad requests or a load spike look like server failures on an alert.
OUTCOMES = ("success", "invalid", "unavailable", "error", "disconnected")


def outcome_of(status: int | None) -> str:
    """The :data:`OUTCOMES` value of an answered HTTP status (``None``: the client left)."""
    if status is None:
        return "disconnected"
    if status < 400:
        return "success"
    if status == 503:
        return "unavailable"
    return "invalid" if status < 500 else "error"


class Metrics:
    """Prometheus metrics in a registry of this app's own (several servers can share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gtc_inference_requests", "Inference requests by outcome", ["model", "outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "gtc_inference_request_seconds",
            "Inference request latency (decode to response)",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "gtc_batch_requests",
            "Requests merged into one model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_graphs = Histogram(
            "gtc_batch_graphs",
            "Graphs in one model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self.model_seconds = Histogram(  # model calls take 1-4 ms: the default buckets start at 5 ms
            "gtc_model_call_seconds",
            "Merge + layout + model run per batch",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge("gtc_queue_pending", "Requests waiting for the model", ["model"], registry=self.registry)
        # Without the name a client sent: labelled by it, any client could add a series per request.
        self.unknown_model = Counter(
            "gtc_unknown_model_requests", "Inference requests for a model this server does not serve",
            registry=self.registry,
        )  # fmt: skip

    def for_model(self, name: str) -> ModelMetrics:
        """The labelled children of one model, resolved once (``labels()`` is a dict lookup under a lock)."""
        return ModelMetrics(
            requests={outcome: self.requests.labels(name, outcome) for outcome in OUTCOMES},  # all shown from 0
            latency=self.latency.labels(name),
            batch_requests=self.batch_requests.labels(name),
            batch_graphs=self.batch_graphs.labels(name),
            model_seconds=self.model_seconds.labels(name),
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class ModelMetrics:
    requests: dict[str, Any]  # by outcome (:data:`OUTCOMES`)
    latency: Any
    batch_requests: Any
    batch_graphs: Any
    model_seconds: Any

    def observe_batch(self, items: Sequence[Any], seconds: float) -> None:
        """One model call of ``items`` (:class:`runtime.batcher.BatchItem`) that took ``seconds``: the
        batcher's ``on_batch``, called in its worker thread."""
        self.batch_requests.observe(len(items))
        self.batch_graphs.observe(sum(it.num_graphs for it in items))
        self.model_seconds.observe(seconds)


# ---------------------------------------------------------------------------------- the app
