r"""The one estimator contract (network level).

An estimator receives a :class:`~estimators.model.Problem` (network, parameters, data batch, loss,
encoding, noise), a number of draws ``D`` and an explicit ``torch.Generator``, and returns ``D``
independent single-draw estimates of the gradient of the batch-mean expected loss
$$\mathcal L(\theta)=\frac1B\sum_b\mathbb E_Z\,f(X^L(x^0_b);\theta^{L+1},y_b),$$
one ``[D, group_size]`` tensor per parameter group (``layer0 .. layer{L-1}``, ``head``), in the
problem's own parametrisation and dtype/device.  It is vectorised over draws (one batched pass over
``[D, B, n]`` tensors, no Python loop over draws, samples or units) and each data point gets its
own independent sample path in every draw.  Estimators that use several paths jointly declare
``paths_per_draw``.

Subclasses are frozen dataclasses whose fields are the hyperparameters (options, with defaults and
declared domains: :func:`estimators.options.option`), declare the class attributes below, and
implement either

- :meth:`Estimator.from_path` (and set ``has_from_path = True``): the estimates of ``D`` draws from
  a sampled :class:`~estimators.model.Path` of ``paths_per_draw * D`` rows (path ``m`` of draw
  ``d`` is row ``m*D + d``) and the call's generator (for any further randomness); the default
  :meth:`Estimator._estimate` samples the paths and calls it; or
- :meth:`Estimator._estimate` itself, for estimators whose randomness is not one sampled path.

They register with :func:`estimators.registry.register`.  Declarations that options change
(``unbiased``, ``paths_per_draw``, ``path_deterministic``, ``has_from_path``) may be overridden by
properties: every reader asks the instance (:meth:`Estimator.declarations`), never the class.  The
whole contract, with what ``bench.validate.check_estimator`` verifies, is in
``docs/estimators/index.md#contract``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from .errors import EstimatorError, InputError, OutputError, one_line, raised_at
from .model import Path, Problem, sample_path
from .options import check_field, check_relevant
from .torch_state import kept_torch_state

__all__ = ["Estimator", "Cost"]


@dataclass(frozen=True)
class Cost:
    """Work per draw: stochastic-layer evaluations, head (loss) evaluations and backward passes."""

    layer_evals: float
    head_evals: float
    backward_passes: float


@dataclass(frozen=True)
class Estimator:
    """Base class: declarations are class attributes, hyperparameters are dataclass fields."""

    name: ClassVar[str] = ""
    unbiased: ClassVar[bool] = False
    #: paths sampled jointly by one draw (K for leave-one-out, 2 for antithetic pairs).
    paths_per_draw: ClassVar[int] = 1
    #: the estimate is a function of the sampled path alone (enables exact moments, ``docs/exact.md#exact-moments``).
    path_deterministic: ClassVar[bool] = False
    #: :meth:`from_path` is implemented (the estimate of a given sampled path).
    has_from_path: ClassVar[bool] = False
    encodings: ClassVar[tuple[str, ...]] = ("pm1", "01")
    noises: ClassVar[tuple[str, ...]] = ("logistic", "gaussian", "uniform")
    losses: ClassVar[tuple[str, ...]] = ("logistic", "softmax", "squared")
    summary: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Check every option against its declared type and domain (one :class:`InputError`)."""
        for f in dataclasses.fields(self):
            value = check_field(self.name or type(self).__name__, f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        check_relevant(f"estimator {self.name or type(self).__name__}", self)

    # ---- the contract ------------------------------------------------------------------------
    def estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``draws`` single-draw gradient estimates per group: ``{group: [draws, size]}``."""
        self.check(problem)
        if draws < 1:
            raise InputError(f"number of draws must be positive, got {draws}")
        try:
            # the estimator's own changes to torch's global settings end with it; a caller's no_grad() does not
            # reach it (the estimators that differentiate need autograd; their outputs are detached below)
            with kept_torch_state(), torch.enable_grad():
                grads = self._estimate(problem, draws, generator)
        except (KeyboardInterrupt, InputError):
            raise
        except BaseException as exc:  # noqa: BLE001 - the estimator's own failure, whatever it raised: one line
            raise EstimatorError(self._failure(exc)) from None
        try:
            self._check_output(problem, draws, grads)
        except (KeyboardInterrupt, OutputError):
            raise
        except BaseException as exc:  # noqa: BLE001 - output whose inspection runs user code that fails
            raise OutputError(f"estimator {self.spec} returned output that cannot be checked: "
                              f"{type(exc).__name__}: {one_line(exc)}") from None
        return {name: g.detach() for name, g in zip(problem.group_names, grads)}

    def _failure(self, exc: BaseException) -> str:
        """``estimator SPEC raised TYPE: message (at file:line)``, or ``... called sys.exit(code)``."""
        if isinstance(exc, SystemExit):
            return f"estimator {self.spec} called sys.exit({exc.code!r}){raised_at(exc)}"
        return f"estimator {self.spec} raised {type(exc).__name__}: {one_line(exc)}{raised_at(exc)}"

    def _check_output(self, problem: Problem, draws: int, grads) -> None:
        """Raise :class:`~estimators.errors.OutputError` unless ``grads`` keeps the contract of :meth:`_estimate`."""
        expected = ", ".join(f"[{draws}, {n}]" for n in problem.group_sizes)
        got = None
        if not isinstance(grads, (list, tuple)):
            got = "None" if grads is None else f"a {type(grads).__name__}"
        elif len(grads) != len(problem.group_names):
            got = f"{len(grads)} items for {len(problem.group_names)} groups"
        else:
            for name, size, g in zip(problem.group_names, problem.group_sizes, grads):
                if type(g) is not torch.Tensor:  # a subclass's __torch_function__ would run on every use
                    got = f"a {type(g).__name__} for group {name}"
                elif tuple(g.shape) != (draws, size):
                    got = f"shape {list(g.shape)} for group {name}"
                elif g.layout != torch.strided:  # sparse: every consumer reads dense rows
                    got = f"a {g.layout} tensor for group {name} (dense tensors only)"
                elif g.dtype != problem.dtype:  # an integer gradient is a truncated one, a float16 one a rounded one
                    got = f"{g.dtype} values for group {name} (the problem is {problem.dtype})"
                elif g.device.type == "meta" or g.device != problem.device:
                    got = f"values on device {g.device} for group {name} (the problem is on {problem.device})"
                if got:
                    break
        if got:
            raise OutputError(f"estimator {self.spec} returned {got}; it must return a list of tensors, one per "
                              f"parameter group of {problem.name}, each [draws, group size] ({expected}) in the "
                              f"problem's dtype and on its device")

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per-draw group gradients ``[draws, size]`` (groups in ``problem.group_names`` order).

        The default samples ``paths_per_draw * draws`` paths and calls :meth:`from_path`."""
        if not self.has_from_path:
            raise NotImplementedError(f"estimator {self.spec} implements neither _estimate nor from_path")
        return self.from_path(problem, sample_path(problem, self.paths_per_draw * draws, generator), generator)

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients of the draws whose sampled paths are ``path`` (``paths_per_draw``
        rows per draw); ``generator`` feeds any randomness beyond the path (``None`` is accepted by
        path-deterministic estimators only)."""
        raise NotImplementedError(f"estimator {self.spec} does not estimate from a given path")

    def check(self, problem: Problem) -> None:
        """Raise :class:`InputError` for an encoding, noise or loss this estimator does not support."""
        for what, value, allowed in (
            ("encoding", problem.encoding, self.encodings),
            ("noise", problem.noise, self.noises),
            ("loss", problem.loss, self.losses),
        ):
            if value not in allowed:
                raise InputError(
                    f"estimator {self.spec} does not support {what} {value!r} (supported: {', '.join(allowed)})"
                )

    def cost(self, problem: Problem) -> Cost:
        """Work per draw; the default is one sampled pass and one backward pass."""
        return Cost(layer_evals=problem.depth, head_evals=1, backward_passes=1)

    # ---- description -------------------------------------------------------------------------
    @classmethod
    def hyperparameters(cls) -> dict[str, object]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def unbiased_groups(self, problem: Problem) -> tuple[str, ...]:
        """The parameter groups whose estimate is unbiased on ``problem``: every group for an unbiased
        estimator, none by default otherwise; biased estimators that are exact for some groups (PSA's
        last hidden layer and head, the straight-through family's head) override this."""
        return tuple(problem.group_names) if self.unbiased else ()

    def options(self) -> dict[str, object]:
        """Every option of this instance (defaults included), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def declarations(self) -> dict[str, object]:
        """What this instance declares (options may change it): read this, never the class."""
        return dict(name=self.name, unbiased=bool(self.unbiased), paths_per_draw=int(self.paths_per_draw),
                    path_deterministic=bool(self.path_deterministic), has_from_path=bool(self.has_from_path),
                    encodings=tuple(self.encodings), noises=tuple(self.noises), losses=tuple(self.losses))

    @property
    def spec(self) -> str:
        """Canonical ``name:key=value,...`` string (non-default values only) that rebuilds this instance."""
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if _differs(getattr(self, f.name), f.default)
        ]
        return self.name + (":" + ",".join(changed) if changed else "")

    def __str__(self) -> str:
        return self.spec


def _differs(value: object, default: object) -> bool:
    try:
        return bool(value != default)
    except (TypeError, ValueError):  # array-like hyperparameters (test doubles)
        return value is not default
