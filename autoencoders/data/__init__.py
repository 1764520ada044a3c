"""LightningDataModules over in-memory MNIST-like datasets."""

from autoencoders.data.base import DataError, InMemoryImages, default_root
from autoencoders.data.mnist import MNISTDataModule
from autoencoders.data.pneumonia import PneumoniaMNISTDataModule

__all__ = [
    "DataError",
    "InMemoryImages",
    "MNISTDataModule",
    "PneumoniaMNISTDataModule",
    "default_root",
]
