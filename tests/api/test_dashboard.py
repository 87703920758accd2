"""The Grafana dashboard and the monitoring page only name metrics Fleet really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fleet.api.metrics import FleetMetrics

ROOT = Path(__file__).resolve().parents[2]


def _exported() -> set[str]:
    names = set()
    for family in FleetMetrics().registry.collect():
        names.add(family.name)
        names.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                      f"{family.name}_sum"})
    return names


def test_dashboard_queries_use_exported_metrics():
    dashboard = json.loads((ROOT / "docs/grafana/fleet-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"fleet_[a-z_]+", target["expr"])}
    assert used, "the dashboard charts nothing"
    assert used <= _exported(), used - _exported()
    assert {"fleet_worker_gpu_memory_bytes", "fleet_model_requests_total",
            "fleet_model_responses_total", "fleet_model_prompt_tokens_total"} <= used


def test_monitoring_page_documents_every_metric():
    page = (ROOT / "docs/monitoring.md").read_text()
    documented = set(re.findall(r"`(fleet_[a-z_]+)`", page))
    families = {f.name for f in FleetMetrics().registry.collect()}
    missing = [name for name in families
               if name not in documented and f"{name}_total" not in documented]
    assert not missing
