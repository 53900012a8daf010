r"""Device peaks for "% of peak": derived from the detected device, never a constant.

CUDA (``docs/timing.md#throughput``):

- SM count from ``torch.cuda.get_device_properties``; SM clock from NVML (``nvidia-ml-py``, the
  maximum SM clock) when importable, else the device properties' ``clock_rate``, else a datasheet
  table keyed by the device name (which tells SXM from PCIe);
- FP32 (CUDA cores) $=\text{SMs}\times\text{FP32 lanes per SM}\times2\times\text{clock}$, FP64
  likewise with the FP64 lanes of the compute capability;
- memory bandwidth $=2\times\text{memory clock}\times\text{bus width}/8$ (NVML, else the device
  properties), else the datasheet table;
- reciprocal (special-function) limit $=\text{SMs}\times16\times\text{clock}$: 16 SFU results per
  clock per SM on compute capabilities 5.x–10.x (**verify per architecture**; about
  $4\times10^{12}$/s on an H100 SXM).

CPU: no datasheet is reliable inside a VM, so CPU peaks are *measured* by :mod:`bench.timing.measure`
(copy bandwidth, a large GEMM, an L2-resident ``reciprocal_``) and :class:`Peaks` only carries the
CPU model name.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field

import torch

from bench.manifest import _cpu_model

__all__ = ["Peaks", "device_peaks", "cuda_metadata", "DATASHEET", "FP32_LANES", "FP64_LANES", "RECIP_PER_CLOCK"]

#: FP32 lanes (CUDA cores) per SM by compute capability major.minor.
FP32_LANES = {(6, 0): 64, (7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128,
              (9, 0): 128, (10, 0): 128, (12, 0): 128}
#: FP64 lanes per SM (2 on consumer parts).
FP64_LANES = {(6, 0): 32, (7, 0): 32, (8, 0): 32, (9, 0): 64, (10, 0): 64}
#: Special-function-unit (reciprocal) results per clock per SM: 16 on recent NVIDIA parts (verify).
RECIP_PER_CLOCK = 16

#: (substring of the device name, boost SM clock in MHz, memory bandwidth in bytes/s); first match wins,
#: so the specific names come before the generic ones.
DATASHEET: list[tuple[str, float, float]] = [
    ("H200", 1980, 4.8e12),
    ("H100 PCIe", 1755, 2.0e12),
    ("H100 NVL", 1785, 3.9e12),
    ("H100", 1980, 3.35e12),  # "NVIDIA H100 80GB HBM3" is the SXM5 part
    ("A100-SXM4-80GB", 1410, 2.039e12),
    ("A100 80GB PCIe", 1410, 1.935e12),
    ("A100", 1410, 1.555e12),
    ("L40S", 2520, 8.64e11),
    ("L4", 2040, 3.0e11),
    ("A10", 1695, 6.0e11),
    ("V100", 1530, 9.0e11),
    ("T4", 1590, 3.2e11),
]


@dataclass(frozen=True)
class Peaks:
    """Peak rates of one device (``None`` where unknown) and where each number came from."""

    device: str
    name: str
    sms: int | None = None
    capability: str | None = None
    clock_hz: float | None = None
    fp32_flops: float | None = None
    fp64_flops: float | None = None
    mem_bw: float | None = None
    recip_per_s: float | None = None
    sources: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def get(self, kind: str) -> float | None:
        """Peak by kind: ``fp32``, ``fp64``, ``mem`` or ``recip``."""
        return {"fp32": self.fp32_flops, "fp64": self.fp64_flops, "mem": self.mem_bw, "recip": self.recip_per_s}.get(kind)


def _table(name: str) -> tuple[float, float] | None:
    for key, mhz, bw in DATASHEET:
        if key.lower() in name.lower():
            return mhz * 1e6, bw
    return None


def _nvml(index: int, uuid: str | None) -> dict:
    """Max SM/memory clocks, bus width, driver, current clock and temperature from NVML ({} without it)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver library
        return {}
    out: dict = {}
    try:
        handle = None
        for cand in ([f"GPU-{uuid}", uuid] if uuid else []):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(cand)
                break
            except Exception:  # noqa: BLE001
                continue
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        probes = {
            "sm_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "bus_width_bits": lambda: pynvml.nvmlDeviceGetMemoryBusWidth(handle),
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "driver": lambda: pynvml.nvmlSystemGetDriverVersion(),
        }
        for key, probe in probes.items():
            try:
                value = probe()
                out[key] = value.decode() if isinstance(value, bytes) else value
            except Exception:  # noqa: BLE001 - a probe the driver does not support
                pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


def _driver_from_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def cuda_metadata(device: str = "cuda") -> dict:
    """Name, capability, SMs, memory, driver, CUDA/cuDNN versions, clocks and temperature of a CUDA device."""
    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    nv = _nvml(idx, getattr(props, "uuid", None) and str(props.uuid))
    return {
        "device_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "device_memory": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "driver": nv.get("driver") or _driver_from_smi(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nvml": nv,
    }


def device_peaks(device: str = "cpu") -> Peaks:
    """:class:`Peaks` of ``device`` (CUDA: derived from properties/NVML/datasheet; CPU: name only)."""
    if not device.startswith("cuda"):
        return Peaks(device="cpu", name=_cpu_model(), sources={"all": "measured by sbn-bench time (no datasheet on CPU)"})
    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    cc = (props.major, props.minor)
    nv = _nvml(idx, getattr(props, "uuid", None) and str(props.uuid))
    table = _table(props.name)
    sources: dict = {"sms": "device properties"}
    clock = None
    if nv.get("sm_clock_max_mhz"):
        clock, sources["clock"] = nv["sm_clock_max_mhz"] * 1e6, "NVML max SM clock"
    elif getattr(props, "clock_rate", 0):
        clock, sources["clock"] = props.clock_rate * 1e3, "device properties clock_rate"
    elif table:
        clock, sources["clock"] = table[0], f"datasheet table ({props.name})"
    bw = None
    mem_clock_hz = (nv.get("mem_clock_max_mhz") or 0) * 1e6 or getattr(props, "memory_clock_rate", 0) * 1e3
    bus = nv.get("bus_width_bits") or getattr(props, "memory_bus_width", 0)
    if mem_clock_hz and bus:
        bw = 2 * mem_clock_hz * bus / 8
        sources["mem_bw"] = "2 x memory clock x bus width (NVML / device properties)"
    elif table:
        bw, sources["mem_bw"] = table[1], f"datasheet table ({props.name})"
    sms = props.multi_processor_count
    fp32_lanes = FP32_LANES.get(cc, 128 if cc[0] >= 8 else 64)
    fp64_lanes = FP64_LANES.get(cc, 2)
    sources.update(fp32=f"{fp32_lanes} lanes/SM x 2 x clock (cc {cc[0]}.{cc[1]})",
                   fp64=f"{fp64_lanes} lanes/SM x 2 x clock", recip=f"{RECIP_PER_CLOCK}/clock/SM (verify per architecture)")
    return Peaks(
        device=device, name=props.name, sms=sms, capability=f"{cc[0]}.{cc[1]}", clock_hz=clock,
        fp32_flops=sms * fp32_lanes * 2 * clock if clock else None,
        fp64_flops=sms * fp64_lanes * 2 * clock if clock else None,
        mem_bw=bw, recip_per_s=sms * RECIP_PER_CLOCK * clock if clock else None, sources=sources,
    )
