"""User images (PNG, JPEG, ...) turned into 28x28 tensors for ``predict``.

Digits (``mnist_like``):

MNIST digits were made by size-normalising each digit to fit a 20x20 box (keeping its aspect
ratio, anti-aliased) and centring its centre of mass in a 28x28 field; ink is bright on a dark
background. ``mnist_like`` repeats that on any photo: grey, inverted when the background is
light, contrast-stretched, cropped to the ink, fitted into 20x20 and centred by mass.

Scans such as chest X-rays (``resized_gray``): grey, centre-cropped to a square and resized,
the way MedMNIST made PneumoniaMNIST from the full-size images.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_files(path: str | Path) -> list[Path]:
    """The image file ``path``, or the image files in folder ``path`` (sorted, not recursive)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no image file or folder at '{path}'")


def grey_levels(image: Image.Image) -> np.ndarray:
    """An image's grey levels in ``[0, 1]`` as it is meant to be seen: turned upright by its
    EXIF orientation, 16-bit grey scaled by its full range (Pillow's ``convert("L")`` clips
    it), transparent pixels shown on white paper (``convert("L")`` drops the alpha channel,
    and the colour under a transparent pixel is often black)."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        return np.clip(np.asarray(image, dtype=np.float32) / 65535, 0, 1)
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def mnist_like(image: Image.Image, size: int = 28, box: int = 20) -> torch.Tensor:
    """A photo of one digit as a ``[1, size, size]`` float tensor in ``[0, 1]``, ink bright."""
    gray = grey_levels(image)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = background - gray if background > 0.5 else gray - background
    ink = np.clip(ink, 0, None)
    if ink.max() <= 0:
        return torch.zeros(1, size, size)
    ink /= ink.max()
    rows, cols = np.nonzero(ink > 0.25)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = ink.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = Image.fromarray((ink * 255).astype(np.uint8)).resize(new_size, Image.LANCZOS)
    digit = np.asarray(fitted, dtype=np.float32) / 255
    mass_rows, mass_cols = np.indices(digit.shape)
    total = digit.sum()
    centre = (mass_rows * digit).sum() / total, (mass_cols * digit).sum() / total
    top = int(np.clip(round(size / 2 - centre[0]), 0, size - digit.shape[0]))
    left = int(np.clip(round(size / 2 - centre[1]), 0, size - digit.shape[1]))
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return torch.from_numpy(canvas).clamp(0, 1).unsqueeze(0)


def resized_gray(image: Image.Image, size: int = 28) -> torch.Tensor:
    """Any image as a grey ``[1, size, size]`` tensor in ``[0, 1]``: centre square, resized."""
    gray = Image.fromarray((grey_levels(image) * 255).round().astype(np.uint8))
    side = min(gray.size)
    square = ImageOps.fit(gray, (side, side), centering=(0.5, 0.5))
    resized = square.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).unsqueeze(0)


class UserImages(Dataset):
    """The readable images under ``path``, preprocessed by ``preprocess`` (default
    ``mnist_like``); yields ``(x, index)``.

    A file that cannot be read (not an image, truncated, or more pixels than Pillow's
    decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS``, checked from the header before
    decoding) gets one line on stderr and is left out; ``paths`` lists the files kept, in
    dataset order.
    """

    def __init__(
        self, path: str | Path, preprocess: Callable[[Image.Image], torch.Tensor] = mnist_like
    ) -> None:
        self.paths: list[Path] = []
        images = []
        for file in image_files(path):
            try:
                with warnings.catch_warnings():  # Pillow only warns up to twice its limit
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(file) as image:
                        images.append(preprocess(image))
                self.paths.append(file)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning,
                    Image.DecompressionBombError) as err:  # fmt: skip
                print(f"skipping {file}: cannot read it as an image ({err})", file=sys.stderr)
        if not images:
            raise FileNotFoundError(f"no readable image under '{path}'")
        self.images = torch.stack(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i
