"""In-memory image datasets and the pieces every DataModule of this package shares.

Datasets this size fit in memory: each is decoded once into a ``uint8`` tensor and batches are
cut from it by index (``Dataset.__getitems__``), which is an order of magnitude faster on a small
CPU than a per-sample PIL ``ToTensor`` pipeline. The loaders are ordinary ``DataLoader`` objects
with a ``batch_size`` and a sampler, so Lightning swaps in a ``DistributedSampler`` under DDP and
every rank reads its own shard.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

DATA_ENV = "AUTOENCODERS_DATA"


class DataError(RuntimeError):
    """A dataset is missing, cannot be downloaded or cannot be read; the message says what to do."""


def default_root() -> str:
    """The data root: ``$AUTOENCODERS_DATA`` when set, else ``./data``."""
    return os.environ.get(DATA_ENV) or "data"


def short_reason(err: Exception) -> str:
    """The first lines of an exception's message, enough to tell why a download failed."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])[:400] or repr(err)


def missing_files_message(name: str, root: str | Path, files: list[Path], reason: str = "") -> str:
    """One readable message for a dataset whose files are not where they should be."""
    lines = [
        f"{name} not found under the data root '{Path(root).resolve()}'.",
        "Expected files:",
        *[f"  {f}" for f in files],
        f"Point ${DATA_ENV} (or --data.root) at the folder that holds them, or let the data "
        "module download them (--data.download true, needs a network).",
    ]
    if reason:
        lines.append(f"Download failed: {reason}")
    return "\n".join(lines)


def check_idx_file(path: Path) -> None:
    """Raises ``DataError`` when an idx file of unsigned bytes (MNIST's format) is not as long
    as its header says: a cut-short download fails here, before a run starts."""
    with open(path, "rb") as file:
        header = file.read(4)
        if len(header) < 4 or header[2] != 0x08:
            return  # not unsigned bytes: torchvision's reader will judge it
        shape = file.read(4 * header[3])
    size = path.stat().st_size
    expected = 4 + len(shape)  # a header cut short: no shape to trust
    if len(shape) == 4 * header[3]:
        expected += math.prod(struct.unpack(f">{header[3]}I", shape))
    if size != expected:
        raise DataError(
            f"{path} is cut short or corrupt ({size} bytes, its header promises {expected}): "
            "delete it to download again, or restore it"
        )


def check_npz_file(path: Path) -> None:
    """Raises ``DataError`` when a ``.npz`` file is not a whole zip archive (checked by CRC)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        bad = str(err)
    if bad is not None:
        raise DataError(
            f"{path} is cut short or corrupt ({bad}): delete it to download again, or restore it"
        )


@contextmanager
def removed_if_left_empty(*folders: Path):
    """Runs a download; when it fails, removes those of ``folders`` (deepest first) that it
    created and left empty, so that a failed download leaves the data root as it was."""
    new = [folder for folder in folders if not folder.exists()]
    try:
        yield
    except Exception:
        for folder in sorted(new, key=lambda f: len(f.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


class InMemoryImages(Dataset):
    """Images held as one ``uint8`` tensor, returned as float batches in ``[0, 1]``.

    Args:
        images: ``uint8`` tensor ``[N, H, W]`` or ``[N, C, H, W]``.
        targets: integer labels ``[N]``; ``None`` makes the dataset yield images only.
        dynamic_binarize: sample each pixel from Bernoulli(intensity) every time it is read.
        contrast: normalise every image's contrast (see ``normalize_contrast``).
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor | None = None,
        dynamic_binarize: bool = False,
        contrast: bool = False,
    ) -> None:
        self.images = images if images.dim() == 4 else images.unsqueeze(1)
        self.targets = targets
        self.dynamic_binarize = dynamic_binarize
        self.contrast = contrast

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> InMemoryImages:
        """Moves the images and targets to ``device``, where batches are then cut."""
        self.images = self.images.to(device)
        self.targets = self.targets.to(device) if self.targets is not None else None
        return self

    def __getitems__(self, indices: list[int]) -> Tensor | tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, device=self.images.device)
        x = self.images[index].float().div_(255)
        if self.dynamic_binarize:
            x = torch.bernoulli(x)
        if self.contrast:
            x = normalize_contrast(x)
        if self.targets is None:
            return x
        return x, self.targets[index]

    def __getitem__(self, i: int) -> Tensor | tuple[Tensor, Tensor]:
        batch = self.__getitems__([i])
        return batch[0] if self.targets is None else (batch[0][0], batch[1][0])


def normalize_contrast(x: Tensor, mean: float = 0.5, std: float = 0.2) -> Tensor:
    """Each image shifted and scaled to grey-level mean ``mean`` and standard deviation ``std``,
    clipped to ``[0, 1]``: removes exposure and contrast differences between scanners."""
    flat = x.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp(min=1e-3)
    return (mean + std * z).clamp(0, 1).view_as(x)


class EpochShuffle(RandomSampler):
    """A random permutation that depends only on ``seed``, the epoch (Lightning calls
    ``set_epoch``, so a resumed run sees the same orders) and the restart within the epoch (a
    small labelled loader that a ``CombinedLoader`` restarts gets a new order each time). Under
    DDP Lightning replaces it with a ``DistributedSampler``. Its state (epoch, restarts) travels
    in checkpoints through ``BatchLoader``."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self.restarts = 0  # iterations started in this epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a run resumed inside an epoch sets it again: keep its restarts
            self.epoch, self.restarts = epoch, 0

    def __iter__(self):
        # restart 0 keeps the order of a loader that runs once per epoch: seed + epoch
        seed = self.seed + self.epoch + 1_000_003 * self.restarts
        generator = torch.Generator().manual_seed(seed)
        self.restarts += 1
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class BatchLoader(DataLoader):
    """A ``DataLoader`` over an in-memory dataset that cuts each batch with one tensor index
    and knows how far through its pass it is, so that a run resumed from a checkpoint written
    inside an epoch goes on with the next batch.

    Lightning stores ``state_dict()`` of every training loader in each checkpoint and hands it
    back to ``load_state_dict`` on resume (a loader with both methods is "stateful"). The state
    is the number of batches yielded in the current pass and the sampler's epoch and restarts;
    the resumed pass skips those batches by index, without reading them, so no random draw of
    a skipped batch (dynamic binarization) shifts the restored random stream. The sampler may
    be Lightning's ``DistributedSampler``: the skip works the same on every rank.
    """

    _yielded = 0  # batches handed out in the current pass
    _skip = 0  # batches to skip at the start of the next pass (set on resume)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        self._yielded = 0
        for indices in self.batch_sampler:
            self._yielded += 1
            if self._yielded > skip:
                batch = self.dataset.__getitems__(indices)
                yield pinned(batch) if self.pin_memory else batch

    def state_dict(self) -> dict[str, int]:
        state = {"yielded": self._yielded}
        if isinstance(self.sampler, EpochShuffle):
            state |= {"epoch": self.sampler.epoch, "restarts": self.sampler.restarts}
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["yielded"]
        if isinstance(self.sampler, EpochShuffle) and "epoch" in state:
            # the pass in progress is drawn again (restart count - 1), then skipped into
            self.sampler.epoch, self.sampler.restarts = state["epoch"], state["restarts"] - 1


def pinned(batch: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The batch in page-locked memory, which a GPU copies from without blocking the host."""
    if isinstance(batch, Tensor):
        return batch.pin_memory()
    return tuple(t.pin_memory() for t in batch)


def batch_loader(
    dataset: InMemoryImages, batch_size: int, shuffle: bool, pin_memory: bool = False
) -> BatchLoader:
    """A ``BatchLoader`` of ``batch_size`` images (in pinned memory with ``pin_memory``).

    Shuffling follows the global seed (``seed_everything``) and the epoch, see ``EpochShuffle``.
    """
    if batch_size <= 0:
        raise DataError(f"batch_size={batch_size} must be a positive number of images")
    sampler = EpochShuffle(dataset, torch.initial_seed()) if shuffle else None
    return BatchLoader(dataset, batch_size=batch_size, sampler=sampler, pin_memory=pin_memory)


def wants_training_pass(trainer) -> bool:
    """Whether validation in this ``fit`` starts with a pass over the training images: the model
    or a callback has ``needs_training_pass`` true."""
    if trainer is None or trainer.state.fn != "fit" or trainer.state.status != "running":
        return False
    users = [trainer.lightning_module, *trainer.callbacks]
    return any(getattr(user, "needs_training_pass", False) for user in users)


def is_training_pass(trainer, dataloader_idx: int) -> bool:
    """Whether a validation batch of loader ``dataloader_idx`` is from the training pass."""
    datamodule = getattr(trainer, "datamodule", None)
    return dataloader_idx == 0 and getattr(datamodule, "has_training_pass", False)


def static_binarize(images: Tensor, seed: int) -> Tensor:
    """Samples a fixed binarization of ``uint8`` images (0 or 255) with its own generator."""
    generator = torch.Generator().manual_seed(seed)
    probs = images.float().div(255)
    return (torch.bernoulli(probs, generator=generator) * 255).to(torch.uint8)


class InMemoryDataModule(LightningDataModule):
    """Shared loaders over ``self.train_set``, ``self.val_set`` and ``self.test_set``.

    Subclasses download in ``prepare_data`` and build the three ``InMemoryImages`` in ``setup``.
    ``predict`` runs over the test set. On a GPU, with ``on_device`` the images are held in the
    GPU's memory (moved once, when the first loader is made) and every batch is cut there, so
    no images cross to the device during training; without it batches are made in pinned
    memory, which Lightning copies to the device without blocking.
    """

    train_set: InMemoryImages
    val_set: InMemoryImages
    test_set: InMemoryImages

    has_training_pass = False  # whether val_dataloader put the training images first

    def __init__(
        self, root: str | None, batch_size: int, seed: int, on_device: bool = False
    ) -> None:
        super().__init__()
        if batch_size <= 0:  # before any run folder exists (the loaders check again)
            raise ValueError(f"batch_size={batch_size} must be a positive number of images")
        self.root = Path(root if root is not None else default_root())
        self.batch_size = batch_size
        self.seed = seed
        self.on_device = on_device

    def loader(
        self, dataset: InMemoryImages, batch_size: int, shuffle: bool, sampler=None
    ) -> BatchLoader:
        """A loader of ``dataset`` for the trainer's device (see the class docstring); a
        ``sampler`` replaces the shuffled or ordered one."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if self.on_device:
            dataset.to(device)
        pin = device.type == "cuda" and not self.on_device
        if sampler is None:
            return batch_loader(dataset, batch_size, shuffle, pin_memory=pin)
        return BatchLoader(dataset, batch_size=batch_size, sampler=sampler, pin_memory=pin)

    def train_dataloader(self):
        return self.loader(self.train_set, self.batch_size, shuffle=True)

    def eval_loader(self, dataset: InMemoryImages) -> BatchLoader:
        """The images of ``dataset`` in order. Under DDP each rank reads every
        ``world_size``-th image and every image is evaluated exactly once: the ranks' shards
        differ by at most one image, where Lightning's ``DistributedSampler`` would repeat
        images to even them out and every metric would count those twice."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self.loader(dataset, self.batch_size, shuffle=False)
        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return self.loader(dataset, self.batch_size, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation images; during ``fit``, when the model or a callback asks for
        statistics over the training images (``needs_training_pass``), first those, unshuffled
        and without random reads."""
        val = self.eval_loader(self.val_set)
        self.has_training_pass = wants_training_pass(self.trainer)
        if not self.has_training_pass:
            return val
        train = InMemoryImages(
            self.train_set.images, self.train_set.targets, contrast=self.train_set.contrast
        )
        return [self.eval_loader(train), val]

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
