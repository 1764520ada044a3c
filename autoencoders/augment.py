"""Batch augmentations applied inside training steps (on the device, a new draw per image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur


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


def random_elastic(x: Tensor, alpha: float, sigma: float) -> Tensor:
    """Elastic distortion (Simard et al. 2003), a new field per image: every pixel moves by a
    random displacement, uniform in ``[-1, 1]`` per axis, smoothed by a Gaussian of std
    ``sigma`` pixels and scaled by ``alpha`` pixels (bilinear, zeros outside). Simard et al.
    used ``alpha=34, sigma=4`` on MNIST; torchvision's ``ElasticTransform`` does the same with
    one field for the whole batch."""
    n, _, height, width = x.shape
    field = 2 * torch.rand(n, 2, height, width, device=x.device) - 1
    kernel = 2 * int(3 * sigma) + 1
    field = alpha * gaussian_blur(field, [kernel, kernel], [sigma, sigma])
    # grid_sample reads (x, y) in [-1, 1] coordinates: a pixel is 2 / size of them.
    scale = torch.tensor([2 / width, 2 / height], device=x.device)
    identity = torch.eye(2, 3, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(identity, list(x.shape), align_corners=False)
    grid = grid + field.permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(x: Tensor) -> Tensor:
    """Mirrors a random half of the images left to right (for clothes, not for digits)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_cutout(x: Tensor, size: int) -> Tensor:
    """Sets a ``size`` x ``size`` square at a random place in each image to 0 (Cutout, DeVries
    and Taylor 2017; part of FixMatch's strong augmentation). The square's centre may lie
    anywhere in the image, so the square may be clipped by the border."""
    n, _, height, width = x.shape
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]
    top = torch.randint(height, (n, 1, 1), device=x.device) - size // 2
    left = torch.randint(width, (n, 1, 1), device=x.device) - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside[:, None], 0.0)


def augment(
    x: Tensor,
    max_shift: int = 0,
    hflip: bool = False,
    max_degrees: float = 0.0,
    max_scale: float = 0.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
) -> Tensor:
    """``random_elastic`` when ``elastic_alpha`` is positive, then ``random_rotate_scale`` when
    ``max_degrees`` or ``max_scale`` is positive, then ``random_shift`` when ``max_shift > 0``,
    then ``random_hflip`` when ``hflip``."""
    if elastic_alpha > 0:
        x = random_elastic(x, elastic_alpha, elastic_sigma)
    if max_degrees > 0 or max_scale > 0:
        x = random_rotate_scale(x, max_degrees, max_scale)
    if max_shift > 0:
        x = random_shift(x, max_shift)
    if hflip:
        x = random_hflip(x)
    return x
