"""VAEs with Pyro ``model(x=None)`` / ``guide(x)``: ``VAE``, ``HVAE``, ``ConvHVAE``,
``PixelHVAE``."""

from pyrovamp.models.hvae import HVAE, ConvHVAE, PixelHVAE
from pyrovamp.models.vae import VAE, check_data

MODELS = {"vae": VAE, "hvae": HVAE, "convhvae": ConvHVAE, "pixelhvae": PixelHVAE}
"""The models by the names of the command line's ``--model``."""

__all__ = ["VAE", "HVAE", "ConvHVAE", "PixelHVAE", "check_data", "MODELS"]
