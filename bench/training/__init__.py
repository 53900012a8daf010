"""``sbn-bench train``: training SBNs with each estimator's gradients (the PSA paper's CIFAR protocol).

- :mod:`bench.training.recipes` — training configurations by name (``--recipe``);
- :mod:`bench.training.setups` — data set plus initialised network by spec (``psa2d``, ``shapes``,
  ``cifar10-s1``, ...);
- :mod:`bench.training.loop` — the training loop (optimisers, schedules, evaluation);
- :mod:`bench.training.metrics` — expected loss and accuracy on data splits;
- :mod:`bench.training.augment` — flips and crops; :mod:`bench.training.lr_search` — the
  learning-rate search;
- :mod:`bench.training.plan` — training tasks in the results store (resumable) and checkpoints.

See ``docs/protocols.md#cifar``.
"""
