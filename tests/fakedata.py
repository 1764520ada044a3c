"""Tiny fake datasets written in the real file formats, so the real loading code reads them.

Images carry a class-dependent bright square plus noise, so a model can learn from them.

    python -m tests.fakedata DIR   # DIR/MNIST/raw, DIR/FashionMNIST/raw, DIR/pneumoniamnist.npz
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

# odd test-set sizes: DDP on two processes splits them unevenly (tests/test_ddp.py)
MNIST_SIZES = {"train": 6000, "t10k": 301}
PNEUMONIA_SIZES = {"train": (21, 40), "val": (11, 20), "test": (15, 26)}  # (healthy, pneumonia)


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """``uint8`` images ``[N, size, size]``: noise plus a bright square placed by the label."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 9, 3)
        images[i, 2 + 8 * row : 8 + 8 * row, 2 + 8 * col : 8 + 8 * col] = 255
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes an IDX file (``ubyte``), the format of the MNIST distribution."""
    magic = 0x0800 | array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, seed: int = 0) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in MNIST_SIZES.items():
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(raw / f"{split}-images-idx3-ubyte", class_images(labels, rng))
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)


def write_pneumonia(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (healthy, sick) in PNEUMONIA_SIZES.items():
        labels = np.array([0] * healthy + [1] * sick)
        rng.shuffle(labels)
        arrays[f"{split}_images"] = class_images(labels * 4, rng)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "pneumoniamnist.npz", **arrays)


def write_all(root: Path) -> Path:
    write_mnist(root, "MNIST", seed=0)
    write_mnist(root, "FashionMNIST", seed=1)
    write_pneumonia(root, seed=2)
    return root


if __name__ == "__main__":
    print(write_all(Path(sys.argv[1])))
