"""PSA's hidden-layer flip-difference backward kernels, one module per layer kind and device.

- :mod:`estimators.kernels.psa_fc`: fully connected layers — the eager (exact) kernel and the
  compiled pair form with its exact range and automatic choice;
- :mod:`estimators.kernels.psa_fc_cuda`: the Triton kernel for CUDA;
- :mod:`estimators.kernels.psa_conv`: convolutional layers — the unfold reference and the ratio
  convolution;
- :mod:`estimators.kernels.psa_conv_fused`: convolutional rows through the FC pair kernel, and the
  per-layer automatic choice.

Kernels depend on the model's noise laws only, never on an estimator.  See
``docs/estimators/psa.md#kernels``.
"""
