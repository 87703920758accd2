"""Reading /metrics in tests: the samples as prometheus-client's own parser sees them."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(endpoint: str) -> list:
    text = httpx.get(f"{endpoint}/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(s.value for s in found
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
