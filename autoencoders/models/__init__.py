"""One LightningModule per autoencoder family."""

from autoencoders.models.aae import AdversarialAutoencoder
from autoencoders.models.autoencoder import Autoencoder

__all__ = ["AdversarialAutoencoder", "Autoencoder"]
