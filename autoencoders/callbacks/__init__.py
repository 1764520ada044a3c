"""Evaluation callbacks that work for every model exposing the matching protocol method."""

from autoencoders.callbacks.image_grid import ReconstructionGrid
from autoencoders.callbacks.rng import RNGState

__all__ = ["RNGState", "ReconstructionGrid"]
