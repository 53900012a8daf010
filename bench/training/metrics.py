r"""Evaluation of a network as the true binary SBN: expected loss, 1-sample and k-sample accuracy, entropy.

For data points $b$ and $k$ independent sample paths $s$ (``sample_path(net, k, gen)``, vectorised
over ``[k, B, n]``), with head outputs $\eta_{s,b}$:

- expected loss $\hat{\mathcal L}=\frac1{Bk}\sum_{b,s}f(\eta_{s,b},y_b)$ — an unbiased estimate of
  the expected loss (plain average; the flip-mixed head of ``docs/estimators/psa.md#flip-mixed-head`` would
  lower its variance);
- 1-sample accuracy: the prediction of path $s=1$ alone (argmax of $\eta$; sign of $\eta$ for the
  logistic loss);
- k-sample ensemble accuracy: the argmax of the mean softmax $\frac1k\sum_s\mathrm{softmax}(\eta_{s,b})$;
  for the logistic loss the mean of $\sigma(\eta_{s,b})$ against ½ (the same rule, since a scalar
  head is the two-class softmax with logits $\pm\eta/2$);
- ensemble accuracy against the ensemble size $m$ (:func:`ensemble_accuracy`): the same rule over
  the first $m$ of $K=\max m$ paths, for every $m$ from one pass (a cumulative sum over paths);
- mean unit entropy: the Bernoulli entropy (nats) of $P(x=+1\mid a)=F(a)$ averaged over every unit
  and path.

:func:`batch_sums` returns device tensors (no host synchronisation) so the training loop can
accumulate them over an epoch; :func:`evaluate` walks a data set in chunks sized to a memory budget.
Cost per point: $k$ sampled forward passes.
"""

from __future__ import annotations

import torch

from estimators.model import Problem, sample_path

__all__ = ["with_data", "batch_sums", "evaluate", "ensemble_accuracy", "METRICS", "chunk_size"]

METRICS = ("loss", "acc_1", "acc_k", "entropy")


def with_data(net: Problem, X: torch.Tensor, y: torch.Tensor) -> Problem:
    """The same network on data ``(X, y)``, without re-validating parameters (like :meth:`Problem.subset`)."""
    out = object.__new__(type(net))
    out.__dict__.update(net.__dict__, X=X, y=y)
    return out


def _predict(net: Problem, eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1-sample, k-sample ensemble)`` predictions ``[B]`` from head outputs ``[k, B, C]``."""
    if net.loss == "logistic":
        one = torch.where(eta[0, :, 0] > 0, 1.0, -1.0)
        ens = torch.where(torch.sigmoid(eta[..., 0]).mean(0) > 0.5, 1.0, -1.0)
        return one.to(net.y.dtype), ens.to(net.y.dtype)
    return eta[0].argmax(-1), torch.softmax(eta, -1).mean(0).argmax(-1)


def batch_sums(net: Problem, k: int, generator: torch.Generator) -> torch.Tensor:
    """Sums over ``net``'s data points of ``(loss, acc_1, acc_k, entropy)``, ``k`` paths each: a tensor ``[4]``."""
    path = sample_path(net, k, generator)
    eta = net.head(net.enc(path.x[-1]))
    loss = net.loss_fn.value(eta, net.y).mean(0).sum()
    one, ens = _predict(net, eta)
    law = net.noise_law
    ent, units = 0.0, 0
    for a in path.a:
        p = law.cdf(a)
        h = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))
        ent = ent + h.sum() / k
        units += a[0].numel()
    ent = ent * net.batch_size / units  # mean unit entropy, times B so that it sums like the others
    return torch.stack([loss, (one == net.y).sum().to(loss.dtype), (ens == net.y).sum().to(loss.dtype),
                        torch.as_tensor(ent, dtype=loss.dtype, device=loss.device)])


def chunk_size(net: Problem, k: int, budget_bytes: int = 2**28) -> int:
    """Data points per evaluation chunk so that ``k`` paths' states and pre-activations fit ``budget_bytes``.

    On CUDA the budget grows to a quarter of the free device memory.  The per-point size comes from a
    one-point probe (states, uniforms, pre-activations and inputs of every layer), so any layer kind works.
    """
    if net.device.type == "cuda":
        budget_bytes = max(budget_bytes, torch.cuda.mem_get_info(net.device)[0] // 4)
    probe = sample_path(with_data(net, net.X[:1], net.y[:1]), 1, torch.Generator(device=net.device).manual_seed(0))
    units = sum(x.numel() for x in probe.x) + net.n_out
    per_point = 4 * k * units * torch.finfo(net.dtype).bits // 8
    return max(1, budget_bytes // per_point)


def evaluate(net: Problem, X: torch.Tensor, y: torch.Tensor, k: int, generator: torch.Generator,
             features=lambda X: X, chunk: int | None = None) -> dict[str, float]:
    """Mean ``loss, acc_1, acc_k, entropy`` over the data ``(features(X), y)`` with ``k`` paths per point."""
    chunk = chunk or chunk_size(net, k)
    total = torch.zeros(4, dtype=net.dtype, device=net.device)
    for start in range(0, X.shape[0], chunk):
        Xc = features(X[start:start + chunk])
        total += batch_sums(with_data(net, Xc, y[start:start + chunk].to(net.y.dtype)), k, generator)
    values = (total / X.shape[0]).tolist()
    return dict(zip(METRICS, values))


def ensemble_accuracy(net: Problem, X: torch.Tensor, y: torch.Tensor, sizes, generator: torch.Generator,
                      features=lambda X: X) -> dict[int, float]:
    """Accuracy of the ensemble of the first ``m`` paths for each ``m`` in ``sizes`` (one pass of ``max(sizes)``)."""
    sizes = sorted(set(int(m) for m in sizes))
    K = sizes[-1]
    chunk = chunk_size(net, K)
    idx = torch.as_tensor([m - 1 for m in sizes], device=net.device)
    correct = torch.zeros(len(sizes), dtype=net.dtype, device=net.device)
    for start in range(0, X.shape[0], chunk):
        part = with_data(net, features(X[start:start + chunk]), y[start:start + chunk].to(net.y.dtype))
        eta = part.head(part.enc(sample_path(part, K, generator).x[-1]))  # [K, B, C]
        if net.loss == "logistic":
            votes = torch.sigmoid(eta[..., 0]).cumsum(0)[idx] / idx[:, None].add(1)  # [len(sizes), B]
            pred = torch.where(votes > 0.5, 1.0, -1.0).to(part.y.dtype)
        else:
            pred = torch.softmax(eta, -1).cumsum(0)[idx].argmax(-1)
        correct += (pred == part.y).sum(-1).to(net.dtype)
    return dict(zip(sizes, (correct / X.shape[0]).tolist()))
