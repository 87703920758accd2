"""GET /v1/usage without keys: on an open cluster it answers the cluster's own machine only,
since the usage names who used which model; the query is checked before anything is read."""

from __future__ import annotations

from datetime import datetime

import pytest
from starlette.testclient import TestClient

from fleet.api.app import create_app


def _client(host: str) -> TestClient:
    return TestClient(create_app(None, "127.0.0.1:1"), base_url="http://127.0.0.1:9997",
                      client=(host, 50000))


def test_an_open_cluster_shows_usage_to_loopback_clients_only():
    here = _client("127.0.0.1").get("/v1/usage", params={"group_by": "key", "bucket": "day"})
    assert here.status_code == 200
    assert here.json()["data"] == [] and here.json()["group_by"] == ["key"]
    away = _client("192.0.2.7").get("/v1/usage")
    assert away.status_code == 403
    assert away.json()["error"]["code"] == "permission_denied"


def test_the_default_span_is_the_last_day_and_csv_has_its_header():
    answer = _client("::1").get("/v1/usage", params={"group_by": ["user", "model"],
                                                     "bucket": "hour", "format": "csv"})
    assert answer.status_code == 200
    assert answer.text.splitlines() == [
        "bucket,user,model,requests,errors,prompt_tokens,completion_tokens,total_tokens,"
        "images,audio_seconds,mean_latency_ms"]
    shown = _client("127.0.0.1").get("/v1/usage").json()
    span = datetime.fromisoformat(shown["end"]) - datetime.fromisoformat(shown["start"])
    assert span.total_seconds() == 86400


@pytest.mark.parametrize("params, field", [
    ({"group_by": "colour"}, "group_by"), ({"group_by": ["key", "user,colour"]}, "group_by"),
    ({"bucket": "week"}, "bucket"), ({"start": "yesterday"}, "start"), ({"end": "12"}, "end"),
    ({"format": "xml"}, "format"), ({"end": "0001-01-01T00:00:00Z"}, "end"),
    ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start")])
def test_bad_query_values_are_400_naming_the_field(params, field):
    answer = _client("127.0.0.1").get("/v1/usage", params=params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"]
