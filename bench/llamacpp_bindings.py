"""Which Python binding of llama.cpp Fleet's engine should use: the measurement behind the choice
in fleet/engines/llamacpp_llm.py.

The SmolLM2 GGUF file (tests/builders.py) is run on each binding alone, in this process, the same
way:
- the same chat prompts;
- exactly 64 new tokens each (end-of-turn tokens masked), greedy, streamed;
- the same threads and context.

The bindings compared:
- `xllamacpp`: llama.cpp's server in-process, with its parallel slots, set up as
  bench/llamacpp_direct.py sets it up for bench/llm_load.py;
- `llama-cpp-python`: `Llama.create_chat_completion`. A `Llama` holds one sequence at a time, so
  concurrent streams take turns, as a server built on it must make them.

Each binding runs in a process of its own (the two carry their own builds of ggml, which crash
when loaded into one process). Both stay loaded, and concurrency 1 and 8 are measured in
alternating windows (this machine's speed drifts within a minute). Prints JSON: tokens/s and
time to first token per binding and concurrency.
`llama-cpp-python` is not one of Fleet's dependencies, and it builds from source (about 7
minutes on 2 cores):

    pip install llama-cpp-python
    python bench/llamacpp_bindings.py --duration 20 --rounds 4"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
from llamacpp_direct import DirectLlamaCpp, closed_loop  # noqa: E402
from llm_load import NEW_TOKENS, question  # noqa: E402

from fleet.engines.llamacpp_server import usable_cores  # noqa: E402
from tests.builders import _smollm2_gguf  # noqa: E402

CONTEXT = 8192
CONCURRENCIES = (1, 8)


class LlamaCppPython:
    """The file on llama-cpp-python: one `Llama`, one sequence at a time, every call made on one
    thread of its own, as a server built on it would keep an engine thread. (Its OpenMP threads
    must be driven from one thread: called from a new thread each time, it streamed 34 tok/s
    here against 90-99 from one thread.)"""

    def __init__(self, model_path: str):
        from llama_cpp import Llama

        self._thread = ThreadPoolExecutor(max_workers=1)
        self._llama = self._thread.submit(
            Llama, model_path, n_ctx=CONTEXT, n_threads=usable_cores(),
            n_threads_batch=usable_cores(), n_gpu_layers=0, verbose=False).result()

    def one(self, i: int) -> tuple[float, int]:
        """Stream the i-th request: (time to first token, tokens generated); the time counts
        the wait for the requests ahead of it."""
        return self._thread.submit(self._stream, i, time.perf_counter()).result()

    def _stream(self, i: int, started: float) -> tuple[float, int]:
        first, generated = 0.0, 0
        # No logit_bias to mask the end tokens, unlike the xllamacpp run: llama-cpp-python
        # applies it in Python over the whole vocabulary at every token. So an answer may end
        # before max_tokens; tokens are counted as they stream, one per chunk.
        for chunk in self._llama.create_chat_completion(
                [{"role": "user", "content": question(i)}], max_tokens=NEW_TOKENS,
                temperature=0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                generated += 1
                first = first or time.perf_counter() - started
        return first, generated


def serve(name: str) -> None:
    """A binding's process: load it, then answer "CONCURRENCY SECONDS" lines with JSON lines."""
    path = str(_smollm2_gguf())
    binding: Any = (DirectLlamaCpp(path, question, NEW_TOKENS, parallel=16) if name == "xllamacpp"
                    else LlamaCppPython(path))
    binding.one(0)  # warm-up
    print(json.dumps({"ready": name}), flush=True)
    for line in sys.stdin:
        concurrency, seconds = line.split()
        measured = closed_loop(binding.one, int(concurrency), float(seconds), warm_up=False)
        print(json.dumps(measured), flush=True)


class _Binding:
    def __init__(self, name: str):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", name], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if "ready" not in self._answer():
            raise RuntimeError(f"{name} did not load")

    def _answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the binding's process ended (exit {self.process.wait()})")
        return json.loads(line)

    def measure(self, concurrency: int, seconds: float) -> dict[str, float]:
        self.process.stdin.write(f"{concurrency} {seconds}\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(30)


def compare(duration_s: float, rounds: int) -> dict[str, Any]:
    bindings = {name: _Binding(name) for name in ("xllamacpp", "llama-cpp-python")}
    report: dict[str, Any] = {"model": "SmolLM2-135M-Instruct Q4_1", "new_tokens": NEW_TOKENS,
                              "threads": usable_cores(), "rounds": rounds}
    try:
        for c in CONCURRENCIES:
            windows: dict[str, list[dict[str, float]]] = {name: [] for name in bindings}
            for _ in range(rounds):
                for name, binding in bindings.items():
                    windows[name].append(binding.measure(c, duration_s / rounds))
            for name, measured in windows.items():
                report.setdefault(name, {})[f"concurrency_{c}"] = {
                    key: round(statistics.median(w[key] for w in measured), 1)
                    for key in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms")}
            report[f"c{c}_llama_cpp_python_over_xllamacpp"] = round(statistics.median(
                p["tokens_per_s"] / x["tokens_per_s"]
                for p, x in zip(windows["llama-cpp-python"], windows["xllamacpp"], strict=True)), 3)
    finally:
        for binding in bindings.values():
            binding.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per binding and concurrency")
    parser.add_argument("--rounds", type=int, default=4, help="alternating windows of each binding")
    parser.add_argument("--serve", choices=("xllamacpp", "llama-cpp-python"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    elif importlib.util.find_spec("llama_cpp") is None:
        sys.exit("llama-cpp-python is not installed: pip install llama-cpp-python (a source build)")
    else:
        print(json.dumps(compare(args.duration, args.rounds), indent=2))


if __name__ == "__main__":
    main()
