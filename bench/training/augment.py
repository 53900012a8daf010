r"""Training-time image augmentation, vectorised over the batch: random horizontal flip and random crop.

For a batch of images ``[B, C*H*W]`` (flat) or ``[B, C, H, W]`` with geometry ``(C, H, W)``: each image is mirrored
left-right with probability ½, zero-padded by ``pad`` pixels on every side and cropped back to
``H x W`` at an offset drawn uniformly from ``{0..2*pad}^2`` (``docs/protocols.md#cifar``: flip, then a 32x32
crop after
4-pixel zero padding).  All randomness comes from the explicit ``generator``; one gather does the
crops of the whole batch.  Cost: O(B·C·H·W) memory traffic, no Python loop over images.
"""

from __future__ import annotations

import torch

__all__ = ["flip_crop"]


def flip_crop(x: torch.Tensor, shape: tuple[int, int, int], pad: int, generator: torch.Generator) -> torch.Tensor:
    """Randomly flipped and crop-shifted copies of the images ``x`` (same shape and dtype)."""
    B = x.shape[0]
    C, H, W = shape
    img = x.reshape(B, C, H, W)
    flip = torch.rand(B, generator=generator, device=x.device) < 0.5
    img = torch.where(flip[:, None, None, None], img.flip(-1), img)
    if pad > 0:
        padded = torch.nn.functional.pad(img, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # [B, H+2p, W+2p, C]
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator, device=x.device)
        rows = dy[:, None] + torch.arange(H, device=x.device)
        cols = dx[:, None] + torch.arange(W, device=x.device)
        b = torch.arange(B, device=x.device)[:, None, None]
        img = padded[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [B, C, H, W]
    return img.reshape(x.shape)
