"""Configuration and shared context of ``sbn-bench time`` (a frozen dataclass, validated once).

The context carries the device, dtype, peaks (:mod:`bench.timing.peaks`) and the *measured* peaks that
CPU rows are compared with (copy bandwidth, large-GEMM FLOP/s, ``reciprocal_`` rate), each
measured once, lazily, and emitted as a row of its own so a percentage never refers to a number
that is not in the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import torch

from bench.timing.measure import CLOCKS, measure_interleaved, row
from bench.sweep import expand_estimators
from bench.timing.peaks import Peaks, device_peaks
from estimators import inputs
from estimators.errors import InputError
from reference.problems import build_problem
from reference.specs import guard_size, parse_widths

__all__ = ["TimeConfig", "Context", "KERNELS", "DEFAULT_KERNELS", "PSA_VARIANTS"]

DEFAULT_KERNELS = ("peaks", "sampling", "draw", "psa-fc", "psa-fc-mem", "exact")
#: convolutional kernels (bench.timing.conv): opt-in, CIFAR_S1-sized by default
KERNELS = DEFAULT_KERNELS + ("psa-conv", "draw-conv")
PSA_VARIANTS = ("eager", "fused", "ratio", "cuda", "reference")


#: the longest --min-time or --max-single accepted (seconds per timed function: a minute, like --cost-time's cap)
MAX_SECONDS = 60.0


@dataclass(frozen=True)
class TimeConfig:
    """What to time.  ``widths`` are square FC layer sizes for ``psa-fc``; ``net`` is the network of ``sampling``/``draw``."""

    device: str = "cpu"
    kernels: tuple[str, ...] = DEFAULT_KERNELS
    widths: tuple[int, ...] = (512, 1024)
    batch: int = 256
    dtype: str = "float32"
    net: str = "256-512-512-512-512"
    draws: int = 1
    estimators: tuple[str, ...] = ("*",)
    mem_widths: tuple[int, ...] = (2048,)
    psa_variants: tuple[str, ...] = ("eager", "fused", "cuda", "reference")
    exact_problem: str = "random:widths=2-5-5-5,points=64"
    min_run_time: float = 0.5
    rounds: int = 3
    max_single_s: float = 10.0
    reference_max_elems: int = 2**27
    clock: str = "wall"
    seed: int = 0
    conv_net: str = "cifar-s1"
    conv_batch: int = 16
    conv_draw_batch: int = 64

    def __post_init__(self) -> None:
        for name in ("kernels", "widths", "estimators", "mem_widths", "psa_variants"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        bad = [k for k in self.kernels if k not in KERNELS]
        if bad or not self.kernels:
            raise InputError(f"unknown kernel {', '.join(bad) or '(none)'}; choose from {', '.join(KERNELS)}")
        inputs.no_repeats(self.kernels, "the timing", "kernel")
        inputs.no_repeats(self.psa_variants, "the timing", "PSA variant")
        inputs.no_repeats(self.widths, "--widths", "width")
        inputs.no_repeats(self.mem_widths, "--mem-widths", "width")
        bad = [v for v in self.psa_variants if v not in PSA_VARIANTS]
        if bad:
            raise InputError(f"unknown PSA variant {', '.join(bad)}; choose from {', '.join(PSA_VARIANTS)}")
        inputs.seed(self.seed)
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise InputError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {self.device} but CUDA is not available (torch.cuda.is_available() is false)")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        for name in ("widths", "mem_widths"):
            if any(not isinstance(w, int) or w < 1 for w in getattr(self, name)):
                raise InputError(f"{name} must be positive integers, got {list(getattr(self, name))}")
        for name in ("batch", "draws", "rounds", "conv_batch", "conv_draw_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.clock not in CLOCKS:
            raise InputError(f"unknown clock {self.clock!r}; choose one of {', '.join(CLOCKS)}")
        if self.clock == "cpu" and self.device != "cpu":
            raise InputError("--clock cpu (process CPU time) can only time CPU work; use --device cpu")
        inputs.positive_int(self.rounds, "--rounds", maximum=1000)
        inputs.positive_finite(self.min_run_time, "--min-time", maximum=MAX_SECONDS)  # seconds per function
        inputs.positive_finite(self.max_single_s, "--max-single", maximum=MAX_SECONDS)
        net = parse_widths(self.net)
        self._check_sizes(net)
        expand_estimators(self.estimators)  # unknown names, bad options, an estimator or '*' named twice: as run
        if "exact" in self.kernels:
            build_problem(self.exact_problem)
        if {"psa-conv", "draw-conv"} & set(self.kernels):
            spec = self.conv_net + ("," if ":" in self.conv_net else ":") + "points=1"
            conv = build_problem(spec)
            if not conv.is_conv:
                raise InputError(f"--conv-net {self.conv_net!r} has no convolutional layer")
            units = max(conv.widths)  # the largest layer's units per image: what a call holds per draw and point
            for flag, n, kernel in (("--conv-batch", self.conv_batch, "psa-conv"),
                                    ("--conv-draw-batch", self.conv_draw_batch, "draw-conv")):
                if kernel in self.kernels:
                    guard_size(n * units, f"{flag} {n} images of {self.conv_net} ({units} units in its widest layer)")

    def _check_sizes(self, net) -> None:
        """Refuse (:func:`~reference.specs.guard_size`), before allocating, tensors over its limit: a
        layer's weights (width squared) and a call's activations (draws x batch x width)."""
        kernels = set(self.kernels)  # only the sizes of the kernels asked for (psa-fc's widths do not limit sampling)
        sized = (("--widths", self.widths, {"psa-fc"}), ("--mem-widths", self.mem_widths, {"psa-fc-mem"}),
                 ("--net", tuple(net), None))
        for flag, widths, users in sized:
            if users is not None and not kernels & users:
                continue
            for w in widths:
                guard_size(w * w, f"{flag} {w}: a {w} x {w} layer")
                guard_size(self.batch * w, f"--batch {self.batch} of width {w}")
        guard_size(self.draws * self.batch * max(net), f"--draws {self.draws} x --batch {self.batch} x width {max(net)}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Context:
    cfg: TimeConfig
    peaks: Peaks
    notes: list[str] = field(default_factory=list)
    peak_rows: list[dict] = field(default_factory=list)
    _measured: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: TimeConfig) -> "Context":
        return cls(cfg=cfg, peaks=device_peaks(cfg.device))

    @property
    def device(self) -> str:
        return self.cfg.device

    @property
    def cuda(self) -> bool:
        return self.cfg.device.startswith("cuda")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.cfg.dtype)

    def generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + offset)
        return g

    def measure(self, fns: dict, rounds: int | None = None, warmup: int = 2, max_single_s: float | None = None,
                min_run_time: float | None = None) -> dict:
        """:func:`bench.timing.measure.measure_interleaved` with this run's settings (clock, rounds, limits)."""
        if self.cfg.clock == "cpu" and torch.get_num_threads() != 1:
            raise InputError("--clock cpu measures process CPU time, which equals wall time only with --threads 1")
        return measure_interleaved(fns, self.device, min_run_time or self.cfg.min_run_time,
                                   rounds or self.cfg.rounds, warmup=warmup,
                                   max_single_s=max_single_s or self.cfg.max_single_s, clock=self.cfg.clock)

    def time(self, fn, min_run_time: float | None = None):
        return self.measure({"fn": fn}, rounds=1, min_run_time=min_run_time)["fn"]

    # ---- measured peaks -----------------------------------------------------------------------
    def measured(self, kind: str) -> float | None:
        """Measured achievable rate: ``copy`` (bytes/s), ``gemm`` (FLOP/s) or ``recip`` (reciprocals/s, CPU only)."""
        if kind not in self._measured:
            fn = {"copy": self._copy, "gemm": self._gemm, "recip": self._recip}[kind]
            self._measured[kind] = fn()
        return self._measured[kind]

    def _copy(self) -> float:
        n = (2**28 if self.cuda else 2**26)  # 1 GiB (CUDA) / 256 MiB (CPU) of float32
        src = torch.empty(n, device=self.device).fill_(1.0)
        dst = torch.empty_like(src)
        t = self.time(lambda: dst.copy_(src), min_run_time=min(0.3, self.cfg.min_run_time))
        moved = 2 * n * 4
        pct, kind = self.pct(t.rate(moved), "mem", measured=False)
        self.peak_rows.append(row("copy", "copy_", self.device, "float32", f"{n * 4 // 2**20} MiB", "B/s", moved, t,
                                  pct_peak=pct, peak_kind=kind))
        return t.rate(moved)

    def _gemm(self) -> float:
        n = 8192 if self.cuda else 1024
        a = torch.rand(n, n, generator=self.generator(92), device=self.device, dtype=self.dtype)
        b = torch.rand(n, n, generator=self.generator(93), device=self.device, dtype=self.dtype)
        t = self.time(lambda: a @ b, min_run_time=min(0.3, self.cfg.min_run_time))
        flops = 2.0 * n**3
        pct, kind = self.pct(t.rate(flops), "fp32" if self.dtype != torch.float64 else "fp64", measured=False)
        self.peak_rows.append(row("gemm", "large", self.device, self.cfg.dtype, f"{n}^3", "FLOP/s", flops, t,
                                  pct_peak=pct, peak_kind=kind,
                                  matmul_precision=torch.get_float32_matmul_precision()))
        return t.rate(flops)

    def _recip(self) -> float | None:
        if self.cuda:
            return None  # an eager reciprocal is memory-bound on a GPU; the limit comes from the SFU count
        n = 2**19  # 2 MiB of float32: L2-resident, large enough to split over threads
        buf = torch.rand(n, generator=self.generator(94), device=self.device, dtype=self.dtype).add_(1.0)

        def twice():
            buf.reciprocal_()
            return buf.reciprocal_()

        t = self.time(twice, min_run_time=min(0.3, self.cfg.min_run_time))
        self.peak_rows.append(row("recip", "reciprocal_ (L2)", self.device, self.cfg.dtype, f"2x{n}", "recip/s",
                                  2 * n, t, peak_kind="measured CPU reciprocal limit"))
        return t.rate(2 * n)

    def pct_measured(self, rate: float, kind: str) -> float | None:
        """% of the *measured* achievable rate (copy for ``mem``, large GEMM for ``fp32``/``fp64``)."""
        peak = self.measured("copy" if kind == "mem" else "gemm")
        return 100.0 * rate / peak if peak else None

    def pct(self, rate: float, kind: str, measured: bool = True) -> tuple[float | None, str]:
        """(% of peak, peak kind) for a rate of ``kind`` ``fp32``/``fp64``/``mem``/``recip``.

        CUDA: against the peak derived from the device.  CPU (``measured=True``): against the
        measured copy / GEMM / reciprocal rate.
        """
        if self.cuda:
            peak = self.peaks.get(kind)
            return (100.0 * rate / peak if peak else None), (f"{kind} (device)" if peak else "")
        if not measured:
            return None, ""
        peak = self.measured({"mem": "copy", "fp32": "gemm", "fp64": "gemm", "recip": "recip"}[kind])
        return (100.0 * rate / peak if peak else None), (f"{kind} (measured)" if peak else "")
