"""One module per estimator family; every module here is imported by the registry's discovery.

A module defines one or more :class:`~estimators.base.Estimator` subclasses decorated with
:func:`~estimators.registry.register`.  Dropping a new module here is the whole change that adds an
estimator: ``sbn-bench list`` shows it and the contract and statistical tests parametrise over it.
Modules hold estimators only; shared model code lives in :mod:`estimators.model`, kernels in
:mod:`estimators.kernels`.  See ``docs/estimators/index.md``.
"""
