"""Prometheus metrics of the server (``gtc serve --metrics``): requests, batches, latencies per model.

``prometheus_client`` is imported when metrics are enabled, not before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Latency buckets (seconds) of the request and model-call histograms: requests and model calls of
#: small graphs take a few milliseconds, so the buckets start at 0.5 ms (Prometheus's start at 5 ms).
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


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

    def for_model(self, name: str) -> ModelMetrics:
        """The labelled children of one model, resolved once (``labels()`` is a dict lookup under a lock)."""
        return ModelMetrics(
            success=self.requests.labels(name, "success"),
            error=self.requests.labels(name, "error"),
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
    success: Any
    error: Any
    latency: Any
    batch_requests: Any
    batch_graphs: Any
    model_seconds: Any


# ---------------------------------------------------------------------------------- the app
