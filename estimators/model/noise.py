r"""Injected-noise distributions: CDF $F$, density $F'$ and a stable $\log F$.

A binary unit is $x=\operatorname{sign}(a-Z)$ with $Z\sim F$, i.e. $p(x{=}{+}1\mid a)=F(a)$.
Every density here is symmetric, $F(-u)=1-F(u)$, which the estimators rely on.  All three
functions are finite and NaN-free for $|a|$ up to (at least) 100 in float32 and float64.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

__all__ = ["Noise", "Logistic", "Gaussian", "Uniform", "NOISES", "get_noise", "LOG_ZERO"]

#: Finite stand-in for $\log 0$ (uniform noise outside its support): ``exp(LOG_ZERO) == 0``
#: exactly in float32 and float64, and unlike ``-inf`` it survives ``0 * LOG_ZERO`` in matmuls.
LOG_ZERO = -1.0e4


class Noise:
    """A symmetric noise law.  Subclasses implement ``cdf``, ``pdf`` and ``log_cdf``."""

    name: str = ""

    def cdf(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pdf(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_cdf(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        r"""$\partial_a\log p(x\mid a)=x\,F'(a)/F(xa)$ for states $x\in\{\pm1\}$, computed stably."""
        return x * self.pdf(a) / self.cdf(x * a).clamp_min(torch.finfo(a.dtype).tiny)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Logistic(Noise):
    r"""Standard logistic noise (the default): $F=\sigma$, $F'=\sigma(1-\sigma)$, $\log F=-\mathrm{softplus}(-u)$."""

    name = "logistic"

    def cdf(self, a):
        return torch.sigmoid(a)

    def pdf(self, a):
        s = torch.sigmoid(a)
        return s * (1 - s)

    def log_cdf(self, a):
        return -torch.nn.functional.softplus(-a)

    def score(self, x, a):
        # d/da log sigma(x a) = x sigma(-x a): exact and overflow-free.
        return x * torch.sigmoid(-x * a)


class Gaussian(Noise):
    r"""Standard normal (probit) noise: $F=\Phi$, $F'=\varphi$, $\log F=$ ``log_ndtr``."""

    name = "gaussian"
    _c = 1.0 / math.sqrt(2.0 * math.pi)

    def cdf(self, a):
        return torch.special.ndtr(a)

    def pdf(self, a):
        return self._c * torch.exp(-0.5 * a * a)

    def log_cdf(self, a):
        return torch.special.log_ndtr(a)

    def score(self, x, a):
        # phi(a)/Phi(x a) via logs: stable in both tails (the Mills ratio).
        return x * torch.exp(-0.5 * a * a + math.log(self._c) - torch.special.log_ndtr(x * a))


class Uniform(Noise):
    r"""Uniform noise on $[-1,1]$: $F=\mathrm{clip}((u+1)/2,0,1)$, $F'=\tfrac12\mathbb 1[|u|<1]$.

    ``log_cdf`` returns :data:`LOG_ZERO` (not ``-inf``) where $F=0$, so that log-space matrix
    products stay NaN-free; its exponential is exactly 0.
    """

    name = "uniform"

    def cdf(self, a):
        return ((a + 1) * 0.5).clamp(0.0, 1.0)

    def pdf(self, a):
        return 0.5 * (a.abs() < 1).to(a.dtype)

    def log_cdf(self, a):
        f = self.cdf(a)
        return torch.where(f > 0, torch.log(f.clamp_min(torch.finfo(a.dtype).tiny)), LOG_ZERO)


NOISES: dict[str, Noise] = {n.name: n for n in (Logistic(), Gaussian(), Uniform())}


def get_noise(name: str) -> Noise:
    """Look a noise up by name; an unknown name is an :class:`InputError`."""
    try:
        return NOISES[name]
    except KeyError:
        raise InputError(f"unknown noise {name!r}; choose one of {', '.join(NOISES)}") from None
