"""MNIST and Fashion-MNIST, with a validation hold-out and semi-supervised label splits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader
from torchvision import datasets

from autoencoders.data.base import (
    DataError,
    InMemoryDataModule,
    InMemoryImages,
    check_idx_file,
    missing_files_message,
    removed_if_left_empty,
    short_reason,
    static_binarize,
)
from autoencoders.data.images import UserImages
from autoencoders.data.splits import fraction_indices, holdout_indices, labelled_indices

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}


class MNISTDataModule(InMemoryDataModule):
    """MNIST or Fashion-MNIST: the official test split, a seeded validation split held out of
    train, and optionally a labelled / unlabelled split of the rest for semi-supervised models.

    Without ``labels_per_class`` or ``labeled_fraction`` training batches are ``(x, y)``. With
    either, training batches are ``{"unlabelled": x, "labelled": (x, y)}`` from a
    ``CombinedLoader`` in ``max_size_cycle`` mode: the small labelled loader cycles while the
    unlabelled one runs through its epoch. The two sets are disjoint.

    Args:
        dataset: ``"mnist"`` or ``"fashion_mnist"``.
        root: data root holding ``MNIST/raw`` / ``FashionMNIST/raw``; defaults to
            ``$AUTOENCODERS_DATA``, else ``./data``.
        batch_size: images per batch (unlabelled batches when semi-supervised).
        val_size: training images held out for validation.
        labels_per_class: class-balanced labelled subset of this many images per class.
        labeled_fraction: labelled subset drawn at random as this fraction of training images.
        labelled_batch_size: labelled batch size; defaults to ``batch_size`` (capped at the
            number of labelled images).
        binarize: ``None`` keeps grey levels; ``"dynamic"`` samples training pixels from
            Bernoulli(intensity) at every read and binarizes validation and test once with
            ``seed``; ``"static"`` binarizes every split once with ``seed``.
        download: download missing files with torchvision (needs a network).
        path: an image file or folder for ``predict`` (user photos, preprocessed like MNIST,
            see ``autoencoders.data.images``); without it ``predict`` runs over the test set.
        seed: seed of every split and of static binarization.
        on_device: on a GPU, hold the images in its memory and cut every batch there (see
            ``InMemoryDataModule``).
    """

    def __init__(
        self,
        dataset: Literal["mnist", "fashion_mnist"] = "mnist",
        root: str | None = None,
        batch_size: int = 100,
        val_size: int = 5000,
        labels_per_class: int | None = None,
        labeled_fraction: float | None = None,
        labelled_batch_size: int | None = None,
        binarize: Literal["dynamic", "static"] | None = None,
        download: bool = True,
        path: str | None = None,
        seed: int = 0,
        on_device: bool = False,
    ) -> None:
        super().__init__(root, batch_size, seed, on_device)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if labels_per_class is not None and labeled_fraction is not None:
            raise ValueError("give labels_per_class or labeled_fraction, not both")
        if labels_per_class is not None and labels_per_class <= 0:
            raise ValueError(f"labels_per_class must be a positive count, got {labels_per_class}")
        if labeled_fraction is not None and not 0 < labeled_fraction <= 1:
            raise ValueError(f"labeled_fraction must be in (0, 1], got {labeled_fraction}")
        self.save_hyperparameters()
        self.dataset_cls = DATASETS[dataset]
        self.labelled_set: InMemoryImages | None = None
        self.predict_paths: list[Path] | None = None

    @property
    def semi_supervised(self) -> bool:
        return (
            self.hparams.labels_per_class is not None or self.hparams.labeled_fraction is not None
        )

    @property
    def raw_files(self) -> list[Path]:
        raw = self.root / self.dataset_cls.__name__ / "raw"
        return [raw / Path(name).stem for name, _ in self.dataset_cls.resources]

    def prepare_data(self) -> None:
        if all(f.is_file() for f in self.raw_files):
            for file in self.raw_files:
                check_idx_file(file)
            return
        reason = "downloads are off (download: false)"
        if self.hparams.download:
            raw = self.raw_files[0].parent
            try:
                with removed_if_left_empty(self.root, raw.parent, raw):
                    self.dataset_cls(str(self.root), train=True, download=True)
                return
            except Exception as err:  # torchvision raises RuntimeError or URLError
                reason = short_reason(err)
        raise DataError(
            missing_files_message(self.dataset_cls.__name__, self.root, self.raw_files, reason)
        )

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not all(f.is_file() for f in self.raw_files):
            raise DataError(
                missing_files_message(self.dataset_cls.__name__, self.root, self.raw_files)
            )
        try:
            data = self.dataset_cls(str(self.root), train=train, download=False)
            images, targets = data.data, data.targets
        except Exception as err:
            raise DataError(
                f"could not read {self.dataset_cls.__name__} from {self.raw_files[0].parent}: "
                f"{err}. The files look corrupt: delete them to download again, or restore them."
            ) from None
        if images.dim() != 3 or len(images) != len(targets) or images.dtype != torch.uint8:
            folder = self.raw_files[0].parent
            raise DataError(
                f"{self.dataset_cls.__name__} files in {folder} are inconsistent: "
                f"images {tuple(images.shape)}, labels {tuple(targets.shape)}"
            )
        return images, targets.long()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "test_set"):
            return
        hp = self.hparams
        images, targets = self._load(train=True)
        test_images, test_targets = self._load(train=False)
        if not 0 < hp.val_size < len(images):
            raise DataError(f"val_size={hp.val_size} must be between 1 and {len(images) - 1}")
        train_idx, val_idx = holdout_indices(len(images), hp.val_size, hp.seed)

        eval_images = {"val": images[val_idx], "test": test_images}
        if hp.binarize is not None:
            eval_images = {k: static_binarize(v, hp.seed) for k, v in eval_images.items()}
        if hp.binarize == "static":
            images = static_binarize(images, hp.seed)
        dynamic = hp.binarize == "dynamic"
        self.val_set = InMemoryImages(eval_images["val"], targets[val_idx])
        self.test_set = InMemoryImages(eval_images["test"], test_targets)

        if not self.semi_supervised:
            self.train_set = InMemoryImages(images[train_idx], targets[train_idx], dynamic)
            return
        train_targets = targets[train_idx]
        try:
            if hp.labels_per_class is not None:
                chosen = labelled_indices(train_targets, hp.labels_per_class, hp.seed)
            else:
                chosen = fraction_indices(len(train_idx), hp.labeled_fraction, hp.seed)
        except ValueError as err:
            raise DataError(f"cannot draw the labelled subset: {err}") from None
        is_labelled = torch.zeros(len(train_idx), dtype=torch.bool)
        is_labelled[chosen] = True
        labelled, unlabelled = train_idx[is_labelled], train_idx[~is_labelled]
        self.labelled_set = InMemoryImages(images[labelled], targets[labelled], dynamic)
        self.train_set = InMemoryImages(images[unlabelled], None, dynamic)

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.path is None:
            return super().predict_dataloader()
        try:
            images = UserImages(self.hparams.path)
        except FileNotFoundError as err:
            raise DataError(str(err)) from None
        self.predict_paths = images.paths
        return DataLoader(images, batch_size=self.batch_size)

    def train_dataloader(self):
        if self.labelled_set is None:
            return super().train_dataloader()
        labelled_batch = min(
            self.hparams.labelled_batch_size or self.batch_size, len(self.labelled_set)
        )
        return CombinedLoader(
            {
                "unlabelled": self.loader(self.train_set, self.batch_size, shuffle=True),
                "labelled": self.loader(self.labelled_set, labelled_batch, shuffle=True),
            },
            mode="max_size_cycle",
        )
