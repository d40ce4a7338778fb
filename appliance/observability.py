"""Prometheus metrics, named per phase: queue, retrieval, prefill (time to first token), decode.

Each ``Metrics`` owns its registry (not prometheus-client's global one), so several containers in
one process (tests, the CLI) never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 80, 160, 320, 640)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            "appliance_queue_wait_seconds", "Time a request waited for a model slot.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds", "From getting a slot to the first token (prefill).",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decode_rate = Histogram(
            "appliance_decode_tokens_per_second", "Generated tokens per second after the first token.",
            ["model"], buckets=_RATE_BUCKETS, registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "appliance_generation_seconds", "Whole generation, first token to last.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.retrieval = Histogram(
            "appliance_retrieval_seconds", "Embedding the query and searching the store.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "appliance_inference_requests", "Generations by outcome (ok, error, cancelled, rejected).",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "appliance_inference_errors",
            "Failed or refused generations by kind.",
            ["model", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "appliance_tokens",
            "Tokens processed, by kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.in_flight = Gauge("appliance_in_flight", "Generations holding a slot.", ["model"], registry=r)
        self.queued = Gauge("appliance_queued", "Requests waiting for a slot.", ["model"], registry=r)
        self.worker_restarts = Counter(
            "appliance_worker_restarts", "Model workers restarted after a crash or a hang.", ["model"],
            registry=r,
        )  # fmt: skip
        self.health_failures = Counter(
            "appliance_health_check_failures", "Replica health probes that failed or timed out.", ["model"],
            registry=r,
        )  # fmt: skip
        self.healthy_replicas = Gauge(
            "appliance_healthy_replicas", "Replicas that passed their last health probe (in routing).",
            ["model"], registry=r,
        )  # fmt: skip
        self.embedded_texts = Counter(
            "appliance_embedded_texts", "Texts embedded through /v1/embeddings.", ["model"], registry=r
        )

    def observe_error(self, model: str, kind: str) -> None:
        self.errors.labels(model, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
