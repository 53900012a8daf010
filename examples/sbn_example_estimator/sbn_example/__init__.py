"""An example third-party estimator package for sbn-bench (registered by entry point)."""
