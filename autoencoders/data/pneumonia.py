"""PneumoniaMNIST for anomaly detection: train on healthy images only, evaluate on both classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from autoencoders.data.base import (
    DataError,
    InMemoryDataModule,
    InMemoryImages,
    check_npz_file,
    missing_files_message,
    normalize_contrast,
    removed_if_left_empty,
    short_reason,
)
from autoencoders.data.images import UserImages, resized_gray
from autoencoders.data.splits import balanced_indices

FILE = "pneumoniamnist.npz"
HEALTHY = 0


class PneumoniaMNISTDataModule(InMemoryDataModule):
    """PneumoniaMNIST (28x28 chest X-rays; 0 = normal, 1 = pneumonia) as an anomaly split.

    Training holds the healthy (label 0) images of the official train split only. Validation and
    test hold both classes; with ``balanced_eval`` the majority class is subsampled (seeded) to the
    size of the minority, as seed 001 did (135 + 135 validation, 234 + 234 test images).

    Args:
        root: folder holding ``pneumoniamnist.npz``; defaults to ``$AUTOENCODERS_DATA``, else
            ``./data``.
        batch_size: images per batch.
        balanced_eval: subsample validation and test to equal class sizes.
        contrast: normalise each image to grey-level mean 0.5 and standard deviation 0.2
            (``autoencoders.data.base.normalize_contrast``), user images for ``predict`` too.
        download: download a missing file with medmnist (needs a network).
        path: an image file or folder for ``predict`` (grey, centre-cropped and resized to
            28x28, see ``autoencoders.data.images.resized_gray``); without it ``predict`` runs
            over the test set.
        seed: seed of the balanced subsampling.
        on_device: on a GPU, hold the images in its memory and cut every batch there (see
            ``InMemoryDataModule``).
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        balanced_eval: bool = True,
        contrast: bool = False,
        download: bool = True,
        path: str | None = None,
        seed: int = 0,
        on_device: bool = False,
    ) -> None:
        super().__init__(root, batch_size, seed, on_device)
        self.save_hyperparameters()
        self.predict_paths: list[Path] | None = None

    @property
    def file(self) -> Path:
        return self.root / FILE

    def prepare_data(self) -> None:
        if self.file.is_file():
            check_npz_file(self.file)
            return
        reason = "downloads are off (download: false)"
        if self.hparams.download:
            try:
                import medmnist

                with removed_if_left_empty(self.root, *self.root.parents):
                    self.root.mkdir(parents=True, exist_ok=True)
                    medmnist.PneumoniaMNIST(split="train", root=str(self.root), download=True)
                return
            except Exception as err:
                reason = short_reason(err)
        raise DataError(missing_files_message("PneumoniaMNIST", self.root, [self.file], reason))

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.file.is_file():
            raise DataError(missing_files_message("PneumoniaMNIST", self.root, [self.file]))
        splits = {}
        try:
            with np.load(self.file) as npz:
                for split in ("train", "val", "test"):
                    images = torch.from_numpy(npz[f"{split}_images"])
                    labels = torch.from_numpy(npz[f"{split}_labels"]).long().flatten()
                    if images.dim() != 3 or len(images) != len(labels):
                        raise ValueError(
                            f"{split}: images {tuple(images.shape)}, labels {tuple(labels.shape)}"
                        )
                    splits[split] = (images.to(torch.uint8), labels)
        except Exception as err:
            raise DataError(
                f"could not read {self.file}: {err}. The file looks corrupt: delete it to download "
                "again, or restore it."
            ) from None
        return splits

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "test_set"):
            return
        splits = self._load()
        images, labels = splits["train"]
        healthy = labels == HEALTHY
        contrast = self.hparams.contrast
        self.train_set = InMemoryImages(images[healthy], labels[healthy], contrast=contrast)
        for split in ("val", "test"):
            images, labels = splits[split]
            if self.hparams.balanced_eval:
                keep = balanced_indices(labels, self.seed)
                images, labels = images[keep], labels[keep]
            setattr(self, f"{split}_set", InMemoryImages(images, labels, contrast=contrast))

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.path is None:
            return super().predict_dataloader()
        try:
            images = UserImages(self.hparams.path, preprocess=self._preprocess)
        except FileNotFoundError as err:
            raise DataError(str(err)) from None
        self.predict_paths = images.paths
        return DataLoader(images, batch_size=self.batch_size)

    def _preprocess(self, image) -> torch.Tensor:
        x = resized_gray(image)
        return normalize_contrast(x) if self.hparams.contrast else x
