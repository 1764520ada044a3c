"""Evaluation callbacks that work for every model exposing the matching protocol method."""

from autoencoders.callbacks.image_grid import ReconstructionGrid

__all__ = ["ReconstructionGrid"]
