"""What a machine has: CPU cores, memory, and NVIDIA GPUs through NVML when present."""

from __future__ import annotations

import logging
from typing import Any

import psutil

logger = logging.getLogger(__name__)

_nvml_ready: bool | None = None


def _init_nvml() -> bool:
    global _nvml_ready
    if _nvml_ready is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_ready = True
        except Exception:  # no driver, no library, no GPU: all mean "no GPUs here"
            _nvml_ready = False
    return _nvml_ready


def gpu_info() -> list[dict[str, Any]]:
    if not _init_nvml():
        return []
    import pynvml

    gpus = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        except pynvml.NVMLError:
            utilization = None
        name = pynvml.nvmlDeviceGetName(handle)
        gpus.append(
            {
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total": int(memory.total),
                "memory_used": int(memory.used),
                "memory_free": int(memory.free),
                "utilization": utilization,
            }
        )
    return gpus


def machine_resources(model_memory_limit: int | None = None) -> dict[str, Any]:
    """The machine's cores, memory and GPUs; `model_memory_limit`: the most RAM the operator
    lets its models take together (--max-model-memory), reported when set."""
    memory = psutil.virtual_memory()
    found = {
        "cpu_count": psutil.cpu_count(logical=True) or 1,
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_total": int(memory.total),
        "memory_available": int(memory.available),
        "memory_used": int(memory.total - memory.available),
        "gpus": gpu_info(),
    }
    if model_memory_limit is not None:
        found["model_memory_limit"] = model_memory_limit
    return found
