"""pytest-benchmark machine info for tests/perf: torch, CUDA, device and thread counts (``docs/timing.md#perf-ab``).

Comparisons between saved runs then show when the device or the threads changed.
"""

from __future__ import annotations

import os


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    machine_info["torch"] = torch.__version__
    machine_info["torch_cuda"] = torch.version.cuda
    machine_info["threads"] = torch.get_num_threads()
    machine_info["interop_threads"] = torch.get_num_interop_threads()
    machine_info["matmul_precision"] = torch.get_float32_matmul_precision()
    machine_info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine_info["cuda_device"] = props.name
        machine_info["compute_capability"] = f"{props.major}.{props.minor}"
