"""Fully connected networks: a generic MLP and image encoders / decoders built on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

# all monotone: ConvEncoder max-pools before the activation
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """Returns a fresh activation module by name (``relu``, ``elu``, ``leaky_relu``, ``tanh``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Linear layers with an activation (and optional dropout) between them.

    Args:
        in_features: size of the input vector.
        hidden: sizes of the hidden layers, e.g. ``[1000, 1000]``.
        out_features: size of the output; the last layer has no activation.
        activation: name of the hidden activation.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features


class MLPEncoder(nn.Module):
    """Flattens an image and maps it to a latent vector.

    Args:
        latent_dim: size of the code.
        hidden: hidden layer sizes.
        input_shape: ``(channels, height, width)`` of the images.
        activation: hidden activation.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden: Sequence[int] = (512, 256),
        input_shape: Sequence[int] = (1, 28, 28),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        self.net = MLP(math.prod(input_shape), hidden, latent_dim, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Maps a latent vector to image logits of ``output_shape``.

    Args:
        latent_dim: size of the code.
        hidden: hidden layer sizes (usually the encoder's, reversed).
        output_shape: ``(channels, height, width)`` of the images.
        activation: hidden activation.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden: Sequence[int] = (256, 512),
        output_shape: Sequence[int] = (1, 28, 28),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)
        self.net = MLP(latent_dim, hidden, math.prod(output_shape), activation, dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)
