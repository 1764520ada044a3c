"""Plain ``nn.Module`` building blocks: encoders, decoders and discriminators."""

from autoencoders.nn.conv import ConvDecoder, ConvEncoder
from autoencoders.nn.mlp import MLP, MLPDecoder, MLPEncoder

__all__ = ["MLP", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder"]
