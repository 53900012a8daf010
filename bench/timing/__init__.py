"""``sbn-bench time``: throughput of the performance-critical kernels, on CPU and CUDA.

- :mod:`bench.timing.measure` — interleaved, warm, repeated measurements (median, IQR, clock);
- :mod:`bench.timing.config` — the timing configuration and the shared context (peaks, notes);
- :mod:`bench.timing.peaks` — measured and datasheet peaks of the device;
- :mod:`bench.timing.kernels`, :mod:`bench.timing.psa`, :mod:`bench.timing.conv` — the suites
  (sampling, estimator draws, exact reference; PSA's FC backward and memory; conv layers);
- :mod:`bench.timing.targets` — the performance targets' verdicts and the printed tables;
- :mod:`bench.timing.harness` — one timing run, stored; :mod:`bench.timing.gpu_suite` — the one
  prepared check for a GPU machine; :mod:`bench.timing.perf_ab` — A/B of the pytest-benchmark
  suites of two commits in one job.

See ``docs/timing.md``.
"""
