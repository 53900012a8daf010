r"""Every estimator on convolutional SBNs: exactly its fully connected self, and unbiased where it should be.

1. **FC equivalence (Tier 0, the whole registry).**  A convolutional layer is a fully connected layer
   whose weight matrix $M(W)$ is linear in the kernel $W$ (and whose bias repeats each channel's bias
   over the positions).  Every estimator draws its random numbers by layer width only, so with the
   same generator seed it samples the same paths on the conv problem and on its dense twin, and the
   chain rule gives $\hat g_W=J_M^\top\hat g_{M}$, $\hat g_{b_c}=\sum_o\hat g_{b_{c,o}}$.  The test
   asserts this to float64 rounding for every registered estimator, both encodings, with stride,
   padding and a 1x1 layer, so each estimator's conv code path (``preact``, ``input_grad``,
   ``param_grad``, ``moment_preact``, grouped replicas, PSA's conv kernel) is checked against its
   already-tested FC path.
2. **Statistical unbiasedness on ``conv-tiny`` (Tier 1).**  The designed test of
   ``test_unbiased.py`` (repeated here; its sampling helpers are shared in ``tests/helpers.py``): per coordinate
   $z=(\bar g-g)/\mathrm{SE}$ against the exact gradient; fail if $|z|>z_{1-\alpha/(2m)}$ with this
   module's family-wise $\alpha=10^{-4}$ and $m$ = coordinates x estimators x problems (slow cases
   included).  Power: $\delta_{\rm group}=r\lVert g_{\rm group}\rVert/\sqrt{\rm size}$; $N$ from an
   independent pilot as $1.5((z_{1-\alpha/(2m)}+z_{1-\beta})s_{\max}/\delta)^2$, $\beta=10^{-3}$,
   and the test **asserts** $\mathrm{SE}\,(z_{1-\alpha/(2m)}+z_{1-\beta})\le\delta$.  Default tier:
   the cheaper families at $r=0.3$; the rest, and the 0/1 encoding, at $r=0.2$ under ``--run-slow``.
   Teeth: ARM with its hidden-layer sign flipped must be rejected.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from scipy.stats import norm

from estimators import registry
from estimators.model import Problem
from helpers import FlippedArm, designed_z_test
from reference.exact import exact
from reference.problems import build_problem

NAMES = registry.names()
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread (see conftest.py)

#: stride 2 with padding, then a 1x1 layer (channel mixing only)
CONV_SPEC = "conv:input=2x5x4,channels=3-2,kernels=3-1,strides=2-1,paddings=1-0,points=3,seed=4"


def _dense_problem(p: Problem) -> tuple[Problem, list[torch.Tensor | None]]:
    """The FC twin of ``p`` and, per conv layer, the Jacobian ``[n_out*n_in, |W|]`` of its dense matrix."""
    weights, biases, jacs = [], [], []
    for W, b, geom in zip(p.weights, p.biases, p.conv):
        if geom is None:
            weights.append(W), biases.append(b), jacs.append(None)
            continue
        ho, wo = geom.out_hw()

        def dense(kern, geom=geom):
            eye = torch.eye(geom.in_size, dtype=kern.dtype).reshape(-1, geom.channels, geom.height, geom.width)
            return torch.nn.functional.conv2d(eye, kern, None, geom.stride, geom.padding).reshape(geom.in_size, -1).T

        weights.append(dense(W))
        biases.append(b.repeat_interleave(ho * wo))
        jacs.append(torch.autograd.functional.jacobian(dense, W).reshape(weights[-1].numel(), W.numel()))
    return p.replace(weights=tuple(weights), biases=tuple(biases), conv=(None,) * p.depth), jacs


def _to_conv(p: Problem, jacs, grads_dense: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, name in enumerate(p.group_names):
        g = grads_dense[name]
        if k >= p.depth or jacs[k] is None:
            out[name] = g
            continue
        nd, c_out = jacs[k].shape[0], p.weights[k].shape[0]
        gw = g[:, :nd] @ jacs[k]
        gb = g[:, nd:].reshape(g.shape[0], c_out, -1).sum(-1)
        out[name] = torch.cat([gw, gb], dim=1)
    return out


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("name", NAMES)
def test_conv_estimate_equals_fc_twin(name, encoding):
    cls = registry.classes()[name]
    if encoding not in cls.encodings:
        pytest.skip(f"{name} does not support {encoding}")
    noise = "logistic" if "logistic" in cls.noises else cls.noises[0]
    p = build_problem(f"{CONV_SPEC},encoding={encoding},noise={noise}").to(dtype=torch.float64)
    dense, jacs = _dense_problem(p)
    est = registry.get(name)
    got = est.estimate(p, 3, torch.Generator().manual_seed(11))
    want = _to_conv(p, jacs, est.estimate(dense, 3, torch.Generator().manual_seed(11)))
    for g in p.group_names:
        scale = float(want[g].abs().max()) + 1e-300
        assert float((got[g] - want[g]).abs().max()) <= 1e-10 * scale, (name, g)


# ---- statistical unbiasedness on conv-tiny ---------------------------------------------------------------------

ALPHA, BETA = 1e-4, 1e-3
PILOT, MIN_N, CHUNK = 4096, 20_000, 2**15
DEFAULT = ["arm:shared=True", "disarm", "local-expectation", "rebar"]
REST = ["reinforce", "reinforce:baseline=ema", "reinforce-loo", "muprop", "arm"]
#: name -> (problem spec, relative bias size r, cap on N, slow, estimators)
PROBLEMS = {
    "conv-tiny-pm1": ("conv-tiny:seed=3", 0.3, 1_000_000, False, DEFAULT),
    "conv-tiny-pm1-rest": ("conv-tiny:seed=3", 0.2, 4_000_000, True, REST),
    "conv-tiny-01": ("conv-tiny:seed=3,encoding=01", 0.2, 8_000_000, True, DEFAULT + ["reinforce-loo", "muprop"]),
}


@lru_cache(maxsize=None)
def get_problem(key: str) -> Problem:
    return build_problem(PROBLEMS[key][0]).to(dtype=torch.float64)


@lru_cache(maxsize=None)
def get_exact(key: str) -> dict[str, torch.Tensor]:
    return exact(get_problem(key)).grads


@lru_cache(maxsize=None)
def z_values() -> tuple[float, float, int]:
    m = sum(len(PROBLEMS[k][4]) * sum(get_problem(k).group_sizes) for k in PROBLEMS)
    return float(norm.isf(ALPHA / (2 * m))), float(norm.isf(BETA)), m


def z_test(estimator, key: str, label: str) -> tuple[float, list[str]]:
    """This module's problems and design through :func:`helpers.designed_z_test`."""
    za, zb, m = z_values()
    return designed_z_test(estimator, get_problem(key), get_exact(key), r=PROBLEMS[key][1], cap=PROBLEMS[key][2],
                           za=za, zb=zb, m=m, label=label, key=key, pilot=PILOT, min_n=MIN_N, chunk=CHUNK)


CASES = [pytest.param(e, k, marks=[pytest.mark.stat] + ([pytest.mark.slow] if PROBLEMS[k][3] else []),
                      id=f"{e}-{k}") for k in PROBLEMS for e in PROBLEMS[k][4]]


@pytest.mark.parametrize("spec, key", CASES)
def test_unbiased_on_conv_tiny(spec, key):
    assert registry.get(spec).unbiased
    worst, bad = z_test(registry.get(spec), key, spec)
    assert not bad, "\n".join(bad)


def test_bonferroni_budget():
    za, _, m = z_values()
    assert m == sum(len(PROBLEMS[k][4]) * sum(get_problem(k).group_sizes) for k in PROBLEMS)
    assert m * 2 * norm.sf(za) == pytest.approx(ALPHA)


@pytest.mark.stat
def test_teeth_flipped_arm_is_rejected():
    worst, bad = z_test(FlippedArm(shared=True), "conv-tiny-pm1", "biased-FlippedArm")
    za, _, _ = z_values()
    assert bad and worst > za, f"max |z| = {worst:.2f} <= {za:.2f}: the test has no teeth"
