"""One LightningModule per autoencoder family."""

from autoencoders.models.autoencoder import Autoencoder

__all__ = ["Autoencoder"]
