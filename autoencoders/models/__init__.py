"""One LightningModule per autoencoder family."""

from autoencoders.models.aae import AdversarialAutoencoder
from autoencoders.models.autoencoder import Autoencoder
from autoencoders.models.classifier import EncoderClassifier
from autoencoders.models.gmvae import GMVAE
from autoencoders.models.ssvae import SSVAE
from autoencoders.models.stacked import StackedAutoencoder
from autoencoders.models.vae import VAE

__all__ = [
    "AdversarialAutoencoder",
    "Autoencoder",
    "EncoderClassifier",
    "GMVAE",
    "SSVAE",
    "StackedAutoencoder",
    "VAE",
]
