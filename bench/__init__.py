"""sbn-bench: scoring engine, sweeps and executors, results store, timing harness and the CLI."""

__version__ = "0.1.0"
