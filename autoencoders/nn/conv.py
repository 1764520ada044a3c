"""Convolutional encoders and decoders for small images (28x28 by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from autoencoders.nn.mlp import make_activation


class ConvEncoder(nn.Module):
    """Conv blocks (convs with activations, dropout, 2x2 max-pool), then a linear map to the code.

    With the defaults this is seed 004's encoder: 1x28x28 -> 16x14x14 -> 32x7x7 -> ``latent_dim``.

    Args:
        latent_dim: size of the code.
        channels: output channels of each conv block; each block halves the resolution.
        input_shape: ``(channels, height, width)`` of the images.
        kernel_size: odd kernel size; padding keeps the resolution before pooling.
        activation: activation name.
        dropout: dropout probability at the end of each block (with 0, each block max-pools
            before its last activation: the same function, a quarter of the values activated).
        convs_per_block: conv + activation pairs per block (seed 003 used two).
        batch_norm: batch normalisation after each conv.
        channels_last: keep weights and feature maps in the channels-last memory layout (the
            same function; on this project's 2-core CPU 2x faster forward passes of the AAE's
            encoder, whose 2x2 max-pool is 12x faster in this layout; BENCHMARKS.md).
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: Sequence[int] = (16, 32),
        input_shape: Sequence[int] = (1, 28, 28),
        kernel_size: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
        convs_per_block: int = 1,
        batch_norm: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        blocks: list[nn.Module] = []
        in_ch = input_shape[0]
        for out_ch in channels:
            for _ in range(convs_per_block):
                blocks.append(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2))
                blocks += [nn.BatchNorm2d(out_ch)] if batch_norm else []
                blocks.append(make_activation(activation))
                in_ch = out_ch
            if dropout > 0:
                blocks += [nn.Dropout(dropout), nn.MaxPool2d(2)]
            else:  # max-pooling commutes with the (monotone) activations: pooling first is the
                # same function and activates a quarter of the values (BENCHMARKS.md); the
                # Dropout(0) keeps the layer indices, so either layout's checkpoints load
                blocks[-1:] = [nn.MaxPool2d(2), blocks[-1], nn.Dropout(0.0)]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.head = nn.Linear(n_features, latent_dim)
        self.memory_format = _use_memory_format(self, channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.contiguous(memory_format=self.memory_format)))


class ConvDecoder(nn.Module):
    """A linear map to a small feature map, then transposed convs that double the resolution.

    The last transposed conv outputs the image logits; a larger result (e.g. 32x32 from three
    stages) is centre-cropped to ``output_shape``.

    Args:
        latent_dim: size of the code.
        channels: input channels of each upsampling stage (the encoder's, reversed).
        output_shape: ``(channels, height, width)`` of the images.
        activation: activation name.
        dropout: dropout probability after each hidden activation.
        channels_last: as in ``ConvEncoder``.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: Sequence[int] = (32, 16),
        output_shape: Sequence[int] = (1, 28, 28),
        activation: str = "relu",
        dropout: float = 0.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)
        out_ch, height, width = output_shape
        scale = 2 ** len(channels)
        self.start = (channels[0], math.ceil(height / scale), math.ceil(width / scale))
        self.project = nn.Sequential(
            nn.Linear(latent_dim, math.prod(self.start)),
            make_activation(activation),
            nn.Dropout(dropout),
        )
        stages: list[nn.Module] = []
        targets = [*channels[1:], out_ch]
        for i, (c_in, c_out) in enumerate(zip(channels, targets, strict=True)):
            stages.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                stages += [make_activation(activation), nn.Dropout(dropout)]
        self.upsample = nn.Sequential(*stages)
        self.memory_format = _use_memory_format(self, channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        start = self.project(z).view(-1, *self.start)
        logits = self.upsample(start.contiguous(memory_format=self.memory_format))
        _, height, width = self.output_shape
        top = (logits.shape[-2] - height) // 2
        left = (logits.shape[-1] - width) // 2
        return logits[..., top : top + height, left : left + width]


def _use_memory_format(network: nn.Module, channels_last: bool) -> torch.memory_format:
    """Moves ``network``'s conv weights to channels-last when asked; the layout for its inputs."""
    if not channels_last:
        return torch.contiguous_format
    network.to(memory_format=torch.channels_last)
    return torch.channels_last
