"""Sweep configuration: a frozen dataclass built once from defaults < preset or TOML file < flags.

A sweep is problems x estimators x settings.  TOML keys are the field names of :class:`SweepConfig`
(``problems``, ``estimators``, ``draws``, ``grid``, ``chunk``, ``device``, ``dtype``, ``exact_method``,
``memory_budget_gib``, ``seed``, ``name``, ``reference``, the Monte Carlo reference's budget ``reference_draws``
or ``reference_seconds`` (with an optional early end, ``reference_precision``), and the cost measurement's ``cost_time``,
``cost_clock``, ``cost_threads``: :class:`bench.costs.CostSettings`); an unknown key, a wrong type or a malformed file is one
:class:`InputError` that names the key, or the line and column.

``problem_budgets`` gives single problems their own budget: a table per problem spec (as written in ``problems``)
with any of ``draws``, ``reference_draws``, ``reference_seconds``, ``reference_precision``, which replace the sweep's
values for that problem's tasks and reference stream (:meth:`SweepConfig.for_problem`)::

    [problem_budgets."random:widths=16-64-64-64-64-64-64-64-64,points=16,scale=1.0,init=fanin"]
    draws = 32768
    reference_seconds = 480
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass

from estimators import inputs
from estimators.errors import InputError

from .costs import CostSettings

#: the largest Monte Carlo reference time budget per problem (seconds)
MAX_REFERENCE_SECONDS = 86400.0

#: the keys a problem's own budget may set (``problem_budgets``); each replaces the sweep's value for it
BUDGET_KEYS = ("draws", "reference_draws", "reference_seconds", "reference_precision")

__all__ = ["ConfigMixin", "SweepConfig", "load_toml", "SWEEP_PRESETS", "SWEEP_PRESET_EXECUTORS"]


class ConfigMixin:
    """What every frozen config dataclass shares: flag overrides, a plain dict and a content hash."""

    def replace(self, **changes):
        """A copy with the given fields changed; ``None`` values (flags not given) are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """SHA-256 of the config as sorted JSON: the identity of a run (reruns resume it)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SweepConfig(ConfigMixin):
    problems: tuple[str, ...]
    estimators: tuple[str, ...]
    draws: int = 2000
    grid: tuple[int, ...] | None = None  # None: the PSA paper's grid up to `draws`
    chunk: int | None = None  # draws per estimator call; None: sized from the problem
    device: str = "cpu"
    dtype: str = "float64"
    exact_method: str = "transfer"
    memory_budget_gib: float = 4.0
    seed: int = 0
    name: str = "custom"
    #: ``exact`` (refuse what cannot be enumerated), ``mc`` (always the Monte Carlo reference) or ``auto``
    #: (exact where it fits the memory budget, Monte Carlo beyond: ``docs/monte-carlo.md``)
    reference: str = "auto"
    #: the Monte Carlo reference's budget per problem (one of them; default: as many draws as ``draws``):
    #: ``reference_draws`` draws, or as many as ``reference_seconds`` of compute allow (``docs/monte-carlo.md#budget``)
    reference_draws: int | None = None
    reference_seconds: float | None = None
    #: with ``reference_seconds``: end the stream early once, by the pilot's figures, the standard error of the
    #: reference mean is at most this fraction of the gradient's norm in every group (``docs/monte-carlo.md#budget``)
    reference_precision: float | None = None
    cost_time: float = 0.5  # seconds of timed repeats per task for its cost per draw; 0: off
    cost_clock: str = "wall"  # wall or cpu (process CPU time: needs cost_threads = 1 and a CPU device)
    cost_threads: int | None = None  # torch threads while the cost is timed; None: the worker's
    #: problem spec -> its own budget (keys of :data:`BUDGET_KEYS`), replacing the sweep's for that problem
    problem_budgets: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", tuple(self.problems))
        object.__setattr__(self, "estimators", tuple(self.estimators))
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(m) for m in self.grid))
        if not isinstance(self.problem_budgets, dict):
            raise InputError("problem_budgets must be a table of problem spec -> budget")
        first = lambda kv: str(kv[0])  # noqa: E731 - sorted by key (any type: checked by validate below)
        object.__setattr__(self, "problem_budgets", {p: dict(sorted(b.items(), key=first)) if isinstance(b, dict) else b
                                                     for p, b in sorted(self.problem_budgets.items(), key=first)})
        self.validate()

    def validate(self) -> None:
        if not self.problems:
            raise InputError("the sweep has no problems")
        inputs.no_repeats(self.problems, "the sweep", "problem")
        if not self.estimators:
            raise InputError("the sweep has no estimators")
        inputs.positive_int(self.draws, "draws (N)", maximum=2**62)  # even --allow-large stops at int64 counts
        if self.draws < 2:
            raise InputError("draws (N) must be at least 2: a variance and its interval need two draws")
        inputs.seed(self.seed)
        inputs.safe_name(self.name, "run name")
        if self.grid is not None:
            if not self.grid:
                raise InputError("the grid is empty; give at least one M, or leave it out for the default")
            if min(self.grid) < 1:
                raise InputError(f"every M of the grid must be positive, got {list(self.grid)}")
            inputs.no_repeats(self.grid, "the grid", "M =")  # linear: grids may be long
            if max(self.grid) > self.draws:
                raise InputError(f"M = {max(self.grid)} exceeds the number of draws N = {self.draws}")
        if self.chunk is not None and self.chunk < 1:
            raise InputError(f"chunk must be positive, got {self.chunk}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise InputError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        if self.exact_method not in ("transfer", "brute"):
            raise InputError(f"unknown exact method {self.exact_method!r}; use transfer or brute")
        inputs.memory_budget(self.memory_budget_gib, "memory budget (GiB)")
        if self.reference not in ("auto", "exact", "mc"):
            raise InputError(f"unknown reference {self.reference!r}; use auto, exact or mc")
        if self.reference_draws is not None and self.reference_seconds is not None:
            raise InputError("give the Monte Carlo reference either reference_draws or reference_seconds, not both")
        if self.reference_draws is not None:
            inputs.positive_int(self.reference_draws, "reference draws", maximum=inputs.MAX_DRAWS)
            if self.reference_draws < 32:
                raise InputError(f"reference draws must be at least 32 (16 batches of 2), got {self.reference_draws}")
        if self.reference_seconds is not None:
            inputs.positive_finite(self.reference_seconds, "reference seconds")
            if self.reference_seconds > MAX_REFERENCE_SECONDS:
                raise InputError(f"reference seconds must be at most {MAX_REFERENCE_SECONDS:g} (one day per problem), "
                                 f"got {self.reference_seconds!r}")
        if self.reference_precision is not None:
            inputs.positive_finite(self.reference_precision, "reference precision")
            if not 1e-6 <= self.reference_precision < 1:  # 1e-300 squared is 0
                raise InputError(f"reference precision is a fraction of the gradient's norm, from 1e-6 to below 1; "
                                 f"got {self.reference_precision!r}")
            if self.reference_seconds is None:
                raise InputError("reference precision ends a time budget early; give reference seconds too "
                                 "(--reference-seconds, or reference_seconds in the config file)")
        self.cost_settings()  # checks the cost measurement's settings
        if self.cost_clock == "cpu" and self.device != "cpu" and self.cost_time > 0:
            raise InputError("--clock cpu (process CPU time) can only time CPU work; use --device cpu")
        for spec, budget in self.problem_budgets.items():
            if spec not in self.problems:
                raise InputError(f"problem_budgets names {spec!r}, which is not a problem of the sweep (give it "
                                 f"exactly as written in problems)")
            if not isinstance(budget, dict) or not budget:
                raise InputError(f"problem_budgets for {spec!r} must be a non-empty table of "
                                 f"{', '.join(BUDGET_KEYS)}")
            for key, value in budget.items():
                if key not in BUDGET_KEYS:
                    raise InputError(f"problem_budgets for {spec!r}: unknown key {key!r} (keys: {', '.join(BUDGET_KEYS)})")
                if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
                    raise InputError(f"problem_budgets for {spec!r}: {key!r} has the wrong type ({type(value).__name__})")
            self.for_problem(spec)  # its budget checked as the sweep's would be

    def for_problem(self, spec: str) -> "SweepConfig":
        """The settings of ``spec``'s tasks: the sweep's, with the problem's own budget (``problem_budgets``) in place
        of the sweep's values.  ``draws`` and ``reference_precision`` replace theirs; ``reference_draws`` or
        ``reference_seconds`` replace the sweep's reference budget (a number of draws also drops its precision, as
        ``--reference-draws`` does on a preset)."""
        budget = self.problem_budgets.get(spec)
        if not budget:
            return dataclasses.replace(self, problem_budgets={}) if self.problem_budgets else self
        changes = dict(budget)
        if "reference_draws" in budget or "reference_seconds" in budget:
            changes.setdefault("reference_draws", None)
            changes.setdefault("reference_seconds", None)
            if "reference_draws" in budget:
                changes.setdefault("reference_precision", None)
        try:
            return dataclasses.replace(self, problem_budgets={}, **changes)
        except InputError as exc:
            raise InputError(f"problem_budgets for {spec!r}: {exc}") from None

    def reference_budget(self) -> dict:
        """The Monte Carlo reference's budget as set (``{}`` when neither is: as many draws as ``draws``)."""
        if self.reference_draws is not None:
            return {"draws": self.reference_draws}
        if self.reference_seconds is not None:
            out = {"seconds": float(self.reference_seconds)}
            if self.reference_precision is not None:
                out["precision"] = float(self.reference_precision)
            return out
        return {}

    def cost_settings(self) -> CostSettings:
        """How each task measures its cost per draw (``docs/timing.md#cost-per-draw``)."""
        return CostSettings(time_s=self.cost_time, clock=self.cost_clock, threads=self.cost_threads)

    def as_dict(self) -> dict:
        """The fields as a dict; ``reference`` only when it is not the default ``auto``, so the
        identity (hash) of every run planned before the Monte Carlo reference existed is unchanged."""
        d = dataclasses.asdict(self)
        if d["reference"] == "auto":
            del d["reference"]
        for key in ("reference_draws", "reference_seconds", "reference_precision"):  # likewise: absent unless set
            if d[key] is None:
                del d[key]
        if not d["problem_budgets"]:
            del d["problem_budgets"]
        return d



_FIELDS = {f.name: f for f in dataclasses.fields(SweepConfig)}
_TYPES = {"problems": list, "estimators": list, "draws": int, "grid": list, "chunk": int, "device": str,
          "dtype": str, "exact_method": str, "memory_budget_gib": (int, float), "seed": int, "name": str,
          "reference": str, "reference_draws": int, "reference_seconds": (int, float), "reference_precision": (int, float), "cost_time": (int, float), "cost_clock": str, "cost_threads": int,
          "problem_budgets": dict}


def load_toml(path: str) -> dict:
    """Parse a sweep TOML file into keyword arguments for :class:`SweepConfig` (checked names and types)."""
    raw = inputs.read_text_file(path, "config file")  # a regular file of bounded size (not /dev/zero, a FIFO)
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark (some editors write one) is dropped
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {path!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"config file {path!r} nests arrays or tables too deeply") from None
    for key, value in data.items():
        if key not in _FIELDS:
            raise InputError(f"config file {path!r}: unknown key {key!r} (keys: {', '.join(_FIELDS)})")
        if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
            raise InputError(f"config file {path!r}: key {key!r} has the wrong type ({type(value).__name__})")
        if key in ("problems", "estimators") and not all(isinstance(v, str) for v in value):
            raise InputError(f"config file {path!r}: {key!r} must be a list of strings")
        if key == "grid" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise InputError(f"config file {path!r}: 'grid' must be a list of integers")
    return data


#: the paper's methods in its legend order; its PSA is the flip-mixed head (the authors' code uses it,
#: ``docs/protocols.md#psa2020``)
_PSA2020_METHODS = ("reinforce", "arm", "concrete:tau=0.1", "concrete:tau=1.0", "tanh", "st", "psa:head=flip-mixed")

#: Named sweeps.  ``estimators = ("*",)`` means every registered estimator (default options).
SWEEP_PRESETS: dict[str, dict] = {
    "quick": dict(
        name="quick",
        problems=("psa-2-5-5-5", "random:widths=3-4-4-4,scale=1.0,points=50,encoding=pm1"),
        estimators=("psa", "st", "reinforce", "arm", "concrete:tau=0.5", "tanh"),
        draws=2000,
    ),
    "psa2020": dict(
        name="psa2020",
        problems=("psa-2-5-5-5@chk-1", "psa-2-5-5-5@chk-100", "psa-2-5-5-5@chk-2000"),
        estimators=_PSA2020_METHODS + ("*",),
        draws=20000,
        grid=tuple(d * 10**e for e in range(4) for d in range(1, 10)),  # the paper's 36 values
    ),
    "scaling": dict(
        name="scaling",
        problems=tuple(f"random:widths=4-{w}-{w}-{w},points=64,scale=1.0" for w in (2, 4, 6, 8, 10, 12))
        + tuple("random:widths=4" + "-6" * d + ",points=64,scale=1.0" for d in (1, 2, 4, 6, 8)),
        estimators=("psa", "st", "reinforce", "arm", "disarm", "concrete:tau=0.5", "tanh"),
        draws=2000,
    ),
    # Monte Carlo reference (docs/monte-carlo.md#presets): widths 16..512 at depth 3, depths 2..8 at width 64,
    # weight scales 0.5..4 (fan-in normalised: pre-activation sd ~ scale), and the first two layers of the
    # PSA paper's CIFAR architecture (96 channels, 3x3, stride 1, no padding) on generated 3x12x12 images.
    "scaling-large": dict(
        name="scaling-large",
        problems=tuple(f"random:widths=16-{w}-{w}-{w},points=16,scale=1.0,init=fanin" for w in (16, 32, 64, 128, 256, 512))
        + tuple("random:widths=16" + "-64" * d + ",points=16,scale=1.0,init=fanin" for d in (2, 4, 8))
        + tuple(f"random:widths=16-64-64-64,points=16,scale={s},init=fanin" for s in (0.5, 2.0, 4.0))
        + ("conv:input=3x12x12,channels=96-96,kernels=3-3,strides=1-1,paddings=0-0,points=4,seed=0",),
        estimators=("psa", "st", "st-identity", "st-tanh", "st-hardtanh", "concrete:tau=0.5", "st-gumbel", "tanh",
                    "adf"),
        draws=4096,
        dtype="float32",
        reference="mc",
        # per problem, shared by its estimators; the easy ones end early, at a standard error of 2% of ||g||
        # in every group (measured run time and what it buys: docs/monte-carlo.md#presets)
        reference_seconds=240.0,
        reference_precision=0.02,
        # the depth-8 network's middle layers need more of both streams than the others (one PSA draw has variance
        # 100-190 ||g||^2 there): its own budget (docs/monte-carlo.md#presets)
        problem_budgets={"random:widths=16" + "-64" * 8 + ",points=16,scale=1.0,init=fanin":
                         dict(draws=32768, reference_seconds=360.0)},
    ),
}

#: Executor used by a preset when ``--executor`` is not given: ``(kind, workers)``.  ``psa2020``
#: spreads its 54 tasks over two worker processes, one per core.
SWEEP_PRESET_EXECUTORS: dict[str, tuple[str, int | None]] = {"psa2020": ("process", 2), "scaling": ("process", 2),
                                                              "scaling-large": ("process", 2)}
