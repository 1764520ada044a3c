"""Real files (CI sets AUTOENCODERS_DATA=../shared/data): official sizes and the seeds' splits."""

import torch

from autoencoders.data import MNISTDataModule, PneumoniaMNISTDataModule


def test_mnist_and_fashion_mnist_official_sizes(real_root):
    for dataset in ("mnist", "fashion_mnist"):
        dm = MNISTDataModule(dataset=dataset, root=real_root, val_size=5000, labels_per_class=10)
        dm.prepare_data()
        dm.setup("fit")
        assert len(dm.train_set) + len(dm.labelled_set) + len(dm.val_set) == 60_000
        assert len(dm.test_set) == 10_000
        assert dm.labelled_set.targets.bincount().tolist() == [10] * 10
        assert dm.test_set.targets.bincount().sum() == 10_000


def test_pneumonia_matches_seed_001_splits(real_root):
    dm = PneumoniaMNISTDataModule(root=real_root)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 1214 and dm.train_set.targets.eq(0).all()
    assert dm.val_set.targets.bincount().tolist() == [135, 135]
    assert dm.test_set.targets.bincount().tolist() == [234, 234]
    official = PneumoniaMNISTDataModule(root=real_root, balanced_eval=False)
    official.setup()
    assert official.val_set.targets.bincount().tolist() == [135, 389]
    assert official.test_set.targets.bincount().tolist() == [234, 390]
    assert official.test_set.images.dtype == torch.uint8
