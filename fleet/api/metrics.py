"""Prometheus metrics, served by the API at /metrics for the whole cluster.

Choice: one endpoint. Every request passes through the API, so it counts requests, responses,
errors, tokens and latency in-process (a few counter increments, no I/O on the hot path). What
only the cluster knows (worker resources, replica state, queues, batch sizes, memory) is asked
of the supervisor and the replicas when Prometheus scrapes, and rebuilt at each scrape, so a
terminated model's gauges vanish; its counters are removed when it is terminated."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class FleetMetrics:
    def __init__(self, enabled: bool = True) -> None:
        # Off (FLEET_METRICS=0) only to measure what the counting costs; cluster gauges stay.
        self.enabled = enabled
        self.registry = CollectorRegistry()
        r = self.registry
        model_labels = ["model", "endpoint"]
        self.requests = Counter("fleet_model_requests", "Requests received per model.",
                                model_labels, registry=r)
        self.responses = Counter("fleet_model_responses", "Responses sent, per serving replica.",
                                 [*model_labels, "replica", "worker"], registry=r)
        self.errors = Counter("fleet_model_errors", "Failed requests, by kind of error.",
                              [*model_labels, "kind"], registry=r)
        self.in_flight = Gauge("fleet_model_in_flight_requests", "Requests being served now.",
                               ["model"], registry=r)
        self.prompt_tokens = Counter("fleet_model_prompt_tokens", "Prompt tokens read.",
                                     ["model"], registry=r)
        self.generated_tokens = Counter("fleet_model_generated_tokens", "Tokens generated.",
                                        ["model"], registry=r)
        self.latency = Histogram("fleet_model_request_latency_seconds",
                                 "Request latency as the API sees it.", model_labels,
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("fleet_model_time_to_first_token_seconds",
                              "Time from a streamed request's arrival to its first token.",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("fleet_model_time_per_output_token_seconds",
                              "Time per generated token after the first, per streamed request.",
                              ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.http_latency = Histogram("fleet_http_request_duration_seconds",
                                      "HTTP latency of the API server per route.",
                                      ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self._cluster_gauges(r)
        self.key_requests: Counter | None = None  # per key: only when asked (per_key)
        self.key_tokens: Counter | None = None
        self._series: dict[str, set[tuple[Counter | Histogram | Gauge, tuple[str, ...]]]] = (
            defaultdict(set))

    def _cluster_gauges(self, r: CollectorRegistry) -> None:
        worker = ["worker"]
        self.worker_cpu_count = Gauge("fleet_worker_cpu_count", "CPU cores.", worker, registry=r)
        self.worker_cpu_percent = Gauge("fleet_worker_cpu_utilization_percent", "CPU use.",
                                        worker, registry=r)
        self.worker_memory = Gauge("fleet_worker_memory_bytes", "RAM by state (total/used/free).",
                                   [*worker, "state"], registry=r)
        self.gpu_memory = Gauge("fleet_worker_gpu_memory_bytes", "GPU memory by state.",
                                [*worker, "gpu", "state"], registry=r)
        self.gpu_utilization = Gauge("fleet_worker_gpu_utilization_percent", "GPU use.",
                                     [*worker, "gpu"], registry=r)
        replica = ["model", "replica", "worker"]
        self.replica_up = Gauge("fleet_replica_ready", "1 when the replica serves, else 0.",
                                [*replica, "state"], registry=r)
        self.replica_memory = Gauge("fleet_replica_memory_bytes", "Resident memory of the "
                                    "replica's process.", replica, registry=r)
        self.replica_queued = Gauge("fleet_replica_queued_requests", "Requests waiting for the "
                                    "engine.", replica, registry=r)
        self.replica_batch = Gauge("fleet_replica_last_batch_size", "Requests in the engine's "
                                   "last batch.", replica, registry=r)
        self.replica_running = Gauge("fleet_replica_running_sequences", "LLM sequences in the "
                                     "running batch.", replica, registry=r)
        self.replica_served = Gauge("fleet_replica_requests_served", "Requests the replica has "
                                    "answered since it started.", replica, registry=r)
        # Known to the supervisor (fleet.cluster.supervisor.replica_supervision); counted up to its figure
        # at each scrape.
        self.replica_restarts = Counter("fleet_replica_restarts", "Times the replica was "
                                        "launched again after its process exited or hung.",
                                        ["model", "replica"], registry=r)
        self._restarts_seen: dict[tuple[str, str], int] = {}
        self._model_gauges(r)

    def _model_gauges(self, r: CollectorRegistry) -> None:
        """What an autoscaler, Fleet's own (fleet.cluster.supervisor.autoscaler) or one outside
        (KEDA, an HPA), reads of each model: docs/autoscaling.md."""
        model = ["model"]
        self.model_replicas = Gauge("fleet_model_replicas", "Replicas serving the model.", model,
                                    registry=r)
        self.model_desired = Gauge("fleet_model_desired_replicas", "Replicas the model should "
                                   "have (autoscaling's decision, else its replica count; 0 "
                                   "when idle).", model, registry=r)
        self.model_waiting = Gauge("fleet_model_replicas_waiting_for_capacity", "Replicas the "
                                   "model wants that no worker has room for.", model, registry=r)
        self.model_in_progress = Gauge("fleet_model_requests_in_progress", "Requests the "
                                       "model's replicas hold, running plus queued, as the "
                                       "supervisor last counted them.", model, registry=r)
        self.model_queued = Gauge("fleet_model_queued_requests", "Requests waiting for the "
                                  "engine across the model's replicas.", model, registry=r)
        self.scale_events = Counter("fleet_model_scale_events", "Replica count changes the "
                                    "supervisor made on its own (autoscaling, idle unloads and "
                                    "loads), by direction.", ["model", "direction"], registry=r)
        self._scale_events_seen: dict[tuple[str, str], int] = {}

    def count_per_key(self) -> None:
        """Adds the per-key series (--metrics-per-key): off by default, since a series per key
        and model multiplies what Prometheus stores by the number of keys."""
        self.key_requests = Counter("fleet_key_requests", "Requests answered, per API key "
                                    "and model.", ["key_id", "model"], registry=self.registry)
        self.key_tokens = Counter("fleet_key_tokens", "Tokens used, per API key and model.",
                                  ["key_id", "model", "kind"], registry=self.registry)

    def key_used(self, key_id: str, model: str, prompt: int, completion: int) -> None:
        """One answered request of a key (fed by the usage recorder, off the request path)."""
        if self.key_requests is None or self.key_tokens is None:
            return
        self.key_requests.labels(key_id, model).inc()
        self._remember(model, self.key_requests, (key_id, model))
        for kind, tokens in (("prompt", prompt), ("completion", completion)):
            self.key_tokens.labels(key_id, model, kind).inc(tokens)
            self._remember(model, self.key_tokens, (key_id, model, kind))

    def _remember(self, model: str, metric: Any, labels: tuple[str, ...]) -> None:
        self._series[model].add((metric, labels))

    def request_started(self, model: str, endpoint: str) -> float:
        if not self.enabled:
            return 0.0
        self.requests.labels(model, endpoint).inc()
        self._remember(model, self.requests, (model, endpoint))
        self.in_flight.labels(model).inc()
        self._remember(model, self.in_flight, (model,))
        return time.perf_counter()

    def request_finished(self, model: str, endpoint: str, started: float, replica: str | None,
                         worker: str | None, prompt_tokens: int = 0,
                         generated_tokens: int = 0) -> None:
        if not self.enabled:
            return
        self.in_flight.labels(model).dec()
        labels = (model, endpoint, replica or "", worker or "")
        self.responses.labels(*labels).inc()
        self._remember(model, self.responses, labels)
        self.latency.labels(model, endpoint).observe(time.perf_counter() - started)
        self._remember(model, self.latency, (model, endpoint))
        if prompt_tokens:
            self.prompt_tokens.labels(model).inc(prompt_tokens)
            self._remember(model, self.prompt_tokens, (model,))
        if generated_tokens:
            self.generated_tokens.labels(model).inc(generated_tokens)
            self._remember(model, self.generated_tokens, (model,))

    def first_token(self, model: str, started: float) -> None:
        if self.enabled:
            self.ttft.labels(model).observe(time.perf_counter() - started)
            self._remember(model, self.ttft, (model,))

    def time_per_output_token(self, model: str, seconds: float) -> None:
        if self.enabled:
            self.tpot.labels(model).observe(seconds)
            self._remember(model, self.tpot, (model,))

    def request_failed(self, model: str, endpoint: str, kind: str) -> None:
        if not self.enabled:
            return
        self.in_flight.labels(model).dec()
        self.errors.labels(model, endpoint, kind).inc()
        self._remember(model, self.errors, (model, endpoint, kind))

    def forget_model(self, model: str) -> None:
        """A terminated model's series go, so dashboards do not show it as still there."""
        for labels in [k for k in self._restarts_seen if k[0] == model]:
            del self._restarts_seen[labels]
            self.replica_restarts.remove(*labels)
        for labels in [k for k in self._scale_events_seen if k[0] == model]:
            del self._scale_events_seen[labels]
            self.scale_events.remove(*labels)
        for metric, series_labels in self._series.pop(model, set()):
            try:
                metric.remove(*series_labels)
            except KeyError:
                pass

    async def render(self, supervisor: Any) -> bytes:
        workers, replicas, models = await asyncio.gather(
            supervisor.list_workers(), supervisor.replica_metrics(),
            supervisor.autoscale_metrics()
        )
        self._set_workers(workers)
        self._set_replicas(replicas)
        self._set_models(models, replicas)
        return generate_latest(self.registry)

    def _set_workers(self, workers: list[dict[str, Any]]) -> None:
        for gauge in (self.worker_cpu_count, self.worker_cpu_percent, self.worker_memory,
                      self.gpu_memory, self.gpu_utilization):
            gauge.clear()
        for worker in workers:
            name, res = worker["address"], worker["resources"]
            self.worker_cpu_count.labels(name).set(res.get("cpu_count", 0))
            self.worker_cpu_percent.labels(name).set(res.get("cpu_percent", 0))
            self.worker_memory.labels(name, "total").set(res.get("memory_total", 0))
            self.worker_memory.labels(name, "used").set(res.get("memory_used", 0))
            self.worker_memory.labels(name, "free").set(res.get("memory_available", 0))
            for gpu in res.get("gpus", []):
                index = str(gpu["index"])
                for state in ("total", "used", "free"):
                    self.gpu_memory.labels(name, index, state).set(gpu[f"memory_{state}"])
                if gpu.get("utilization") is not None:
                    self.gpu_utilization.labels(name, index).set(gpu["utilization"])

    def _set_replicas(self, replicas: list[dict[str, Any]]) -> None:
        for gauge in (self.replica_up, self.replica_memory, self.replica_queued,
                      self.replica_batch, self.replica_running, self.replica_served):
            gauge.clear()
        for row in replicas:
            labels = (row["model"], row["replica_uid"], row["worker_address"])
            self.replica_up.labels(*labels, row["state"]).set(1 if row["state"] == "ready" else 0)
            self.replica_memory.labels(*labels).set(row.get("memory_bytes", 0))
            self.replica_served.labels(*labels).set(row.get("requests_served", 0))
            batch = row.get("batch") or {}
            self.replica_queued.labels(*labels).set(batch.get("queued", 0))
            self.replica_batch.labels(*labels).set(batch.get("last_size", 0))
            if "running" in batch:
                self.replica_running.labels(*labels).set(batch["running"])
            self._count_restarts(row["model"], row["replica_uid"], int(row.get("restarts") or 0))

    def _count_restarts(self, model: str, replica: str, restarts: int) -> None:
        _count_up_to(self.replica_restarts, self._restarts_seen, (model, replica), restarts)

    def _set_models(self, models: list[dict[str, Any]], replicas: list[dict[str, Any]]) -> None:
        for gauge in (self.model_replicas, self.model_desired, self.model_waiting,
                      self.model_in_progress, self.model_queued):
            gauge.clear()
        queued: dict[str, int] = defaultdict(int)
        for row in replicas:
            queued[row["model"]] += int((row.get("batch") or {}).get("queued", 0))
        for row in models:
            name = row["model"]
            self.model_replicas.labels(name).set(row["replicas"])
            self.model_desired.labels(name).set(row["desired"])
            self.model_waiting.labels(name).set(row["waiting_for_capacity"])
            self.model_in_progress.labels(name).set(row["in_flight"])
            self.model_queued.labels(name).set(queued[name])
            for direction, count in row["events"].items():
                _count_up_to(self.scale_events, self._scale_events_seen, (name, direction), count)


def _count_up_to(counter: Counter, seen: dict[tuple[str, str], int], labels: tuple[str, str],
                 total: int) -> None:
    """A Prometheus counter of something the supervisor counts (restarts, scale events), brought
    up to the supervisor's `total` at each scrape; `seen` holds what it was brought to."""
    before = seen.get(labels, 0)
    counter.labels(*labels).inc(max(0, total - before))
    seen[labels] = max(before, total)
