"""Evaluation callbacks that work for every model exposing the matching protocol method."""

from autoencoders.callbacks.accuracy import ClassificationMetrics
from autoencoders.callbacks.compile import Compile
from autoencoders.callbacks.hparams import HparamsSummary
from autoencoders.callbacks.image_grid import ClassSampleGrid, ClusterExamples, ReconstructionGrid
from autoencoders.callbacks.latent import LatentMap, LatentPriorFigure
from autoencoders.callbacks.nelbo import NELBOMetrics
from autoencoders.callbacks.nonfinite import NonFiniteGuard, NonFiniteLoss
from autoencoders.callbacks.predictions import PredictionWriter
from autoencoders.callbacks.preemption import CheckpointOnSIGTERM
from autoencoders.callbacks.rng import RNGState
from autoencoders.callbacks.samples import LatentGaussianGrid, PriorSampleGrid
from autoencoders.callbacks.thresholds import AnomalyThreshold

__all__ = [
    "AnomalyThreshold",
    "CheckpointOnSIGTERM",
    "ClassSampleGrid",
    "ClassificationMetrics",
    "ClusterExamples",
    "Compile",
    "HparamsSummary",
    "LatentGaussianGrid",
    "LatentMap",
    "LatentPriorFigure",
    "NELBOMetrics",
    "NonFiniteGuard",
    "NonFiniteLoss",
    "PredictionWriter",
    "PriorSampleGrid",
    "RNGState",
    "ReconstructionGrid",
]
