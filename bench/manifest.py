"""The manifest of a run: everything needed to know where and how its numbers were made."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

import numpy
import pandas
import scipy
import torch

from . import __version__

__all__ = ["build_manifest"]


#: the command line as the process started: a copy taken at import, before any plugin runs (a plugin that
#: rewrites ``sys.argv`` must not rewrite the manifest's record of the command)
COMMAND_LINE: list[str] = list(sys.argv)


def _git(*args: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_manifest(config: dict | None = None, config_hash: str = "", root_seed: int | None = None,
                   device: str = "cpu", preset: str = "", label: str = "") -> dict:
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    dev_name, capability, memory = _cpu_model(), None, None
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        dev_name, capability, memory = props.name, f"{props.major}.{props.minor}", props.total_memory
    return {
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": label,
        "preset": preset,
        "command": " ".join(["sbn-bench"] + COMMAND_LINE[1:]),
        "git_commit": commit or "unknown",
        "git_dirty": dirty,
        "package_version": __version__,
        "config": config or {},
        "config_hash": config_hash,
        "root_seed": root_seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "device": device,
        "device_name": dev_name,
        "compute_capability": capability,
        "device_memory": memory,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                               "OPENBLAS_L2_SIZE", "MKL_NUM_THREADS")},
    }
