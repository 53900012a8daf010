r"""RELAX: REINFORCE with a learned, reparameterised control variate, per layer
(``docs/estimators/score-function.md#relax``), logistic noise.

For a unit with logit $a$ and logistic noise, $z=a-Z$ ($Z=\operatorname{logit}u$) gives the hard
state $b=H(z)=\operatorname{sign}z$, and a fresh $v\sim U(0,1)$ gives the conditional relaxed sample
$\tilde z\sim p(z\mid b)$, $\tilde z=b\,\operatorname{softplus}(\rho+\operatorname{softplus}(ba))$ with
$\rho=\operatorname{logit}(1-v)$.  RELAX (Grathwohl et al. 2018) is, for any differentiable
surrogate $c_\phi$,
$$\hat g=\big(f(b)-c_\phi(\tilde z)\big)\nabla_\theta\log p(b)+\nabla_\theta c_\phi(z)-\nabla_\theta c_\phi(\tilde z),$$
unbiased for every $\phi$: $\mathbb E[\nabla c(z)]=\nabla\mathbb E[c(z)]$ (reparameterisation) and
$\mathbb E[c(\tilde z)\nabla\log p(b)+\nabla c(\tilde z)]=\nabla\mathbb E_b\mathbb E_{\tilde z\mid b}[c(\tilde z)]
=\nabla\mathbb E[c(z)]$ (score function for $b$, conditional reparameterisation for $\tilde z$), so
the two control-variate terms have the same mean and cancel.

**Per layer in a deep SBN** (as REBAR, :mod:`estimators.families.rebar`).  For layer $k$ the
upstream states are the sampled ones, and the surrogate is a function of layer $k$'s relaxed logits
$\zeta\in\mathbb R^{n_k}$ (per data point):
$$c_k(\zeta)=\eta_k\,\ell_k(\zeta;\tau_k)+r_k(\zeta),\qquad
r_k(\zeta)=w_{2,k}^\top\tanh(W_{1,k}\zeta+b_{1,k})+b_{2,k},$$
where $\ell_k$ is the loss of the Concrete network run from layer $k$ onward at temperature $\tau_k$
(sigmoid convention), its downstream layers relaxed at the main path's own noise $Z^{j>k}$, and
$r_k$ is a one-hidden-layer MLP.  $\phi=(W_1,b_1,w_2,b_2,\eta,\log\tau)$ per layer.  Given the
upstream states and the downstream noise (independent of $u^k,v^k$), $f$ and $c_k$ are fixed
functions of layer $k$'s state, so the identity above holds layer by layer.  The head gradient is
the pathwise $\nabla_{\theta^{L+1}}f(x^L)$.

**Learned state.**  $\phi$ starts at $W_1\sim\mathcal N(0,1/n_k)$ (drawn from the call's
generator), $b_1=0$, $w_2=0$, $b_2=0$, $\eta=1$, $\tau=$ ``tau``, i.e. at REBAR's control variate.
Adam then minimises the single-draw second moment of the estimate, whose $\phi$-gradient comes
from autograd through $\partial_\zeta c_k$ (double backward), for $\min(\text{adapt\_steps},
\lfloor D/\text{adapt\_draws}\rfloor)$ steps in a call of $D$ draws: the adaptation never uses more
draws than the call returns, so its cost stays proportional to the draws.  The objective is
$J(\phi)=\frac1{B^2}\sum_k\sum_b(1+\lVert\mathrm{inp}^k_b\rVert^2)\,\lVert\delta^k_b\rVert^2$ averaged over
``adapt_draws`` draws, where $\delta^k_b$ is the per-unit factor below and $\mathrm{inp}^k_b$ layer
$k$'s (encoded) input: the squared norm of the fully connected layer gradients
$\frac1B\sum_b\delta^k_b(\mathrm{inp}^k_b,1)^\top$ without the cross-point products, whose
expectations do not depend on $\phi$ (independent points, unbiased factors), so $\mathbb E J$ and
$\mathbb E\lVert\hat g\rVert^2$ - and hence the variance - have the same $\phi$-gradient.  It is
defined on units, not on parameters, so a convolutional network and its dense twin adapt alike.

Everything random comes from the explicit generator; the public methods
:meth:`Relax.init_state`, :meth:`Relax.adapt` and :meth:`Relax.estimate_with` let a caller carry
the learned state across calls (``estimate`` is init, :meth:`Relax.steps_for` steps, then the draws).

References: Grathwohl, Choi, Wu, Roeder & Duvenaud, ICLR 2018 (RELAX, arXiv:1711.00123);
Tucker et al., NeurIPS 2017 (REBAR); Maddison, Mnih & Teh, ICLR 2017 (Concrete).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as nnf

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Path, Problem, head_grad, sample_path
from ..options import option
from ..registry import register

__all__ = ["Relax", "RelaxState", "PARAM_NAMES", "conditional_logit", "relaxed_loss", "surrogate",
           "relax_deltas", "relax_grads", "draw_conditional_uniforms"]

#: the learned parameters of one layer's surrogate, in the order :class:`RelaxState` stores them
PARAM_NAMES = ("w1", "b1", "w2", "b2", "eta", "log_tau")
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True, eq=False)
class RelaxState:
    """The learned state of RELAX: per layer the surrogate parameters and their Adam moments.

    ``phi[k]`` holds layer ``k``'s tensors in :data:`PARAM_NAMES` order (``w1 [h, n_k]``, ``b1 [h]``,
    ``w2 [h]``, ``b2 []``, ``eta []``, ``log_tau []``); ``m`` and ``v`` are Adam's first and second
    moments (same structure); ``steps`` counts the Adam steps taken.  Immutable: :meth:`Relax.adapt`
    returns a new state.  Picklable (``torch.save``) for carrying it across processes.
    """

    phi: tuple[tuple[torch.Tensor, ...], ...]
    m: tuple[tuple[torch.Tensor, ...], ...]
    v: tuple[tuple[torch.Tensor, ...], ...]
    steps: int = 0

    @property
    def hidden(self) -> int:
        return int(self.phi[0][0].shape[0])

    def layer(self, k: int) -> dict[str, torch.Tensor]:
        """Layer ``k``'s parameters by name."""
        return dict(zip(PARAM_NAMES, self.phi[k]))

    def tau(self) -> list[float]:
        """The current temperature of every layer."""
        return [float(p[5].exp()) for p in self.phi]

    def to_dict(self) -> dict[str, object]:
        """Plain nested lists of tensors and an int (``torch.save`` it; ``torch.load(weights_only=True)`` reads it)."""
        def plain(t):
            return [list(layer) for layer in t]
        return {"phi": plain(self.phi), "m": plain(self.m), "v": plain(self.v), "steps": int(self.steps)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "RelaxState":
        """The inverse of :meth:`to_dict`."""
        def nested(t):
            return tuple(tuple(layer) for layer in t)
        try:
            return cls(nested(data["phi"]), nested(data["m"]), nested(data["v"]), int(data["steps"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a RELAX state: {exc}") from None


def conditional_logit(x: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""$\tilde z\sim p(z\mid b{=}x)$ for logistic noise from uniforms ``v``, and $\partial\tilde z/\partial a$.

    $\tilde z=x\,\operatorname{softplus}(\rho+\operatorname{softplus}(xa))$, $\rho=\operatorname{logit}(1-v)$
    ($v$ clamped to $[\epsilon,1-\epsilon]$): for $x=+1$, $\sigma(a-\tilde z)=v\,\sigma(a)$, the inverse CDF of
    $Z$ restricted to $Z<a$; $x=-1$ is the mirror image.
    """
    eps = torch.finfo(v.dtype).eps
    rho = -torch.logit(v.clamp(eps, 1.0 - eps))
    inner = rho + nnf.softplus(x * a)
    return x * nnf.softplus(inner), torch.sigmoid(inner) * torch.sigmoid(x * a)


def _relaxed_state(problem: Problem, t: torch.Tensor) -> torch.Tensor:
    """Encoded relaxed state at $t=(a-Z)/\\tau$: $\\tanh(t/2)$ (pm1) or $\\sigma(t)$ (01)."""
    return torch.tanh(0.5 * t) if problem.encoding == "pm1" else torch.sigmoid(t)


def relaxed_loss(problem: Problem, k: int, zeta: torch.Tensor, Z: Sequence[torch.Tensor],
                 tau: torch.Tensor | float) -> torch.Tensor:
    r"""$\ell_k(\zeta)$ ``[..., B]``: the loss of the Concrete network from layer ``k``'s relaxed logits ``zeta``
    ``[..., B, n_k]`` onward, downstream layers relaxed at the noises ``Z[j]`` (temperature ``tau``).
    Plain torch operations: differentiate it with autograd."""
    inp = _relaxed_state(problem, zeta / tau)
    for j in range(k + 1, problem.depth):
        inp = _relaxed_state(problem, (problem.preact(j, inp) - Z[j]) / tau)
    return problem.loss_fn.value(problem.head(inp), problem.y)


def surrogate(problem: Problem, k: int, phi: Sequence[torch.Tensor], zeta: torch.Tensor,
              Z: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""$c_k(\zeta)=\eta\,\ell_k(\zeta;\tau)+w_2^\top\tanh(W_1\zeta+b_1)+b_2$ per data point, ``[..., B]``."""
    w1, b1, w2, b2, eta, log_tau = phi
    mlp = torch.tanh(nnf.linear(zeta, w1, b1)) @ w2 + b2
    return eta * relaxed_loss(problem, k, zeta, Z, log_tau.exp()) + mlp


def draw_conditional_uniforms(path: Path, generator: torch.Generator) -> list[torch.Tensor]:
    """The uniforms $v^k$ of the conditional relaxed samples, one per layer, drawn after the path."""
    return [torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device) for a in path.a]


def _noise(u: torch.Tensor) -> torch.Tensor:
    """Logistic $Z=\\operatorname{logit}u$, ``u`` clamped to the dtype's $[\\epsilon,1-\\epsilon]$."""
    eps = torch.finfo(u.dtype).eps
    return torch.logit(u.clamp(eps, 1.0 - eps))


def relax_deltas(problem: Problem, phi: Sequence[Sequence[torch.Tensor]], path: Path, vs: Sequence[torch.Tensor],
                 create_graph: bool = False) -> list[torch.Tensor]:
    r"""The per-unit factors $\delta^k=\partial\hat g/\partial a^k$ ``[D, B, n_k]`` of every layer:
    $$\delta^k=\big(f-c_k(\tilde z^k)\big)\,x^k\sigma(-x^ka^k)+\partial_\zeta c_k(z^k)
    -\partial_\zeta c_k(\tilde z^k)\,\frac{\partial\tilde z^k}{\partial a^k}.$$
    ``path`` is the sampled path (its uniforms give $z=a-\operatorname{logit}u$), ``vs`` the uniforms of
    $\tilde z$.  With ``create_graph`` the result is differentiable in ``phi`` (for the adaptation).
    """
    Z = [_noise(u) for u in path.u]
    f = problem.loss_of(path.x[-1])  # [D, B], independent of phi
    law = problem.noise_law
    out = []
    with torch.enable_grad():
        for k in range(problem.depth):
            a, x = path.a[k], path.x[k]
            z_cond, dz_cond = conditional_logit(x, a, vs[k])
            zeta = torch.stack([a - Z[k], z_cond]).detach().requires_grad_(True)
            c = surrogate(problem, k, phi[k], zeta, Z)  # [2, D, B]
            (dc,) = torch.autograd.grad(c.sum(), zeta, create_graph=create_graph)
            delta = (f - c[1]).unsqueeze(-1) * law.score(x, a) + dc[0] - dc[1] * dz_cond
            out.append(delta if create_graph else delta.detach())
    return out


def relax_grads(problem: Problem, phi: Sequence[Sequence[torch.Tensor]], path: Path,
                vs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-draw group gradients ``[D, size]`` (layers, then the head) of RELAX with surrogate parameters ``phi``
    on the given path and conditional uniforms."""
    deltas = relax_deltas(problem, phi, path, vs)
    grads = [problem.param_grad(k, d, path.inputs[k]) for k, d in enumerate(deltas)]
    grads.append(head_grad(problem, problem.enc(path.x[-1])))
    return grads


def _objective(problem: Problem, deltas: Sequence[torch.Tensor], path: Path) -> torch.Tensor:
    r"""$\frac1{B^2}\sum_k\sum_b(1+\lVert\mathrm{inp}^k_b\rVert^2)\lVert\delta^k_b\rVert^2$, averaged over draws."""
    B = problem.batch_size
    total = 0.0
    for d, inp in zip(deltas, path.inputs):
        weight = 1.0 + (inp * inp).sum(-1)  # [D|1, B]
        total = total + (weight * (d * d).sum(-1)).sum(-1).mean()
    return total / B**2


@register
@dataclass(frozen=True)
class Relax(Estimator):
    r"""RELAX: REINFORCE with a learned control variate $c_\phi$ (REBAR's Concrete term plus an MLP), per layer,
    adapted by Adam inside each call; logistic noise only.

    Formula, layer $k$ (per data point, $\theta^k$ through $a^k$; $z=a-Z$, $b=\operatorname{sign}z$,
    $\tilde z\sim p(z\mid b)$):
    $$\hat g_{a^k}=\big(f(x^L)-c_k(\tilde z^k)\big)\,x^k\sigma(-x^ka^k)+\partial_\zeta c_k(z^k)
    -\partial_\zeta c_k(\tilde z^k)\,\frac{\partial\tilde z^k}{\partial a^k},\qquad
    c_k(\zeta)=\eta_k\,\ell_k(\zeta;\tau_k)+w_2^\top\tanh(W_1\zeta+b_1)+b_2,$$
    head: $\nabla_{\theta^{L+1}}f(x^L)$.

    Unbiased for every $\phi$: the score term with $c(\tilde z)$ and the two reparameterised terms
    have equal means (score function for $b$ plus conditional reparameterisation for $\tilde z$,
    versus plain reparameterisation for $z$), and $f$, $c_k$ are fixed functions of layer $k$'s state
    given the upstream states and the downstream noise.  The returned draws use $\phi$ adapted on
    earlier, independent draws of the same generator, so each is unbiased given $\phi$ and the draws
    are uncorrelated.

    Cost per draw: REBAR's - the sampled pass plus, per layer $k$, the surrogate at $z^k$ and
    $\tilde z^k$ (two relaxed continuations through layers $k..L$ and two MLP evaluations) and its
    backward pass: $L+L(L+1)$ layer evaluations, $1+2L$ head evaluations, $2L$ backward passes.  Plus the
    adaptation of each call: $\min(\text{adapt\_steps},\lfloor D/\text{adapt\_draws}\rfloor)$ Adam steps on
    ``adapt_draws`` draws each (at most $D$ adaptation draws in a call of $D$), each adaptation draw
    about 3x a draw (a double backward through the surrogates; more for tiny batches, where the
    per-operation overhead dominates).  Draws $L$ extra uniform tensors ($v^k$) after each path.
    """

    name: ClassVar[str] = "relax"
    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = False
    noises: ClassVar[tuple[str, ...]] = ("logistic",)
    summary: ClassVar[str] = ("RELAX: REINFORCE with a learned surrogate (Concrete loss + MLP) per layer, "
                              "Adam-adapted to minimise the variance")

    tau: float = option(0.5, gt=0.0, help="initial temperature of the Concrete part of the surrogate (learned)")
    hidden: int = option(16, ge=1, le=4096, help="hidden width of the surrogate MLP of each layer")
    adapt_steps: int = option(50, ge=0, le=10**6, help="most Adam steps on the surrogate per estimate() call, before the draws "
                                             "(a call of D draws takes at most D // adapt_draws)")
    adapt_draws: int = option(32, ge=1, le=10**6, help="draws per adaptation step (the variance estimate it minimises)")
    lr: float = option(0.01, gt=0.0, help="Adam learning rate of the adaptation")

    # ---- the contract ------------------------------------------------------------------------
    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        state = self.adapt(problem, self.init_state(problem, generator), self.steps_for(draws), generator)
        return self._draws(problem, state, draws, generator)

    def steps_for(self, draws: int) -> int:
        """Adam steps a call of ``draws`` draws takes: ``min(adapt_steps, draws // adapt_draws)``, so the adaptation
        never uses more draws than the call returns (a call of fewer than ``adapt_draws`` draws is REBAR at the
        initial state)."""
        return min(self.adapt_steps, draws // self.adapt_draws)

    def cost(self, problem: Problem) -> Cost:
        L = problem.depth
        return Cost(layer_evals=L + L * (L + 1), head_evals=1 + 2 * L, backward_passes=2 * L)

    # ---- the learned state (public) ----------------------------------------------------------
    def init_state(self, problem: Problem, generator: torch.Generator) -> RelaxState:
        """The initial surrogate (REBAR's control variate at ``tau``): per layer ``W1 = randn(hidden, n_k) / sqrt(n_k)``
        from ``generator``, the rest fixed (``b1 = w2 = b2 = 0``, ``eta = 1``, ``log_tau = log tau``)."""
        self.check(problem)
        dt, dev = problem.dtype, problem.device
        phi = []
        for n in problem.widths[1:]:
            w1 = torch.randn((self.hidden, n), generator=generator, dtype=dt, device=dev) / math.sqrt(n)
            zeros = torch.zeros(self.hidden, dtype=dt, device=dev)
            phi.append((w1, zeros, zeros.clone(), torch.zeros((), dtype=dt, device=dev),
                        torch.ones((), dtype=dt, device=dev), torch.tensor(math.log(self.tau), dtype=dt, device=dev)))
        zero = tuple(tuple(torch.zeros_like(p) for p in layer) for layer in phi)
        return RelaxState(tuple(phi), zero, tuple(tuple(p.clone() for p in layer) for layer in zero), 0)

    def adapt(self, problem: Problem, state: RelaxState, steps: int, generator: torch.Generator) -> RelaxState:
        """``steps`` Adam steps (learning rate ``lr``) on the surrogate, each on ``adapt_draws`` fresh draws from
        ``generator``; returns the new state (``state`` is not modified).  Minimises the single-draw second
        moment of the layer gradients (see the module docstring), i.e. their variance."""
        self._check_state(problem, state)
        if steps < 0:
            raise InputError(f"number of adaptation steps must be non-negative, got {steps}")
        phi = [list(layer) for layer in state.phi]
        m = [list(layer) for layer in state.m]
        v = [list(layer) for layer in state.v]
        t = state.steps
        for _ in range(steps):
            leaves = [[p.detach().requires_grad_(True) for p in layer] for layer in phi]
            path = sample_path(problem, self.adapt_draws, generator)
            vs = draw_conditional_uniforms(path, generator)
            with torch.enable_grad():
                J = _objective(problem, relax_deltas(problem, leaves, path, vs, create_graph=True), path)
                flat = [p for layer in leaves for p in layer]
                grads = torch.autograd.grad(J, flat, allow_unused=True)
            t += 1
            c1, c2 = 1.0 - _BETA1**t, 1.0 - _BETA2**t
            i = 0
            for k, layer in enumerate(leaves):
                for j, p in enumerate(layer):
                    g = grads[i] if grads[i] is not None else torch.zeros_like(p)
                    i += 1
                    m[k][j] = _BETA1 * m[k][j] + (1.0 - _BETA1) * g
                    v[k][j] = _BETA2 * v[k][j] + (1.0 - _BETA2) * g * g
                    step = self.lr * (m[k][j] / c1) / ((v[k][j] / c2).sqrt() + _ADAM_EPS)
                    phi[k][j] = (p - step).detach()
        return RelaxState(tuple(map(tuple, phi)), tuple(map(tuple, m)), tuple(map(tuple, v)), t)

    def estimate_with(self, problem: Problem, state: RelaxState, draws: int,
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``draws`` single-draw estimates ``{group: [draws, size]}`` with the given surrogate, no adaptation."""
        self.check(problem)
        if draws < 1:
            raise InputError(f"number of draws must be positive, got {draws}")
        self._check_state(problem, state)
        grads = self._draws(problem, state, draws, generator)
        return {name: g.detach() for name, g in zip(problem.group_names, grads)}

    # ---- internals ---------------------------------------------------------------------------
    def _draws(self, problem: Problem, state: RelaxState, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        path = sample_path(problem, draws, generator)
        return relax_grads(problem, state.phi, path, draw_conditional_uniforms(path, generator))

    def _check_state(self, problem: Problem, state: RelaxState) -> None:
        if not isinstance(state, RelaxState):
            raise InputError(f"estimator {self.spec}: expected a RelaxState, got {type(state).__name__}")
        widths = [layer[0].shape[1] for layer in state.phi]
        if widths != list(problem.widths[1:]) or state.hidden != self.hidden:
            raise InputError(f"estimator {self.spec}: the state is for layer widths {widths} and hidden width "
                             f"{state.hidden}, the problem has {list(problem.widths[1:])} (hidden {self.hidden})")
        p0 = state.phi[0][0]
        if p0.dtype != problem.dtype or p0.device != problem.device:
            raise InputError(f"estimator {self.spec}: the state is {p0.dtype} on {p0.device}, the problem "
                             f"{problem.dtype} on {problem.device}")
