import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from autoencoders.data import DataError, MNISTDataModule, PneumoniaMNISTDataModule
from autoencoders.data.base import EpochShuffle
from autoencoders.data.splits import balanced_indices, holdout_indices, labelled_indices
from tests.fakedata import MNIST_SIZES, PNEUMONIA_SIZES
from tests.helpers import run_module


def fingerprints(images: torch.Tensor) -> set[int]:
    """One integer per image, to compare sets of images across splits."""
    flat = images.flatten(1).long()
    weights = torch.randint(1, 2**20, (flat.shape[1],), generator=torch.Generator().manual_seed(0))
    return set((flat * weights).sum(1).tolist())


def mnist(root, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(root=root, val_size=1000, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_holdout_is_disjoint_complete_and_seeded():
    kept, held = holdout_indices(100, 30, seed=1)
    assert len(held) == 30 and len(kept) == 70
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert set(kept.tolist()) | set(held.tolist()) == set(range(100))
    assert torch.equal(held, holdout_indices(100, 30, seed=1)[1])
    assert not torch.equal(held, holdout_indices(100, 30, seed=2)[1])


def test_labelled_indices_are_class_balanced():
    targets = torch.arange(1000) % 10
    chosen = labelled_indices(targets, per_class=7, seed=0)
    assert torch.equal(targets[chosen].bincount(), torch.full((10,), 7))
    with pytest.raises(ValueError, match="fewer than"):
        labelled_indices(targets, per_class=101, seed=0)


def test_balanced_indices_subsample_the_majority():
    targets = torch.tensor([0] * 3 + [1] * 8)
    chosen = balanced_indices(targets, seed=0)
    assert targets[chosen].bincount().tolist() == [3, 3]


def test_mnist_split_sizes_and_types(fake_root):
    dm = mnist(fake_root)
    assert len(dm.train_set) == MNIST_SIZES["train"] - 1000
    assert len(dm.val_set) == 1000 and len(dm.test_set) == MNIST_SIZES["t10k"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long


def test_semi_supervised_split_is_balanced_disjoint_and_seeded(fake_root):
    dm = mnist(fake_root, labels_per_class=10, seed=3)
    assert len(dm.labelled_set) == 100
    assert dm.labelled_set.targets.bincount().tolist() == [10] * 10
    assert len(dm.train_set) + len(dm.labelled_set) == MNIST_SIZES["train"] - 1000
    labelled = fingerprints(dm.labelled_set.images)
    assert labelled.isdisjoint(fingerprints(dm.train_set.images))
    assert labelled.isdisjoint(fingerprints(dm.val_set.images))
    again = mnist(fake_root, labels_per_class=10, seed=3)
    assert torch.equal(again.labelled_set.images, dm.labelled_set.images)
    other = mnist(fake_root, labels_per_class=10, seed=4)
    assert not torch.equal(other.labelled_set.images, dm.labelled_set.images)

    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"unlabelled", "labelled"}
    x_l, y_l = batch["labelled"]
    assert batch["unlabelled"].shape == (100, 1, 28, 28) and x_l.shape == (100, 1, 28, 28)
    assert y_l.shape == (100,)


def test_labeled_fraction(fake_root):
    dm = mnist(fake_root, labeled_fraction=0.05)
    assert len(dm.labelled_set) == round(0.05 * (MNIST_SIZES["train"] - 1000))
    with pytest.raises(ValueError, match="not both"):
        MNISTDataModule(root=fake_root, labels_per_class=1, labeled_fraction=0.1)


def test_fashion_mnist_reads_its_own_folder(fake_root):
    fashion = mnist(fake_root, dataset="fashion_mnist")
    digits = mnist(fake_root)
    assert not torch.equal(fashion.test_set.images, digits.test_set.images)


def test_binarization(fake_root):
    static = mnist(fake_root, binarize="static")
    for dataset in (static.train_set, static.val_set, static.test_set):
        assert set(dataset.images.unique().tolist()) <= {0, 255}
    dynamic = mnist(fake_root, binarize="dynamic")
    first, second = dynamic.train_set[list(range(8))], dynamic.train_set[list(range(8))]
    assert set(first[0].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first[0], second[0]), "dynamic binarization resamples every read"
    assert torch.equal(dynamic.test_set.images, static.test_set.images), "eval set fixed by seed"


def test_shuffle_depends_on_seed_epoch_and_restart_only():
    data = list(range(50))
    a, b = EpochShuffle(data, seed=5), EpochShuffle(data, seed=5)
    orders = [list(a) for _ in range(3)]  # the loader restarted three times in one epoch
    assert orders == [list(b) for _ in range(3)], "the same seed gives the same orders"
    assert len({tuple(o) for o in orders}) == 3 and all(sorted(o) == data for o in orders)
    a.set_epoch(1)
    assert list(a) not in orders
    a.set_epoch(0)
    assert list(a) == orders[0], "an epoch run again (a resumed run) repeats its orders"


def test_labelled_loader_reshuffles_at_every_restart_within_an_epoch(fake_root):
    """200 labels in batches of 100: the labelled loader restarts 24 times in an epoch of 48
    unlabelled batches (4,800 fake images), and no two restarts repeat an order."""
    torch.manual_seed(0)
    dm = mnist(fake_root, labels_per_class=20, batch_size=100)
    loader = dm.train_dataloader()
    batches = [batch["labelled"][0] for batch, *_ in loader]
    assert len(batches) == 48 and all(len(x) == 100 for x in batches)
    cycles = [torch.cat(batches[i : i + 2]) for i in range(0, 48, 2)]
    assert all(fingerprints(c * 255) == fingerprints(cycles[0] * 255) for c in cycles)
    firsts = {tuple(sorted(fingerprints(c[:100] * 255))) for c in cycles}
    assert len(firsts) == 24, "each restart draws a new split of the 200 into two batches"


def test_distributed_shards_are_disjoint(fake_root):
    dm = mnist(fake_root)
    dataset = dm.train_set
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=100, sampler=sampler, collate_fn=lambda b: b
        )
        shards.append(torch.cat([x for x, _ in loader]))
    assert len(shards[0]) == len(shards[1]) == len(dataset) // 2
    assert fingerprints(shards[0] * 255).isdisjoint(fingerprints(shards[1] * 255))


def test_pneumonia_trains_on_healthy_only_and_balances_eval(fake_root):
    dm = PneumoniaMNISTDataModule(root=fake_root)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == PNEUMONIA_SIZES["train"][0]
    assert dm.train_set.targets.eq(0).all()
    for split in ("val", "test"):
        healthy = PNEUMONIA_SIZES[split][0]
        assert getattr(dm, f"{split}_set").targets.bincount().tolist() == [healthy, healthy]
    official = PneumoniaMNISTDataModule(root=fake_root, balanced_eval=False)
    official.setup()
    assert official.test_set.targets.bincount().tolist() == list(PNEUMONIA_SIZES["test"])


def test_missing_files_offline_name_root_files_and_variable(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "empty"), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "train-images-idx3-ubyte" in message and "AUTOENCODERS_DATA" in message
    with pytest.raises(DataError, match="pneumoniamnist.npz"):
        PneumoniaMNISTDataModule(root=str(tmp_path), download=False).prepare_data()


def test_failed_download_is_reported(tmp_path, monkeypatch):
    def no_network(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", no_network)
    with pytest.raises(DataError, match="Download failed: Error downloading"):
        MNISTDataModule(root=str(tmp_path)).prepare_data()


def test_corrupt_files_give_a_clear_error(fake_root, tmp_path):
    shutil.copytree(fake_root, tmp_path / "copy")
    (tmp_path / "copy/MNIST/raw/train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="corrupt"):
        mnist(str(tmp_path / "copy"))
    (tmp_path / "copy/pneumoniamnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="corrupt"):
        PneumoniaMNISTDataModule(root=str(tmp_path / "copy")).setup()


def test_impossible_splits_are_reported(fake_root):
    with pytest.raises(DataError, match="val_size=6000"):
        mnist_dm = MNISTDataModule(root=fake_root, val_size=6000)
        mnist_dm.setup()
    with pytest.raises(DataError, match="fewer than 1000"):
        mnist(fake_root, labels_per_class=1000)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):  # when the data module is built
        mnist(fake_root, labeled_fraction=1.5)


def test_root_defaults_to_the_environment(fake_root, monkeypatch):
    monkeypatch.setenv("AUTOENCODERS_DATA", fake_root)
    assert str(MNISTDataModule().root) == fake_root
    monkeypatch.delenv("AUTOENCODERS_DATA")
    assert str(MNISTDataModule().root) == "data"


def test_cli_reports_missing_data_in_one_message(tmp_path):
    missing = [f"--data.root={tmp_path / 'nowhere'}", "--data.download=false"]
    result = run_module("fit", "--config", "ae_mnist", *missing, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error: MNIST not found" in result.stderr and "AUTOENCODERS_DATA" in result.stderr


def test_pneumonia_images_keep_their_values(fake_root):
    dm = PneumoniaMNISTDataModule(root=fake_root, balanced_eval=False)
    dm.setup()
    with np.load(f"{fake_root}/pneumoniamnist.npz") as npz:
        expected = torch.from_numpy(npz["test_images"]).float() / 255
    x, _ = next(iter(dm.test_dataloader()))
    torch.testing.assert_close(x[:, 0], expected[: len(x)])


class StubTrainer:
    """Just what the loaders read of a trainer: the device, one process, not fitting."""

    world_size = 1
    state = type("State", (), {"fn": "validate", "status": "running"})()

    def __init__(self, device: str):
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


def test_on_device_images_are_moved_once_and_batches_cut_there(fake_root):
    """``meta`` stands in for a GPU: the images move there when the loaders are made, and the
    batches (labelled ones too) come out there, cut from the moved tensors; without
    ``on_device`` batches for a CUDA device are pinned, for the CPU not."""
    dm = MNISTDataModule(root=fake_root, val_size=1000, labels_per_class=2, on_device=True)
    dm.setup("fit")
    dm.trainer = StubTrainer("meta")
    batch = next(iter(dm.train_dataloader()))[0]
    assert dm.train_set.images.is_meta and dm.labelled_set.targets.is_meta
    assert batch["unlabelled"].is_meta and batch["labelled"][0].is_meta
    images = dm.train_set.images
    dm.val_dataloader(), dm.train_dataloader()
    assert dm.train_set.images is images  # moved once
    assert next(iter(dm.val_dataloader()))[0].is_meta

    plain = mnist(fake_root)
    plain.trainer = StubTrainer("cuda")
    assert plain.train_dataloader().pin_memory and plain.test_dataloader().pin_memory
    plain.trainer = StubTrainer("cpu")
    assert not plain.train_dataloader().pin_memory
