r"""PSA — the path sample-analytic estimator (``docs/estimators/psa.md``,
``docs/estimators/psa.md#encodings-and-noises``).

From one sampled path per data point, with $D^k_i$ the (approximate) effect on the loss of
flipping unit $i$ of layer $k$:
$$D^L_i=f(x^L)-f(x^L_{\downarrow i})\ \text{(exact)},\qquad
D^k_i=\sum_jx^{k+1}_j\big[F(a^{k+1}_j)-F(a^{k+1}_j-s\,W^{k+1}_{ji}x^k_i)\big]D^{k+1}_j,$$
$$\hat g(\theta^k)=\frac1B\sum_b\sum_ix^k_iF'(a^k_i)\,D^k_i\,\nabla_{\theta^k}a^k_i,\qquad
\hat g(\theta^{L+1})=\nabla_{\theta^{L+1}}f(x^L),$$
with flip scale $s=2$ (``pm1``) or $1$ (``01``).  The hidden recursion is
:func:`estimators.kernels.psa_fc.flip_backward` for fully connected layers and
:func:`estimators.kernels.psa_conv.conv_flip_backward` (the "ratio convolution",
``docs/estimators/psa.md#convolutional``) for
convolutional ones; layer gradients go through :meth:`~estimators.model.Problem.param_grad`.

References: Shekhovtsov, Yanush & Flach, NeurIPS 2020, arXiv:2006.03143.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..base import Cost, Estimator
from ..kernels.psa_conv_fused import CONV_VARIANTS, select_conv_flip_backward
from ..kernels.psa_fc import flip_backward, flip_backward_fused
from ..kernels.psa_fc_cuda import select_flip_backward
from ..model import Path, Problem, head_grad, layer_grad
from ..options import option
from ..registry import register

__all__ = ["PSA", "last_layer_flips"]

HEADS = ("plain", "flip-mixed")
#: ``auto`` picks per problem (device, noise, dtype): :func:`~estimators.kernels.psa_fc_cuda.select_flip_backward`
#: for fully connected layers and :func:`~estimators.kernels.psa_conv_fused.select_conv_flip_backward` for conv layers.
KERNELS = {"eager": flip_backward, "fused": flip_backward_fused, "auto": None}


def last_layer_flips(problem: Problem, xL: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""Head outputs of the sampled last layer and of all its single flips, all at once.

    Flipping unit $i$ changes the head input by $-s\,x_i$, so $\eta(x_{\downarrow i})=\eta-s\,x_iW^{L+1}_{:,i}$.

    Returns:
        ``(eta [D, B, C], eta_flip [D, B, n_L, C], f0 [D, B], f_flip [D, B, n_L])``.
    """
    loss = problem.loss_fn
    eta = problem.head(problem.enc(xL))
    eta_flip = eta.unsqueeze(-2) - problem.flip_scale * xL.unsqueeze(-1) * problem.head_weight.T
    f0 = loss.value(eta, problem.y)
    f_flip = loss.value(eta_flip.transpose(-2, -3), problem.y).transpose(-1, -2)  # value wants [..., B, C]
    return eta, eta_flip, f0, f_flip


@register
@dataclass(frozen=True)
class PSA(Estimator):
    r"""Path sample-analytic estimator: exact last-layer flips, flips passed up by one linearisation.

    $\hat g(\theta^k)=\mathrm{mean}_b\sum_ix^k_iF'(a^k_i)D^k_i\nabla a^k_i$ with $D^L$ exact
    ($n_L$ extra head evaluations) and $D^k_i=\sum_jx^{k+1}_j[F(a^{k+1}_j)-F(a^{k+1}_j-sW_{ji}x^k_i)]D^{k+1}_j$.

    Bias: only from the first-order truncation of the difference of two product distributions
    (``docs/estimators/psa.md#derivation`` step C).  Unbiased for the head, for the last hidden layer and for
    every network
    with one hidden layer; the bias grows with the weight scale and the distance from the head.

    Hyperparameters:
        head: ``plain`` (default) or ``flip-mixed`` (``docs/estimators/psa.md#flip-mixed-head``): the head gradient of
            $E=f(x)(1-\sum_i\pi_i)+\sum_if(x_{\downarrow i})\pi_i$, $\pi_i=(1-p(x^L_i\mid x^{L-1}))/n_L$
            held constant — unbiased, usually lower variance; hidden gradients are unchanged.
        kernel: ``auto`` (default: the fastest for the problem's device, noise and dtype — Triton on
            CUDA; on CPU the compiled pair kernel for layers of at least
            :data:`~estimators.kernels.psa_fc.AUTO_MIN_TERMS` flip terms, eager below, so small networks
            never wait for a compile), ``eager`` or ``fused`` (compiled; logistic noise).
            Convolutional layers use the matching conv kernel of :mod:`estimators.kernels.psa_conv` (eager
            ratio convolution) or :mod:`estimators.kernels.psa_conv_fused` (compiled / Triton / auto).

    Cost per draw: one sampled pass ($L$ layer evaluations), $1+n_L$ head evaluations and one
    backward pass whose hidden layers cost a CDF per multiply-add ($B\,n_{k}n_{k+1}$ terms).
    Path-deterministic: :meth:`from_path` evaluates it on a given path.
    """

    name: ClassVar[str] = "psa"
    unbiased: ClassVar[bool] = False
    paths_per_draw: ClassVar[int] = 1
    path_deterministic: ClassVar[bool] = True
    has_from_path: ClassVar[bool] = True
    summary: ClassVar[str] = "path sample-analytic: exact last-layer flips, linearised flip recursion"

    head: str = option("plain", choices=HEADS, help="plain, or flip-mixed (unbiased, lower variance)")
    kernel: str = option("auto", choices=tuple(KERNELS), help="hidden-layer backward kernel")

    def cost(self, problem: Problem) -> Cost:
        return Cost(layer_evals=problem.depth, head_evals=1 + problem.widths[-1], backward_passes=1)

    def unbiased_groups(self, problem: Problem) -> tuple[str, ...]:
        """The head and the last hidden layer (whose flips are evaluated exactly); every group of a
        network with one hidden layer."""
        return super().unbiased_groups(problem) if self.unbiased else tuple(problem.group_names[-2:])

    def from_path(self, problem: Problem, path: Path, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Per-draw group gradients ``[D, size]`` (layers, then head) of the given sampled path."""
        law, s = problem.noise_law, problem.flip_scale
        if self.kernel == "auto":
            kernel = select_flip_backward(problem.device, law, problem.dtype)
            conv_kernel = select_conv_flip_backward(problem.device, law, problem.dtype)
        else:
            kernel, conv_kernel = KERNELS[self.kernel], CONV_VARIANTS[self.kernel]
        xL = path.x[-1]
        eta, eta_flip, f0, f_flip = last_layer_flips(problem, xL)
        Dk = f0.unsqueeze(-1) - f_flip  # [D, B, n_L], exact
        grads = []
        for k in range(problem.depth - 1, -1, -1):
            a = path.a[k]
            h = path.x[k] * Dk  # x_i D_i: the kernel's h for the layer below
            grads.append(problem.param_grad(k, law.pdf(a) * h, path.inputs[k]))  # delta = x F'(a) D
            if k and problem.conv[k] is not None:
                Dk = conv_kernel(path.x[k - 1], a, problem.weights[k], h, problem.conv[k], law, s)
            elif k:
                Dk = kernel(path.x[k - 1], a, problem.weights[k], h, law, s)
        grads.reverse()
        encL = problem.enc(xL)
        if self.head == "plain":
            grads.append(head_grad(problem, encL))
        else:
            grads.append(self._flip_mixed_head(problem, xL, path.a[-1], encL, eta, eta_flip))
        return grads

    @staticmethod
    def _flip_mixed_head(problem: Problem, xL, aL, encL, eta, eta_flip) -> torch.Tensor:
        r"""Head gradient of $E$: $\bar d\otimes\mathrm{enc}(x)$ minus the flipped coordinates' share.

        With $\bar d=w_0\,\partial_\eta f(x)+\sum_i\pi_i\,\partial_\eta f(x_{\downarrow i})$ and
        $\mathrm{enc}(x_{\downarrow i})=\mathrm{enc}(x)-s\,x_ie_i$:
        $\nabla_WE=\bar d\,\mathrm{enc}(x)^\top-s\,[\pi_mx_m\,\partial_\eta f(x_{\downarrow m})]_{c,m}$.
        """
        loss, y = problem.loss_fn, problem.y
        nL, B = xL.shape[-1], xL.shape[1]
        pi = problem.noise_law.cdf(-xL * aL) / nL  # (1 - p(x_i | x^{L-1})) / n_L
        d0 = loss.grad(eta, y)  # [D, B, C]
        dflip = loss.grad(eta_flip.transpose(-2, -3), y).transpose(-2, -3)  # [D, B, n_L, C]
        dbar = (1 - pi.sum(-1, keepdim=True)) * d0 + (pi.unsqueeze(-1) * dflip).sum(-2)
        g = layer_grad(dbar, encL)
        corr = torch.einsum("dbm,dbmc->dcm", pi * xL, dflip) * (problem.flip_scale / B)
        C = eta.shape[-1]
        g[:, : C * nL] -= corr.reshape(corr.shape[0], C * nL)
        return g
