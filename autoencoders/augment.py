"""Batch augmentations applied inside training steps (on the device, a new draw per image).

``Augment`` is the policy a model is given (its ``augment:`` argument); the functions are its
parts. Measured on a batch of 100 MNIST images on the 2-core CPU (BENCHMARKS.md, issue 29),
this policy is faster than ``kornia.augmentation``'s equivalent, so it stays ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def random_shift(x: Tensor, max_shift: int) -> Tensor:
    """Translates each image by its own random whole-pixel offset in ``[-max_shift, max_shift]``
    along each axis, filling with zeros (black, the MNIST background)."""
    n, _, height, width = x.shape
    offsets = torch.randint(-max_shift, max_shift + 1, (n, 2), device=x.device).float()
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * offsets[:, 0] / width
    theta[:, 1, 2] = -2 * offsets[:, 1] / height
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def random_rotate_scale(x: Tensor, max_degrees: float, max_scale: float) -> Tensor:
    """Rotates each image about its centre by its own random angle in ``[-max_degrees,
    max_degrees]`` and scales it by a random factor in ``[1 - max_scale, 1 + max_scale]``
    (bilinear, zeros outside)."""
    n = x.shape[0]
    angle = torch.deg2rad((2 * torch.rand(n, device=x.device) - 1) * max_degrees)
    scale = 1 + (2 * torch.rand(n, device=x.device) - 1) * max_scale
    # affine_grid maps output coordinates to input ones: the inverse rotation and scale.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(x: Tensor) -> Tensor:
    """Mirrors a random half of the images left to right (for clothes, not for digits)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class Augment(nn.Module):
    """Random rotation and scaling, then a random whole-pixel shift, then a random mirror: a new
    draw per image and call. Each part is off at its default, so ``Augment()`` is the identity.

    Args:
        max_shift: translate by up to this many pixels along each axis (zeros fill in).
        max_degrees: rotate by up to this many degrees about the centre.
        max_scale: scale by a factor in ``[1 - max_scale, 1 + max_scale]``.
        hflip: mirror a random half of the images left to right (clothes, not digits).
    """

    def __init__(
        self,
        max_shift: int = 0,
        max_degrees: float = 0.0,
        max_scale: float = 0.0,
        hflip: bool = False,
    ) -> None:
        super().__init__()
        if max_shift < 0 or max_degrees < 0 or not 0 <= max_scale < 1:
            raise ValueError(
                f"Augment needs max_shift >= 0, max_degrees >= 0 and 0 <= max_scale < 1; got "
                f"{max_shift}, {max_degrees}, {max_scale}"
            )
        self.max_shift, self.max_degrees = max_shift, max_degrees
        self.max_scale, self.hflip = max_scale, hflip

    def forward(self, x: Tensor) -> Tensor:
        if self.max_degrees > 0 or self.max_scale > 0:
            x = random_rotate_scale(x, self.max_degrees, self.max_scale)
        if self.max_shift > 0:
            x = random_shift(x, self.max_shift)
        if self.hflip:
            x = random_hflip(x)
        return x
