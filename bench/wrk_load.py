"""Closed-loop HTTP load with `wrk` (apt-get install wrk), a load generator written in C.

On a 2-core machine the load generator shares the cores with the server it measures. A Python
client (httpx on asyncio) spends about 2 ms of CPU per request, which the server then lacks: at
hundreds of requests per second that is a third of the machine, and the benchmark measures the
client as much as the server. wrk spends a few microseconds per request, so what it measures is
Fleet. The benchmarks use it when it is installed and say which client they used.

wrk sends the same request again and again unless a Lua script builds each one: the script here
cycles through the request bodies it is given, and reports its figures as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

_SCRIPT = r"""
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local turn = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s

request = function()
  turn = turn %% #bodies + 1
  return wrk.format(nil, "%(path)s", nil, bodies[turn])
end

done = function(summary, latency, requests)
  local f = io.open("%(out)s", "w")
  f:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
  f:close()
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def closed_loop(url: str, bodies: list[dict], concurrency: int, duration_s: float,
                warm_up: bool = True, headers: dict[str, str] | None = None) -> dict[str, float]:
    """`concurrency` connections, each sending its next request when the last one is answered;
    `headers` go with every request (an API key, say)."""
    parts = urlsplit(url)
    with tempfile.TemporaryDirectory() as folder:
        lines = Path(folder, "bodies.jsonl")
        lines.write_text("".join(json.dumps(b) + "\n" for b in bodies))
        out = Path(folder, "result.json")
        script = Path(folder, "load.lua")
        extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                          for k, v in (headers or {}).items())
        script.write_text(_SCRIPT % {"bodies": lines, "path": parts.path, "out": out,
                                     "headers": extra})
        base = f"{parts.scheme}://{parts.netloc}"
        if warm_up:  # connections open, caches warm
            subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), base],
                           check=True, capture_output=True)
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s",
                        "--timeout", "60s", "-s", str(script), base],
                       check=True, capture_output=True)
        result = json.loads(out.read_text())
    if result["errors"]:
        raise RuntimeError(f"wrk saw {result['errors']} failed requests")
    return {
        "requests": result["requests"],
        "requests_per_s": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
    }
