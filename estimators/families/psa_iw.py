r"""PSA-IW — PSA's flip recursion made exact by importance weights (``docs/estimators/psa.md#psa-iw``).

PSA passes the effect of flipping unit $j$ of layer $k$ up one layer by a first-order expansion of the
difference of two product distributions of layer $k{+}1$.  The difference telescopes *exactly*:
with $p^\pm=p(x^{k+1}\mid x^k_{j\to\pm})$ and $G^{k+1}_l(x^{k+1})$ the effect of flipping unit $l$ of
layer $k{+}1$ (which does not depend on $x^{k+1}_l$),
$$G^k_j=\mathbb E_{p^+}G-\mathbb E_{p^-}G=\sum_l\big(p^+_l-p^-_l\big)\,
\mathbb E_{m_{jl}}\big[G^{k+1}_l\big],\qquad m_{jl}=\prod_{l'<l}p^+_{l'}\prod_{l'>l}p^-_{l'},$$
($p^\pm_l=F(a^{k+1}_l{}^{\pm})$, the probability of $x^{k+1}_l=+1$).  The sampled $x^{k+1}\sim
p(\cdot\mid x^k)$ serves every mixture $m_{jl}$ at once through the importance weight
$$w_{jl}=\prod_{l'\ne l}\frac{m_{jl}(x^{k+1}_{l'})}{p(x^{k+1}_{l'}\mid x^k)}
=\exp\Big(\sum_{l'<l}\rho^+_{jl'}+\sum_{l'>l}\rho^-_{jl'}\Big),\quad
\rho^\pm_{jl'}=\log F(x^{k+1}_{l'}a^{k+1}_{l'}{}^{\pm})-\log F(x^{k+1}_{l'}a^{k+1}_{l'}),$$
so $\hat G^k_j=\sum_l(p^+_l-p^-_l)\,\bar w_{jl}\,\hat G^{k+1}_l$, where $\bar w$ averages the weights of
the two orders of the units ($l'<l$ from $p^+$, or from $p^-$).  The last layer's $G^L$ are exact
head evaluations, as in PSA; with $w\equiv1$ the recursion is PSA's.

References: Shekhovtsov, Yanush & Flach, NeurIPS 2020 (the flip recursion); the telescoping of a
product measure and the importance weights are this suite's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..errors import InputError
from ..model import Path, Problem, head_grad, sample_in_chunks
from ..registry import register
from .psa import last_layer_flips

__all__ = ["PSAImportance"]

#: Elements of the largest ``[D, B, n_k, n_{k+1}]`` tensor processed at once (float64: 8 MiB: chunks that
#: stay in cache ran 1.4x faster than 64 MiB ones at width 256).
CHUNK_ELEMENTS = 2**20
#: Problems whose single draw needs a flip-term tensor of more elements are refused; a draw's peak memory is
#: about six such tensors (float64 at the limit: 1.5 GiB).
MAX_ELEMENTS_PER_DRAW = 2**25


@register
@dataclass(frozen=True)
class PSAImportance(Estimator):
    r"""Importance-weighted PSA: $\hat G^k_j=\sum_l(p^+_l-p^-_l)\,\bar w_{jl}\,\hat G^{k+1}_l$, $\hat G^L$ exact.

    $\hat g(\theta^k)=\mathrm{mean}_b\sum_jF'(a^k_j)\,\hat G^k_j\,\nabla_{\theta^k}a^k_j$; the head's
    gradient is $\nabla f(x^L)$.  $\bar w_{jl}$ is the mean of the two orders' importance weights
    $\exp(\sum_{l'<l}\rho^\pm_{jl'}+\sum_{l'>l}\rho^\mp_{jl'})$ (module docstring).

    Unbiased in every group: given $x^{\le k}$, $\mathbb E[\hat G^k_j]=G^k_j$ by the telescoping identity and
    induction over the layers, since each layer's sample has full support under every mixture.  Logistic
    noise only (the code uses $\sigma$ and $\log\sigma$): $\log\sigma$ is 1-Lipschitz, so every weight is at
    most $\exp(s\sum_{l'}|W_{l'j}|)$.  With Gaussian noise it would stay unbiased, but $\log\Phi$ is not
    Lipschitz and the weights explode in the tails (an exact single-draw variance of $10^{65}$ on a small deep
    network); under uniform noise a mixture can put mass where the sample has none (biased).  The weights'
    spread grows with $\sum_{l'}\mathrm{Var}\,\rho_{jl'}\approx\sum_{l'}F'(a_{l'})\,(sW_{l'j})^2$, so the
    variance grows with the weight scale: PSA's plus the weights' noise, several times PSA's at fan-in scales and
    heavy-tailed at large weights.

    A convolution's unit feeds $C_{out}K^2$ units of the next layer (:func:`fan_out`), so its flip terms are
    $B\,n_kC_{out}K^2$, gathered, not $B\,n_kn_{k+1}$.

    Cost per draw: one sampled pass, $1+n_L$ head evaluations, and per hidden layer pair about ten
    elementwise passes over its $B\,n_kn_{k+1}$ flip terms (a CDF, a log-CDF, a cumulative sum, two exponentials),
    then one backward product per layer.  Peak memory about six flip-term tensors ($D\,B\,n_kn_{k+1}$ elements,
    or $D\,B\,n_kC_{out}K^2$ for a convolution) per chunk of draws.
    """

    name: ClassVar[str] = "psa-iw"
    unbiased: ClassVar[bool] = True
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True
    noises: ClassVar[tuple[str, ...]] = ("logistic",)
    summary: ClassVar[str] = "PSA with importance-weighted exact telescoping of flips; unbiased (logistic noise)"

    def check(self, problem: Problem) -> None:
        super().check(problem)
        per_draw = self._per_draw(problem)
        if per_draw > MAX_ELEMENTS_PER_DRAW:
            raise InputError(f"estimator {self.spec} needs {per_draw} elements per draw for widths "
                             f"{'-'.join(map(str, problem.widths))} and {problem.batch_size} points, over the limit "
                             f"{MAX_ELEMENTS_PER_DRAW}; use narrower layers or fewer points")

    @staticmethod
    def _per_draw(problem: Problem) -> int:
        r"""Elements of the largest tensor of one draw: a flip-term tensor, $B\,n_k\times$ (fan-out of a unit of
        layer $k$), or the head's flips, $B\,n_LC$."""
        w = problem.widths[1:]
        geoms = problem.conv[1:]
        fans = [w[k + 1] if g is None else problem.weights[k + 1].shape[0] * g.kernel**2 for k, g in enumerate(geoms)]
        return problem.batch_size * max([n * f for n, f in zip(w, fans)] + [w[-1] * problem.n_out])

    def _estimate(self, problem: Problem, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
        chunk = max(1, CHUNK_ELEMENTS // self._per_draw(problem))
        fans = _fan_outs(problem)  # once per call, not once per chunk (a conv's index is n_k x C_out K^2)
        return sample_in_chunks(lambda p, path, g: self._grads(p, path, fans), problem, draws, generator, chunk)

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` (layers, then head) of the given sampled path."""
        return self._grads(problem, path, _fan_outs(problem))

    def _grads(self, problem: Problem, path: Path, fans: list) -> list[torch.Tensor]:
        law = problem.noise_law
        xL = path.x[-1]
        _, _, f0, f_flip = last_layer_flips(problem, xL)
        G = xL * (f0.unsqueeze(-1) - f_flip)  # [D, B, n_L]: f(x with unit + ) - f(x with unit -), exact
        grads = []
        for k in range(problem.depth - 1, -1, -1):
            grads.append(problem.param_grad(k, law.pdf(path.a[k]) * G, path.inputs[k]))
            if k:
                G = _pass_up(law, path.x[k - 1], path.a[k], path.x[k], problem.weights[k], fans[k], G,
                             problem.flip_scale)
        grads.reverse()
        grads.append(head_grad(problem, problem.enc(xL)))
        return grads

    def cost(self, problem: Problem) -> Cost:
        """PSA's pass, head flips and backward pass, plus the ~10 passes over each hidden layer pair's flip terms,
        each counted as one layer evaluation (it touches as many numbers; its transcendentals make it dearer:
        measured, a draw costs 22.5 deterministic forward + backward passes at width 256)."""
        L = problem.depth
        return Cost(layer_evals=L + 10 * (L - 1), head_evals=1 + problem.widths[-1], backward_passes=1)


def fan_out(problem: Problem, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    r"""The units of layer ``k`` (0-based) that each unit of layer ``k-1`` feeds, and the weights it feeds them
    with: ``(index [n_{k-1}, T], weight [n_{k-1}, T])``, or ``None`` for a fully connected layer (every unit
    feeds all $n_k$, with ``W.T``).

    For a convolution, unit $(c,y,x)$ feeds $(c',o_y,o_x)$ with weight $W_{c'c\kappa_y\kappa_x}$ where
    $o_y s-p+\kappa_y=y$ (and likewise in $x$): $T=C_{out}K^2$ slots, those without a valid output padded
    with index 0 and weight 0 (a zero weight changes nothing: its flip terms are exactly 0)."""
    geom = problem.conv[k]
    if geom is None:
        return None
    W = problem.weights[k]  # [C_out, C_in, K, K]
    c_out, K, s, pad = W.shape[0], geom.kernel, geom.stride, geom.padding
    ho, wo = geom.out_hw()
    dev = W.device

    def ar(n, axis):
        shape = [1] * 6
        shape[axis] = n
        return torch.arange(n, device=dev).view(shape)

    c, y, x = ar(geom.channels, 0), ar(geom.height, 1), ar(geom.width, 2)
    co, ky, kx = ar(c_out, 3), ar(K, 4), ar(K, 5)
    oy, ox = y + pad - ky, x + pad - kx  # s * (output row), if valid
    valid = (oy % s == 0) & (ox % s == 0) & (oy >= 0) & (ox >= 0) & (oy < s * ho) & (ox < s * wo)
    index = torch.where(valid, co * (ho * wo) + (oy // s) * wo + ox // s, 0)
    weight = torch.where(valid, W.permute(1, 0, 2, 3)[c, co.squeeze(0), ky.squeeze(0), kx.squeeze(0)], 0.0)
    index, weight = torch.broadcast_tensors(index, weight)  # the index does not depend on the input channel
    n = geom.in_size
    return index.reshape(n, -1), weight.to(W.dtype).reshape(n, -1)


def _fan_outs(problem: Problem) -> list:
    """:func:`fan_out` of every layer (``None`` for layer 0, which reads the data)."""
    return [None] + [fan_out(problem, k) for k in range(1, problem.depth)]


def _pass_up(law, x_below: torch.Tensor, a: torch.Tensor, x: torch.Tensor, W: torch.Tensor,
             fan: tuple[torch.Tensor, torch.Tensor] | None, G: torch.Tensor, flip_scale: float) -> torch.Tensor:
    r"""$\hat G^k$ ``[D, B, n_k]`` from layer $k{+}1$'s pre-activations ``a``, states ``x`` and effects ``G``
    (all ``[D, B, n_{k+1}]``), layer $k$'s states ``x_below``, and the layer's weights: ``W`` ``[n_{k+1}, n_k]``
    of a fully connected layer (``fan`` is ``None``), or its :func:`fan_out`.

    One of $a^\pm$ is the sampled ``a``; the other is $a-s\,x^k_jW_{:,j}$, so only its side's log-ratios
    $\rho$ are non-zero, and the two orders' weights are $\exp$ of the sums of $\rho$ before and after $l$
    (any fixed order of the units is a valid telescoping; a convolution uses the order of its fan-out slots).
    """
    logsigmoid = torch.nn.functional.logsigmoid
    xa = x * a
    if fan is None:  # every unit feeds every unit: per-unit values broadcast, nothing gathered
        Wt = W.T

        def seen(v):  # a per-unit value of layer k+1 ([D, B, n_{k+1}]) as seen from each unit j of layer k
            return v.unsqueeze(-2)
    else:
        index, Wt = fan

        def seen(v):  # gathered from each unit's fan-out: [D, B, n_k, T]; made when used, freed after
            return v[..., index]
    # x_l * (pre-activation with unit j negated) = x_l a_l - s x_j x_l W_lj
    t = ((flip_scale * x_below).unsqueeze(-1) * Wt).mul_(seen(x))
    t = torch.sub(seen(xa), t, out=t)
    # p(+ | x_j = +) - p(+ | x_j = -) = x_j (F(a) - F(other)) = x_j x_l (F(x_l a_l) - F(t)): the factor x_l
    # goes with G, the factor x_j is applied to the sum
    w = torch.sigmoid(t).neg_().add_(seen(torch.sigmoid(xa)))
    rho = logsigmoid(t).sub_(seen(logsigmoid(xa)))
    del t
    before = torch.cumsum(rho, -1)
    after = before[..., -1:] - before  # sum over l' > l (in float32 ~1e-4 relative rounding at weight scale 30)
    before.sub_(rho)  # sum over l' < l
    del rho
    w.mul_(before.exp_().add_(after.exp_()))
    del after, before
    if fan is None:
        return torch.einsum("dbjl,dbl->dbj", w, 0.5 * x * G).mul_(x_below)
    return w.mul_(seen(x * G)).sum(-1).mul_(0.5 * x_below)
