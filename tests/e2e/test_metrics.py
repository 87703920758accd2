"""/metrics tells the truth: counts match what was sent, tokens match the responses' usage, and
a terminated model's series go away."""

from __future__ import annotations

import time

import httpx

from tests.metrics_text import scrape, value


def test_metrics_count_requests_tokens_errors_and_forget_terminated_models(local_cluster,
                                                                            minilm_path):
    base = local_cluster.endpoint
    http = httpx.Client(base_url=base, timeout=120)
    http.post("/v1/models", json={"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
                                  "model_uid": "counted", "model_path": minilm_path}
              ).raise_for_status()
    bodies = [{"model": "counted", "input": f"request {i}"} for i in range(5)]
    bodies.append({"model": "counted", "input": ["two", "inputs here"]})
    usage = 0
    for body in bodies:
        response = http.post("/v1/embeddings", json=body)
        response.raise_for_status()
        usage += response.json()["usage"]["prompt_tokens"]
    refused = http.post("/v1/embeddings", json={"model": "counted", "input": "x", "dimensions": 3})
    assert refused.status_code == 400
    assert http.post("/v1/embeddings", json={"model": "nobody", "input": "x"}).status_code == 404

    samples = scrape(base)
    n = len(bodies)
    model = {"model": "counted", "endpoint": "embeddings"}
    assert value(samples, "fleet_model_requests_total", **model) == n + 1
    assert value(samples, "fleet_model_responses_total", **model) == n
    assert value(samples, "fleet_model_errors_total", kind="invalid_request_error", **model) == 1
    assert value(samples, "fleet_model_prompt_tokens_total", model="counted") == usage
    assert value(samples, "fleet_model_request_latency_seconds_count", **model) == n
    assert value(samples, "fleet_model_in_flight_requests", model="counted") == 0
    assert value(samples, "fleet_replica_ready", model="counted", state="ready") == 1
    assert value(samples, "fleet_replica_memory_bytes", model="counted") > 50 * 2**20
    assert value(samples, "fleet_replica_requests_served", model="counted") == n
    assert value(samples, "fleet_worker_memory_bytes", state="total") > 0
    assert value(samples, "fleet_worker_cpu_count") >= 1
    assert value(samples, "fleet_http_request_duration_seconds_count",
                  route="/v1/embeddings", status="200") == n
    # Unknown models make no series (clients cannot blow up the label space).
    assert not [s for s in samples if s.labels.get("model") == "nobody"]

    # The launch handed the model the worker's warm spare process, and a new spare is still
    # importing its libraries: wait until the machine's memory stops moving before comparing.
    used_before = _settled_used_memory(base)
    http.delete("/v1/models/counted").raise_for_status()
    after = scrape(base)
    assert not [s for s in after if s.labels.get("model") == "counted"]
    # The model's process is gone, and the worker reports its memory back.
    freed = used_before - value(after, "fleet_worker_memory_bytes", state="used")
    assert freed > 100 * 2**20, f"only {freed / 2**20:.0f} MiB freed"


def _settled_used_memory(base: str, timeout_s: float = 30.0) -> float:
    """The worker's used memory once two readings a second apart differ by less than 16 MiB."""
    deadline = time.monotonic() + timeout_s
    last = value(scrape(base), "fleet_worker_memory_bytes", state="used")
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = value(scrape(base), "fleet_worker_memory_bytes", state="used")
        if abs(now - last) < 16 * 2**20:
            return now
        last = now
    return last
