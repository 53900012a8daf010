"""Training configurations: a frozen :class:`TrainConfig` built from defaults < recipe < flags, and the recipes.

=====================  ===========================================================================
``cifar-psa2020``      the PSA paper's CIFAR-10 protocol (``docs/protocols.md#cifar``): CIFAR_S1 (``cifar10-s1``),
                       flip-and-crop augmentation (4-pixel padding), batch 64, SGD with Nesterov
                       momentum 0.9, gradients clipped to ±1e3, a 10-trial learning-rate search of
                       5-epoch runs over log10 lr in [-6, 0], 10 samples for the ensemble and loss
                       estimates, 2000 epochs, the paper's eight methods.  For a GPU and CIFAR-10.
``small``              the same methods and protocol on CPU in minutes: the generated 12x12 glyph
                       images (``shapes``), a 144-64-64-10 network, 1-pixel crop padding, 30 epochs,
                       a 5-trial search of 2-epoch runs.
``psa2020-checkpoints``  ``docs/protocols.md#checkpoints``: the 2-5-5-5 network on the PSA 2-D data, REINFORCE,
heavy-ball
                       momentum 0.9, lr 0.03, batch 10, 2000 epochs, float64, checkpoints after epochs
                       1, 100, 200, 500, 1000, 1500, 2000 (score them with ``sbn-bench run
                       --problem-file``).
=====================  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import ConfigMixin
from bench.training.loop import OPTIMIZERS
from estimators import inputs
from estimators.errors import InputError

__all__ = ["TrainConfig", "RECIPES", "PAPER_METHODS"]

#: the eight methods of the PSA paper's CIFAR-10 experiment (``docs/protocols.md#cifar``), in its order.
PAPER_METHODS = ("psa", "st", "concrete:tau=0.5", "tanh", "reinforce", "adf", "local-reparam", "st-hardtanh")


#: the widest padding of the flip-and-crop augmentation (pixels per side; images here are at most 32 wide)
MAX_CROP_PAD = 32


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    problem: str
    estimators: tuple[str, ...]
    epochs: int
    optimizer: str = "sgd"
    lr: float | None = None  # None: search
    lr_search_trials: int = 10
    lr_search_epochs: int = 5
    lr_bounds: tuple[float, float] = (-6.0, 0.0)  # log10 lr
    batch: int = 64
    samples: int = 10
    momentum: float = 0.9
    clip: float = 1e3
    augment: bool = False
    crop_pad: int = 4
    checkpoint_epochs: tuple[int, ...] = ()
    checkpoint_points: int = 1000  # training points stored in each checkpoint file
    ensemble_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)  # final test accuracy vs samples
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    name: str = "train"

    def __post_init__(self) -> None:
        for key in ("estimators", "lr_bounds", "checkpoint_epochs", "ensemble_sizes"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        self.validate()

    def validate(self) -> None:
        positive = dict(epochs=self.epochs, lr_search_trials=self.lr_search_trials, batch=self.batch,
                        lr_search_epochs=self.lr_search_epochs, samples=self.samples,
                        checkpoint_points=self.checkpoint_points)
        for key, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{key.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.samples > 10**5 or self.epochs > 10**7:  # beyond these a run exhausts memory or never ends
            raise InputError(f"samples ({self.samples}) must be at most 100000 and epochs ({self.epochs}) at most 1e7")
        inputs.seed(self.seed)
        inputs.safe_name(self.name, "run name")
        if not self.estimators:
            raise InputError("no estimators to train")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr is not None:
            inputs.positive_finite(self.lr, "the learning rate", maximum=1e6)  # 1e300 overflowed the optimiser
        if len(self.lr_bounds) != 2 or not self.lr_bounds[0] < self.lr_bounds[1]:
            raise InputError(f"lr bounds must be two numbers lo < hi (log10 lr), got {list(self.lr_bounds)}")
        if not self.clip > 0 or not 0 <= self.momentum < 1 or not 0 <= self.crop_pad <= MAX_CROP_PAD:
            raise InputError(f"need clip > 0, 0 <= momentum < 1 and crop padding from 0 to {MAX_CROP_PAD} pixels")
        if any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 10**5 for m in self.ensemble_sizes):
            raise InputError(f"ensemble sizes must be integers from 1 to 100000, got {list(self.ensemble_sizes)}")
        inputs.no_repeats(self.checkpoint_epochs, "the checkpoint epochs", "epoch")
        bad = [e for e in self.checkpoint_epochs if not 0 <= e <= self.epochs]
        if bad:
            raise InputError(f"checkpoint epoch {bad[0]} is outside 0..{self.epochs}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise InputError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"unknown dtype {self.dtype!r}; use float32 or float64")



#: training recipes by name (``sbn-bench train --recipe NAME``): TrainConfig fields
RECIPES: dict[str, dict] = {
    # PSA with the fastest kernel available on the device (Triton / compiled on CUDA): the eager conv kernel is
    # far too slow for CIFAR_S1.
    "cifar-psa2020": dict(problem="cifar10-s1", estimators=tuple("psa:kernel=auto" if m == "psa" else m
                                                                 for m in PAPER_METHODS), epochs=2000, optimizer="sgd",
                          lr_search_trials=10, lr_search_epochs=5, batch=64, samples=10, augment=True, crop_pad=4,
                          device="cuda", dtype="float32", name="cifar-psa2020"),
    "small": dict(problem="shapes:size=12,train=2000,val=500,test=1000,widths=64-64", estimators=PAPER_METHODS,
                  epochs=30, optimizer="sgd", lr_search_trials=5, lr_search_epochs=2, batch=64, samples=10,
                  augment=True, crop_pad=1, name="small"),
    "psa2020-checkpoints": dict(problem="psa2d", estimators=("reinforce",), epochs=2000, optimizer="momentum",
                                lr=0.03, batch=10, samples=10, dtype="float64",
                                checkpoint_epochs=(1, 100, 200, 500, 1000, 1500, 2000), name="psa2020-checkpoints"),
}
