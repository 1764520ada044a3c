"""Autoencoder families as PyTorch Lightning modules for MNIST-like data."""

__version__ = "0.1.0"
