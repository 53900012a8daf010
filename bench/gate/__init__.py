"""``sbn-bench check``: the statistical regression gate for estimators.

- :mod:`bench.gate.design` — the statistical design (family-wise false-fail rate, asserted power)
  and the verdicts;
- :mod:`bench.gate.measure` — the seeded measurements on the gate's problems;
- :mod:`bench.gate.baseline` — the committed baseline (``baselines/ci.json``): reading, writing.

See ``docs/gate.md``.
"""
