"""Evaluation callbacks that work for every model exposing the matching protocol method."""

from autoencoders.callbacks.accuracy import ClassificationMetrics
from autoencoders.callbacks.image_grid import ClassSampleGrid, ReconstructionGrid
from autoencoders.callbacks.latent import LatentPriorFigure
from autoencoders.callbacks.predictions import PredictionWriter
from autoencoders.callbacks.rng import RNGState

__all__ = [
    "ClassSampleGrid",
    "ClassificationMetrics",
    "LatentPriorFigure",
    "PredictionWriter",
    "RNGState",
    "ReconstructionGrid",
]
