"""The exact reference: transfer matrix == brute force == finite differences, closed forms, toys."""

from __future__ import annotations

import math

import pytest
import torch

from estimators.errors import InputError
from reference.exact import exact, exact_loss, memory_estimate
from reference.problems import build_problem, random_problem

CASES = [
    dict(widths="3-2-3", encoding=e, noise=n, loss=lo)
    for e in ("pm1", "01")
    for n in ("logistic", "gaussian", "uniform")
    for lo in ("logistic", "softmax")
] + [dict(widths="2-3-2-2-3", encoding="pm1", noise="logistic", loss="softmax", classes=4),
     dict(widths="2-4-3", encoding="01", noise="gaussian", loss="squared", classes=2)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_transfer_matches_brute_force(case):
    p = random_problem(points=7, seed=3, scale=1.3, **case)
    t, b = exact(p, "transfer"), exact(p, "brute")
    assert t.loss == pytest.approx(b.loss, rel=1e-12, abs=1e-14)
    for name in p.group_names:
        torch.testing.assert_close(t.grads[name], b.grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_gradient_matches_central_finite_differences(case):
    p = random_problem(points=5, seed=1, **case)
    ex = exact(p)
    flat = [g.clone() for g in p.group_params()]
    h = 1e-6
    for gi, name in enumerate(p.group_names):
        for j in range(flat[gi].numel()):
            plus = [f.clone() for f in flat]
            minus = [f.clone() for f in flat]
            plus[gi][j] += h
            minus[gi][j] -= h
            fd = (exact_loss(p.with_group_params(plus)) - exact_loss(p.with_group_params(minus))) / (2 * h)
            assert float(fd) == pytest.approx(float(ex.grads[name][j]), abs=2e-7, rel=1e-5)


def test_gradcheck_through_transfer_matrix():
    p = random_problem(widths="2-3-2", points=3, seed=5, encoding="01")
    leaves = [g.clone().requires_grad_(True) for g in p.group_params()]
    torch.autograd.gradcheck(lambda *ps: exact_loss(p.with_group_params(ps)), leaves)


def test_constant_loss_gives_zero_gradient_for_hidden_layers():
    p = random_problem(widths="3-3-3", points=6, seed=2)
    p = p.replace(head_weight=torch.zeros_like(p.head_weight))  # loss no longer depends on the states
    ex = exact(p)
    for name in p.group_names[:-1]:
        assert float(ex.grads[name].abs().max()) < 1e-15  # zero up to the rounding of sum(P) = 1


def test_one_layer_closed_form():
    """One unit, logistic loss on eta = w x + c: dL/da = sigma'(a) (f(+1) - f(-1))."""
    p = random_problem(widths="1-1", points=1, seed=0)
    a = float(p.preact(0, p.X)[0, 0])
    w, c, y = float(p.head_weight[0, 0]), float(p.head_bias[0]), float(p.y[0])
    f = lambda x: math.log1p(math.exp(-y * (w * x + c)))  # noqa: E731
    s = 1 / (1 + math.exp(-a))
    expected_loss = s * f(1) + (1 - s) * f(-1)
    ex = exact(p)
    assert ex.loss == pytest.approx(expected_loss, rel=1e-13)
    x0 = float(p.X[0, 0])
    dlda = s * (1 - s) * (f(1) - f(-1))
    torch.testing.assert_close(ex.grads["layer0"], torch.tensor([dlda * x0, dlda], dtype=torch.float64))


def test_literature_toys_exact_answers():
    liu = exact(build_problem("toy-liu3"))
    assert liu.loss == pytest.approx(0.7605, abs=1e-12)
    assert float(liu.grads["layer0"][-3:].sum()) == pytest.approx(-0.045, abs=1e-12)  # shared logit
    arm = exact(build_problem("toy-arm4"))
    torch.testing.assert_close(arm.grads["layer0"][-4:], torch.tensor([0.005, 0.0005, -0.0005, -0.005], dtype=torch.float64))
    relax = exact(build_problem("toy-relax1"))
    assert float(relax.grads["layer0"][-1]) == pytest.approx(5.0e-4, abs=1e-15)
    psa = exact(build_problem("toy-psa1"))
    assert float(psa.grads["layer0"][-1]) == pytest.approx(-0.23593, abs=5e-6)


def test_memory_guard_refuses_with_one_line():
    p = random_problem(widths="2-14-14", points=4)
    with pytest.raises(InputError, match=r"widths 2-14-14 needs about .* GiB") as info:
        exact(p)
    assert "\n" not in str(info.value)
    fixed, per_point = memory_estimate(p)
    assert fixed > 4 * 2**30


def test_chunking_over_points_is_exact():
    p = random_problem(widths="2-6-6", points=40, seed=4)
    fixed, per_point = memory_estimate(p)
    whole = exact(p)
    chunked = exact(p, budget=fixed + 3 * per_point)  # three points per chunk
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-13)
    torch.testing.assert_close(chunked.flat, whole.flat, rtol=1e-12, atol=1e-15)


def test_widths_up_to_12_fit_the_default_budget():
    p = random_problem(widths="2-12-12", points=8, seed=0)
    ex = exact(p)
    assert math.isfinite(ex.loss) and torch.isfinite(ex.flat).all()
