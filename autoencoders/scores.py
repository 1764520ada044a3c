"""Anomaly scores of an image from its reconstruction: the scorer an autoencoder is given.

Per-pixel error maps (squared error, or 1 - the SSIM map of Wang et al. 2004), optionally after a
box blur of image and reconstruction, optionally standardised pixel by pixel with their mean and
standard deviation over the healthy training images, then reduced to one score per image.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure


class ReconstructionScore(nn.Module):
    """Anomaly score ``[B]`` of images ``x`` and their reconstructions, both in ``[0, 1]``.

    Args:
        kind: per-pixel error: ``"mse"`` (squared error; summed per image) or ``"ssim"``
            (1 - SSIM map; averaged per image).
        blur: size of a box blur applied to image and reconstruction first (0 or 1: none; odd):
            it discounts pixel-level noise and texture that differ between X-ray sources.
        standardize: each pixel's error is standardised with its mean and standard deviation
            over the healthy training images (``gather`` / ``finish``, in the model's training
            pass before every validation during ``fit``), then averaged; buffers, so saved in
            the checkpoint.
    """

    def __init__(
        self, kind: Literal["mse", "ssim"] = "mse", blur: int = 0, standardize: bool = False
    ) -> None:
        super().__init__()
        if blur > 1 and blur % 2 == 0:
            raise ValueError(f"blur={blur} must be odd, so that blurred images keep their shape")
        self.kind, self.blur, self.standardize = kind, blur, standardize
        self.register_buffer("mean", torch.empty(0))  # [1, C, H, W] once fitted
        self.register_buffer("std", torch.empty(0))
        self.sums: list[Tensor] | None = None  # count, sum, sum of squares while gathering

    def error_map(self, x: Tensor, reconstruction: Tensor) -> Tensor:
        """Per-pixel error ``[B, C, H, W]``, after the blur."""
        if self.blur > 1:
            x, reconstruction = box_blur(x, self.blur), box_blur(reconstruction, self.blur)
        if self.kind == "mse":
            return (reconstruction - x).square()
        _, image = structural_similarity_index_measure(
            reconstruction, x, data_range=1.0, reduction="none", return_full_image=True
        )
        return 1 - image

    def forward(self, x: Tensor, reconstruction: Tensor) -> Tensor:
        errors = self.error_map(x, reconstruction)
        if self.standardize:
            if self.mean.numel() == 0:
                raise RuntimeError(
                    "standardize needs the error statistics of the healthy training images: "
                    "fit gathers them before each validation; this model has none"
                )
            return ((errors - self.mean) / self.std).flatten(1).mean(1)
        if self.kind == "mse":
            return errors.flatten(1).sum(1)
        return errors.flatten(1).mean(1)

    @torch.no_grad()
    def gather(self, x: Tensor, reconstruction: Tensor) -> None:
        """Adds a batch of healthy training images to the running per-pixel statistics."""
        errors = self.error_map(x, reconstruction).double()
        count = torch.tensor(float(len(x)), dtype=torch.double, device=x.device)
        batch = [count, errors.sum(0, keepdim=True), errors.square().sum(0, keepdim=True)]
        self.sums = (
            batch if self.sums is None else [s + b for s, b in zip(self.sums, batch, strict=True)]
        )

    def finish(self, reduce=lambda t: t) -> None:
        """Sets ``mean`` and ``std`` from the gathered sums; ``reduce`` sums a tensor across
        DDP ranks (``trainer.strategy.reduce(t, reduce_op="sum")``)."""
        n, total, squares = (reduce(s) for s in self.sums)
        mean = total / n
        variance = (squares - n * mean.square()) / (n - 1)  # unbiased, as torch.std
        self.mean = mean.float()
        self.std = variance.clamp(min=0).sqrt().float() + 1e-6
        self.sums = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("mean", "std"):  # give the empty buffers the saved shapes
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, blur={self.blur}, standardize={self.standardize}"


def box_blur(images: Tensor, size: int) -> Tensor:
    """Mean over each pixel's ``size`` x ``size`` neighbourhood (inside the image), same shape."""
    return F.avg_pool2d(images, size, stride=1, padding=size // 2, count_include_pad=False)
