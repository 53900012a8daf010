r"""The SBN model and the :class:`Problem` container — the one definition every package uses.

A fully connected layered SBN with real input $x^0$, $L$ stochastic layers and a linear head:
$$a^k=W^k\,\mathrm{enc}(x^{k-1})+b^k,\qquad x^k=\operatorname{sign}(a^k-Z^k),\qquad
\eta=W^{L+1}\mathrm{enc}(x^L)+b^{L+1},$$
where $Z^k$ is i.i.d. noise (:mod:`estimators.model.noise`) and $\mathrm{enc}$ is the encoding the next
layer sees: ``pm1`` ($x\in\{-1,+1\}$, the default) or ``01`` ($(x+1)/2$, the sigmoid-belief-network
convention; ``docs/model.md#encodings``).  The real input $x^0$ is never encoded.  States are always *carried* as
$\pm1$ tensors; :meth:`Problem.enc` converts them where a layer reads them.

Layers are fully connected (``W^k [n_k, n_{k-1}]``) or convolutional (``W^k [C_out, C_in, K, K]``
with a per-channel bias and a :class:`ConvGeom` giving the input map, kernel, stride and zero
padding; ``docs/estimators/psa.md#convolutional``).  Every layer's states are carried flattened (channel-major
``C*H*W``), so all
code that samples, enumerates or scores a network is the same for both kinds; only
:meth:`Problem.preact`, :meth:`Problem.input_grad`, :meth:`Problem.param_grad` and
:meth:`Problem.moment_preact` look at the kind.

Shapes: data ``X [B, n0]``; states and pre-activations carry a leading draws dimension,
``[D, B, n_k]``.  Parameter groups: one per stochastic layer (``W`` flattened row-major, then
``b``), named ``layer0 .. layer{L-1}`` as in the PSA paper's figures, then ``head``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InputError
from .losses import Loss, get_loss
from .noise import Noise, get_noise

__all__ = ["ENCODINGS", "ConvGeom", "Problem", "layer_grad"]

ENCODINGS = ("pm1", "01")


@dataclass(frozen=True)
class ConvGeom:
    """Geometry of a convolutional layer: its input map ``[channels, height, width]``, kernel, stride, padding."""

    channels: int
    height: int
    width: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def in_size(self) -> int:
        return self.channels * self.height * self.width

    def out_hw(self) -> tuple[int, int]:
        k, s, p = self.kernel, self.stride, self.padding
        return (self.height + 2 * p - k) // s + 1, (self.width + 2 * p - k) // s + 1

    def output_padding(self) -> tuple[int, int]:
        """What ``conv_transpose2d`` needs to give back exactly ``height x width``."""
        ho, wo = self.out_hw()
        k, s, p = self.kernel, self.stride, self.padding
        return self.height - ((ho - 1) * s - 2 * p + k), self.width - ((wo - 1) * s - 2 * p + k)

    def as_array(self) -> list[int]:
        return [self.channels, self.height, self.width, self.kernel, self.stride, self.padding]


@dataclass(frozen=True, eq=False)
class Problem:
    """Network + parameters + data + loss + encoding + noise.

    Attributes:
        weights: ``W^k`` shaped ``[n_k, n_{k-1}]`` for ``k = 1..L``.
        biases: ``b^k`` shaped ``[n_k]``.
        head_weight: ``[C, n_L]``; head_bias: ``[C]``.
        X: inputs ``[B, n0]``; y: labels ``[B]`` (or targets ``[B, C]`` for the squared loss).
        encoding: ``"pm1"`` or ``"01"``; noise: ``"logistic"``, ``"gaussian"`` or ``"uniform"``;
        loss: ``"logistic"``, ``"softmax"`` or ``"squared"``.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    encoding: str = "pm1"
    noise: str = "logistic"
    loss: str = "logistic"
    name: str = "problem"
    conv: tuple[ConvGeom | None, ...] = ()

    # ---- construction and validation -------------------------------------------------------
    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "biases", tuple(self.biases))
        conv = tuple(self.conv) if self.conv else (None,) * len(self.weights)
        object.__setattr__(self, "conv", conv)
        self.validate()

    def validate(self) -> None:
        """Check shapes, finiteness, names and labels; raise :class:`InputError` naming the array."""
        if self.encoding not in ENCODINGS:
            raise InputError(f"unknown encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}")
        get_noise(self.noise)
        loss = get_loss(self.loss)
        if len(self.weights) == 0:
            raise InputError("a problem needs at least one stochastic layer (array 'W1')")
        if len(self.weights) != len(self.biases):
            raise InputError(f"{len(self.weights)} weight arrays but {len(self.biases)} bias arrays")
        if self.X.dim() != 2:
            raise InputError(f"array 'X' must be [B, n0], got shape {list(self.X.shape)}")
        arrays = {"X": self.X, "W_head": self.head_weight, "b_head": self.head_bias, "y": self.y}
        if len(self.conv) != len(self.weights):
            raise InputError(f"{len(self.conv)} layer geometries for {len(self.weights)} layers")
        n_prev = self.X.shape[1]
        for k, (w, b, geom) in enumerate(zip(self.weights, self.biases, self.conv), start=1):
            arrays[f"W{k}"], arrays[f"b{k}"] = w, b
            if geom is None:
                if w.dim() != 2 or w.shape[1] != n_prev:
                    raise InputError(f"array 'W{k}' must be [n{k}, {n_prev}], got shape {list(w.shape)}")
            else:
                if geom.in_size != n_prev:
                    raise InputError(f"array 'conv{k}': input map {geom.as_array()[:3]} has {geom.in_size} "
                                     f"units, the layer below has {n_prev}")
                if geom.kernel < 1 or geom.stride < 1 or geom.padding < 0 or min(geom.out_hw()) < 1:
                    raise InputError(f"array 'conv{k}': kernel/stride/padding {geom.as_array()[3:]} do not fit the map")
                if w.dim() != 4 or w.shape[1] != geom.channels or w.shape[2:] != (geom.kernel, geom.kernel):
                    raise InputError(f"array 'W{k}' must be [C_out, {geom.channels}, {geom.kernel}, {geom.kernel}], "
                                     f"got shape {list(w.shape)}")
            if b.shape != (w.shape[0],):
                raise InputError(f"array 'b{k}' must be [{w.shape[0]}], got shape {list(b.shape)}")
            n_prev = self.layer_width(k - 1)
        if self.head_weight.dim() != 2 or self.head_weight.shape[1] != n_prev:
            raise InputError(f"array 'W_head' must be [C, {n_prev}], got shape {list(self.head_weight.shape)}")
        if self.head_bias.shape != (self.head_weight.shape[0],):
            raise InputError(
                f"array 'b_head' must be [{self.head_weight.shape[0]}], got shape {list(self.head_bias.shape)}"
            )
        if self.y.shape[0] != self.X.shape[0]:
            raise InputError(f"array 'y' has {self.y.shape[0]} rows but 'X' has {self.X.shape[0]}")
        for key, arr in arrays.items():
            if arr.is_floating_point() and not bool(torch.isfinite(arr).all()):
                raise InputError(f"array {key!r} contains NaN or infinite values")
        loss.check_labels(self.y, self.head_weight.shape[0])

    def replace(self, **changes) -> "Problem":
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of everything that determines the problem's expected loss and
        gradient: the encoding, noise and loss, each layer's geometry, and every array's dtype, shape
        and bytes (``name`` is not part of it).  Results are keyed by it, so a problem file overwritten
        with other weights is recomputed, never matched to the old file's results by its path."""
        h = hashlib.sha256(f"{self.encoding}|{self.noise}|{self.loss}".encode())
        arrays = [*self.weights, *self.biases, self.head_weight, self.head_bias, self.X, self.y]
        for geom in self.conv:
            h.update(repr(geom.as_array() if geom is not None else None).encode())
        for a in arrays:
            t = a.detach().to("cpu").contiguous()
            h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(memoryview(t.numpy()).cast("B"))  # no copy of the array
        return h.hexdigest()[:16]

    # ---- sizes and groups --------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of stochastic layers $L$."""
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        """``(n0, n1, ..., nL)``: units per layer (``C*H*W`` for a convolutional layer)."""
        return (self.X.shape[1],) + tuple(self.layer_width(k) for k in range(self.depth))

    def layer_width(self, k: int) -> int:
        """Units of stochastic layer ``k`` (0-based)."""
        geom = self.conv[k]
        if geom is None:
            return self.weights[k].shape[0]
        ho, wo = geom.out_hw()
        return self.weights[k].shape[0] * ho * wo

    @property
    def is_conv(self) -> bool:
        return any(g is not None for g in self.conv)

    @property
    def n_out(self) -> int:
        return self.head_weight.shape[0]

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.head_weight.dtype

    @property
    def device(self) -> torch.device:
        return self.head_weight.device

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(f"layer{k}" for k in range(self.depth)) + ("head",)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        sizes = [w.numel() + b.numel() for w, b in zip(self.weights, self.biases)]
        return tuple(sizes) + (self.head_weight.numel() + self.head_bias.numel(),)

    @property
    def noise_law(self) -> Noise:
        return get_noise(self.noise)

    @property
    def loss_fn(self) -> Loss:
        return get_loss(self.loss)

    @property
    def flip_scale(self) -> float:
        r"""Change of a next-layer pre-activation per unit of $W_{ji}x_i$ when unit $i$ flips: 2 (pm1) or 1 (01)."""
        return 2.0 if self.encoding == "pm1" else 1.0

    @property
    def mean_slope(self) -> float:
        r"""$\frac{d}{da}\mathbb E[\mathrm{enc}(x)\mid a]/F'(a)$: 2 in pm1, 1 in 01 (``docs/model.md#encodings``)."""
        return self.flip_scale

    # ---- parameters as groups ----------------------------------------------------------------
    def group_params(self) -> list[torch.Tensor]:
        """Flat parameter vector per group (weights row-major, then bias)."""
        pairs = list(zip(self.weights, self.biases)) + [(self.head_weight, self.head_bias)]
        return [torch.cat([w.reshape(-1), b]) for w, b in pairs]

    def with_group_params(self, flat: Sequence[torch.Tensor], validate: bool = True) -> "Problem":
        """A copy with parameters taken from per-group flat vectors (the inverse of :meth:`group_params`).

        ``validate=False`` skips the finiteness and label checks (the shapes are still checked): for
        inner loops such as training steps, which watch for divergence themselves.
        """
        shapes = [(w.shape, b.shape) for w, b in zip(self.weights, self.biases)]
        shapes.append((self.head_weight.shape, self.head_bias.shape))
        if len(flat) != len(shapes):
            raise InputError(f"expected {len(shapes)} parameter groups, got {len(flat)}")
        out = []
        for v, (ws, bs) in zip(flat, shapes):
            nw = ws.numel()
            if v.numel() != nw + bs.numel():
                raise InputError(f"parameter group has {v.numel()} entries, expected {nw + bs.numel()}")
            out.append((v[:nw].reshape(ws), v[nw:].reshape(bs)))
        changes = dict(weights=tuple(w for w, _ in out[:-1]), biases=tuple(b for _, b in out[:-1]),
                       head_weight=out[-1][0], head_bias=out[-1][1])
        if validate:
            return self.replace(**changes)
        fast = object.__new__(Problem)
        fast.__dict__.update(self.__dict__, **changes)
        return fast

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> "Problem":
        """Move parameters and data; integer labels keep their dtype."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return self.replace(
            weights=tuple(map(mv, self.weights)),
            biases=tuple(map(mv, self.biases)),
            head_weight=mv(self.head_weight),
            head_bias=mv(self.head_bias),
            X=mv(self.X),
            y=mv(self.y),
        )

    def subset(self, index: torch.Tensor | slice) -> "Problem":
        """The same network on a subset of the data points (rows of valid data need no re-validation)."""
        out = object.__new__(Problem)
        out.__dict__.update(self.__dict__, X=self.X[index], y=self.y[index])
        return out

    # ---- forward pieces ----------------------------------------------------------------------
    def enc(self, x_pm: torch.Tensor) -> torch.Tensor:
        """What the next layer reads of $\\pm1$ (or relaxed $[-1,1]$) states."""
        return x_pm if self.encoding == "pm1" else (x_pm + 1) * 0.5

    def preact(self, k: int, inp: torch.Tensor) -> torch.Tensor:
        """$a^{k+1}=W^{k+1}\\,\\mathrm{inp}+b^{k+1}$ for layer index ``k`` (0-based) of an already encoded input."""
        geom = self.conv[k]
        if geom is None:
            return torch.nn.functional.linear(inp, self.weights[k], self.biases[k])
        lead = inp.shape[:-1]
        x = inp.reshape(-1, geom.channels, geom.height, geom.width)
        a = torch.nn.functional.conv2d(x, self.weights[k], self.biases[k], geom.stride, geom.padding)
        return a.reshape(*lead, -1)

    def input_grad(self, k: int, delta: torch.Tensor) -> torch.Tensor:
        """$\\partial f/\\partial\\,\\mathrm{inp}$ of layer ``k`` from $\\delta=\\partial f/\\partial a$ (``delta @ W``, or a transposed convolution)."""
        geom = self.conv[k]
        if geom is None:
            return delta @ self.weights[k]
        lead = delta.shape[:-1]
        ho, wo = geom.out_hw()
        d = delta.reshape(-1, self.weights[k].shape[0], ho, wo)
        g = torch.nn.functional.conv_transpose2d(d, self.weights[k], None, geom.stride, geom.padding,
                                                 geom.output_padding())
        return g.reshape(*lead, -1)

    def param_grad(self, k: int, delta: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """Per-draw group gradient ``[D, size]`` of layer ``k`` from ``delta [D,B,n_k]`` and its input ``[D,B,n_{k-1}]``.

        The batch mean of $\\delta\\,\\mathrm{inp}^\\top$ (weights) and of $\\delta$ (bias); for a convolution the
        weight part is the per-draw convolution weight gradient (unfold + batched product), the bias part
        sums over positions.
        """
        geom = self.conv[k]
        if geom is None:
            return layer_grad(delta, inp)
        D, B = delta.shape[:2]
        c_out = self.weights[k].shape[0]
        x = inp.expand(D, *inp.shape[1:]).reshape(D * B, geom.channels, geom.height, geom.width)
        cols = torch.nn.functional.unfold(x, geom.kernel, padding=geom.padding, stride=geom.stride)  # [DB, CKK, P]
        P = cols.shape[-1]
        d = delta.reshape(D, B, c_out, P).permute(0, 2, 1, 3).reshape(D, c_out, B * P)
        cols = cols.reshape(D, B, -1, P).permute(0, 1, 3, 2).reshape(D, B * P, -1)
        gw = torch.bmm(d, cols)
        return torch.cat([gw.flatten(1), d.sum(2)], dim=1) / B

    def moment_preact(self, k: int, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of $a^{k+1}$ for independent inputs of the given moments: $(Wm+b,\\ (W\\odot W)v)$."""
        geom = self.conv[k]
        W = self.weights[k]
        if geom is None:
            return mean @ W.T + self.biases[k], var @ (W * W).T
        lead = mean.shape[:-1]
        shape = (-1, geom.channels, geom.height, geom.width)
        conv = torch.nn.functional.conv2d
        mu = conv(mean.reshape(shape), W, self.biases[k], geom.stride, geom.padding)
        s2 = conv(var.reshape(shape), W * W, None, geom.stride, geom.padding)
        return mu.reshape(*lead, -1), s2.reshape(*lead, -1)

    def head(self, inp: torch.Tensor) -> torch.Tensor:
        """$\\eta$ of an already encoded last-layer input ``[..., B, n_L]`` -> ``[..., B, C]``."""
        return torch.nn.functional.linear(inp, self.head_weight, self.head_bias)

    def loss_of(self, xL_pm: torch.Tensor) -> torch.Tensor:
        """Per-point loss ``[..., B]`` of last-layer $\\pm1$ states."""
        return self.loss_fn.value(self.head(self.enc(xL_pm)), self.y)


def layer_grad(delta: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """Per-draw group gradient of a layer from $\\delta=\\partial f/\\partial a$ ``[D,B,n]`` and its input ``[D,B,m]``.

    Returns ``[D, n*m + n]``: $\\frac1B\\sum_b\\delta_b\\,\\mathrm{inp}_b^\\top$ flattened, then $\\frac1B\\sum_b\\delta_b$.
    """
    D, B = delta.shape[:2]
    if inp.dim() == 2 or inp.stride(0) == 0:  # the same input in every draw (the data): one GEMM
        x = inp if inp.dim() == 2 else inp[0]
        gw = (delta.transpose(1, 2).reshape(-1, B) @ x).reshape(D, -1)
    else:
        gw = torch.bmm(delta.transpose(1, 2), inp).flatten(1)
    return torch.cat([gw, delta.sum(1)], dim=1) / B
